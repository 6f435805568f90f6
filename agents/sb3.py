"""Stable-Baselines3 backends: A2C, PPO, DDPG, TD3, SAC with FinRL's published defaults.

Defaults (``finrl/config.py`` of FinRL, also used by FinRL-Meta's ``DRLAgent`` for SB3)::

    A2C   n_steps=5     ent_coef=0.01   learning_rate=7e-4
    PPO   n_steps=2048  ent_coef=0.01   learning_rate=2.5e-4  batch_size=64
    DDPG  batch_size=128  buffer_size=50_000     learning_rate=1e-3
    TD3   batch_size=100  buffer_size=1_000_000  learning_rate=1e-3
    SAC   batch_size=64   buffer_size=100_000    learning_rate=1e-4  learning_starts=100  ent_coef="auto_0.1"

Everything else is SB3's default (``MlpPolicy``, gamma 0.99, ...). Any SB3 constructor argument
can be overridden: ``make_agent("ppo", n_steps=256, policy_kwargs={"net_arch": [64, 64]})``.
FinMeta's own keys (not passed to SB3): ``policy``, ``device``, ``n_threads`` (torch threads
during training; fixed for reproducibility, default 1), ``action_noise``
(``None | "normal" | "ornstein_uhlenbeck"``, off-policy only) and ``noise_sigma`` (default 0.1).

Envs: a single ``gymnasium.Env`` is wrapped in SB3's ``DummyVecEnv``; a
``gymnasium.vector.VectorEnv`` goes through :class:`agents.vec_env.GymnasiumVecEnvAdapter`
so the kernel stays vectorized. Both are wrapped in ``VecMonitor`` for episode statistics.
"""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agents.base import (
    Agent,
    AgentError,
    AgentLoadError,
    quiet_logger,
    seed_everything,
    torch_threads,
)
from finmeta.errors import ConfigError

__all__ = ["SB3Agent", "A2CAgent", "PPOAgent", "DDPGAgent", "TD3Agent", "SACAgent", "FINRL_DEFAULTS", "wrap_env"]

#: FinRL's published hyper-parameters (finrl/config.py: A2C_PARAMS, PPO_PARAMS, ...).
FINRL_DEFAULTS: dict[str, dict[str, Any]] = {
    "a2c": {"n_steps": 5, "ent_coef": 0.01, "learning_rate": 7e-4},
    "ppo": {"n_steps": 2048, "ent_coef": 0.01, "learning_rate": 2.5e-4, "batch_size": 64},
    "ddpg": {"batch_size": 128, "buffer_size": 50_000, "learning_rate": 1e-3},
    "td3": {"batch_size": 100, "buffer_size": 1_000_000, "learning_rate": 1e-3},
    "sac": {"batch_size": 64, "buffer_size": 100_000, "learning_rate": 1e-4, "learning_starts": 100,
            "ent_coef": "auto_0.1"},
}

#: Named presets (``preset: NAME`` in an agent's config; the agent's own keys override them).
#:
#: ``icaif2020``: the agents of the ICAIF 2020 ensemble code (commit d8d7723, ``model/models.py``),
#: which used Stable-Baselines 2, translated to SB3 arguments:
#:
#: * PPO = SB2 ``PPO2(MlpPolicy, env, ent_coef=0.005, nminibatches=8)`` on one env: n_steps 128
#:   (SB2 default), 8 minibatches -> batch 16, 4 epochs, clip 0.2, value clipping 0.2
#:   (``cliprange_vf`` None in SB2 = the same 0.2), lr 2.5e-4, GAE 0.95, vf_coef 0.5, grad norm 0.5.
#:   Not expressible in SB3: SB2's MlpPolicy shares its two 64-unit layers between policy and value
#:   (SB3 >= 1.8 has separate ``pi``/``vf`` networks of the same size).
#: * A2C = SB2 ``A2C(MlpPolicy, env)`` defaults: n_steps 5, lr 7e-4, ent_coef 0.01, vf_coef 0.25,
#:   grad norm 0.5, RMSProp as TensorFlow's (SB3's ``RMSpropTFLike``, alpha 0.99, eps 1e-5). Same
#:   shared-layer caveat.
#: * DDPG = SB2 ``DDPG(MlpPolicy, env, param_noise=None, action_noise=OU(sigma=0.5))``: actor and
#:   critic 64x64, actor lr 1e-4, critic lr 1e-3 (``actor_learning_rate``), tau 0.001, batch 128,
#:   buffer 50k, 50 gradient steps per 100 env steps, OU noise sigma 0.5 theta 0.15 dt 0.01,
#:   observations clipped to +-5 in training and acting (``clip_obs``; SB2 clips to
#:   ``observation_range`` even without normalisation). Not expressible: SB2's critic takes the
#:   action at its second layer (SB3 concatenates it with the observation at the input).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "icaif2020": {
        "ppo": {"n_steps": 128, "batch_size": 16, "n_epochs": 4, "ent_coef": 0.005, "clip_range": 0.2,
                "clip_range_vf": 0.2, "learning_rate": 2.5e-4, "gae_lambda": 0.95, "gamma": 0.99,
                "vf_coef": 0.5, "max_grad_norm": 0.5},
        "a2c": {"n_steps": 5, "learning_rate": 7e-4, "ent_coef": 0.01, "vf_coef": 0.25, "max_grad_norm": 0.5,
                "gamma": 0.99, "gae_lambda": 1.0, "optimizer": "rmsprop_tf_like"},
        "ddpg": {"learning_rate": 1e-3, "actor_learning_rate": 1e-4, "tau": 0.001, "batch_size": 128,
                 "buffer_size": 50_000, "train_freq": [100, "step"], "gradient_steps": 50,
                 "learning_starts": 100, "gamma": 0.99, "policy_kwargs": {"net_arch": [64, 64]},
                 "action_noise": "ornstein_uhlenbeck", "noise_sigma": 0.5, "clip_obs": 5.0},
    },
}

