"""The high-level router: its per-episode state, its masks, and the gymnasium env it is trained on.

The router picks which expert acts for the next ``segment`` (M) steps. Its observation is the
encoded market state ``(H,)`` followed by four statistics per expert ``(4K,)``: the expert's
V-trace value estimate ``V_k(s)``, its trailing Sharpe ratio (annualised, clipped to [-5, 5], over
the last ``sharpe_window`` steps it acted), the fraction of the last segments it was used
(recency), and its mask bit. Masks disable an expert that

* is cooling down: after ``max_consecutive`` consecutive segments it rests ``cooldown`` segments;
* is failing: its trailing Sharpe over at least ``fail_min_steps`` acted steps is below
  ``fail_sharpe``.

If that would mask every expert, all are allowed (the mask is never empty). With K = 1 nothing
is masked.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from agents.moe.agent import MoECore

__all__ = ["RouterState", "RouterEnv", "segment_benchmark", "skill_features"]

STATS_PER_EXPERT = 4


def skill_features(info: dict, n_assets: int) -> np.ndarray:
    """Portfolio weights after a step: ``(N + 1,)`` = asset weights and cash weight (sum 1)."""
    w = np.asarray(info.get("weights", np.zeros(n_assets)), dtype=np.float32).reshape(-1)[:n_assets]
    pv = float(info.get("portfolio_value", 0.0))
    cash = float(info.get("cash", 0.0)) / pv if pv > 0 else float(1.0 - w.sum())
    return np.concatenate([w, [cash]]).astype(np.float32)


def segment_benchmark(close: np.ndarray | None, t0: int, t1: int) -> float:
    """Log return of the equal-weight buy-and-hold of all assets from bar t0 to bar t1.

    ``close (T, N)``; 0 when no prices are known. ``log(mean_i close[t1, i] / close[t0, i])``.
    """
    if close is None or t1 <= t0:
        return 0.0
    rel = close[t1] / close[t0]
    rel = rel[np.isfinite(rel)]
    return float(np.log(rel.mean())) if rel.size else 0.0


class RouterState:
    """Per-episode state of the hierarchy: the raw observation window ``(L, D)`` (normalised only when
    encoded), the segment, the expert stats."""

    def __init__(self, n_experts: int, lookback: int, cfg: dict) -> None:
        self.K, self.L = int(n_experts), int(lookback)
        self.M = int(cfg["segment"])
        self.max_consecutive, self.cooldown = int(cfg["max_consecutive"]), int(cfg["cooldown"])
        self.fail_sharpe, self.fail_min = float(cfg["fail_sharpe"]), int(cfg["fail_min_steps"])
        self.sharpe_window = int(cfg["sharpe_window"])
        self.bars_per_year = 252.0
        self.window: np.ndarray | None = None
        self.reset_stats()

    def reset_stats(self) -> None:
        self.returns = [deque(maxlen=self.sharpe_window) for _ in range(self.K)]
        self.recent = deque(maxlen=10)
        self.cool_left = np.zeros(self.K, np.int64)
        self.current = -1
        self.consecutive = 0
        self.steps_left = 0
        self.usage = np.zeros(self.K, np.int64)  # steps each expert acted
        self.last_t: int | None = None
        self.last_value: float | None = None

    def start_episode(self, obs: np.ndarray) -> None:
        """New episode: the window is L copies of the first observation. ``obs (D,)``."""
        self.window = np.repeat(np.asarray(obs, np.float32)[None], self.L, 0)
        self.reset_stats()

    def push(self, obs: np.ndarray) -> None:
        self.window = np.concatenate([self.window[1:], np.asarray(obs, np.float32)[None]], 0)

    def record_return(self, expert: int, r: float) -> None:
        if 0 <= expert < self.K and np.isfinite(r):
            self.returns[expert].append(float(r))

    def sharpe(self) -> np.ndarray:
        """Trailing annualised Sharpe ``(K,)`` of the steps each expert acted; NaN if < 2 steps."""
        out = np.full(self.K, np.nan)
        for k, r in enumerate(self.returns):
            if len(r) >= 2:
                a = np.asarray(r)
                sd = a.std(ddof=1)
                out[k] = a.mean() / sd * np.sqrt(self.bars_per_year) if sd > 0 else np.sign(a.mean()) * 5.0
        return out

    def masks(self) -> np.ndarray:
        """``(K,)`` bool, True = allowed."""
        if self.K == 1:
            return np.ones(1, bool)
        ok = self.cool_left <= 0
        sh = self.sharpe()
        n = np.array([len(r) for r in self.returns])
        failing = (n >= self.fail_min) & np.nan_to_num(sh < self.fail_sharpe, nan=False)
        ok &= ~failing
        return ok if ok.any() else np.ones(self.K, bool)

    def stats(self, values: np.ndarray) -> np.ndarray:
        """``(4K,)``: V_k(s), trailing Sharpe (clipped, 0 if unknown), recency, mask bit."""
        sh = np.clip(np.nan_to_num(self.sharpe(), nan=0.0), -5, 5)
        rec = np.zeros(self.K)
        for k in self.recent:
            rec[k] += 1.0 / max(1, len(self.recent))
        return np.stack([values, sh, rec, self.masks().astype(np.float64)], 1).reshape(-1).astype(np.float32)

    def choose(self, expert: int) -> None:
        """Start a segment with ``expert``; update the cool-down counters."""
        self.cool_left = np.maximum(self.cool_left - 1, 0)
        self.consecutive = self.consecutive + 1 if expert == self.current else 1
        self.current = int(expert)
        self.recent.append(int(expert))
        self.steps_left = self.M
        if self.K > 1 and self.consecutive >= self.max_consecutive:
            self.cool_left[expert] = self.cooldown  # rests the next `cooldown` decisions
            self.consecutive = 0


class RouterEnv(gym.Env):
    """A gymnasium env whose action is an expert index; one step = M steps of the market env.

    Reward (per segment ``[t0, t1]``)::

        r = router_reward_scale * (log(V_t1 / V_t0) - log(EW buy-and-hold relative over t0..t1))
            - kl_coef * mean_{steps} KL(N_chosen || N_bar)

    The KL (pre-squash Gaussians, moment-matched mean of the experts) is a penalty: deviating
    from the experts' consensus must be paid for by excess return.
    ``action_masks()`` gives the masks for MaskablePPO.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, core: "MoECore", env: gym.Env, cfg: dict, seed: int, training: bool = True) -> None:
        super().__init__()
        self.core, self.env, self.cfg, self.training = core, env, cfg, training
        K = core.K
        self.action_space = gym.spaces.Discrete(K)
        dim = core.feat_dim + STATS_PER_EXPERT * K
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.state = RouterState(K, core.lookback, cfg)
        self._seed: int | None = int(seed)
        self._close = getattr(getattr(env, "unwrapped", env), "arrays", None)
        self._close = None if self._close is None else np.asarray(self._close.close, np.float64)
        self._obs = None
        self._info: dict = {}
        self.on_env_step = None  # callable(n_steps) set by the agent during training

    def action_masks(self) -> np.ndarray:
        return self.state.masks()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        s = self._seed if seed is None else seed
        self._seed = None
        obs, info = self.env.reset(seed=s)
        self._obs, self._info = np.asarray(obs, np.float32), info
        if self.training:
            self.core.observe(self._obs)
            self.core.new_episode()
        self.state.start_episode(self._obs)
        self.state.bars_per_year = float(info.get("bars_per_year", 252.0) or 252.0)
        return self.core.router_obs(self.state), {}

    def step(self, action):
        k = int(action)
        st = self.state
        st.choose(k)
        v0 = float(self._info.get("portfolio_value", 1.0))
        t0 = int(self._info.get("t", 0))
        kl_sum, n, done, truncated = 0.0, 0, False, False
        for _ in range(st.M):
            a, u, logp, kl = self.core.expert_step(st.window, k, deterministic=not self.training)
            obs2, r, term, trunc, info = self.env.step(a)
            obs2 = np.asarray(obs2, np.float32)
            if self.training:
                self.core.store(self._obs, obs2, a, u, logp, r, term, k, skill_features(info, self.core.n_assets))
            v1 = float(info.get("portfolio_value", v0))
            prev = float(self._info.get("portfolio_value", v1))
            st.record_return(k, np.log(v1 / prev) if prev > 0 and v1 > 0 else 0.0)
            st.usage[k] += 1
            if self.training:
                self.core.observe(obs2)
            st.push(obs2)
            self._obs, self._info = obs2, info
            kl_sum += kl
            n += 1
            if self.on_env_step is not None:
                self.on_env_step(1)
            if term or trunc:
                done, truncated = bool(term), bool(trunc) and not term
                break
        v1 = float(self._info.get("portfolio_value", v0))
        t1 = int(self._info.get("t", t0 + n))
        excess = (np.log(v1 / v0) if v0 > 0 and v1 > 0 else 0.0) - segment_benchmark(self._close, t0, t1)
        reward = float(self.cfg["router_reward_scale"]) * excess - float(self.cfg["kl_coef"]) * kl_sum / max(n, 1)
        return self.core.router_obs(st), reward, done, truncated, {"excess": excess, "kl": kl_sum / max(n, 1)}
