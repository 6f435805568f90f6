"""Financial turbulence index (Kritzman & Li 2010), as FinRL uses it.

``turbulence[t] = (r_t - mu_t)' pinv(Sigma_t) (r_t - mu_t)`` where ``r_t`` is the (N,) vector of the
day's simple returns and ``mu_t``, ``Sigma_t`` are the mean and sample covariance (ddof=1) of the
``window`` daily returns *before* t (``r_{t-window} .. r_{t-1}``): the window ends the day before
t, so day t's value uses prices up to day t only.

Vectorised: rolling sums come from prefix sums of ``r`` and of the outer products ``r r'``
(``(T, N, N)``), and the distances of all days are solved at once with a batched LU solve
(``pinv = inv`` for a non-singular covariance); a day whose covariance is singular falls back to
``pinv`` (eigendecomposition, numpy's ``rcond = 1e-15`` cut-off).

Assets with missing history (late listings: NaN closes before their first bar) are handled like
FinRL's ``calculate_turbulence``: on day t an asset takes part only if it has a return on t and
on every day of the window; otherwise it is left out of that day's distance. FinRL also drops
the leading rows of its window that every asset lacks; here the window is always ``window``
returns long, so the index starts one day later than FinRL's (day ``window + 1``, the first day
with ``window`` returns before it). Differences from FinRL, on purpose:

* FinRL zeroes the first two positive values ("avoid large outlier"); we don't.
* Days without enough history are 0.0 (FinRL's convention, so the column has no NaN).

The ICAIF-2020 paper's published series was computed differently (``mode="icaif2020"``):
distances of the *adjusted price levels* (not returns) from the mean/covariance of *all*
previous days (an expanding window from the first date), with ``inv``. See
``docs/features.md`` for how closely each variant tracks that series.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError, DataValidationError

#: FinRL's cut-off for np.linalg.pinv (relative to the largest singular value).
PINV_RCOND: float = 1e-15


def _pinv_distance(dev: np.ndarray, cov: np.ndarray, rcond: float = PINV_RCOND) -> float:
    """``dev' pinv(cov) dev`` for one (K,) deviation and (K, K) symmetric PSD matrix (eigh)."""
    lam, vec = np.linalg.eigh(cov)
    proj = vec.T @ dev
    keep = lam > rcond * np.abs(lam).max()
    return float(np.sum(proj[keep] ** 2 / lam[keep]))


def _batched_mahalanobis(dev: np.ndarray, cov: np.ndarray, rcond: float = PINV_RCOND) -> np.ndarray:
    """``dev[m]' pinv(cov[m]) dev[m]`` for every m.

    Fast path: one batched LU solve ``cov[m] y = dev[m]`` and ``dev[m] . y`` (``pinv = inv`` for
    a non-singular matrix). Days whose matrix is exactly singular (fewer returns than assets, a
    constant price, duplicated assets) fall back, one matrix at a time, to ``pinv`` through
    ``eigh``. Each matrix is solved on its own, so a day's value never depends on other days.

    Args:
        dev: (M, K) deviations.
        cov: (M, K, K) symmetric positive semi-definite matrices.

    Returns:
        (M,) distances.
    """
    M = dev.shape[0]
    out = np.empty(M)
    chunk = 1024
    for lo in range(0, M, chunk):
        sl = slice(lo, min(lo + chunk, M))
        try:
            y = np.linalg.solve(cov[sl], dev[sl][:, :, None])[:, :, 0]
            out[sl] = np.einsum("mk,mk->m", dev[sl], y)
        except np.linalg.LinAlgError:
            for m in range(sl.start, sl.stop):
                try:
                    out[m] = float(dev[m] @ np.linalg.solve(cov[m], dev[m]))
                except np.linalg.LinAlgError:
                    out[m] = _pinv_distance(dev[m], cov[m], rcond)
    return out


