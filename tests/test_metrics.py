"""benchmarks.metrics: the ICAIF 2020 reference figures, empyrical agreement, edge cases, seeds."""

from __future__ import annotations

import math
import re

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from benchmarks.metrics import (
    FIGURES,
    InvalidValuesError,
    MetricsError,
    aggregate_seeds,
    as_values,
    bars_per_year,
    chain_windows,
    compute_metrics,
    compute_metrics_many,
    drawdown_series,
    simple_returns,
    mean_turnover,
    turnover_from_traded,
    values_from_returns,
)
from finmeta.errors import FinMetaError

ICAIF_EXPECTED = {  # fixtures/README.md, printed to 4 decimals
    "cumulative_return": 0.7168,
    "annual_return": 0.1298,
    "annual_volatility": 0.0780,
    "sharpe": 1.6043,
    "max_drawdown": -0.0577,
}


def _icaif_windows(shared_data) -> list[np.ndarray]:
    folder = shared_data / "fixtures" / "icaif2020_ensemble_account_values"
    files = sorted(folder.glob("account_value_trade_ensemble_*.csv"),
                   key=lambda f: int(re.search(r"_(\d+)\.csv$", f.name).group(1)))
    assert len(files) == 18
    return [pd.read_csv(f, index_col=0).iloc[:, 0].to_numpy() for f in files]


def _empyrical(returns: np.ndarray, ppy: float) -> dict[str, float]:
    with np.errstate(over="ignore"):
        return _empyrical_figures(returns, ppy)


def _empyrical_figures(returns: np.ndarray, ppy: float) -> dict[str, float]:
    return {
        "cumulative_return": ep.cum_returns_final(returns),
        "annual_return": ep.annual_return(returns, annualization=ppy),
        "annual_volatility": ep.annual_volatility(returns, annualization=ppy),
        "sharpe": ep.sharpe_ratio(returns, annualization=ppy),
        "sortino": ep.sortino_ratio(returns, annualization=ppy),
        "calmar": ep.calmar_ratio(returns, annualization=ppy),
        "max_drawdown": ep.max_drawdown(returns),
    }


def _assert_same(ours: dict[str, float], ref: dict[str, float], rtol: float = 1e-9, atol: float = 1e-12,
                 figures: tuple[str, ...] = FIGURES) -> None:
    for k in figures:
        a, b = float(ours[k]), float(ref[k])
        if math.isnan(b) or math.isinf(b):
            assert (math.isnan(a) and math.isnan(b)) or a == b, (k, a, b)
        else:
            assert a == pytest.approx(b, rel=rtol, abs=atol), (k, a, b)


# ---------------------------------------------------------------- reference path


def test_icaif2020_ensemble_path_matches_readme(shared_data):
    values = chain_windows(_icaif_windows(shared_data))
    assert values.shape == (1117,)
    assert values[0] == 1_000_000.0
    m = compute_metrics(values, periods_per_year=252)
    for k, expected in ICAIF_EXPECTED.items():
        assert round(m[k], 4) == pytest.approx(expected, abs=1e-12), (k, m[k])
    # the figures the README does not print agree with empyrical on the same returns
    _assert_same(m, _empyrical(simple_returns(values), 252))


def test_chain_windows_rejects_a_gap():
    with pytest.raises(InvalidValuesError, match="window 1 starts at 2.5"):
        chain_windows([np.array([1.0, 2.0]), np.array([2.5, 3.0])])
    np.testing.assert_array_equal(chain_windows([np.array([1.0, 2.0]), np.array([2.0, 3.0, 4.0])]),
                                  [1.0, 2.0, 3.0, 4.0])


# ---------------------------------------------------------------- empyrical agreement


@pytest.mark.parametrize("ppy", [252, 365, 8760])
def test_random_paths_match_empyrical(ppy):
    rng = np.random.default_rng(20201012 + ppy)
    for i in range(150):
        n = int(rng.integers(2, 400))
        scale = rng.choice([0.001, 0.01, 0.05])
        r = rng.normal(rng.normal(0, scale / 5), scale, n).clip(-0.9, None)
        values = values_from_returns(r, start=float(rng.uniform(1e3, 1e7)))
        ours = compute_metrics(values, periods_per_year=ppy)
        ref = _empyrical(simple_returns(values), ppy)
        _assert_same(ours, ref)
        # the returns recovered from values are the generating returns
        np.testing.assert_allclose(simple_returns(values), r, rtol=1e-9, atol=1e-12)


