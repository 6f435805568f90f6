"""Accounting properties of every family under random configs and actions (hypothesis).

After every step: value == cash + holdings . close; cash >= 0; holdings >= 0 unless shorting;
costs >= 0 and equal to the cost formula applied to the reported trades; cash moves by exactly
the traded value and the costs; integer shares / lots / T+1 / price limits / suspensions hold.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta import make_env
from meta.config import FAMILIES as _ALL_FAMILIES
from meta.testing import synthetic_arrays

FAMILIES = tuple(_ALL_FAMILIES)  # every family meta.config defines: a new one is tested too


@st.composite
def cases(draw):
    family = draw(st.sampled_from(FAMILIES))
    ashare = family == "ashare"
    kw: dict = dict(fill=draw(st.sampled_from(["open", "close"])),
                    initial_cash=draw(st.sampled_from([500.0, 20_000.0, 1_000_000.0])))
    if family in ("stock_trading", "ashare"):
        kw["hmax"] = draw(st.sampled_from([10, 100, 1000]))
    if family != "ashare":
        kw["slippage"] = draw(st.sampled_from(["none", "fixed"]))
        kw["slippage_bps"] = draw(st.sampled_from([0.0, 5.0, 25.0]))
    if family in ("stock_trading", "portfolio"):
        kw["buy_cost_pct"] = draw(st.sampled_from([0.0, 0.001, 0.01]))
        kw["sell_cost_pct"] = draw(st.sampled_from([0.0, 0.001, 0.02]))
    if family == "stock_trading":
        kw["allow_short"] = draw(st.booleans())
        if draw(st.booleans()):
            kw["turbulence_threshold"] = 40.0
    if family == "portfolio":
        kw["include_cash"] = draw(st.booleans())
        kw["action_scheme"] = draw(st.sampled_from(["softmax", "weights"]))
    freq = draw(st.sampled_from(["B", "6h"])) if ashare else "B"
    data = dict(T=draw(st.integers(3, 8)), N=draw(st.integers(1, 4)), K=draw(st.integers(0, 2)),
                seed=draw(st.integers(0, 2**31 - 1)), ashare=ashare, freq=freq,
                turbulence="turbulence_threshold" in kw)
    return family, kw, data


def _fill_prices(arrays, kw, f):
    px = (arrays.close if kw["fill"] == "close" else arrays.open)[f].astype(np.float64)
    bps = kw.get("slippage_bps", 0.0) / 1e4 if kw.get("slippage", "none") == "fixed" else 0.0
    return px, px * (1 + bps), px * (1 - bps), bps


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_accounting_invariants(case):
    family, kw, data = case
    arrays = synthetic_arrays(**data)
    env = make_env(arrays, family, **kw)
    cfg = env.config
    rng = np.random.default_rng(data["seed"])
    _, info = env.reset(seed=0)
    cash, h = info["cash"], info["holdings"].astype(np.float64)
    T, N = arrays.close.shape
    ashare = family == "ashare"
    if ashare:
        t64 = arrays.times.astype("datetime64[s]")
        if data["freq"] != "B":
            t64 = t64 + np.timedelta64(8 * 3600, "s")
        day = t64.astype("datetime64[D]")
        pre = arrays.preclose.astype(np.float64)
        pct = np.where(arrays.is_st, 0.05, 0.10)
        lim_up = np.floor(pre * (1 + pct) * 100 + 0.5) / 100
        lim_dn = np.floor(pre * (1 - pct) * 100 + 0.5) / 100
    bought_on: dict = {}
    total = 0.0
    for _ in range(T - 1):
        t = info["t"]
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        if cfg.action_scheme == "weights" and family == "portfolio":
            a = np.abs(a)
        _, _, term, trunc, info = env.step(a)
        f = t + (1 if cfg.fill == "open" else 0)
        tn = info["t"]
        assert tn == t + 1
        trades, costs = info["trades"], info["costs"]
        h_new, cash_new, value = info["holdings"], info["cash"], info["portfolio_value"]
        close = arrays.close[tn].astype(np.float64)
        # books balance
        assert value == pytest.approx(cash_new + (h_new * close).sum(), rel=1e-9, abs=1e-6)
        np.testing.assert_allclose(h_new, h + trades, rtol=1e-12, atol=1e-9)
        assert cash_new >= 0
        if not cfg.allow_short:
            assert (h_new >= 0).all()
        assert costs >= 0
        # cost formula on the reported trades, and the cash flow
        px, bp, sp, bps = _fill_prices(arrays, kw, f)
        buy = np.maximum(trades, 0.0)
        sell = np.maximum(-trades, 0.0)
        if family == "portfolio":
            d = trades * px
            expect = (np.maximum(d, 0) * (cfg.buy_cost_pct + bps) + np.maximum(-d, 0) * (cfg.sell_cost_pct + bps)).sum()
            flow = -d.sum() - expect
        else:
            rb = cfg.fee_bps / 1e4 if cfg.fee_bps is not None else cfg.buy_cost_pct
            rs = cfg.fee_bps / 1e4 if cfg.fee_bps is not None else cfg.sell_cost_pct
            bv, sv = buy * bp, sell * sp
            if cfg.min_fee > 0:
                stamp = 0.001 if day[f] < np.datetime64("2023-08-28") else 0.0005
                fb = np.where(buy > 0, np.maximum(bv * rb, cfg.min_fee), 0.0)
                fs = np.where(sell > 0, np.maximum(sv * rs, cfg.min_fee), 0.0) + sv * stamp
            else:
                fb, fs = bv * rb, sv * rs
            expect = fb.sum() + fs.sum()
            flow = sv.sum() - bv.sum() - expect
        assert costs == pytest.approx(expect, rel=1e-9, abs=1e-9)
        assert cash_new - cash == pytest.approx(flow, rel=1e-9, abs=1e-9 * cfg.initial_cash + 1e-9)
        total += costs
        assert info["costs_total"] == pytest.approx(total, rel=1e-9, abs=1e-9)
        # market rules
        if family in ("stock_trading", "ashare"):
            np.testing.assert_array_equal(trades, np.round(trades))  # integer shares
        if ashare:
            assert (buy % 100 == 0).all()  # lots for buys
            locked = bought_on.get(day[f], np.zeros(N))
            sellable = h - locked
            assert (sell <= sellable + 1e-9).all()  # T+1
            assert ((sell % 100 == 0) | (sell == sellable)).all()  # lots, or the whole position
            assert not (buy > 0)[px >= lim_up[f] - 0.005].any()  # no buying at limit up
            assert not (sell > 0)[px <= lim_dn[f] + 0.005].any()  # no selling at limit down
            assert not (trades != 0)[~arrays.tradable[f]].any()  # suspended: untradable
            bought_on[day[f]] = locked + buy
        if "turbulence_threshold" in kw and arrays.turbulence[t] >= 40.0 and not (cfg.quirks and t == 0):
            assert (buy == 0).all() and (h_new <= np.maximum(h, 0) * 0 + np.minimum(h, 0) + 1e-9).all()
        cash, h = cash_new, h_new.astype(np.float64)
        if term or trunc:
            break


# --- bad actions at the env boundary ---------------------------------------------------------------
BAD_KINDS = ("nan", "inf", "-inf", "none", "short", "long", "length1", "string", "bool", "huge", "-huge", "int")


def _bad_action(kind: str, shape: tuple[int, ...], rng: np.random.Generator):
    a = rng.uniform(-1, 1, shape).astype(np.float32)
    j = int(rng.integers(0, shape[-1]))
    if kind in ("nan", "inf", "-inf"):
        a[..., j] = float(kind)
        return a
    return {"none": lambda: np.array([None] * shape[-1]), "short": lambda: a[..., :-1],
            "long": lambda: np.concatenate([a, a[..., :1]], axis=-1), "length1": lambda: a[..., :1],
            "string": lambda: np.array(["0.5"] * shape[-1]), "bool": lambda: a > 0,
            "huge": lambda: np.full(shape, 1e300), "-huge": lambda: np.full(shape, -3e38, np.float32),
            "int": lambda: rng.integers(-1, 2, shape)}[kind]()


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.lists(st.sampled_from(BAD_KINDS + ("ok",) * 4), min_size=2, max_size=7))
def test_bad_actions_refused_or_kept_consistent(case, kinds):
    """NaN / inf / None / wrong shape / wrong dtype: one InvalidActionError, books unchanged;
    huge finite and integer actions: traded, and the books still balance (finite, cash >= 0)."""
    from finmeta.errors import InvalidActionError

    family, kw, data = case
    arrays = synthetic_arrays(**data)
    env = make_env(arrays, family, **kw)
    rng = np.random.default_rng(data["seed"])
    _, info = env.reset(seed=0)
    shape = env.action_space.shape
    for kind in kinds:
        if kind == "length1" and shape[-1] == 1:
            kind = "ok"  # a length-1 action is the right shape there
        before = (env.kernel.cash.copy(), env.kernel.h.copy(), env.kernel.t.copy())
        a = rng.uniform(-1, 1, shape).astype(np.float32) if kind == "ok" else _bad_action(kind, shape, rng)
        if kind in ("ok", "huge", "-huge", "int"):
            with np.errstate(all="ignore"):
                _, _, term, trunc, info = env.step(a)
            close = arrays.close[info["t"]].astype(np.float64)
            assert np.isfinite(info["cash"]) and np.isfinite(info["holdings"]).all()
            assert info["portfolio_value"] == pytest.approx(info["cash"] + (info["holdings"] * close).sum(),
                                                            rel=1e-9, abs=1e-6)
            assert info["cash"] >= 0
            if not env.config.allow_short:
                assert (info["holdings"] >= 0).all()
            if term or trunc:
                break
        else:
            with pytest.raises(InvalidActionError, match="step: ") as err:
                env.step(a)
            assert "\n" not in str(err.value)
            np.testing.assert_array_equal(env.kernel.cash, before[0])
            np.testing.assert_array_equal(env.kernel.h, before[1])
            np.testing.assert_array_equal(env.kernel.t, before[2])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("family", FAMILIES)
def test_vector_env_names_the_sub_env_with_a_nan_action(family, backend):
    from finmeta.errors import InvalidActionError
    from meta import make_vec_env

    arrays = synthetic_arrays(T=12, N=3, K=1, seed=3, ashare=family == "ashare")
    venv = make_vec_env(arrays, family, num_envs=5, backend=backend)
    venv.reset(seed=0)
    E, A = venv.action_space.shape
    a = np.zeros((E, A), np.float32)
    a[3, 1] = np.nan
    if backend == "torch":
        import torch
        a = torch.as_tensor(a)
    cash = np.array(venv.kernel.B.to_numpy(venv.kernel.cash)).copy()
    with pytest.raises(InvalidActionError, match=r"sub-env 3 .*index 1 \(%s\)" % arrays.tickers[1]):
        venv.step(a)
    np.testing.assert_array_equal(venv.kernel.B.to_numpy(venv.kernel.cash), cash)
    with pytest.raises(InvalidActionError, match=r"shape \(5, %d\)" % A):
        venv.step(a[:, :1])
    with pytest.raises(InvalidActionError, match="shape"):
        venv.step(np.zeros(A, np.float32))  # one env's action for five envs: not broadcast
    ok = np.zeros((E, A), np.float32)
    venv.step(ok)  # a valid step still works after the refusals
