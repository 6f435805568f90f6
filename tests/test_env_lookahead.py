"""No look-ahead: the observation at bar t is bitwise the same when every bar after t is replaced
by random values (every family, both fill modes, raw and normalised observations)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from meta import make_env
from meta.testing import synthetic_arrays

FAMILIES = ("stock_trading", "portfolio", "crypto", "forex", "ashare")


def _scramble_after(arrays, t: int, seed: int):
    """Every time-indexed array, rows > t replaced by random (valid) values; times kept."""
    r = np.random.default_rng(seed)
    T, N = arrays.close.shape

    def pos(a):
        b = a.copy()
        b[t + 1:] = r.uniform(1.0, 500.0, b[t + 1:].shape).astype(b.dtype)
        return b

    feats = arrays.features.copy()
    feats[t + 1:] = r.normal(0, 100, feats[t + 1:].shape).astype(feats.dtype)
    out = replace(arrays, close=pos(arrays.close), open=pos(arrays.open), high=pos(arrays.high),
                  low=pos(arrays.low), volume=pos(arrays.volume), features=feats)
    if arrays.turbulence is not None:
        out = replace(out, turbulence=pos(arrays.turbulence))
    if arrays.preclose is not None:
        out = replace(out, preclose=pos(arrays.preclose))
    if arrays.tradable is not None:
        tr = arrays.tradable.copy()
        tr[t + 1:] = r.random(tr[t + 1:].shape) > 0.5
        st = arrays.is_st.copy()
        st[t + 1:] = r.random(st[t + 1:].shape) > 0.5
        out = replace(out, tradable=tr, is_st=st)
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fill", ["open", "close"])
def test_observation_at_t_ignores_data_after_t(family, fill):
    T, N = 16, 3
    arrays = synthetic_arrays(T=T, N=N, K=2, seed=4, ashare=family == "ashare",
                              turbulence=family == "stock_trading")
    extra = dict(turbulence_threshold=45.0) if family == "stock_trading" else {}
    rng = np.random.default_rng(1)
    for variant in (dict(), dict(lookback=3, normalize_obs=True, reward="diff_sharpe",
                                 slippage="volume", max_participation=0.5)):
        kw = dict(fill=fill, **extra, **variant)
        if family == "portfolio" and "slippage" in kw:
            kw.update(slippage="fixed", slippage_bps=3.0)
        acts = rng.uniform(-1, 1, (T, N)).astype(np.float32)
        for t in (0, 3, 9, T - 2):
            ref = make_env(arrays, family, **kw)
            alt = make_env(_scramble_after(arrays, t, seed=t), family, **kw)
            o1, i1 = ref.reset(seed=0)
            o2, i2 = alt.reset(seed=0)
            np.testing.assert_array_equal(o1, o2)
            for s in range(t):
                o1, r1, *_ = ref.step(acts[s])
                o2, r2, *_ = alt.step(acts[s])
                assert r1 == r2
            assert o1.tobytes() == o2.tobytes(), f"obs at bar {t} depends on later data"
            # and the next step does see the new bar: the check is not vacuous
            if t < T - 2:
                o1, *_ = ref.step(acts[t])
                o2, *_ = alt.step(acts[t])
                assert o1.tobytes() != o2.tobytes()