#: keys FinMeta interprets itself (never passed to the SB3 constructor)
_OWN_KEYS = ("policy", "device", "n_threads", "action_noise", "noise_sigma", "verbose", "preset", "optimizer",
             "clip_obs", "actor_learning_rate")
_COMMON = {"policy": "MlpPolicy", "device": "cpu", "n_threads": 1, "verbose": 0}


def wrap_env(env: Any):
    """An SB3 ``VecEnv`` over ``env`` (single env: DummyVecEnv; vector env: the adapter), monitored."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

    from agents.vec_env import GymnasiumVecEnvAdapter

    if isinstance(env, VecEnv):
        return env
    if isinstance(env, gym.vector.VectorEnv):
        return VecMonitor(GymnasiumVecEnvAdapter(env))
    if isinstance(env, gym.Env):
        return DummyVecEnv([lambda: Monitor(env)])
    raise AgentError(f"cannot train on {type(env).__name__}: expected a gymnasium Env or VectorEnv")


class SB3Agent(Agent):
    """A Stable-Baselines3 algorithm behind the FinMeta :class:`~agents.base.Agent` interface."""

    algo: ClassVar[str] = ""  # SB3 class name
    off_policy: ClassVar[bool] = False

    def __init__(self, **overrides: Any) -> None:
        preset = overrides.get("preset")
        if preset is not None:
            if preset not in PRESETS or self.name not in PRESETS[preset]:
                have = sorted(p for p, agents in PRESETS.items() if self.name in agents)
                raise ConfigError(f"{self.name}: unknown preset {preset!r}; presets for {self.name}: {have}")
            overrides = {**copy.deepcopy(PRESETS[preset][self.name]), **overrides}
        super().__init__(**overrides)
        self.model = None
        clip = self.config.get("clip_obs")
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ConfigError(f"{self.name}: clip_obs must be a positive number, got {clip!r}")
        if self.config.get("actor_learning_rate") is not None and not self.off_policy:
            raise ConfigError(f"{self.name}: actor_learning_rate is only for ddpg/td3/sac")

    @classmethod
    def config_keys(cls) -> set[str]:
        """FinMeta's own keys, the defaults, and every argument of the SB3 algorithm's constructor."""
        import inspect

        sb3_args = {p for p in inspect.signature(cls.sb3_class().__init__).parameters
                    if p not in ("self", "env", "args", "kwargs") and not p.startswith("_")}
        return set(_OWN_KEYS) | set(cls.defaults) | sb3_args

    @classmethod
    def sb3_class(cls):
        import stable_baselines3 as sb3

        return getattr(sb3, cls.algo)

    def _sb3_kwargs(self, vec_env) -> dict:
        # deep copy: SB3 mutates dicts it is given (policy_kwargs gets "use_sde")
        kwargs = copy.deepcopy({k: v for k, v in self.config.items() if k not in _OWN_KEYS})
        noise = self.config.get("action_noise")
        if noise is not None:
            if not self.off_policy:
                raise ConfigError(f"{self.name}: action_noise is only for off-policy agents (ddpg, td3, sac)")
            from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

            n = int(np.prod(vec_env.action_space.shape))
            sigma = float(self.config.get("noise_sigma", 0.1)) * np.ones(n)
            kinds = {"normal": NormalActionNoise, "ornstein_uhlenbeck": OrnsteinUhlenbeckActionNoise}
            if noise not in kinds:
                raise ConfigError(f"{self.name}: action_noise must be one of {sorted(kinds)}, got {noise!r}")
            kwargs["action_noise"] = kinds[noise](mean=np.zeros(n), sigma=sigma)
        opt = self.config.get("optimizer")
        if opt is not None:
            if opt != "rmsprop_tf_like":
                raise ConfigError(f"{self.name}: optimizer must be 'rmsprop_tf_like' (or absent), got {opt!r}")
            from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

            pk = dict(kwargs.get("policy_kwargs") or {})
            pk.update(optimizer_class=RMSpropTFLike, optimizer_kwargs={"alpha": 0.99, "eps": 1e-5, "weight_decay": 0})
            kwargs["policy_kwargs"] = pk
        if isinstance(kwargs.get("train_freq"), list):  # YAML has no tuples: [100, "step"]
            kwargs["train_freq"] = tuple(kwargs["train_freq"])
        return kwargs

    def _algo_class(self):
        """The SB3 class to build: with ``actor_learning_rate``, a subclass whose actor optimizer
        gets that rate while the critic keeps ``learning_rate`` (SB2 DDPG's actor_lr/critic_lr)."""
        base = self.sb3_class()
        actor_lr = self.config.get("actor_learning_rate")
        if actor_lr is None:
            return base
        actor_lr = float(actor_lr)

        class _SplitLR(base):
            def _update_learning_rate(self, optimizers):
                super()._update_learning_rate(optimizers)
                for group in self.actor.optimizer.param_groups:
                    group["lr"] = actor_lr

        _SplitLR.__name__ = base.__name__
        return _SplitLR

    def learn(self, env, total_timesteps: int, seed: int = 0, callback=None) -> "SB3Agent":
        """Train a fresh SB3 model on ``env`` for ``total_timesteps`` steps (all sub-envs summed).

        Seeding: Python/NumPy/torch global generators, SB3's ``set_random_seed``, the env's
        reset seed and the action space all get ``seed``; torch runs on ``n_threads`` threads.
        ``callback``: an SB3 callback (progress bars, logging); it must not draw random numbers.
        The config key ``tensorboard_log`` (a folder) turns on SB3's TensorBoard logging.
        """
        if int(total_timesteps) <= 0:
            raise ConfigError(f"{self.name}: total_timesteps must be > 0, got {total_timesteps}")
        self._set_spaces(env)
        vec_env = wrap_env(env)
        if self.config.get("clip_obs") is not None:
            vec_env = _clip_obs_vec_env(vec_env, float(self.config["clip_obs"]))
        seed = int(seed)
        with torch_threads(self.config.get("n_threads", 1)):
            seed_everything(seed)
            try:
                self.model = self._algo_class()(
                    self.config.get("policy", "MlpPolicy"),
                    vec_env,
                    seed=seed,
                    device=self.config.get("device", "cpu"),
                    verbose=int(self.config.get("verbose", 0)),
                    **self._sb3_kwargs(vec_env),
                )
            except TypeError as exc:
                raise ConfigError(f"{self.name}: bad hyper-parameter for SB3 {self.algo}: {exc}") from exc
            quiet_logger(self.model, self.config.get("tensorboard_log"), int(self.config.get("verbose", 0)))
            self.model.learn(total_timesteps=int(total_timesteps), progress_bar=False, callback=callback)
        self.trained_timesteps = int(self.model.num_timesteps)
        self.seed = seed
        return self

    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        """Policy action for ``obs`` ``(obs_dim,)`` -> ``(act_dim,)`` or ``(B, obs_dim)`` -> ``(B, act_dim)``."""
        if self.model is None:
            raise AgentError(f"{self.name}: call learn(env, ...) or load(path, env) before act()")
        batch, single = self._check_obs(obs)
        if self.config.get("clip_obs") is not None:
            c = float(self.config["clip_obs"])
            batch = np.clip(batch, -c, c)
        action, _ = self.model.predict(batch, deterministic=deterministic)
        action = np.asarray(action, dtype=np.float32)
        return action[0] if single else action

    def _save(self, path: Path) -> None:
        buf = io.BytesIO()
        self.model.save(buf)
        path.write_bytes(buf.getvalue())

    def _load(self, path: Path, manifest: dict, env: Any) -> None:
        try:
            self.model = self.sb3_class().load(path, device=self.config.get("device", "cpu"))
        except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError) as exc:
            raise AgentLoadError(f"{path}: cannot load the SB3 {self.algo} model ({exc})") from exc
        self.observation_space = self.model.observation_space
        self.action_space = self.model.action_space


