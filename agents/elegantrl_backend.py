"""ElegantRL backends (A2C, PPO, DDPG, TD3, SAC), trained in a subprocess.

ElegantRL 0.3.6 (``pip install elegantrl==0.3.6 --no-deps``) switches torch's autograd off
globally while it explores (``torch.set_grad_enabled(False)`` in its train loop and env code).
To keep that out of the caller's process, :meth:`ElegantRLAgent.learn` runs the whole training
in a ``spawn`` subprocess:

1. the parent pickles (cloudpickle) the env, the config and the seed;
2. the child builds ``elegantrl.train.config.Config`` and the ElegantRL agent class
   (``AgentA2C``, ``AgentPPO``, ``AgentDDPG``, ``AgentTD3``, ``AgentSAC``), wraps our env as
   ElegantRL expects it (single env: numpy ``reset()/step()`` with the old 4-tuple; vector env:
   torch tensors ``(E, state_dim)``, auto-reset) on top of the same SB3 vector adapter the SB3
   backend uses (so a FinMeta ``VectorEnv`` stays vectorized), and runs ElegantRL's loop --
   ``agent.explore_env`` -> ``ReplayBuffer.update`` (off-policy) -> ``agent.update_net`` with
   autograd on only around the update, exactly as ``elegantrl.train.run.train_agent`` does,
   minus its evaluator (no ``cwd`` folder, no plots; evaluation is the benchmark loop's job);
3. the child writes the actor's ``state_dict`` to a temporary file; the parent rebuilds the
   actor (``elegantrl.agents.net.ActorPPO`` / ``Actor`` / ``ActorSAC``) and acts with its
   deterministic ``forward`` (``tanh`` of the mean) under ``torch.no_grad()``.

The step budget is counted in env steps summed over sub-envs and rounded up to whole
``horizon_len * E`` chunks (like SB3's ``n_steps``). Off-policy agents first explore
``warmup_steps`` (default ``horizon_len``) steps with random actions, counted in the budget.

Defaults are FinRL's ``ERL_PARAMS`` (finrl/config.py): learning_rate 3e-6, batch_size 2048,
gamma 0.985, net_dims (128, 64), target_step 5000 (= ``horizon_len``); everything else is
ElegantRL's ``Config`` default. ``buffer_size`` (off-policy) counts transitions over all
sub-envs; ElegantRL's buffer holds ``buffer_size // E`` rows of E.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from agents._erl_worker import ALGOS as _ALGOS  # (imports no elegantrl)
from agents.base import Agent, AgentError, AgentLoadError
from finmeta.errors import ConfigError

__all__ = ["ElegantRLAgent", "elegantrl_available", "ERL_DEFAULTS"]

#: FinRL's ERL_PARAMS (finrl/config.py), with ElegantRL names (target_step -> horizon_len)
ERL_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-6,
    "batch_size": 2048,
    "gamma": 0.985,
    "net_dims": [128, 64],
    "horizon_len": 5000,
}
_OFF_POLICY_DEFAULTS = {"buffer_size": 1_000_000, "repeat_times": 1.0}
_ON_POLICY_DEFAULTS = {"repeat_times": 8.0}
_COMMON = {"n_threads": 1, "warmup_steps": None, "timeout_s": 3600, "gpu_id": -1}


def elegantrl_available() -> tuple[bool, str]:
    """(True, version) when ``elegantrl`` imports, else (False, the import error)."""
    try:
        with _grad_guard():
            import elegantrl  # noqa: F401
            from importlib.metadata import version

            return True, version("elegantrl")
    except Exception as exc:  # pragma: no cover - depends on the install
        return False, f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _grad_guard() -> Iterator[None]:
    """Restore torch's global autograd switch after anything ElegantRL does in this process."""
    import torch

    was = torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.set_grad_enabled(was)


# ---------------------------------------------------------------------------------------- parent


