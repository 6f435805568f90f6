"""No look-ahead: the observation at bar t is bitwise the same when every bar after t is replaced
by random values (every family, both fill modes, raw and normalised observations)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from meta import make_env
from meta.config import FAMILIES as _ALL_FAMILIES
from meta.testing import synthetic_arrays

FAMILIES = tuple(_ALL_FAMILIES)  # every family meta.config defines: a new one is tested too


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


# ---------------------------------------------------------------------------------------------
# observation scaling fitted on the training range (normalize_obs + obs_fit_bars; docs/env.md)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lookback", [1, 3])
def test_fitted_scaling_at_t_ignores_data_after_t(family, lookback):
    """With the statistics fitted on the first n bars, the observation at any bar t >= n - 1 (the
    validation / trade bars of a window) is bitwise unchanged when every bar after t changes."""
    T, N, n = 24, 3, 10
    arrays = synthetic_arrays(T=T, N=N, K=2, seed=5, ashare=family == "ashare")
    kw = dict(normalize_obs=True, obs_fit_bars=n, lookback=lookback)
    acts = np.random.default_rng(2).uniform(-1, 1, (T, N)).astype(np.float32)
    for t in (n - 1, n + 4, T - 2):
        ref = make_env(arrays, family, **kw)
        alt = make_env(_scramble_after(arrays, t, seed=t), family, **kw)
        o1, _ = ref.reset(seed=0, options={"start": n - 1})
        o2, _ = alt.reset(seed=0, options={"start": n - 1})
        for s in range(n - 1, t):
            o1, *_ = ref.step(acts[s])
            o2, *_ = alt.step(acts[s])
        assert o1.tobytes() == o2.tobytes(), f"obs at bar {t} depends on later data"
        o1, *_ = ref.step(acts[t])
        o2, *_ = alt.step(acts[t])
        assert o1.tobytes() != o2.tobytes()  # not vacuous: the next bar is seen


def test_fitted_scaling_is_the_training_ranges():
    """The features are z-scored with the fit bars' mean / std (per feature and asset), clipped."""
    from meta.schemes import ObservationBuilder, fitted_zscore
    from meta.config import EnvConfig
    from meta.backend import NumpyBackend

    arrays = synthetic_arrays(T=30, N=2, K=2, seed=3)
    z = fitted_zscore(arrays.features, 12, clip=10.0)
    f = np.asarray(arrays.features, dtype=np.float64)
    np.testing.assert_allclose(z[:12].mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z[:12].std(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(z[20], np.clip((f[20] - f[:12].mean(0)) / f[:12].std(0), -10, 10))
    cfg = EnvConfig.for_family("stock_trading", normalize_obs=True, obs_fit_bars=12)
    ob = ObservationBuilder(arrays, cfg, NumpyBackend())
    # feature-major block after [cash, returns, holdings]: f1 of both assets, then f2
    np.testing.assert_allclose(ob.M[20, 1 + 4:], z[20].T.reshape(-1), rtol=1e-6)


def test_walk_forward_stages_share_the_training_scale():
    """In the walk-forward loop the training, validation and trade envs scale a bar identically
    (statistics of the window's training range), and a trade observation ignores later bars."""
    from benchmarks.loop import WalkForward
    from benchmarks.windows import Window

    arrays = synthetic_arrays(T=60, N=3, K=2, seed=6)
    w = Window(index=0, train=(0, 30), validation=(30, 40), trade=(40, 60))
    cfg = {"env": {"family": "stock_trading", "normalize_obs": True}, "agents": {}}
    wf = WalkForward(arrays, cfg, "unused", windows=[w])
    assert wf._env_overrides(w)["obs_fit_bars"] == 30
    trade_env, start = wf._trade_env(w, None)
    from benchmarks.loop import build_env
    train_env = build_env(arrays.slice(0, 30), wf._env_overrides(w))
    np.testing.assert_array_equal(trade_env.kernel.obs_builder.M[:30], train_env.kernel.obs_builder.M)
    t = 47
    alt = WalkForward(_scramble_after(arrays, t, seed=1), cfg, "unused", windows=[w])
    alt_env, _ = alt._trade_env(w, None)
    a = np.zeros(3, np.float32)
    o1, _ = trade_env.reset(seed=0, options={"start": start})
    o2, _ = alt_env.reset(seed=0, options={"start": start})
    for _ in range(t - 40):
        o1, *_ = trade_env.step(a)
        o2, *_ = alt_env.step(a)
    assert o1.tobytes() == o2.tobytes()
