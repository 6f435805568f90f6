"""FinMeta's stock-trading env (``fill="close"``) reproduces FinRL 0.3.7's envs on real Dow 30 data.

Reference: FinRL's pandas ``StockTradingEnv`` (``finrl/meta/env_stock_trading/env_stocktrading.py``)
and numpy ``StockTradingEnv`` (``env_stocktrading_np.py``), loaded by file path by
``benchmarks/peers/finrl_envs.py``. Both sides get the same arrays: Dow 30 2019-2020 (N = 29 tickers
with a bar on every day, T = 505), 8 indicators and a turbulence index computed once; the same
seeded action sequence (in [-1, 1]^N, distinct order sizes per row, plus all-in buy/sell rows that
hit the cash and holdings limits) and a turbulence threshold that ~5 % of the days cross (March 2020 among them).
Intentional differences are documented in ``docs/parity.md``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.peers import finrl_envs as F

START, END = "2019-01-01", "2021-01-01"
RTOL = 1e-6
HMAX, COST, SCALE, CASH = 100, 0.001, 1e-4, 1_000_000.0


@pytest.fixture(scope="module")
def finrl_available():
    try:
        F.finrl_pandas_env_class()
        F.finrl_numpy_env_class()
    except F.FinRLNotInstalled as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the FinRL peers (benchmarks/peers/install_peers.sh): {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def meta_api():
    meta = pytest.importorskip("meta")
    if not hasattr(meta, "make_env"):
        pytest.fail("meta.make_env is missing: the env layer API is not in place")
    return meta


@pytest.fixture(scope="module")
def dow(shared_data):
    arrays = F.dow30_arrays(shared_data, START, END)
    turb = np.sort(arrays.turbulence.astype(np.float64))
    i = int(0.95 * len(turb))
    thr = float(turb[i - 1] + turb[i]) / 2  # strictly between two observed values: no ties
    return arrays, thr


@pytest.fixture(scope="module")
def actions(dow):
    arrays, _ = dow
    return F.seeded_actions(arrays.num_times, arrays.num_assets, seed=7)


def run_finmeta(meta, arrays, actions, reset_options=None, **overrides) -> dict[str, np.ndarray]:
    """Step FinMeta's single env (parity mode) from reset to termination; stack what it reports."""
    kw = dict(fill="close", hmax=HMAX, buy_cost_pct=COST, sell_cost_pct=COST, reward_scaling=SCALE,
              initial_cash=CASH, reward="asset_change")
    kw.update(overrides)
    env = meta.make_env(arrays, family="stock_trading", **kw)
    obs0, info0 = env.reset(seed=0, options=reset_options)
    out: dict[str, list] = {k: [] for k in ("value", "reward", "cash", "holdings", "trades", "obs", "costs")}
    terminated = False
    for a in actions:
        obs, r, terminated, truncated, info = env.step(a)
        out["value"].append(float(info["portfolio_value"]))
        out["reward"].append(float(r))
        out["cash"].append(float(info["cash"]))
        out["holdings"].append(np.asarray(info["holdings"], dtype=np.float64))
        out["trades"].append(np.asarray(info["trades"], dtype=np.float64))
        out["costs"].append(float(info["costs"]))
        out["obs"].append(np.asarray(obs, dtype=np.float64))
        if terminated or truncated:
            break
    res = {k: np.asarray(v) for k, v in out.items()}
    res["obs0"] = np.asarray(obs0, dtype=np.float64)
    res["value0"] = float(info0["portfolio_value"])
    res["terminated"] = bool(terminated)
    res["costs_total"] = float(info["costs_total"])
    return res


@pytest.fixture(scope="module")
def finrl_pandas(finrl_available, dow, actions):
    arrays, thr = dow
    env = F.make_finrl_pandas_env(arrays, hmax=HMAX, initial_amount=CASH, buy_cost_pct=COST,
                                  sell_cost_pct=COST, reward_scaling=SCALE, turbulence_threshold=thr)
    env.reset()
    state0 = np.asarray(env.state, dtype=np.float64)
    res = F.run_finrl_pandas(env, actions)
    res["state0"] = state0
    return res


