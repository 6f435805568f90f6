"""The five families as configs of one kernel: env checkers, family rules, A-share rules on real data."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data_processors.arrays import to_arrays
from finmeta.errors import ConfigError
from meta import make_env, make_vec_env
from meta.market import infer_bars_per_year
from meta.config import FAMILIES as _ALL_FAMILIES
from meta.testing import synthetic_arrays

FAMILIES = tuple(_ALL_FAMILIES)  # every family meta.config defines: a new one is tested too


@pytest.mark.parametrize("family", FAMILIES)
def test_gymnasium_and_sb3_env_checkers_pass(family):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    arrays = synthetic_arrays(T=30, N=3, K=2, seed=1, ashare=family == "ashare")
    env = make_env(arrays, family, random_start=True, episode_length=(5, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check(env, skip_render_check=True)
        sb3_check(make_env(arrays, family), warn=False)
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    for key in ("portfolio_value", "cash", "holdings", "weights", "trades", "costs", "costs_total",
                "turnover", "t", "date", "fill"):
        assert key in info
    assert info["holdings"].shape == (3,) and info["fill"] == "next_open"


def test_portfolio_weights_costs_on_turnover_and_cash_weight():
    arrays = synthetic_arrays(T=12, N=3, K=1, seed=2)
    env = make_env(arrays, "portfolio", action_scheme="weights", include_cash=True,
                   buy_cost_pct=0.002, sell_cost_pct=0.001)
    assert env.action_space.shape == (4,)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.5, 0.25, 0.0, 0.25], np.float32))
    px = arrays.open[1].astype(np.float64)
    val = info["holdings"] * px
    V = 1_000_000.0
    # all buys from cash: cost = 0.002 * traded value, post-cost value split 50/25/0/25
    assert info["costs"] == pytest.approx(0.002 * val.sum(), rel=1e-9)
    assert val / (V - info["costs"]) == pytest.approx([0.5, 0.25, 0.0], abs=1e-8)
    assert info["cash"] == pytest.approx(0.25 * (V - info["costs"]), rel=1e-6)
    assert info["turnover"] == pytest.approx(val.sum() / V, rel=1e-9)
    # softmax scheme: fully invested, weights on the simplex
    env = make_env(arrays, "portfolio")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0, -1.0, 0.0], np.float32))
    assert info["weights"].sum() == pytest.approx(1.0, abs=1e-6)
    assert info["cash"] >= 0


def test_crypto_and_forex_fractional_fees_in_bps_and_calendars():
    daily = synthetic_arrays(T=10, N=2, K=1, freq="D")
    hourly = synthetic_arrays(T=10, N=2, K=1, freq="h")
    fx5 = synthetic_arrays(T=10, N=1, K=1, freq="5min")
    env = make_env(daily, "crypto")
    assert env.metadata["bars_per_year"] == 365
    assert make_env(hourly, "crypto").metadata["bars_per_year"] == pytest.approx(8760)
    assert make_env(fx5, "forex").metadata["bars_per_year"] == pytest.approx(260 * 288)
    assert infer_bars_per_year(daily.times, "equity") == 252
    _, info0 = env.reset(seed=0)
    assert info0["bars_per_year"] == 365
    _, _, _, _, info = env.step(np.array([0.5, 0.25], np.float32))  # 50% / 25% of the cash
    px = daily.open[1].astype(np.float64)
    spent = 1_000_000 * (1 - 1e-9) * np.array([0.5, 0.25])
    np.testing.assert_allclose(info["holdings"], spent / (px * 1.001), rtol=1e-12)
    assert info["costs"] == pytest.approx(10e-4 * (info["holdings"] * px).sum(), rel=1e-12)
    assert (info["holdings"] % 1 != 0).all()  # fractional quantities
    _, _, _, _, info2 = env.step(np.array([-0.5, 0.0], np.float32))  # sell half the position
    assert info2["trades"][0] == pytest.approx(-0.5 * info["holdings"][0], rel=1e-12)
    fx = make_env(fx5, "forex")
    fx.reset(seed=0)
    _, _, _, _, info = fx.step(np.array([1.0], np.float32))
    assert info["costs"] == pytest.approx(1e-4 * info["holdings"][0] * fx5.open[1, 0], rel=1e-6)


def test_short_selling_margin_rule():
    arrays = synthetic_arrays(T=6, N=2, K=1, seed=4)
    env = make_env(arrays, "stock_trading", allow_short=True, hmax=10_000, initial_cash=10_000.0,
                   margin_requirement=0.5)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([-1.0, -1.0], np.float32))
    px = arrays.open[1].astype(np.float64)
    short_val = (-info["holdings"] * px).sum()
    assert (info["holdings"] < 0).all()
    assert short_val <= 10_000 / 0.5 + 1e-6  # short value <= equity / margin requirement
    assert short_val > 0.95 * 20_000  # the cap binds (10k shares requested)
    assert info["cash"] >= 0
    with pytest.raises(ConfigError, match="allow_short"):
        make_env(arrays, "crypto", allow_short=True)


def test_slippage_fixed_and_volume_impact():
    arrays = synthetic_arrays(T=5, N=1, K=1, seed=6)
    px = float(arrays.open[1, 0])
    for kind, kw in (("fixed", dict(slippage_bps=20.0)), ("volume", dict(impact_coef=0.5))):
        env = make_env(arrays, "stock_trading", slippage=kind, buy_cost_pct=0.0, **kw)
        env.reset(seed=0)
        _, _, _, _, info = env.step(np.array([1.0], np.float32))
        paid = 1_000_000 - info["cash"]
        if kind == "fixed":
            expected = px * (1 + 20e-4)
        else:
            expected = px * (1 + min(0.5 * np.sqrt(100 / float(arrays.volume[1, 0])), 0.5))
        assert paid / 100 == pytest.approx(expected, rel=1e-9)
    env = make_env(arrays, "stock_trading", max_participation=1e-6)  # cap far below 100 shares
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    assert info["holdings"][0] == np.floor(1e-6 * arrays.volume[1, 0])


def test_reward_schemes():
    arrays = synthetic_arrays(T=20, N=2, K=1, seed=8)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (19, 2)).astype(np.float32)
    envs = {r: make_env(arrays, "stock_trading", reward=r, drawdown_penalty=0.3, diff_sharpe_eta=0.1)
            for r in ("asset_change", "log_return", "diff_sharpe", "drawdown_penalised")}
    out = {}
    for name, env in envs.items():
        env.reset(seed=0)
        out[name] = [env.step(a)[1] for a in acts]
    _, v = envs["asset_change"].account_values()
    np.testing.assert_allclose(out["asset_change"], np.diff(v) * 1e-4, rtol=1e-9)
    np.testing.assert_allclose(out["log_return"], np.log(v[1:] / v[:-1]), rtol=1e-9)
    dd = 1 - v[1:] / np.maximum.accumulate(v)[1:]
    np.testing.assert_allclose(out["drawdown_penalised"], np.log(v[1:] / v[:-1]) - 0.3 * dd, rtol=1e-9, atol=1e-15)
    A = Bm = 0.0
    expect = []
    for R in v[1:] / v[:-1] - 1:
        dA, dB = R - A, R * R - Bm
        expect.append((Bm * dA - 0.5 * A * dB) / (Bm - A * A) ** 1.5 if Bm - A * A > 1e-12 else 0.0)
        A, Bm = A + 0.1 * dA, Bm + 0.1 * dB
    np.testing.assert_allclose(out["diff_sharpe"], expect, rtol=1e-7, atol=1e-12)


def test_observation_layouts_lookback_and_normalisation():
    arrays = synthetic_arrays(T=10, N=3, K=2, seed=9)
    env = make_env(arrays, "stock_trading")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1 + 2 * 3 + 2 * 3,)
    np.testing.assert_array_equal(obs[1:4], arrays.close[0])
    np.testing.assert_array_equal(obs[7:10], arrays.features[0, :, 0])  # feature 1 for all N
    env = make_env(arrays, "stock_trading", lookback=4, normalize_obs=True)
    obs, _ = env.reset(options={"start": 5})
    assert obs.shape == (1 + 3 + 4 * (3 + 6),)
    assert obs[0] == 1.0 and (obs[1:4] == 0).all()  # all cash: cash/value = 1, weights 0
    window = obs[4:].reshape(4, 9)
    expect_ret = np.log(arrays.close[2:6].astype(np.float64) / arrays.close[1:5])
    np.testing.assert_allclose(window[:, :3], expect_ret, rtol=1e-5, atol=1e-6)
    for obs in (make_env(arrays, "portfolio", normalize_obs=True).reset(seed=0)[0],):
        assert np.isfinite(obs).all()


# ---------------------------------------------------------------------------------------------
# A-shares
# ---------------------------------------------------------------------------------------------
def _intraday_ashare():
    """Two trading days of 4 hourly bars (UTC times of Beijing 09:30..), one asset."""
    times = pd.to_datetime(["2021-03-01 01:30", "2021-03-01 02:30", "2021-03-01 05:00", "2021-03-01 06:00",
                            "2021-03-02 01:30", "2021-03-02 02:30", "2021-03-02 05:00", "2021-03-02 06:00"])
    a = synthetic_arrays(T=8, N=1, K=1, seed=1, ashare=True)
    close = np.full((8, 1), 10.0, np.float32)
    return replace(a, times=times.to_numpy(), close=close, open=close, high=close, low=close,
                   preclose=np.full((8, 1), 10.0, np.float32), tradable=np.ones((8, 1), bool),
                   is_st=np.zeros((8, 1), bool))


def test_ashare_t_plus_1_lots_min_fee_and_stamp_duty():
    arrays = _intraday_ashare()
    env = make_env(arrays, "ashare", hmax=1000)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.55], np.float32))  # 550 shares wanted -> 500 (lots)
    assert info["holdings"][0] == 500
    assert info["costs"] == 5.0  # 0.03% of 5000 CNY = 1.5 < minimum 5
    for _ in range(2):  # same trading day: the shares bought today cannot be sold
        _, _, _, _, info = env.step(np.array([-1.0], np.float32))
        assert info["holdings"][0] == 500 and info["trades"][0] == 0
    _, _, _, _, info = env.step(np.array([-0.35], np.float32))  # next day: 350 -> 300 (lots)
    assert info["trades"][0] == -300
    assert info["costs"] == pytest.approx(5.0 + 0.001 * 3000.0)  # min commission + 0.1% stamp duty
    _, _, _, _, info = env.step(np.array([-1.0], np.float32))  # the odd remainder may be sold whole
    assert info["holdings"][0] == 0
    # stamp duty halves for trades from 2023-08-28 (bars: Thu 08-24, Fri 08-25, Mon 08-28, ...)
    env = make_env(replace(arrays, times=pd.date_range("2023-08-24", periods=8, freq="B").to_numpy()), "ashare")
    env.reset(options={"holdings": [1000.0]})
    stamps = []
    for day in ("2023-08-25", "2023-08-28"):
        _, _, _, _, info = env.step(np.array([-0.1], np.float32))  # sell 100 shares at 10 CNY
        assert info["trades"][0] == -100 and str(info["date"])[:10] == day
        stamps.append((info["costs"] - 5.0) / (100 * 10.0))
    assert stamps == pytest.approx([0.001, 0.0005])


def test_ashare_limit_boards_and_suspension():
    from meta.market import cn_limit_pct

    times = pd.to_datetime(["2020-08-21", "2020-08-24"]).to_numpy()
    pct = cn_limit_pct(("sh.600519", "sz.300750", "sh.688981", "sz.000001"), times,
                       np.array([[False, False, False, True], [False, False, False, True]]))
    np.testing.assert_array_equal(pct, [[0.10, 0.10, 0.20, 0.05], [0.10, 0.20, 0.20, 0.05]])
    arrays = synthetic_arrays(T=6, N=1, K=1, seed=2, ashare=True)
    tr = np.ones((6, 1), bool)
    tr[1] = False
    env = make_env(replace(arrays, tradable=tr), "ashare", price_limits=False)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0], np.float32))  # fills at bar 1: suspended
    assert info["trades"][0] == 0
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    assert info["trades"][0] == 1000


def _baostock(shared_data, code, start, end):
    df = pd.read_csv(shared_data / "china_a_shares" / "sse50_baostock_daily_unadjusted_2017-01-03_2023-02-13.csv.gz")
    d = df[(df.code == code) & (df.date >= start) & (df.date <= end)]
    frame = pd.DataFrame({"time": pd.to_datetime(d.date), "tic": d.code, "open": d.open, "high": d.high,
                          "low": d.low, "close": d.close, "volume": d.volume, "preclose": d.preclose,
                          "tradestatus": d.tradestatus, "is_st": d.isST})
    return to_arrays(frame.reset_index(drop=True), feature_columns=[])


def test_ashare_real_limit_up_day_blocks_buys(shared_data):
    # China Shenhua (sh.601088) opened and closed at the +10% limit on 2017-03-20 (16.69 -> 18.36)
    arrays = _baostock(shared_data, "sh.601088", "2017-03-14", "2017-03-24")
    day = int(np.flatnonzero(arrays.times == np.datetime64("2017-03-20"))[0])
    assert arrays.open[day, 0] == pytest.approx(18.36) and arrays.preclose[day, 0] == pytest.approx(16.69)
    for fill in ("open", "close"):
        env = make_env(arrays, "ashare", fill=fill)
        start = day - 1 if fill == "open" else day  # the order that fills on the limit-up bar
        env.reset(options={"start": start})
        _, _, _, _, info = env.step(np.array([1.0], np.float32))
        assert info["trades"][0] == 0 and info["costs"] == 0
        env.reset(options={"start": start - 1})  # the bar before: an ordinary day, the buy fills
        _, _, _, _, info = env.step(np.array([1.0], np.float32))
        assert info["trades"][0] == 1000
    assert env.kernel.md.limit_up[day, 0] == pytest.approx(18.36)


def test_ashare_real_limit_down_day_and_suspension_block_sells(shared_data):
    # sh.603986 was suspended 2017-08-04..08-09, then opened and closed at the -10% limit on
    # 2017-08-10 (79.25 -> 71.33); 2017-08-11 opened at 64.28, above its 64.20 limit down
    arrays = _baostock(shared_data, "sh.603986", "2017-08-01", "2017-08-15")
    day = int(np.flatnonzero(arrays.times == np.datetime64("2017-08-10"))[0])
    assert not arrays.tradable[day - 1, 0] and arrays.tradable[day, 0]
    env = make_env(arrays, "ashare")
    for start, traded in ((day - 2, 0), (day - 1, 0), (day, -1000)):  # fills: suspended, limit down, ok
        env.reset(options={"start": start, "holdings": [1000.0]})
        _, _, _, _, info = env.step(np.array([-1.0], np.float32))
        assert info["trades"][0] == traded
        assert info["holdings"][0] == 1000 + traded


def test_vector_env_runs_every_family():
    for family in FAMILIES:
        arrays = synthetic_arrays(T=15, N=2, K=1, seed=3, ashare=family == "ashare")
        venv = make_vec_env(arrays, family, num_envs=5, random_start=True, episode_length=(3, 6))
        obs, info = venv.reset(seed=0)
        assert obs.shape == (5, venv.single_observation_space.shape[0])
        for _ in range(10):
            obs, r, term, trunc, info = venv.step(venv.action_space.sample())
            assert np.isfinite(obs).all() and r.shape == (5,)
            assert (info["cash"] >= 0).all()