def _clip_obs_vec_env(vec_env, bound: float):
    """``vec_env`` whose observations are clipped to ``[-bound, bound]`` (SB2 DDPG's observation_range)."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class _ClipObs(VecEnvWrapper):
        def reset(self):
            return np.clip(self.venv.reset(), -bound, bound)

        def step_wait(self):
            obs, rew, done, infos = self.venv.step_wait()
            for info in infos:  # the terminal observation SB3 bootstraps from, clipped the same way
                if "terminal_observation" in info:
                    info["terminal_observation"] = np.clip(info["terminal_observation"], -bound, bound)
            return np.clip(obs, -bound, bound), rew, done, infos

    return _ClipObs(vec_env)


def _make(name: str, algo: str, off_policy: bool) -> type[SB3Agent]:
    cls = type(
        f"{algo}Agent",
        (SB3Agent,),
        {
            "name": name,
            "algo": algo,
            "off_policy": off_policy,
            "defaults": {**_COMMON, **FINRL_DEFAULTS[name]},
            "__doc__": f"SB3 {algo} with FinRL's defaults {FINRL_DEFAULTS[name]}.",
            "__module__": __name__,
        },
    )
    return cls


A2CAgent = _make("a2c", "A2C", False)
PPOAgent = _make("ppo", "PPO", False)
DDPGAgent = _make("ddpg", "DDPG", True)
TD3Agent = _make("td3", "TD3", True)
SACAgent = _make("sac", "SAC", True)