@pytest.fixture(scope="module")
def ours(meta_api, dow, actions):
    arrays, thr = dow
    return run_finmeta(meta_api, arrays, actions, turbulence_threshold=thr)


def test_scenario_exercises_the_rules(dow, finrl_pandas, actions):
    """The fixture is not vacuous: turbulence liquidations, cash-bound buys and capped sells occur,
    and FinRL's first-indicator == 1.0 'skip' quirk is not triggered by the data."""
    arrays, thr = dow
    turb = arrays.turbulence
    assert turb[0] < thr, "FinRL ignores day 0's turbulence (it starts at 0): keep day 0 calm"
    turbulent = np.flatnonzero(turb[:-1] >= thr)
    assert 5 <= turbulent.size <= 60
    assert not np.any(arrays.features[:, :, 0] == 1.0)
    # tie-free orders (FinRL's tie order is machine-dependent) and float32/float64 truncation agree
    orders = (actions * np.float32(HMAX)).astype(int)
    np.testing.assert_array_equal(orders, (actions.astype(np.float64) * HMAX).astype(int))
    assert all(len(np.unique(row)) == row.size for row in orders)
    wanted = orders[: len(finrl_pandas["trades"])]
    done = finrl_pandas["trades"]
    calm = np.ones(len(done), bool)
    calm[turbulent[turbulent < len(done)]] = False
    cash_bound = (wanted > 0) & (done < wanted) & calm[:, None]
    sell_capped = (wanted < 0) & (done > wanted) & calm[:, None]
    assert cash_bound.sum() > 100, "buys must hit the cash constraint"
    assert sell_capped.sum() > 100, "sells must be capped by holdings"
    after = finrl_pandas["holdings"][turbulent[turbulent < len(done)]]
    assert np.all(after == 0), "a turbulent day liquidates every position"
    assert finrl_pandas["cash"].min() < 0.01 * CASH, "some step must spend (almost) all the cash"


def test_account_value_matches_finrl_pandas_every_step(ours, finrl_pandas, dow):
    arrays, _ = dow
    T = arrays.num_times
    assert ours["terminated"], "the episode ends at the last bar"
    assert len(ours["value"]) == T - 1 == len(finrl_pandas["reward"])
    assert ours["value0"] == pytest.approx(finrl_pandas["account_value"][0], rel=RTOL)
    ref = finrl_pandas["account_value"][1:]
    rel = np.abs(ours["value"] - ref) / ref
    if np.any(rel > RTOL):
        k = int(np.argmax(rel > RTOL))
        pytest.fail(
            f"account value differs first at step {k} ({arrays.times[k]}): "
            f"finmeta {float(ours['value'][k])!r} vs FinRL {float(ref[k])!r} (rel {rel[k]:.2e}); "
            f"trades finmeta {ours['trades'][k].tolist()} vs FinRL {finrl_pandas['trades'][k].tolist()}; "
            f"cash {float(ours['cash'][k])!r} vs {float(finrl_pandas['cash'][k])!r}")


def test_holdings_cash_and_trades_match_finrl_pandas(ours, finrl_pandas):
    np.testing.assert_array_equal(ours["trades"], finrl_pandas["trades"])
    np.testing.assert_array_equal(ours["holdings"], finrl_pandas["holdings"])
    np.testing.assert_allclose(ours["cash"], finrl_pandas["cash"], rtol=0,
                               atol=RTOL * finrl_pandas["account_value"].max())
    assert ours["costs_total"] == pytest.approx(float(finrl_pandas["cost_total"]), rel=RTOL)
    assert ours["costs"].sum() == pytest.approx(float(finrl_pandas["cost_total"]), rel=RTOL)


def test_rewards_match_finrl_pandas(ours, finrl_pandas):
    # reward = scaled change of account value; its error is bounded by the account values' errors
    atol = RTOL * SCALE * finrl_pandas["account_value"].max()
    np.testing.assert_allclose(ours["reward"], finrl_pandas["reward"], rtol=0, atol=atol)
    assert np.abs(finrl_pandas["reward"]).max() > 1000 * atol


