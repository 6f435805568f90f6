"""Small hand-made :class:`MarketArrays` for tests, examples and throughput checks (no files)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_processors.arrays import MarketArrays


def synthetic_arrays(T: int = 64, N: int = 4, K: int = 2, seed: int = 0, *, freq: str = "B",
                     start: str = "2020-01-02", ashare: bool = False, tickers: tuple[str, ...] | None = None,
                     turbulence: bool = False, vol: float = 0.02) -> MarketArrays:
    """Geometric random-walk prices (T, N), opens near the previous close, K noise features.

    ``ashare=True`` adds ``preclose`` (the previous close), ``tradable`` (a few suspended bars)
    and ``is_st``; daily moves are clipped to +-10% and some bars sit exactly at the limit.
    """
    r = np.random.default_rng(seed)
    ret = r.normal(0.0, vol, (T, N))
    if ashare:
        ret = np.clip(ret, -0.0953, 0.0953)
    close = 10.0 * np.exp(np.cumsum(ret, axis=0)) * r.uniform(0.5, 5.0, N)
    close = np.round(close, 2)
    prev = np.vstack([close[:1], close[:-1]])
    op = np.round(prev * np.exp(r.normal(0.0, vol / 3, (T, N))), 2)
    preclose = tradable = is_st = None
    if ashare:
        preclose = prev.copy()
        preclose[0] = np.round(close[0] / (1 + ret[0]), 2)
        lim_up = np.floor(preclose * 1.1 * 100 + 0.5) / 100
        lim_dn = np.floor(preclose * 0.9 * 100 + 0.5) / 100
        op = np.clip(op, lim_dn, lim_up)
        # some bars open (and close) sealed at the limit
        sealed_up = r.random((T, N)) < 0.08
        sealed_dn = (r.random((T, N)) < 0.08) & ~sealed_up
        op = np.where(sealed_up, lim_up, np.where(sealed_dn, lim_dn, op))
        close = np.where(sealed_up, lim_up, np.where(sealed_dn, lim_dn, close))
        tradable = r.random((T, N)) > 0.05
        is_st = np.zeros((T, N), bool)
        if N > 1:
            is_st[:, -1] = True
    high = np.maximum(op, close) * 1.01
    low = np.minimum(op, close) * 0.99
    volume = r.uniform(1e4, 1e6, (T, N))
    feats = r.normal(size=(T, N, K))
    times = pd.date_range(start, periods=T, freq=freq).to_numpy()
    if tickers is None:
        tickers = tuple(f"sh.6000{i:02d}" if ashare else f"T{i}" for i in range(N))
    f32 = lambda a: None if a is None else np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return MarketArrays(
        times=times, tickers=tuple(tickers), close=f32(close), open=f32(op), high=f32(high), low=f32(low),
        volume=f32(volume), features=f32(feats), feature_names=tuple(f"f{k}" for k in range(K)),
        turbulence=f32(np.abs(r.normal(0, 50, T))) if turbulence else None,
        preclose=f32(preclose), tradable=tradable, is_st=is_st, meta={"name": "synthetic"},
    )
