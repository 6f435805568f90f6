"""The market kernel: FinRL's greedy buy rule, hand-computed steps, vector == single, numpy == torch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from finmeta.errors import ConfigError, DataValidationError
from meta import EnvConfig, MarketKernel, make_env, make_vec_env
from meta.config import FAMILIES as _ALL_FAMILIES
from meta.testing import synthetic_arrays

FAMILIES = tuple(_ALL_FAMILIES)  # every family meta.config defines: a new one is tested too


def _reference_greedy(want, price, prio, cash, rate, lot, min_fee):
    """FinRL's sequential rule, one asset at a time in descending priority (plain Python), plus the
    documented guard: an order whose cost rounds above the cash left is one lot smaller."""
    got = np.zeros_like(want)
    order = np.argsort(prio, kind="stable")[::-1]
    for j in order:
        if want[j] <= 0:
            continue
        u = price[j] * (1 + rate)
        if lot > 0:
            q = (cash // (u * lot)) * lot
            if min_fee > 0:
                q = min(q, ((cash - min_fee) // (price[j] * lot)) * lot)
        else:
            q = cash / u
        q = max(min(q, want[j]), 0.0)
        v = price[j] * q
        cost = v * (1 + rate) if min_fee == 0 else v + (max(v * rate, min_fee) if q > 0 else 0.0)
        if cost > cash:  # documented difference: never below 0 cash by rounding (FinRL: -1e-13)
            q = max(q - max(lot, 1.0), 0.0)
            v = price[j] * q
            cost = v * (1 + rate) if min_fee == 0 else v + (max(v * rate, min_fee) if q > 0 else 0.0)
        got[j] = q
        cash -= cost
    return got, cash


@pytest.mark.parametrize("lot,min_fee", [(1.0, 0.0), (100.0, 5.0), (100.0, 0.0)])
def test_greedy_buys_equal_finrl_sequential_rule(lot, min_fee):
    rng = np.random.default_rng(7)
    E, N = 16, 6
    arrays = synthetic_arrays(T=4, N=N, K=1)
    cfg = EnvConfig.for_family("stock_trading", lot_size=lot, min_fee=min_fee, buy_cost_pct=0.001,
                               sort_kind="stable")
    k = MarketKernel(arrays, cfg, num_envs=E)
    torch = pytest.importorskip("torch")
    kt = MarketKernel(arrays, cfg, num_envs=E, backend="torch")
    for _ in range(100):
        want = np.floor(rng.uniform(0, 3, (E, N)) * (rng.random((E, N)) < 0.7)) * max(lot, 1) * 10
        price = np.round(rng.uniform(1, 300, (E, N)), 2)
        prio = rng.permutation(np.arange(E * N)).reshape(E, N).astype(np.int64)
        cash = rng.uniform(0, 1.2, E) * (price * want).sum(1)
        # boundary cases: cash an exact multiple of one asset's unit cost (floor division edge)
        j = rng.integers(0, N, E)
        edge = price[np.arange(E), j] * (1 + 0.001) * rng.integers(1, 50, E) * max(lot, 1)
        cash = np.where(rng.random(E) < 0.3, edge, cash)
        full = k._buy_cost(price * want, want, 0.001)
        got, spent = k._greedy_buys(want, price, full, prio, cash, full.sum(1))  # vectorised rank loop
        tt = [torch.as_tensor(x) for x in (want, price, full, prio, cash, full.sum(1))]
        got_t, spent_t = kt._greedy_buys(*tt)  # the same lines on torch
        np.testing.assert_array_equal(got_t.numpy(), got)
        np.testing.assert_array_equal(spent_t.numpy(), spent)
        for e in range(E):
            ref, left = _reference_greedy(want[e], price[e], prio[e], cash[e], 0.001, lot, min_fee)
            np.testing.assert_array_equal(got[e], ref)
            assert spent[e] == pytest.approx(cash[e] - left, rel=1e-12, abs=1e-9)
            assert cash[e] - spent[e] >= 0
            r = slice(e, e + 1)  # E == 1: the plain loop
            got1, spent1 = k._greedy_buys(want[r], price[r], full[r], prio[r], cash[r], full[r].sum(1))
            np.testing.assert_array_equal(got1[0], ref)
            assert spent1[0] == cash[e] - left


def _two_asset_arrays():
    arrays = synthetic_arrays(T=3, N=2, K=1, seed=1)
    close = np.array([[10.0, 20.0], [11.0, 19.0], [12.0, 18.0]], np.float32)
    op = np.array([[10.0, 20.0], [10.5, 20.5], [11.5, 18.5]], np.float32)
    feats = np.array([[[0.5], [0.25]], [[0.75], [0.125]], [[0.0], [1.5]]], np.float32)
    return replace(arrays, close=close, open=op, high=np.maximum(close, op), low=np.minimum(close, op),
                   features=feats)


def test_hand_computed_step_open_and_close_fill():
    arrays = _two_asset_arrays()
    c = 0.001
    for fill in ("open", "close"):
        env = make_env(arrays, "stock_trading", fill=fill, initial_cash=1000.0, hmax=100,
                       buy_cost_pct=c, sell_cost_pct=c, reward_scaling=1.0)
        obs, info = env.reset(seed=0)
        # FinRL layout: [cash, close_1..N, holdings_1..N, f1_1..f1_N]
        np.testing.assert_array_equal(obs, np.array([1000, 10, 20, 0, 0, 0.5, 0.25], np.float32))
        # 0.5 * 100 = 50 shares of A wanted, 0.3 * 100 = 30 of B; cash limits the second (FinRL order:
        # the larger action first)
        obs, r, term, trunc, info = env.step(np.array([0.5, 0.3], np.float32))
        p = arrays.open[1].astype(np.float64) if fill == "open" else arrays.close[0].astype(np.float64)
        qa = min(50, 1000 // (p[0] * (1 + c)))
        cash = 1000 - p[0] * qa * (1 + c)
        qb = min(30, cash // (p[1] * (1 + c)))
        cash -= p[1] * qb * (1 + c)
        np.testing.assert_array_equal(info["holdings"], [qa, qb])
        assert info["cash"] == pytest.approx(cash, rel=1e-12)
        value = cash + qa * 11.0 + qb * 19.0
        assert info["portfolio_value"] == pytest.approx(value, rel=1e-12)
        assert r == pytest.approx(value - 1000.0, rel=1e-9)
        assert info["costs"] == pytest.approx(c * (p[0] * qa + p[1] * qb), rel=1e-12)
        assert info["fill"] == ("next_open" if fill == "open" else "close (FinRL parity)")
        assert info["t"] == 1 and not term and not trunc
        # sell 20 of A: proceeds p * 20 * (1 - c)
        obs, r, term, trunc, info2 = env.step(np.array([-0.2, 0.0], np.float32))
        p2 = arrays.open[2].astype(np.float64) if fill == "open" else arrays.close[1].astype(np.float64)
        assert info2["cash"] == pytest.approx(cash + p2[0] * 20 * (1 - c), rel=1e-12)
        np.testing.assert_array_equal(info2["trades"], [-20, 0])
        assert term and info2["t"] == 2


def test_turbulence_liquidates_and_blocks_buys():
    arrays = synthetic_arrays(T=6, N=3, K=1, seed=2, turbulence=True)
    turb = np.array([0, 0, 100, 0, 100, 0], np.float32)
    arrays = replace(arrays, turbulence=turb)
    env = make_env(arrays, "stock_trading", turbulence_threshold=50.0, fill="open")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.full(3, 0.5, np.float32))  # t=0: buys 50 each
    assert (info["holdings"] == 50).all()
    _, _, _, _, info = env.step(np.full(3, 0.5, np.float32))  # t=1: normal
    assert (info["holdings"] == 100).all()
    _, _, _, _, info = env.step(np.full(3, 0.5, np.float32))  # t=2: turbulent -> sell all, no buys
    assert (info["holdings"] == 0).all() and (info["trades"] == -100).all()


def test_vector_env_equals_single_envs_with_autoreset():
    arrays = synthetic_arrays(T=40, N=3, K=2, seed=3)
    E = 4
    kw = dict(random_start=True, episode_length=(4, 9))
    venv = make_vec_env(arrays, "stock_trading", num_envs=E, **kw)
    envs = [make_env(arrays, "stock_trading", **kw) for _ in range(E)]
    vobs, _ = venv.reset(seed=11)
    sobs = [e.reset(seed=11 + i)[0] for i, e in enumerate(envs)]
    np.testing.assert_array_equal(vobs, np.stack(sobs))
    rng = np.random.default_rng(0)
    n_done = 0
    for _ in range(30):
        a = rng.uniform(-1, 1, (E, 3)).astype(np.float32)
        vobs, vr, vterm, vtrunc, vinfo = venv.step(a)
        for i, e in enumerate(envs):
            o, r, term, trunc, info = e.step(a[i])
            assert r == vr[i] and term == vterm[i] and trunc == vtrunc[i]
            assert info["portfolio_value"] == vinfo["portfolio_value"][i]
            if term or trunc:
                n_done += 1
                np.testing.assert_array_equal(vinfo["final_obs"][i], o)
                assert vinfo["_final_obs"][i]
                o, _ = e.reset()
            np.testing.assert_array_equal(vobs[i], o)
    assert n_done >= 4  # episodes of 4..9 steps: several autoresets happened
    assert venv.metadata["autoreset_mode"].name == "SAME_STEP"
    assert vobs.shape == (E,) + venv.single_observation_space.shape


@pytest.mark.parametrize("family", FAMILIES)
def test_numpy_and_torch_backends_give_the_same_trajectory(family):
    pytest.importorskip("torch")
    import torch

    arrays = synthetic_arrays(T=30, N=3, K=2, seed=5, ashare=family == "ashare")
    kw = dict(sort_kind="stable", random_start=True, episode_length=(5, 12), lookback=2, initial_cash=3000.0,
              reward="diff_sharpe")
    envs = [make_vec_env(arrays, family, num_envs=3, backend=b, **kw) for b in ("numpy", "torch")]
    o_np, _ = envs[0].reset(seed=3)
    o_t, _ = envs[1].reset(seed=3)
    assert isinstance(o_t, torch.Tensor)
    np.testing.assert_array_equal(o_np, o_t.numpy())
    rng = np.random.default_rng(1)
    for _ in range(25):
        a = rng.uniform(-1, 1, (3, envs[0].single_action_space.shape[0])).astype(np.float32)
        a_np = np.round(a, 2)  # avoid ties between equal integer share requests
        r1 = envs[0].step(a_np)
        r2 = envs[1].step(torch.as_tensor(a_np))
        np.testing.assert_allclose(r1[0], r2[0].numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r1[1], r2[1].numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(r1[2], r2[2].numpy())
        for key in ("portfolio_value", "cash", "holdings", "costs"):
            np.testing.assert_allclose(r1[4][key], r2[4][key].numpy(), rtol=1e-10, atol=1e-8)


def test_reset_seed_is_deterministic_and_options_pin_the_window():
    arrays = synthetic_arrays(T=50, N=2, K=1)
    env = make_env(arrays, "crypto", random_start=True, episode_length=10)
    s1 = [env.reset(seed=s)[1]["t"] for s in (1, 2, 3)]
    s2 = [env.reset(seed=s)[1]["t"] for s in (1, 2, 3)]
    assert s1 == s2 and len(set(s1)) > 1
    _, info = env.reset(options={"start": 5, "end": 7, "cash": 50.0, "holdings": [1.0, 2.0]})
    assert info["t"] == 5 and info["cash"] == 50.0
    assert info["portfolio_value"] == pytest.approx(50 + arrays.close[5, 0] + 2 * arrays.close[5, 1], rel=1e-6)
    env.step(np.zeros(2, np.float32))
    _, _, term, trunc, info = env.step(np.zeros(2, np.float32))
    assert info["t"] == 7 and trunc and not term


def test_bad_input_gives_one_clear_error():
    arrays = synthetic_arrays(T=10, N=2, K=1)
    with pytest.raises(ConfigError, match="family"):
        make_env(arrays, "options")
    with pytest.raises(ConfigError, match="unknown env option"):
        make_env(arrays, "stock_trading", hmaxx=3)
    with pytest.raises(ConfigError, match="fill"):
        make_env(arrays, "stock_trading", fill="vwap")
    with pytest.raises(ConfigError, match="turbulence"):
        make_env(arrays, "stock_trading", turbulence_threshold=1.0)
    close = arrays.close.copy()
    close[4, 1] = np.nan
    with pytest.raises(DataValidationError, match="T1 at row 4"):
        make_env(replace(arrays, close=close), "stock_trading")
    with pytest.raises(ConfigError, match="backend"):
        make_vec_env(arrays, "stock_trading", num_envs=2, backend="jax")