def turbulence_from_returns(returns: np.ndarray, window: int = 252) -> np.ndarray:
    """Turbulence of a (T, N) return panel (NaN = no return that day).

    Args:
        returns: (T, N) simple returns; row t holds the returns from t-1 to t.
        window: number of past returns in the mean/covariance window.

    Returns:
        (T,) float64 turbulence, 0.0 where fewer than ``window`` past returns exist for every
        asset or no asset qualifies.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise DataValidationError(f"turbulence: returns must be (T, N), got shape {r.shape}")
    if window < 2:
        raise ConfigError(f"turbulence_window must be >= 2, got {window}")
    T, N = r.shape
    out = np.zeros(T)
    if T <= window:
        return out
    finite = np.isfinite(r)
    # cnt[t, i] = number of finite returns of asset i in rows [t-window, t)
    cf = np.concatenate([np.zeros((1, N), dtype=np.int64), np.cumsum(finite, axis=0)])
    t_idx = np.arange(window, T)
    cnt = cf[t_idx] - cf[t_idx - window]                       # (T-window, N)
    eligible = (cnt == window) & finite[t_idx]                 # asset takes part on day t
    has_any = eligible.any(axis=1)
    if not has_any.any():
        return out
    x = np.where(finite, r, 0.0)
    # prefix sums (sequential, so a value at t never depends on rows after t)
    s1 = np.concatenate([np.zeros((1, N)), np.cumsum(x, axis=0)])                        # (T+1, N)
    s2 = np.zeros((T + 1, N, N))
    np.multiply(x[:, :, None], x[:, None, :], out=s2[1:])
    np.cumsum(s2[1:], axis=0, out=s2[1:])                                                 # (T+1, N, N)
    # one pass per distinct set of eligible assets (few: they change only at listings)
    days = t_idx[has_any]
    if eligible[has_any].all():  # the usual full panel: one set of assets
        masks, inverse = np.ones((1, N), dtype=bool), np.zeros(len(days), dtype=np.int64)
    else:
        masks, inverse = np.unique(eligible[has_any], axis=0, return_inverse=True)
    for k, mask in enumerate(masks):
        cols = np.flatnonzero(mask)
        t = days[inverse.ravel() == k]
        if len(cols) == N and t[-1] - t[0] + 1 == len(t):
            # every asset on consecutive days (the usual case): slices, no gather
            a, b = t[0], t[-1] + 1
            sum1 = s1[a:b] - s1[a - window:b - window]                                    # (M, K)
            sum2 = s2[a:b] - s2[a - window:b - window]                                    # (M, K, K)
        else:
            sum1 = s1[np.ix_(t, cols)] - s1[np.ix_(t - window, cols)]
            sum2 = s2[np.ix_(t, cols, cols)] - s2[np.ix_(t - window, cols, cols)]
        mu = sum1 / window
        sum2 -= np.einsum("mi,mj->mij", sum1, mu)      # window * mu mu'
        sum2 /= window - 1                              # the covariance, in place
        cov = sum2
        dev = r[np.ix_(t, cols)] - mu
        out[t] = _batched_mahalanobis(dev, cov)
    return out


def turbulence_icaif2020(prices: np.ndarray, start: int = 252) -> np.ndarray:
    """The ICAIF-2020 paper's variant: price levels against all previous days (expanding window).

    ``turb[t] = (p_t - mean(p_0..p_{t-1}))' inv(cov(p_0..p_{t-1})) (p_t - mean(...))`` for
    ``t >= start`` (0 before; the paper also zeroed its first two positive values, which we
    don't). Still uses the past only. Vectorised through prefix sums, with the batched pinv.

    Args:
        prices: (T, N) adjusted close prices without NaN.
        start: first day with a value.

    Returns:
        (T,) float64.
    """
    p = np.asarray(prices, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise DataValidationError("turbulence (icaif2020): prices must be a (T, N) panel without NaN")
    T, N = p.shape
    out = np.zeros(T)
    if T <= start:
        return out
    # centre on the first row (a past-only constant for every t >= 1) against cancellation
    x = p - p[0]
    s1 = np.concatenate([np.zeros((1, N)), np.cumsum(x, axis=0)])
    s2 = np.concatenate([np.zeros((1, N, N)), np.cumsum(x[:, :, None] * x[:, None, :], axis=0)])
    t = np.arange(start, T)
    n = t.astype(np.float64)                                                  # rows 0..t-1
    mu = s1[t] / n[:, None]
    cov = (s2[t] - n[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (n - 1)[:, None, None]
    out[t] = _batched_mahalanobis(x[t] - mu, cov)
    return out


def compute_turbulence(
    df: pd.DataFrame,
    *,
    window: int = 252,
    price_column: str = "close",
    mode: str = "returns",
) -> pd.Series:
    """Daily turbulence index of a long frame.

    Args:
        df: long frame with ``time``, ``tic`` and ``price_column`` (one row per time and ticker;
            missing (time, tic) rows or NaN prices mean "no price").
        window: trailing window in trading days (``mode="returns"``); in ``"icaif2020"`` mode
            the first day with a value.
        price_column: ``close`` (default) or ``adjcp`` (the paper used adjusted close).
        mode: ``"returns"`` (FinRL's definition, default) or ``"icaif2020"`` (the paper's).

    Returns:
        Series indexed by the sorted unique times, named ``turbulence``, shape (T,).
    """
    for c in ("time", "tic", price_column):
        if c not in df.columns:
            raise DataValidationError(f"turbulence: the frame lacks column {c!r}")
    if df.duplicated(["time", "tic"]).any():
        row = int(np.flatnonzero(df.duplicated(["time", "tic"]).to_numpy())[0])
        raise DataValidationError(
            f"turbulence: duplicate (time, tic) key {df['time'].iloc[row]}, {df['tic'].iloc[row]!r} (row {row})")
    prices = df.pivot(index="time", columns="tic", values=price_column).sort_index()
    p = prices.to_numpy(dtype=np.float64, na_value=np.nan)
    if mode == "returns":
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.full_like(p, np.nan)
            r[1:] = p[1:] / p[:-1] - 1.0
        values = turbulence_from_returns(r, window)
    elif mode == "icaif2020":
        # the paper's panel was complete: keep the assets priced on every day
        values = turbulence_icaif2020(p[:, np.isfinite(p).all(axis=0)], start=window)
    else:
        raise ConfigError(f"turbulence: unknown mode {mode!r}; choose 'returns' or 'icaif2020'")
    return pd.Series(values, index=prices.index, name="turbulence")