def test_observation_is_finrl_state_layout(ours, finrl_pandas):
    """[cash, close N, holdings N, indicator_1 N, ..., indicator_K N] (float32), at reset and after
    every step (FinRL's obs after step k is its state on day k+1)."""
    np.testing.assert_allclose(ours["obs0"], finrl_pandas["state0"], rtol=1e-6, atol=1e-6)
    states = finrl_pandas["states"]
    assert states.shape == ours["obs"].shape
    np.testing.assert_allclose(ours["obs"], states, rtol=1e-6, atol=1e-6)


def test_parity_check_detects_a_one_basis_point_cost_change(meta_api, dow, actions, finrl_pandas):
    """Guard against a vacuous comparison: 0.11 % instead of 0.1 % cost must break parity."""
    arrays, thr = dow
    off = run_finmeta(meta_api, arrays, actions, turbulence_threshold=thr,
                      buy_cost_pct=0.0011, sell_cost_pct=0.0011)
    rel = np.abs(off["value"] - finrl_pandas["account_value"][1:]) / finrl_pandas["account_value"][1:]
    assert rel.max() > 100 * RTOL


def test_cash_holdings_match_finrl_numpy_where_semantics_agree(meta_api, finrl_available, dow, actions):
    """FinRL's numpy env fills day d's action at ``price[d+1]``, buys in index order, caps buys by
    ``cash // price`` (cost not included) and ignores |orders| <= min_stock_rate * hmax. With the
    arrays shifted by one row, ``min_stock_rate=0`` and cash that never binds, it must agree with
    FinMeta's close-fill env: identical holdings, cash to 1e-6 of the account value, and the account
    value at the next close."""
    arrays, thr = dow
    big = 1e9
    ours = run_finmeta(meta_api, arrays, actions, turbulence_threshold=thr, initial_cash=big)
    np_env = F.make_finrl_numpy_env(arrays, shift=True, hmax=HMAX, initial_capital=big, buy_cost_pct=COST,
                                    sell_cost_pct=COST, reward_scaling=SCALE, turbulence_threshold=thr)
    ref = F.run_finrl_numpy(np_env, actions)
    S = len(ours["value"])
    assert len(ref["cash"]) >= S
    np.testing.assert_array_equal(ours["holdings"], ref["holdings"][:S])
    np.testing.assert_allclose(ours["cash"], ref["cash"][:S], rtol=0, atol=RTOL * big)
    close = arrays.close.astype(np.float64)
    value_next_close = ref["cash"][:S] + (ref["holdings"][:S] * close[1:S + 1]).sum(axis=1)
    np.testing.assert_allclose(ours["value"], value_next_close, rtol=RTOL)
    assert np.abs(ours["trades"]).sum() > 0 and np.any(ref["holdings"][:S].sum(axis=1) == 0)


def test_finrl_quirks_reproduced_in_parity_mode(meta_api, finrl_available, dow, actions):
    """FinRL's two quirks (docs/parity.md #5, #7), reproduced when ``fill="close"``: a stock whose
    first indicator is exactly 1.0 that day does not trade, and day 0's turbulence is ignored."""
    from dataclasses import replace

    arrays, thr = dow
    feats = arrays.features.copy()
    locked = [(t, i) for t in range(3, 120, 4) for i in (0, 5, 11)]  # 90 (day, stock) locks
    for t, i in locked:
        feats[t, i, 0] = 1.0
    turb = arrays.turbulence.copy()
    turb[0] = np.float32(10 * thr)  # a turbulent first day: FinRL does not liquidate on it
    q = replace(arrays, features=feats, turbulence=turb)
    env = F.make_finrl_pandas_env(q, hmax=HMAX, initial_amount=CASH, buy_cost_pct=COST, sell_cost_pct=COST,
                                  reward_scaling=SCALE, turbulence_threshold=thr)
    ref = F.run_finrl_pandas(env, actions)
    assert np.abs(ref["trades"][0]).sum() > 0, "FinRL trades on day 0 despite its turbulence"
    frozen = np.array([ref["trades"][t, i] for t, i in locked if t < len(ref["trades"])])
    assert np.all(frozen == 0)
    ours = run_finmeta(meta_api, q, actions, turbulence_threshold=thr)
    np.testing.assert_array_equal(ours["trades"], ref["trades"])
    np.testing.assert_allclose(ours["value"], ref["account_value"][1:], rtol=RTOL, atol=0)


