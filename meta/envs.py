"""gymnasium front ends of the kernel: :class:`TradingEnv` (E = 1) and :class:`VecTradingEnv` (E > 1).

Both are thin: they convert actions, draw episode windows from their seeded generators, and turn
the kernel's (E, ...) arrays into gymnasium's return values. The one check in the step is
:func:`check_actions` (shape, numeric dtype, finiteness: a NaN would poison cash and holdings for the
rest of the episode); values outside the action space's bounds are not clipped (SB3 clips its
policies' actions; the kernel keeps its books consistent for any finite action).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError, InvalidActionError

from .backend import Array, Backend
from .config import EnvConfig
from .kernel import MarketKernel


def draw_episode(rng: np.random.Generator, T: int, cfg: EnvConfig) -> tuple[int, int]:
    """(start, end) bar indices of one episode (``end`` = its last bar), drawn from ``rng``.

    ``episode_length``: None (to the last bar), an int, or a (min, max) pair drawn uniformly.
    ``random_start``: the start is uniform over the starts that leave room for the length.
    """
    el = cfg.episode_length
    max_len = T - 1
    if el is None:
        length = max_len
    elif isinstance(el, (int, np.integer)):
        length = int(el)
    else:
        length = int(rng.integers(int(el[0]), int(el[1]) + 1))
    length = min(length, max_len)
    start = int(rng.integers(0, T - 1 - length + 1)) if cfg.random_start else 0
    return start, start + length


def _spaces(kernel: MarketKernel) -> tuple[spaces.Box, spaces.Box]:
    cfg = kernel.cfg
    obs = spaces.Box(-np.inf, np.inf, shape=(kernel.obs_dim,), dtype=np.float32)
    if cfg.sizing == "weights" and cfg.action_scheme == "weights":
        act = spaces.Box(0.0, 1.0, shape=(kernel.action_dim,), dtype=np.float32)
    else:
        act = spaces.Box(-1.0, 1.0, shape=(kernel.action_dim,), dtype=np.float32)
    return obs, act


def _bad_action(values: np.ndarray, shape: tuple[int, ...], tickers: Sequence[str],
                vector: bool) -> InvalidActionError:
    """The error for a non-finite action: names the first bad sub-env and asset (numpy (E, A) input)."""
    finite = np.isfinite(values)
    rows = np.flatnonzero(~finite.all(axis=1))
    e = int(rows[0])
    j = int(np.flatnonzero(~finite[e])[0])
    asset = tickers[j] if j < len(tickers) else "cash"
    where = f"sub-env {e}" if vector else "the action"
    more = f" ({len(rows)} sub-envs affected: {rows[:8].tolist()}{'...' if len(rows) > 8 else ''})" if vector else ""
    return InvalidActionError(
        f"step: {where} has a non-finite value {float(values[e, j])} at index {j} ({asset}){more}; actions "
        f"must be finite numbers of shape {shape} (a NaN/inf would poison cash and holdings)")


def check_actions(actions: Any, num_envs: int, action_dim: int, tickers: Sequence[str], vector: bool,
                  B: Backend | None = None) -> Array:
    """Validate a step's actions at the env boundary; returns them as an (E, A) array of the backend.

    Accepts numbers of shape (A,) or (1, A) for a single env, exactly (E, A) for a vector env;
    integer actions become float32. Refuses (one :class:`InvalidActionError` naming the sub-env and
    asset, before any state changes) a wrong shape, a non-numeric dtype (None, strings, objects,
    bool) and NaN / +-inf. Cost: one ``isfinite(...).all()`` pass over (E, A), measured in
    ``benchmarks/perf/env_throughput.py`` (``action_check`` records).
    """
    want = (num_envs, action_dim)
    shown = (action_dim,) if not vector else want
    if B is not None and B.name == "torch" and isinstance(actions, B.torch.Tensor):
        torch = B.torch
        a = actions
        if a.dtype == torch.bool or a.is_complex() or not (a.is_floating_point() or a.dtype in (
                torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise InvalidActionError(f"step: actions must be real numbers of shape {shown}, got a {a.dtype} tensor")
        if tuple(a.shape) != want and not (not vector and a.numel() == action_dim and a.dim() <= 2):
            raise InvalidActionError(f"step: actions must have shape {shown}, got {tuple(a.shape)}")
        a = a.reshape(want)
        if not a.is_floating_point():
            a = a.to(torch.float32)
        if not bool(torch.isfinite(a).all()):
            raise _bad_action(a.detach().cpu().numpy().astype(np.float64), shown, tickers, vector)
        return B.asarray(a)
    try:
        a = np.asarray(actions)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise InvalidActionError(f"step: actions must be numbers of shape {shown}: {exc}") from None
    if a.dtype.kind not in "fiu":
        what = "None / objects" if a.dtype.kind == "O" else f"dtype {a.dtype}"
        raise InvalidActionError(f"step: actions must be real numbers of shape {shown}, got {what}")
    if a.shape != want and not (not vector and a.size == action_dim and a.ndim <= 2):
        raise InvalidActionError(f"step: actions must have shape {shown}, got {a.shape}"
                                 + (" (a length-1 action is not broadcast)" if a.size == 1 and action_dim > 1 else ""))
    a = a.reshape(want)
    if a.dtype.kind != "f":
        a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise _bad_action(a, shown, tickers, vector)
    return a if B is None or B.name == "numpy" else B.asarray(a)


def _reset_options(options: dict | None, T: int) -> dict:
    options = dict(options or {})
    unknown = set(options) - {"start", "end", "cash", "holdings"}
    if unknown:
        raise ConfigError(f"reset(options=...): unknown keys {sorted(unknown)}; known: start, end, cash, holdings")
    return options


class TradingEnv(gym.Env):
    """One market environment (gymnasium.Env) on the shared kernel (E = 1, numpy backend).

    ``reset(seed=..., options={"start", "end", "cash", "holdings"})``: the seed fixes the random
    start / length draws; options pin the window or continue from a previous account state.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, arrays: MarketArrays, config: EnvConfig | None = None, **overrides: Any) -> None:
        cfg = config if config is not None else EnvConfig.for_family(overrides.pop("family", "stock_trading"), **overrides)
        if config is not None and overrides:
            from dataclasses import replace
            cfg = replace(config, **overrides)
        self.config = cfg = cfg.validate()
        self.arrays = arrays
        self.kernel = k = MarketKernel(arrays, cfg, num_envs=1, backend="numpy")
        self.config = k.cfg  # calendar "auto" resolved
        self.observation_space, self.action_space = _spaces(k)
        self.metadata = {**TradingEnv.metadata, **k.metadata()}
        self._fill = cfg.fill_label
        self._times = arrays.times
        self._tickers = tuple(arrays.tickers)
        self._done = True
        self._last = None
        self.asset_memory: list[float] = []
        self.date_memory: list[np.datetime64] = []

    # ------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """(observation (D,) float32, info) of a new episode (see the class docstring for ``options``)."""
        super().reset(seed=seed)
        k = self.kernel
        opts = _reset_options(options, k.T)
        start, end = draw_episode(self.np_random, k.T, self.config)
        if "start" in opts:
            start = int(opts["start"])
            end = k.T - 1 if "end" not in opts else int(opts["end"])
        elif "end" in opts:
            end = int(opts["end"])
        if not 0 <= start < end <= k.T - 1:
            raise ConfigError(f"reset: need 0 <= start < end <= {k.T - 1}, got start={start}, end={end}")
        cash = None if "cash" not in opts else np.array([float(opts["cash"])])
        hold = None if "holdings" not in opts else np.asarray(opts["holdings"], np.float64).reshape(1, k.N)
        obs = k.reset(None, np.array([start]), np.array([end]), cash, hold)
        self._done = False
        self._end = end
        v = float(k.value[0])
        self.asset_memory = [v]
        self.date_memory = [self._times[start]]
        info = {"portfolio_value": v, "cash": float(k.cash[0]), "holdings": k.h[0].copy(),
                "t": start, "date": self._times[start], "fill": self._fill,
                "bars_per_year": k.bars_per_year, "episode_end": end}
        return obs[0], info

    def step(self, action: Any) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """One bar for an action of shape (A,) (or (1, A)): (obs (D,) float32, reward, terminated,
        truncated, info). After the episode ended it returns the last observation again, reward 0."""
        if self._done:
            if self._last is None:
                raise ConfigError("step() before reset(): call env.reset() first")
            obs, info = self._last
            return obs, 0.0, True, False, info
        k = self.kernel
        a = check_actions(action, 1, k.action_dim, self._tickers, vector=False)
        obs, r, kinfo = k.step(a)
        t = int(kinfo["t"][0])
        v = float(kinfo["portfolio_value"][0])
        date = self._times[t]
        info = {
            "portfolio_value": v,
            "cash": float(kinfo["cash"][0]),
            "holdings": kinfo["holdings"][0],
            "weights": kinfo["weights"][0],
            "trades": kinfo["trades"][0],
            "costs": float(kinfo["costs"][0]),
            "costs_total": float(kinfo["costs_total"][0]),
            "turnover": float(kinfo["turnover"][0]),
            "t": t,
            "date": date,
            "fill": self._fill,
        }
        self.asset_memory.append(v)
        self.date_memory.append(date)
        term = t >= k.T - 1 or v <= 0
        trunc = not term and t >= self._end
        o = obs[0]
        if term or trunc:
            self._done = True
            self._last = (o, info)
        return o, float(r[0]), term, trunc, info

    def account_values(self) -> tuple[NDArray[np.datetime64], NDArray[np.float64]]:
        """(dates (T_ep,), account values (T_ep,)) of the current episode, start included."""
        return np.asarray(self.date_memory), np.asarray(self.asset_memory)

    def render(self) -> None:  # pragma: no cover - nothing to draw
        return None