class ElegantRLAgent(Agent):
    """An ElegantRL algorithm trained in a subprocess, acting in this process from its actor weights."""

    algo: ClassVar[str] = ""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.actor = None

    @classmethod
    def off_policy(cls) -> bool:
        return _ALGOS[cls.algo][2]

    def _validate(self) -> None:
        c = self.config
        h, bs = int(c["horizon_len"]), int(c["batch_size"])
        if h < 2:
            raise ConfigError(f"{self.name}: horizon_len must be >= 2, got {h}")
        if not self.off_policy() and int(h * float(c.get("repeat_times", 8.0)) / bs) < 1:
            raise ConfigError(f"{self.name}: batch_size ({bs}) must be <= horizon_len * repeat_times "
                              f"({h} * {c.get('repeat_times')}) for ElegantRL's on-policy update")
        if len(c.get("net_dims") or []) < 1:
            raise ConfigError(f"{self.name}: net_dims must list at least one hidden layer size")

    def learn(self, env, total_timesteps: int, seed: int = 0) -> "ElegantRLAgent":
        """Train in a subprocess (autograd switches stay there); load the actor here."""
        ok, why = elegantrl_available()
        if not ok:
            raise AgentError(f"{self.name}: elegantrl is not importable ({why}); "
                             f"pip install elegantrl==0.3.6 --no-deps")
        if int(total_timesteps) <= 0:
            raise ConfigError(f"{self.name}: total_timesteps must be > 0, got {total_timesteps}")
        self._validate()
        self._set_spaces(env)
        import cloudpickle
        import torch

        with tempfile.TemporaryDirectory(prefix="finmeta_erl_") as tmp:
            payload, out = os.path.join(tmp, "payload.pkl"), os.path.join(tmp, "actor.pt")
            log = os.path.join(tmp, "train.log")
            try:
                with open(payload, "wb") as fh:
                    cloudpickle.dump({"config": dict(self.config), "env": env, "seed": int(seed),
                                      "total_timesteps": int(total_timesteps), "algo": self.algo}, fh)
            except Exception as exc:
                raise AgentError(f"{self.name}: the env cannot be pickled for the training "
                                 f"subprocess ({type(exc).__name__}: {exc})") from exc
            # a fresh interpreter (not multiprocessing): no re-import of the caller's __main__,
            # and the caller's sys.path so that env classes defined next to it unpickle
            child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            timeout = float(self.config.get("timeout_s") or 3600)
            with open(log, "wb") as logfh:
                try:
                    rc = subprocess.run([sys.executable, "-m", "agents._erl_worker", payload, out],
                                        stdout=logfh, stderr=subprocess.STDOUT, env=child_env,
                                        timeout=timeout).returncode
                except subprocess.TimeoutExpired as exc:
                    raise AgentError(f"{self.name}: ElegantRL training exceeded timeout_s={timeout:g} "
                                     f"and was stopped") from exc
            if rc != 0 or not os.path.exists(out):
                err = Path(out + ".err").read_text() if os.path.exists(out + ".err") else ""
                err = err or Path(log).read_text(errors="replace")[-4000:]
                lines = err.strip().splitlines()
                tail = lines[-1] if lines else f"exit code {rc}"
                raise AgentError(f"{self.name}: ElegantRL training subprocess failed: {tail}\n{err}")
            result = torch.load(out, map_location="cpu", weights_only=True)
        self._build_actor(result["actor_class"], result["state_dict"])
        self.trained_timesteps = int(result["steps"])
        self.seed = int(seed)
        return self

    def _build_actor(self, actor_class: str, state_dict: dict) -> None:
        import torch

        obs_dim = int(np.prod(self.observation_space.shape))
        act_dim = int(np.prod(self.action_space.shape))
        with _grad_guard():
            from elegantrl.agents import net as erl_net

            actor = getattr(erl_net, actor_class)(tuple(int(d) for d in self.config["net_dims"]), obs_dim, act_dim)
        try:
            actor.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise AgentLoadError(f"{self.name}: actor weights do not fit {actor_class}"
                                 f"{tuple(self.config['net_dims'])} ({exc})") from exc
        actor.eval()
        for prm in actor.parameters():
            prm.requires_grad_(False)
        self.actor = actor
        self._actor_class = actor_class
        self._torch = torch

    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        """``tanh`` of the actor's mean (deterministic) scaled to the action bounds.

        ``deterministic=False`` adds the policy's exploration noise (Gaussian for PPO/A2C/SAC,
        ``explore_noise_std`` for DDPG/TD3).
        """
        if self.actor is None:
            raise AgentError(f"{self.name}: call learn(env, ...) or load(path, env) before act()")
        batch, single = self._check_obs(obs)
        torch = self._torch
        with torch.no_grad():
            x = torch.as_tensor(batch.reshape(batch.shape[0], -1))
            if deterministic:
                a = self.actor(x)
            elif self._actor_class == "ActorPPO":
                a = self.actor.convert_action_for_env(self.actor.get_action(x)[0])
            else:
                a = self.actor.get_action(x)
            a = a.cpu().numpy().astype(np.float32)
        lo, hi = self.action_space.low, self.action_space.high
        a = (lo + (a + 1.0) * 0.5 * (hi - lo)).astype(np.float32)  # [-1, 1] -> [low, high]
        a = a.reshape(batch.shape[0], *self.action_space.shape)
        return a[0] if single else a

    def _save(self, path: Path) -> None:
        buf = io.BytesIO()
        self._torch.save({"state_dict": self.actor.state_dict(), "actor_class": self._actor_class}, buf)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("actor.pt", buf.getvalue())

    def _load(self, path: Path, manifest: dict, env: Any) -> None:
        import gymnasium as gym
        import torch

        if env is None:
            raise AgentLoadError(f"{path}: load an ElegantRL agent with its env (the actor needs the spaces)")
        self.observation_space, self.action_space = (env.single_observation_space, env.single_action_space) \
            if isinstance(env, gym.vector.VectorEnv) else (env.observation_space, env.action_space)
        try:
            with zipfile.ZipFile(path) as zf:
                blob = torch.load(io.BytesIO(zf.read("actor.pt")), map_location="cpu", weights_only=True)
        except (KeyError, zipfile.BadZipFile, RuntimeError) as exc:
            raise AgentLoadError(f"{path}: no readable actor.pt ({exc})") from exc
        self._build_actor(blob["actor_class"], blob["state_dict"])


def _make(algo: str) -> type[ElegantRLAgent]:
    off = _ALGOS[algo][2]
    defaults = {**_COMMON, **ERL_DEFAULTS, **(_OFF_POLICY_DEFAULTS if off else _ON_POLICY_DEFAULTS)}
    cls = type(f"ElegantRL{algo.upper()}Agent", (ElegantRLAgent,), {
        "name": f"elegantrl_{algo}", "algo": algo, "defaults": defaults, "__module__": __name__,
        "__doc__": f"ElegantRL {_ALGOS[algo][0]} (subprocess training) with FinRL's ERL_PARAMS defaults.",
    })
    return cls


ElegantRLA2CAgent = _make("a2c")
ElegantRLPPOAgent = _make("ppo")
ElegantRLDDPGAgent = _make("ddpg")
ElegantRLTD3Agent = _make("td3")
ElegantRLSACAgent = _make("sac")
