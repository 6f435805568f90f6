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
    register_agent,
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

#: keys FinMeta interprets itself (never passed to the SB3 constructor)
_OWN_KEYS = ("policy", "device", "n_threads", "action_noise", "noise_sigma", "verbose")
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
        super().__init__(**overrides)
        self.model = None

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
        return kwargs

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
        seed = int(seed)
        with torch_threads(self.config.get("n_threads", 1)):
            seed_everything(seed)
            try:
                self.model = self.sb3_class()(
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
    register_agent(name, cls)
    return cls


A2CAgent = _make("a2c", "A2C", False)
PPOAgent = _make("ppo", "PPO", False)
DDPGAgent = _make("ddpg", "DDPG", True)
TD3Agent = _make("td3", "TD3", True)
SACAgent = _make("sac", "SAC", True)