class VecTradingEnv(VectorEnv):
    """E market environments stepped together by one kernel call (gymnasium.vector.VectorEnv).

    Autoreset: ``SAME_STEP`` (declared in ``metadata["autoreset_mode"]``): a sub-env that ends is
    reset inside the same ``step``; the returned observation is the new episode's first one, the
    last observation is in ``info["final_obs"]`` (E, D) (rows where ``info["_final_obs"]``), and the
    other info keys describe the step just taken (``info["final_info"]`` is the same dict). Sub-env i
    draws its windows from a generator seeded with ``seed + i``, like a single env reset with it.
    With ``backend="torch"`` observations, rewards, flags and info arrays are torch tensors on
    ``device``; actions may be tensors or arrays.
    """

    def __init__(self, arrays: MarketArrays, config: EnvConfig, num_envs: int = 1,
                 backend: str = "numpy", device: str = "cpu", check_actions: bool = True) -> None:
        """``check_actions=False`` skips :func:`check_actions` (only to measure its cost: a NaN
        action then poisons that sub-env's books)."""
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs!r}")
        self.config = config = config.validate()
        self.arrays = arrays
        self.num_envs = int(num_envs)
        self.kernel = k = MarketKernel(arrays, config, num_envs=num_envs, backend=backend, device=device)
        self.config = config = k.cfg  # calendar "auto" resolved
        self.B = k.B
        self.single_observation_space, self.single_action_space = _spaces(k)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": [], **k.metadata()}
        self._fill_arr = np.full(self.num_envs, config.fill_label, dtype=object)
        self._rngs: list[np.random.Generator] | None = None
        self._times = arrays.times
        self._tickers = tuple(arrays.tickers)
        self._check = bool(check_actions)

    def _draw(self, idx: NDArray[np.integer[Any]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(starts, ends) (M,) int64 of new episodes for the sub-envs ``idx`` (M,), from their generators."""
        T = self.kernel.T
        se = [draw_episode(self._rngs[i], T, self.config) for i in idx]
        return np.array([s for s, _ in se], np.int64), np.array([e for _, e in se], np.int64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Array, dict[str, Any]]:
        """(observations (E, D) float32, info of (E,) arrays) of new episodes in every sub-env."""
        if seed is not None:
            self._rngs = [seeding.np_random(int(seed) + i)[0] for i in range(self.num_envs)]
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        elif self._rngs is None:
            self._rngs = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        opts = _reset_options(options, self.kernel.T)
        idx = np.arange(self.num_envs)
        starts, ends = self._draw(idx)
        if "start" in opts:
            starts[:] = int(opts["start"])
            ends[:] = self.kernel.T - 1 if "end" not in opts else int(opts["end"])
        elif "end" in opts:
            ends[:] = int(opts["end"])
        k = self.kernel
        cash = None if "cash" not in opts else np.full(self.num_envs, float(opts["cash"]))
        hold = None if "holdings" not in opts else np.broadcast_to(
            np.asarray(opts["holdings"], np.float64), (self.num_envs, k.N)).copy()
        obs = k.reset(None, starts, ends, cash, hold)
        info = {"portfolio_value": k.value, "cash": k.cash, "holdings": k.h, "t": k.t,
                "date": self._times[starts], "fill": self._fill_arr}
        return obs, info

    def step(self, actions: Any) -> tuple[Array, Array, Array, Array, dict[str, Any]]:
        """One bar for (E, A) actions: (obs (E, D) float32, rewards (E,), terminated (E,) bool,
        truncated (E,) bool, info); arrays of the backend (torch tensors with ``backend="torch"``)."""
        B, k = self.B, self.kernel
        if self._check:
            a = check_actions(actions, self.num_envs, k.action_dim, self._tickers, vector=True, B=B)
        else:
            a = B.asarray(actions)
            if B.name == "numpy" and a.dtype.kind != "f":
                a = a.astype(np.float32)
        obs, r, info = k.step(a)
        term, trunc = k.flags()
        t_host = B.to_numpy(info["t"])
        info["date"] = self._times[t_host]
        info["fill"] = self._fill_arr
        done = term | trunc
        if B.any(done):
            done_np = B.to_numpy(done).astype(bool)
            idx = np.flatnonzero(done_np)
            final_obs = B.copy(obs)
            starts, ends = self._draw(idx)
            obs[B.asarray(idx)] = k.reset(idx, starts, ends)
            info = dict(info)
            info["final_obs"] = final_obs
            info["_final_obs"] = done_np
            info["final_info"] = {kk: v for kk, v in info.items() if kk not in ("final_obs", "_final_obs")}
            info["_final_info"] = done_np
        return obs, r, term, trunc, info

    def close_extras(self, **kwargs: Any) -> None:  # pragma: no cover
        pass


def make_env(arrays: MarketArrays, family: str = "stock_trading", config: EnvConfig | None = None,
             **overrides: Any) -> TradingEnv:
    """A single gymnasium env of ``family`` on ``arrays`` (``overrides``: :class:`EnvConfig` fields)."""
    if config is None:
        config = EnvConfig.for_family(family, **overrides)
        overrides = {}
    return TradingEnv(arrays, config, **overrides)


def make_vec_env(arrays: MarketArrays, family: str = "stock_trading", num_envs: int = 64,
                 backend: str = "numpy", device: str = "cpu", config: EnvConfig | None = None,
                 check_actions: bool = True, **overrides: Any) -> VecTradingEnv:
    """E envs of ``family`` stepped together (gymnasium VectorEnv, numpy or torch backend)."""
    if config is None:
        config = EnvConfig.for_family(family, **overrides)
    elif overrides:
        from dataclasses import replace
        config = replace(config, **overrides).validate()
    return VecTradingEnv(arrays, config, num_envs=num_envs, backend=backend, device=device,
                         check_actions=check_actions)