def test_equal_orders_follow_finrl_buy_order_on_this_machine(meta_api, finrl_available, dow):
    """With ``sort_kind="default"`` ties between equal buy orders are broken like FinRL's
    ``np.argsort(orders)[::-1]`` on the same machine (docs/parity.md #4)."""
    arrays, thr = dow
    q = arrays.slice(0, 60)
    rng = np.random.default_rng(11)
    # every row: a few distinct order sizes shared by many stocks, all-in so cash binds
    sizes = rng.choice(np.arange(60, 101), size=(q.num_times, 4))
    pick = rng.integers(0, 4, size=(q.num_times, q.num_assets))
    orders = np.take_along_axis(sizes, pick, axis=1)
    sign = np.where(rng.random(q.num_times) < 0.35, -1, 1)[:, None]
    acts = np.clip(sign * (orders + 0.5) / HMAX, -1, 1).astype(np.float32)
    env = F.make_finrl_pandas_env(q, hmax=HMAX, initial_amount=CASH, buy_cost_pct=COST, sell_cost_pct=COST,
                                  reward_scaling=SCALE, turbulence_threshold=None)
    ref = F.run_finrl_pandas(env, acts)
    ours = run_finmeta(meta_api, q, acts, turbulence_threshold=None, sort_kind="default")
    np.testing.assert_array_equal(ours["trades"], ref["trades"])
    np.testing.assert_allclose(ours["value"], ref["account_value"][1:], rtol=RTOL, atol=0)


@pytest.fixture(scope="module")
def finrl_pandas_other(finrl_available, dow):
    arrays, thr = dow
    other = F.seeded_actions(arrays.num_times, arrays.num_assets, seed=8)
    env = F.make_finrl_pandas_env(arrays, hmax=HMAX, initial_amount=CASH, buy_cost_pct=COST,
                                  sell_cost_pct=COST, reward_scaling=SCALE, turbulence_threshold=thr)
    return other, F.run_finrl_pandas(env, other)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_vector_env_rows_match_finrl_pandas(meta_api, dow, actions, finrl_pandas, finrl_pandas_other, backend):
    """The vector env (E = 2, numpy and torch-on-CPU backends) in parity mode: each sub-env, fed its
    own action sequence, follows its own FinRL run (no cross-talk between rows)."""
    if backend == "torch":
        pytest.importorskip("torch")
    arrays, thr = dow
    other, ref1 = finrl_pandas_other
    venv = meta_api.make_vec_env(arrays, family="stock_trading", num_envs=2, backend=backend, fill="close",
                                 hmax=HMAX, buy_cost_pct=COST, sell_cost_pct=COST, reward_scaling=SCALE,
                                 initial_cash=CASH, turbulence_threshold=thr)
    venv.reset(seed=0)
    S = arrays.num_times - 1
    values, rewards, trades = [], [], []
    def host(x) -> np.ndarray:
        return np.asarray(x.cpu() if hasattr(x, "cpu") else x, dtype=np.float64)

    for k in range(S):
        _, r, term, trunc, info = venv.step(np.stack([actions[k], other[k]]))
        values.append(host(info["portfolio_value"]))
        rewards.append(host(r))
        trades.append(host(info["trades"]))
        assert bool(np.all(host(term))) == (k == S - 1), f"termination at step {k}"
    values, rewards, trades = np.array(values), np.array(rewards), np.array(trades)
    for j, ref in enumerate((finrl_pandas, ref1)):
        np.testing.assert_array_equal(trades[:, j], ref["trades"], err_msg=f"sub-env {j}")
        np.testing.assert_allclose(values[:, j], ref["account_value"][1:], rtol=RTOL, atol=0,
                                   err_msg=f"sub-env {j}")
        np.testing.assert_allclose(rewards[:, j], ref["reward"], rtol=0,
                                   atol=RTOL * SCALE * ref["account_value"].max(), err_msg=f"sub-env {j}")


