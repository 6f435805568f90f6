"""Composable pieces of an env (TensorTrade-style): observation builders, reward schemes, slippage.

Each piece works on (E, ...) arrays of the kernel's backend (numpy or torch), so one instance
serves E environments at once. The kernel picks them from :class:`~meta.config.EnvConfig`; a new
piece only needs the same small interface (see ``docs/env.md``, "Adding a family").
"""

from __future__ import annotations

import numpy as np

from data_processors.arrays import MarketArrays

from .backend import Array, Backend
from .config import EnvConfig


# ---------------------------------------------------------------------------------------------
# observations
# ---------------------------------------------------------------------------------------------
def causal_zscore(x: np.ndarray) -> np.ndarray:
    """Expanding-window z-score along axis 0: row t uses rows 0..t only (no look-ahead).

    Args:
        x: (T, ...) float array. Returns the same shape, float64; the first row is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    n = np.arange(1, x.shape[0] + 1, dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    s1 = np.cumsum(x, axis=0)
    s2 = np.cumsum(x * x, axis=0)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    std = np.sqrt(var)
    z = np.where(std > 1e-12 * (1.0 + np.abs(mean)), (x - mean) / np.where(std > 0, std, 1.0), 0.0)
    return z


def fitted_zscore(x: np.ndarray, fit_bars: int, clip: float = 10.0) -> np.ndarray:
    """Z-score along axis 0 with the mean / std of the first ``fit_bars`` rows, frozen, clipped.

    Row t uses rows ``0..max(t, fit_bars - 1)``: with ``fit_bars`` = the training range's length,
    the validation / trade rows (t >= fit_bars) see only the training statistics and themselves,
    and every stage of a window sees the same scale. A (feature, asset) column that is constant
    over the fit rows is only centred. Values are clipped to ``[-clip, clip]``.

    Args:
        x: (T, ...) float array; fit_bars: 1..T. Returns the same shape, float64.
    """
    x = np.asarray(x, dtype=np.float64)
    n = int(min(max(int(fit_bars), 1), x.shape[0]))
    mean, std = feature_stats(x[:n])
    return np.clip((x - mean) / std, -clip, clip)


def feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (ddof 0) along axis 0; std 1 where a column is constant."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-12 * (1.0 + np.abs(mean)), std, 1.0)


class ObservationBuilder:
    """Flat float32 observations.

    Layout (``lookback == 1``, FinRL's): ``[cash, close_1..N, holdings_1..N, f1_1..f1_N, f2_1..]``
    -- dimension ``1 + 2N + K*N``. With ``lookback = L > 1``: ``[cash, holdings_1..N, window]``
    where ``window`` is L rows (oldest first) of ``[close_1..N, f1_1..f1_N, ...]`` (bars before the
    first bar repeat the first bar), dimension ``1 + N + L*(N + K*N)``.

    ``normalize=True``: cash -> cash / value, holdings -> weights (holding value / value),
    close -> log return of the bar, features -> expanding-window z-scores (causal), or, with
    ``cfg.obs_fit_bars = n``, z-scores with the statistics of the first n bars (the training range;
    :func:`fitted_zscore`). See ``docs/env.md``, "Observation scaling".
    """

    def __init__(self, arrays: MarketArrays, cfg: EnvConfig, B: Backend) -> None:
        T, N = arrays.close.shape
        K = arrays.features.shape[2]
        self.B, self.N, self.K, self.L = B, N, K, int(cfg.lookback)
        self.normalize = bool(cfg.normalize_obs)
        close = np.asarray(arrays.close, dtype=np.float64)
        #: how the observations are scaled (recorded with a trained agent; see docs/env.md)
        self.scaling: dict = {"normalize_obs": self.normalize,
                              "features": ("raw" if not self.normalize else
                                           "causal" if cfg.obs_fit_bars is None else "fitted")}
        if self.normalize and cfg.obs_fit_bars is not None:
            import hashlib

            n = int(min(int(cfg.obs_fit_bars), T))
            mean, std = feature_stats(np.asarray(arrays.features[:n], dtype=np.float64))
            self.scaling.update(fit_bars=n, clip=float(cfg.obs_clip), stats_sha256=hashlib.sha256(
                np.ascontiguousarray(mean).tobytes() + np.ascontiguousarray(std).tobytes()).hexdigest()[:16])
        if self.normalize:
            price = np.vstack([np.zeros((1, N)), np.log(close[1:] / close[:-1])])
            if not K:
                feats = np.zeros((T, N, 0))
            elif cfg.obs_fit_bars is not None:
                feats = fitted_zscore(arrays.features, int(cfg.obs_fit_bars), float(cfg.obs_clip))
            else:
                feats = causal_zscore(arrays.features)
        else:
            price = close
            feats = np.asarray(arrays.features, dtype=np.float64)
        feat_km = feats.transpose(0, 2, 1).reshape(T, K * N)  # feature-major: f1 for all N, f2 ...
        M = np.concatenate([price, feat_km], axis=1).astype(np.float32)
        if self.L == 1:  # the full FinRL row with 0 where cash / holdings go (filled per step)
            M = np.concatenate([np.zeros((T, 1), np.float32), price.astype(np.float32),
                                np.zeros((T, N), np.float32), feat_km.astype(np.float32)], axis=1)
        else:
            M = np.vstack([np.repeat(M[:1], self.L - 1, axis=0), M])
        self.M = B.asarray(np.ascontiguousarray(M))
        self.Dm = M.shape[1]
        self.dim = 1 + 2 * N + K * N if self.L == 1 else 1 + N + self.L * self.Dm
        self.offsets = B.arange(self.L)

    def __call__(self, t: Array, cash: Array, h: Array, value: Array, close_t: Array) -> Array:
        """Observations (E, dim) float32 at bars ``t`` (E,) int for cash (E,), holdings (E, N),
        portfolio values ``value`` (E,) and the closes ``close_t`` (E, N) of those bars."""
        B, N = self.B, self.N
        if self.normalize:
            cash = cash / value
            h = h * close_t / value[:, None]
        if self.L == 1:
            obs = B.rows(self.M, t)  # a fresh (E, D) copy of the market part
            obs[:, 0] = cash
            obs[:, 1 + N:1 + 2 * N] = h
            return obs
        win = self.M[t[:, None] + self.offsets].reshape(t.shape[0], self.L * self.Dm)
        return B.concat([cash[:, None], h, win], dtype=B.f32)


# ---------------------------------------------------------------------------------------------
# rewards
# ---------------------------------------------------------------------------------------------
class RewardScheme:
    """Base: ``reset(idx, v0)`` for the envs ``idx`` (int array) and ``__call__(v_prev, v_new)``.

    Shapes: ``idx`` (M,) int, ``v0`` (M,) their starting values; ``v_prev`` / ``v_new`` (E,)
    portfolio values before / after a step; the reward is (E,) of the kernel's float dtype.
    """

    def __init__(self, cfg: EnvConfig, B: Backend, E: int) -> None:
        self.cfg, self.B, self.E = cfg, B, E

    def reset(self, idx: Array, v0: Array) -> None:  # pragma: no cover - stateless default
        pass

    def __call__(self, v_prev: Array, v_new: Array) -> Array:
        raise NotImplementedError


class AssetChange(RewardScheme):
    """FinRL: (V_t - V_{t-1}) * reward_scaling."""

    def __init__(self, cfg: EnvConfig, B: Backend, E: int) -> None:
        super().__init__(cfg, B, E)
        self.scale = cfg.reward_scaling

    def __call__(self, v_prev: Array, v_new: Array) -> Array:
        return (v_new - v_prev) * self.scale


class LogReturn(RewardScheme):
    """log(V_t / V_{t-1})."""

    def __call__(self, v_prev: Array, v_new: Array) -> Array:
        return self.B.log(self.B.maximum(v_new, 1e-12) / v_prev)


class DifferentialSharpe(RewardScheme):
    """Moody & Saffell's differential Sharpe ratio of the simple return R_t = V_t / V_{t-1} - 1.

    A_t = A + eta (R - A), B_t = B + eta (R^2 - B),
    D_t = (B dA - A dB / 2) / (B - A^2)^{3/2} with dA = R - A, dB = R^2 - B (previous A, B);
    0 while B - A^2 is ~0 (the first steps).
    """

    def __init__(self, cfg: EnvConfig, B: Backend, E: int) -> None:
        super().__init__(cfg, B, E)
        self.A = B.zeros(E)
        self.Bm = B.zeros(E)

    def reset(self, idx: Array, v0: Array) -> None:
        self.A[idx] = 0.0
        self.Bm[idx] = 0.0

    def __call__(self, v_prev: Array, v_new: Array) -> Array:
        B, eta = self.B, self.cfg.diff_sharpe_eta
        R = v_new / v_prev - 1.0
        dA = R - self.A
        dB = R * R - self.Bm
        var = self.Bm - self.A * self.A
        ok = var > 1e-12
        D = B.where(ok, (self.Bm * dA - 0.5 * self.A * dB) / B.where(ok, var, 1.0) ** 1.5, 0.0)
        self.A = self.A + eta * dA
        self.Bm = self.Bm + eta * dB
        return D


class DrawdownPenalised(RewardScheme):
    """log(V_t / V_{t-1}) - drawdown_penalty * DD_t, DD_t = 1 - V_t / max_{s<=t} V_s."""

    def __init__(self, cfg: EnvConfig, B: Backend, E: int) -> None:
        super().__init__(cfg, B, E)
        self.peak = B.zeros(E)

    def reset(self, idx: Array, v0: Array) -> None:
        self.peak[idx] = v0

    def __call__(self, v_prev: Array, v_new: Array) -> Array:
        B = self.B
        self.peak = B.maximum(self.peak, v_new)
        dd = 1.0 - v_new / self.peak
        return B.log(B.maximum(v_new, 1e-12) / v_prev) - self.cfg.drawdown_penalty * dd


REWARD_SCHEMES = {
    "asset_change": AssetChange,
    "log_return": LogReturn,
    "diff_sharpe": DifferentialSharpe,
    "drawdown_penalised": DrawdownPenalised,
}


# ---------------------------------------------------------------------------------------------
# slippage / impact
# ---------------------------------------------------------------------------------------------
class Slippage:
    """Execution prices for buys and sells.

    * ``none``: the fill price.
    * ``fixed``: buys at ``p (1 + bps/1e4)``, sells at ``p (1 - bps/1e4)``.
    * ``volume``: square-root impact on the *requested* quantity q (before the cash limit):
      ``p (1 +- min(impact_coef * sqrt(q / bar volume), 0.5))`` (+ the fixed bps, if any).
    """

    def __init__(self, cfg: EnvConfig, B: Backend) -> None:
        self.kind = cfg.slippage
        self.B = B
        self.bps = float(cfg.slippage_bps) / 1e4 if cfg.slippage != "none" else 0.0
        self.coef = float(cfg.impact_coef)

    def prices(self, px: Array, q_buy: Array | None, q_sell: Array,
               vol: Array | None) -> tuple[Array, Array]:
        """(buy price, sell price), each (E, N), for fill prices ``px`` (E, N).

        ``q_buy`` / ``q_sell`` (E, N) requested shares and ``vol`` (E, N) the bar's volume are read
        by ``volume`` slippage only (``q_buy`` / ``vol`` may be None for the other kinds).
        """
        if self.kind == "none":
            return px, px
        if self.kind == "fixed":
            return px * (1.0 + self.bps), px * (1.0 - self.bps)
        B = self.B
        vol = B.maximum(vol, 1e-12)
        ib = B.minimum(self.coef * B.sqrt(q_buy / vol), 0.5)
        is_ = B.minimum(self.coef * B.sqrt(q_sell / vol), 0.5)
        return px * (1.0 + self.bps + ib), px * (1.0 - self.bps - is_)
