"""A thin adapter from a ``gymnasium.vector.VectorEnv`` to Stable-Baselines3's ``VecEnv``.

SB3 steps its own ``VecEnv`` API (``step_async``/``step_wait``, a list of per-env info dicts,
auto-reset with ``info["terminal_observation"]``). Wrapping the FinMeta vector env directly --
instead of rebuilding E single envs inside a ``DummyVecEnv`` -- keeps the market kernel
vectorized: one kernel call per step for all E sub-envs.

Auto-reset modes of the wrapped env (``venv.metadata["autoreset_mode"]``):

* ``SAME_STEP``: done sub-envs are reset inside ``step``; the final observation is in
  ``info["final_obs"]`` (mask ``info["_final_obs"]``). Used as is.
* ``DISABLED``: the adapter resets the done sub-envs with ``reset(options={"reset_mask": m})``.
* ``NEXT_STEP`` (gymnasium's default): the adapter resets the whole vector env when *every*
  sub-env is done at once (fixed-length episodes); mixed done/not-done steps cannot be expressed
  in SB3's API and raise :class:`~agents.base.AgentError`.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from agents.base import AgentError

__all__ = ["GymnasiumVecEnvAdapter"]


def _np(x: Any) -> np.ndarray:
    """A host numpy array from a numpy array or a (possibly GPU) torch tensor."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _mode(venv: gym.vector.VectorEnv) -> AutoresetMode:
    m = (getattr(venv, "metadata", None) or {}).get("autoreset_mode", AutoresetMode.NEXT_STEP)
    return AutoresetMode(m) if not isinstance(m, AutoresetMode) else m


class GymnasiumVecEnvAdapter(VecEnv):
    """Present a gymnasium ``VectorEnv`` (E sub-envs) as an SB3 ``VecEnv``.

    Args:
        venv: the gymnasium vector env; observations ``(E, obs_dim)``, actions ``(E, act_dim)``.
        info_keys: per-env info keys copied into SB3's info dicts (default: none besides the ones
            SB3 needs -- ``terminal_observation``, ``TimeLimit.truncated``); copying every key
            costs E dict writes per step.
    """

    def __init__(self, venv: gym.vector.VectorEnv, info_keys: Sequence[str] = ()) -> None:
        self.venv = venv
        self.info_keys = tuple(info_keys)
        self.autoreset_mode = _mode(venv)
        self._actions: np.ndarray | None = None
        self.last_info: dict = {}
        super().__init__(int(venv.num_envs), venv.single_observation_space, venv.single_action_space)

    # -- VecEnv API ------------------------------------------------------------------------------

    def reset(self):
        # SB3's seed(s) sets seeds s, s+1, ...; gymnasium's reset(seed=s) seeds sub-env i with s+i
        seed = None if self._seeds[0] is None else int(self._seeds[0])
        opts = self._options[0] or None
        obs, info = self.venv.reset(seed=seed, options=opts)
        self._reset_seeds()
        self._reset_options()
        self.last_info = info
        self.reset_infos = self._split_info(info, np.ones(self.num_envs, dtype=bool))
        return _np(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=self.action_space.dtype).reshape(
            (self.num_envs, *self.action_space.shape))

    def step_wait(self):
        obs, rew, term, trunc, info = self.venv.step(self._actions)
        obs = _np(obs)
        term = _np(term).astype(bool)
        trunc = _np(trunc).astype(bool)
        done = term | trunc
        self.last_info = info
        infos = self._split_info(info, done)
        if done.any():
            final_obs = self._final_obs(obs, info, done)
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = final_obs[i]
                infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            obs = self._reset_done(obs, done)
        return obs, _np(rew).astype(np.float32), done, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [getattr(self.venv, "render_mode", None)] * len(self._get_indices(indices))
        value = getattr(self.venv, attr_name)
        return [value] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs):
        out = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [out] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    # -- helpers ---------------------------------------------------------------------------------

    def _split_info(self, info: dict, rows: np.ndarray) -> list[dict]:
        out: list[dict] = [{} for _ in range(self.num_envs)]
        if not self.info_keys:
            return out
        for k in self.info_keys:
            if k not in info:
                continue
            v = _np(info[k])
            for i in np.flatnonzero(rows) if rows is not None else range(self.num_envs):
                out[i][k] = v[i] if v.ndim and v.shape[0] == self.num_envs else v
        return out

    def _final_obs(self, obs: np.ndarray, info: dict, done: np.ndarray) -> np.ndarray:
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            if "final_obs" not in info:
                raise AgentError("vector env in SAME_STEP autoreset mode gave no info['final_obs']")
            fo = info["final_obs"]
            if hasattr(fo, "shape") and tuple(fo.shape) == obs.shape:  # one (E, D) array
                return _np(fo).astype(obs.dtype, copy=False)
            return np.stack([_np(fo[i]).astype(obs.dtype) if done[i] else obs[i]
                             for i in range(self.num_envs)])
        return obs.copy()  # NEXT_STEP / DISABLED: obs *is* the final observation

    def _reset_done(self, obs: np.ndarray, done: np.ndarray) -> np.ndarray:
        mode = self.autoreset_mode
        if mode == AutoresetMode.SAME_STEP:
            return obs
        if mode == AutoresetMode.DISABLED:
            new_obs, info = self.venv.reset(options={"reset_mask": done})
            new_obs = _np(new_obs)
            return np.where(done[:, None] if new_obs.ndim == 2 else done, new_obs, obs)
        if done.all():  # NEXT_STEP with every episode over: a full reset is exact
            new_obs, _ = self.venv.reset()
            return _np(new_obs)
        raise AgentError(
            "vector env uses NEXT_STEP autoreset and only some sub-envs finished: SB3 cannot express "
            "that; build the env with autoreset_mode SAME_STEP (or DISABLED) or equal episode lengths")