def test_peer_loader_leaves_no_stub_behind(finrl_available, monkeypatch):
    """Loading FinRL's env files by path neither imports the ``finrl`` package nor leaves the
    stable-baselines3 stub in ``sys.modules``."""
    import sys

    monkeypatch.setattr(F, "_MODULES", {})  # force a fresh load by path
    before = {k for k in sys.modules if k == "finrl" or k.startswith(("finrl.", "stable_baselines3"))}
    cls = F.finrl_pandas_env_class()
    assert cls.__module__ == "finmeta_peer_finrl_env_stocktrading"
    path = F.load_finrl_module(F.PANDAS_ENV_FILE).__file__
    assert path.endswith("finrl/meta/env_stock_trading/env_stocktrading.py")
    after = {k for k in sys.modules if k == "finrl" or k.startswith(("finrl.", "stable_baselines3"))}
    assert after == before, f"loading by path changed sys.modules: {sorted(after ^ before)}"


def test_initial_holdings_match_finrl_num_stock_shares(meta_api, finrl_available, dow, actions):
    """FinRL's ``num_stock_shares`` (initial shares; its first account value is cash + shares . close)
    is FinMeta's ``initial_holdings`` (120 days, random 0..199 shares per stock)."""
    arrays, thr = dow
    q = arrays.slice(0, 120)
    shares = [int(s) for s in np.random.default_rng(3).integers(0, 200, size=q.num_assets)]
    env = F.make_finrl_pandas_env(q, hmax=HMAX, initial_amount=CASH, buy_cost_pct=COST, sell_cost_pct=COST,
                                  reward_scaling=SCALE, turbulence_threshold=thr)
    env.num_stock_shares = shares
    ref = F.run_finrl_pandas(env, actions)
    ours = run_finmeta(meta_api, q, actions, turbulence_threshold=thr, initial_holdings=shares)
    assert ours["value0"] == pytest.approx(ref["account_value"][0], rel=RTOL)
    assert ref["account_value"][0] > CASH + 1000
    np.testing.assert_array_equal(ours["trades"], ref["trades"])
    np.testing.assert_allclose(ours["value"], ref["account_value"][1:], rtol=RTOL, atol=0)


def test_continuation_matches_finrl_previous_state(meta_api, finrl_available, dow, actions):
    """FinRL's ``initial=False`` (start from ``previous_state``'s cash and shares, as its ensemble /
    trade loop does) is FinMeta's ``reset(options={"cash": ..., "holdings": ...})``."""
    arrays, thr = dow
    q = arrays.slice(200, 320)
    N = q.num_assets
    cash = 123_456.78
    shares = [float(s) for s in np.random.default_rng(4).integers(0, 300, size=N)]
    cls = F.finrl_pandas_env_class()
    env = cls(df=F.finrl_frame(q), stock_dim=N, hmax=HMAX, initial_amount=CASH, num_stock_shares=[0] * N,
              buy_cost_pct=[COST] * N, sell_cost_pct=[COST] * N, reward_scaling=SCALE,
              state_space=1 + 2 * N + len(q.feature_names) * N, action_space=N,
              tech_indicator_list=list(q.feature_names), turbulence_threshold=thr, print_verbosity=10**9,
              initial=False, previous_state=[cash] + [0.0] * N + shares)
    ref = F.run_finrl_pandas(env, actions)
    ours = run_finmeta(meta_api, q, actions, turbulence_threshold=thr,
                       reset_options={"cash": cash, "holdings": shares})
    expected0 = cash + float(np.dot(shares, q.close[0].astype(np.float64)))
    assert ref["account_value"][0] == pytest.approx(expected0, rel=1e-12)
    assert ours["value0"] == pytest.approx(expected0, rel=RTOL)
    np.testing.assert_array_equal(ours["trades"], ref["trades"])
    np.testing.assert_allclose(ours["value"], ref["account_value"][1:], rtol=RTOL, atol=0)
