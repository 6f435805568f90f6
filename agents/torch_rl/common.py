"""Shared pieces of the torch-native learners: the training env, the networks, the agent shell.

Everything the learners touch while training stays in torch tensors on one device: the market
kernel runs with ``backend="torch"`` on that device, the rollout and replay buffers are tensors
there, and nothing goes through numpy between the env and the update.

* :func:`training_env` turns the env the caller gives (the walk-forward loop gives a single numpy
  ``TradingEnv``) into a ``VecTradingEnv(backend="torch")`` with ``num_envs`` sub-envs over the same
  arrays and config, with random starts and random lengths (``episode_length``), so the E sub-envs
  see different stretches of the training range. A torch ``VecTradingEnv`` is used as it is.
* :func:`mlp` and :class:`GaussianActor`: the pieces of SB3's default networks (tanh and orthogonal
  init for A2C/PPO, ReLU for the off-policy agents; sizes from each config's ``net_arch``).
* :class:`TorchAgent`: the :class:`~agents.base.Agent` shell (learn -> ``_train``, act, save, load
  with the space check); each algorithm file subclasses it and implements ``_build`` / ``_train``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from agents.base import Agent, AgentError, AgentLoadError, seed_everything, torch_threads
from finmeta.errors import ConfigError

__all__ = ["training_env", "mlp", "GaussianActor", "TorchAgent", "box_from_signature", "step_env"]


# ------------------------------------------------------------------------------------------- env


def training_env(env: Any, num_envs: int, device: str, episode_length: Any, seed: int):
    """A torch ``VecTradingEnv`` on ``device`` to train on, reset with ``seed``; returns (venv, obs).

    ``env`` may be a FinMeta ``TradingEnv`` or ``VecTradingEnv`` (numpy or torch): the arrays and the
    env config are reused, ``num_envs`` sub-envs are built. ``episode_length``: ``None`` keeps the
    env's own episode settings; an int ``L`` draws lengths uniformly in ``[min(L, T-1), T-1]`` with a
    random start; a ``[lo, hi]`` pair draws them in ``[lo, hi]`` (capped at ``T-1``). A torch vector env
    on the same device with ``num_envs`` sub-envs is used unchanged (its own episode settings).
    """
    from meta.envs import TradingEnv, VecTradingEnv

    base = getattr(env, "unwrapped", env)
    if isinstance(base, VecTradingEnv) and base.B.name == "torch" and str(base.B.device) == str(_dev(device)) \
            and base.num_envs == int(num_envs):
        venv = base
    elif isinstance(base, (TradingEnv, VecTradingEnv)):
        cfg = base.config
        T = base.kernel.T
        if episode_length is not None:
            if isinstance(episode_length, (int, np.integer)):
                lo, hi = min(int(episode_length), T - 1), T - 1
            else:
                lo, hi = (int(x) for x in episode_length)
                hi = min(hi, T - 1)
                lo = min(lo, hi)
            if lo < 1:
                raise ConfigError(f"episode_length must be >= 1, got {episode_length!r}")
            cfg = replace(cfg, episode_length=(lo, hi), random_start=True)
        venv = VecTradingEnv(base.arrays, cfg, num_envs=int(num_envs), backend="torch", device=str(device))
    else:
        raise AgentError(f"the torch backend trains on FinMeta envs (TradingEnv / VecTradingEnv), "
                         f"got {type(env).__name__}")
    obs, _ = venv.reset(seed=int(seed))
    return venv, obs.float()


def step_env(venv, action):
    """One vector step: (next_obs, reward (E,), terminated (E,), truncated (E,), final_obs (E, D)).

    ``next_obs`` is the new episode's first observation where a sub-env ended (SAME_STEP autoreset);
    ``final_obs`` the observation the ended episode stopped on (``next_obs`` elsewhere), for
    bootstrapping truncated episodes. All float32 / bool tensors on the env's device.
    """
    obs, rew, term, trunc, info = venv.step(action)
    obs = obs.float()
    final = info["final_obs"].float() if "final_obs" in info else obs
    return obs, rew.float(), term.bool(), trunc.bool(), final


def _dev(device: str) -> torch.device:
    return torch.device(device)


# -------------------------------------------------------------------------------------- networks


def mlp(sizes: list[int], activation: str = "tanh", ortho: bool = False, out_gain: float = 1.0):
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between them.

    ``ortho``: SB3's on-policy init (orthogonal, gain sqrt(2) for hidden layers, ``out_gain`` for
    the last, zero biases).
    """
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        if ortho:
            nn.init.orthogonal_(lin.weight, gain=out_gain if last else math.sqrt(2))
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(act())
    return nn.Sequential(*layers)