def test_many_paths_vectorized_equals_one_by_one():
    rng = np.random.default_rng(7)
    paths = values_from_returns(rng.normal(0.0004, 0.012, size=(300, 25)), start=1e6)  # (301, 25)
    many = compute_metrics_many(pd.DataFrame(paths, columns=[f"p{j}" for j in range(25)]), periods_per_year=252)
    assert list(many.index) == [f"p{j}" for j in range(25)]
    for j in range(25):
        one = compute_metrics(paths[:, j])
        for k in FIGURES:
            assert many.loc[f"p{j}", k] == pytest.approx(one[k], rel=1e-12, abs=1e-15)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    r=hnp.arrays(np.float64, st.integers(1, 60),
                 # |r| < 1e-6 -> 0: round-off-sized moves make Calmar a ratio of two cancellations
                 elements=st.floats(-0.95, 1.5, allow_nan=False).map(lambda x: x if abs(x) > 1e-6 else 0.0)),
    ppy=st.sampled_from([252, 365, 1638.0]),
)
def test_hypothesis_returns_match_empyrical(r, ppy):
    values = values_from_returns(r, start=100.0)
    ours = compute_metrics(values, periods_per_year=ppy)
    returns = simple_returns(values)
    ref = _empyrical(returns, ppy)
    figures = FIGURES
    spread = returns.max() - returns.min()
    if 0 < spread < 1e-12 * max(np.abs(returns).max(), 1.0):
        # returns equal up to round-off: any Sharpe/Sortino is round-off noise (empyrical's too)
        figures = tuple(f for f in FIGURES if f not in ("sharpe", "sortino", "annual_volatility"))
    _assert_same(ours, ref, rtol=1e-8, atol=1e-10, figures=figures)


# ---------------------------------------------------------------- edge cases


def test_constant_path_follows_empyrical():
    m = compute_metrics([100.0] * 10)
    assert m["cumulative_return"] == 0.0 and m["annual_return"] == 0.0
    assert m["annual_volatility"] == 0.0 and m["max_drawdown"] == 0.0
    assert math.isnan(m["sharpe"]) and math.isnan(m["sortino"]) and math.isnan(m["calmar"])
    _assert_same(m, _empyrical(np.zeros(9), 252))


def test_constant_positive_returns_give_infinite_sharpe_like_empyrical():
    m = compute_metrics([1.0, 2.0, 4.0, 8.0])  # returns exactly 1.0, 1.0, 1.0
    assert m["sharpe"] == math.inf and m["sortino"] == math.inf and math.isnan(m["calmar"])
    _assert_same(m, _empyrical(np.ones(3), 252))


def test_path_hitting_zero_is_ruin():
    values = [100.0, 50.0, 0.0, 0.0, 0.0]
    m = compute_metrics(values)
    assert m["cumulative_return"] == -1.0 and m["annual_return"] == -1.0
    assert m["max_drawdown"] == -1.0 and m["calmar"] == -1.0
    np.testing.assert_array_equal(simple_returns(values), [-0.5, -1.0, 0.0, 0.0])
    _assert_same(m, _empyrical(np.array([-0.5, -1.0, 0.0, 0.0]), 252))


def test_two_values_have_no_dispersion_figures():
    m = compute_metrics([100.0, 110.0])
    assert m["cumulative_return"] == pytest.approx(0.1)
    assert m["annual_return"] == pytest.approx(1.1 ** 252 - 1)
    assert math.isnan(m["annual_volatility"]) and math.isnan(m["sharpe"]) and math.isnan(m["sortino"])


@pytest.mark.parametrize(
    "values, pattern",
    [
        ([100.0], r"at least 2 account values .* got 1"),
        ([], r"at least 2 account values .* got 0"),
        ([100.0, 101.0, 102.0, np.nan, 104.0], r"NaN account value at row 3"),
        ([100.0, np.inf], r"inf account value at row 1"),
        ([100.0, -5.0, 3.0], r"negative account value at row 1"),
        ([0.0, 1.0], r"first account value must be > 0"),
        ([100.0, 0.0, 5.0], r"rises again after reaching 0 at row 2"),
        (["a", "b"], r"not numeric"),
    ],
)
def test_invalid_values_raise_one_clear_error(values, pattern):
    with pytest.raises(InvalidValuesError, match=pattern) as info:
        compute_metrics(values)
    assert isinstance(info.value, FinMetaError)