class GaussianActor(nn.Module):
    """SB3's on-policy Gaussian policy: a mean MLP and a state-independent log std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], log_std_init: float = 0.0,
                 activation: str = "tanh") -> None:
        super().__init__()
        self.mu = mlp([obs_dim, *hidden, act_dim], activation, ortho=True, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # the deterministic action (before clipping)
        return self.mu(obs)

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mu(obs)
        return mean, self.log_std.expand_as(mean)


def gaussian_log_prob(x, mean, log_std):
    """Sum over the action dims of the diagonal Gaussian log density."""
    var = (2 * log_std).exp()
    return (-((x - mean) ** 2) / (2 * var) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std):
    return (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)


# ------------------------------------------------------------------------------------------ agent


def box_from_signature(sig: dict) -> gym.spaces.Box:
    """The Box recorded by :func:`agents.base.space_signature` (bounds when recorded, else +-inf)."""
    shape = tuple(sig["shape"])
    if "low" in sig:
        low = np.array([float(x) for x in sig["low"]], dtype=np.float64).reshape(shape)
        high = np.array([float(x) for x in sig["high"]], dtype=np.float64).reshape(shape)
    else:
        low, high = np.full(shape, -np.inf), np.full(shape, np.inf)
    return gym.spaces.Box(low.astype(sig["dtype"]), high.astype(sig["dtype"]), dtype=np.dtype(sig["dtype"]))


class TorchAgent(Agent):
    """A torch-native learner behind the :class:`~agents.base.Agent` interface.

    Subclasses set ``name``, ``Config`` (a dataclass with the hyper-parameters) and implement
    ``_build(obs_dim, act_dim)`` (creates ``self.nets``, a dict of modules whose state is saved;
    ``self.nets["actor"]`` maps observations to the deterministic action before clipping) and
    ``_train(venv, obs, total_timesteps, generator)``; ``_sample(obs)`` for stochastic acting.
    """

    Config: ClassVar[type] = object
    backend: ClassVar[str] = "torch"

    @classmethod
    def config_keys(cls) -> set[str]:
        """The fields of :attr:`Config` (and ``tensorboard_log``, accepted and dropped): what a
        config's ``agents.<name>`` may set with ``backend: torch``."""
        return {f.name for f in dataclasses.fields(cls.Config)} | {"tensorboard_log"}

    def __init__(self, **overrides: Any) -> None:
        # the loop's ``tensorboard: true`` adds this key to every RL agent; the torch backend writes
        # no TensorBoard logs (yet), so it is accepted and dropped
        overrides.pop("tensorboard_log", None)
        known = {f.name for f in dataclasses.fields(self.Config)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"{self.name}: bad hyper-parameter(s) {bad} for the torch backend; known: {sorted(known)}")
        # the config dict holds every field (JSON-able, saved in the manifest)
        cfg = dataclasses.asdict(self.Config(**overrides))
        super().__init__(**cfg)
        self.cfg = self.Config(**self.config)
        self._check_config()
        self.nets: dict = {}

    def _check_config(self) -> None:
        c = self.cfg
        if int(c.num_envs) < 1:
            raise ConfigError(f"{self.name}: num_envs must be >= 1, got {c.num_envs}")

    # -- training ----------------------------------------------------------------------------------
    def learn(self, env, total_timesteps: int, seed: int = 0) -> "TorchAgent":
        """Train fresh networks for ``total_timesteps`` env steps (summed over the sub-envs).

        Seeds Python, NumPy and torch with ``seed``, resets the training env with it, draws every
        action sample and minibatch from one ``torch.Generator`` seeded with it, and runs torch on
        ``n_threads`` threads with deterministic algorithms: same seed, same machine, same weights.
        """
        if int(total_timesteps) <= 0:
            raise ConfigError(f"{self.name}: total_timesteps must be > 0, got {total_timesteps}")
        self._set_spaces(env)
        seed = int(seed)
        c = self.cfg
        dev = torch.device(c.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{self.name}: device {c.device!r} but CUDA is not available")
        was_det = torch.are_deterministic_algorithms_enabled()
        with torch_threads(c.n_threads):
            seed_everything(seed)
            if dev.type == "cpu":
                torch.use_deterministic_algorithms(True)
            try:
                self._build(int(np.prod(self.observation_space.shape)), int(np.prod(self.action_space.shape)))
                for net in self.nets.values():
                    net.to(dev)
                venv, obs = training_env(env, c.num_envs, c.device, c.episode_length, seed)
                gen = torch.Generator(device=dev)
                gen.manual_seed(seed)
                self._low = torch.as_tensor(self.action_space.low, dtype=torch.float32, device=dev)
                self._high = torch.as_tensor(self.action_space.high, dtype=torch.float32, device=dev)
                done = self._train(venv, obs, int(total_timesteps), gen)
            finally:
                torch.use_deterministic_algorithms(was_det)
        for net in self.nets.values():  # act on the CPU (the loop's envs are numpy, E = 1)
            net.to("cpu")
        self.trained_timesteps = int(done)
        self.seed = seed
        return self

    def _clip(self, a):
        return torch.max(torch.min(a, self._high), self._low)

    # -- acting -----------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        """The clipped policy action; ``deterministic=False`` samples (torch's global generator)."""
        if not self.nets:
            raise AgentError(f"{self.name}: call learn(env, ...) or load(path, env) before act()")
        batch, single = self._check_obs(obs)
        with torch.no_grad():
            x = torch.as_tensor(batch)
            a = self.nets["actor"](x) if deterministic else self._sample(x)
            lo = torch.as_tensor(self.action_space.low, dtype=torch.float32)
            hi = torch.as_tensor(self.action_space.high, dtype=torch.float32)
            a = torch.max(torch.min(a, hi), lo).numpy().astype(np.float32)
        return a[0] if single else a

    def _sample(self, obs):
        actor = self.nets["actor"]
        mean, log_std = actor.dist(obs)
        return mean + log_std.exp() * torch.randn_like(mean)

    # -- files --------------------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, net in self.nets.items():
                buf = io.BytesIO()
                torch.save(net.state_dict(), buf)
                zf.writestr(f"{key}.pt", buf.getvalue())

    def _load(self, path: Path, manifest: dict, env: Any) -> None:
        try:
            self.observation_space = box_from_signature(manifest["observation_space"])
            self.action_space = box_from_signature(manifest["action_space"])
            self._build(int(np.prod(self.observation_space.shape)), int(np.prod(self.action_space.shape)))
            with zipfile.ZipFile(path) as zf:
                for key, net in self.nets.items():
                    state = torch.load(io.BytesIO(zf.read(f"{key}.pt")), map_location="cpu", weights_only=True)
                    net.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
            raise AgentLoadError(f"{path}: cannot load the torch {self.name} networks ({type(exc).__name__}: {exc})") from exc