def test_nan_error_names_the_date_of_a_dated_series():
    s = pd.Series([1.0, 2.0, np.nan], index=pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06"]))
    with pytest.raises(InvalidValuesError, match=r"row 2 \(2020-01-06 00:00:00\)"):
        as_values(s, name="ppo")


def test_bad_periods_per_year():
    with pytest.raises(MetricsError, match="periods_per_year"):
        compute_metrics([1.0, 2.0], periods_per_year=0)


def test_drawdown_series_on_values():
    np.testing.assert_allclose(drawdown_series([100.0, 120.0, 90.0, 130.0, 117.0]),
                               [0.0, 0.0, -0.25, 0.0, -0.1])


def test_bars_per_year():
    assert bars_per_year("1d", "stock") == 252
    assert bars_per_year("1d", "crypto") == 365
    assert bars_per_year("1h", "crypto") == 8760
    assert bars_per_year("1min", "stock") == 252 * 390
    assert bars_per_year("5min", "forex") == 260 * 288
    with pytest.raises(MetricsError, match="market"):
        bars_per_year("1d", "bonds")


# ---------------------------------------------------------------- turnover and costs


def test_turnover_and_costs():
    values = np.array([100.0, 200.0, 100.0])
    traded_per_return = np.array([50.0, 100.0])  # traded in period 0->1 and 1->2
    np.testing.assert_allclose(turnover_from_traded(values, traded_per_return), [0.5, 0.5])
    traded_per_value = np.array([10.0, 50.0, 100.0])  # entry 0 divided by v[0]
    np.testing.assert_allclose(turnover_from_traded(values, traded_per_value), [0.1, 0.5, 0.5])
    # the env reports per-step ratios with a leading 0 (no trade before the first value)
    assert mean_turnover(values, [0.0, 0.5, 0.25]) == pytest.approx(0.375)
    assert mean_turnover(values, [0.5, 0.25]) == pytest.approx(0.375)
    assert mean_turnover(values, 0.75) == pytest.approx(0.375)  # scalar: total over the path
    m = compute_metrics(values, turnover=[0.0, 0.5, 0.25], costs=[0.0, 1.5, 2.5])
    assert m["turnover"] == pytest.approx(0.375) and m["costs_paid"] == pytest.approx(4.0)
    assert compute_metrics(values, costs=4.0)["costs_paid"] == 4.0
    assert "turnover" not in compute_metrics(values)
    with pytest.raises(InvalidValuesError, match=r"turnover: expected one entry per value \(3\)"):
        compute_metrics(values, turnover=[1.0])
    with pytest.raises(InvalidValuesError, match="turnover: negative turnover at row 1"):
        compute_metrics(values, turnover=[0.0, -1.0])
    with pytest.raises(InvalidValuesError, match="costs: NaN/inf at row 1"):
        compute_metrics(values, costs=[0.0, np.nan])


# ---------------------------------------------------------------- multi-seed aggregation


def test_aggregate_seeds_mean_std_ci95():
    per_seed = {
        s: pd.DataFrame({"agent": ["ppo", "a2c"], "sharpe": [1.0 + s, 0.5], "max_drawdown": [-0.1 * (s + 1), -0.2]})
        for s in range(3)
    }
    out = aggregate_seeds(per_seed)
    assert list(out["agent"]) == ["ppo", "a2c"]
    assert list(out.columns) == ["agent", "sharpe", "max_drawdown", "sharpe_std", "max_drawdown_std",
                                 "sharpe_ci95", "max_drawdown_ci95", "n_seeds"]
    ppo = out.set_index("agent").loc["ppo"]
    assert ppo["sharpe"] == pytest.approx(2.0)
    assert ppo["sharpe_std"] == pytest.approx(1.0)  # ddof 1 of 1, 2, 3
    assert ppo["sharpe_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert ppo["max_drawdown_std"] == pytest.approx(0.1)
    a2c = out.set_index("agent").loc["a2c"]
    assert a2c["sharpe_std"] == 0.0 and a2c["sharpe_ci95"] == 0.0 and a2c["n_seeds"] == 3


def test_aggregate_single_seed_has_no_std_columns_and_mixed_counts_give_nan():
    one = aggregate_seeds([pd.DataFrame({"agent": ["ppo"], "sharpe": [1.2]})])
    assert list(one.columns) == ["agent", "sharpe", "n_seeds"]
    mixed = aggregate_seeds(pd.DataFrame({"agent": ["ppo", "ppo", "index"], "sharpe": [1.0, 2.0, 0.7]}))
    row = mixed.set_index("agent")
    assert row.loc["ppo", "sharpe_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([1.0, 2.0], ddof=1) / math.sqrt(2))
    assert math.isnan(row.loc["index", "sharpe_std"]) and math.isnan(row.loc["index", "sharpe_ci95"])
    with pytest.raises(MetricsError, match="no 'agent' column"):
        aggregate_seeds(pd.DataFrame({"sharpe": [1.0]}))
