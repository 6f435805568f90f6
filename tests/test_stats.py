"""Known answers of benchmarks/stats.py (papers' worked examples, calibration under a known truth).

Nothing here compares our output with our own earlier output: every expected value comes from a
paper or from the simulated truth.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import stats as st


# ---------------------------------------------------------------- PSR / DSR


def test_dsr_reproduces_the_papers_numerical_example():
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", Section "A numerical example":
    N = 100 independent trials, the best has an annualised Sharpe of 2.5 on 5 years of daily
    returns (T = 1,250, 250 days a year), the trials' annualised Sharpes have variance 1/2, the
    returns have skewness -3 and kurtosis 10. The paper prints SR_0 = 0.1132 (per day) and
    DSR = 0.9004."""
    sr = 2.5 / math.sqrt(250)
    var = 0.5 / 250
    assert st.expected_max_sharpe(100, var) == pytest.approx(0.1132, abs=5e-5)
    assert st.dsr(sr, 1250, 100, var, skew=-3, kurt=10) == pytest.approx(0.9004, abs=5e-5)
    # DSR is the PSR against SR_0 (the same paper, eq. 2), so the PSR formula gives the same digits
    assert st.psr(sr, 1250, -3, 10, sr_star=0.1132) == pytest.approx(0.9004, abs=2e-4)


def test_psr_is_calibrated_under_its_null():
    """PSR(SR*) with SR* = the true Sharpe is (asymptotically) uniform: P(PSR > 0.95) = 0.05.
    Independent known answer (Monte Carlo, normal returns: skew 0, kurtosis 3); the PSR paper's
    own worked example could not be retrieved here, see docs/metrics.md."""
    rng = np.random.default_rng(11)
    true_sr, n, sims = 0.1, 500, 4000
    r = rng.normal(true_sr, 1.0, size=(sims, n))
    sr = r.mean(axis=1) / r.std(axis=1, ddof=1)
    vals = np.array([st.psr(s, n, 0.0, 3.0, sr_star=true_sr) for s in sr])
    assert (vals > 0.95).mean() == pytest.approx(0.05, abs=0.012)
    assert (vals > 0.5).mean() == pytest.approx(0.5, abs=0.03)


def test_psr_edges():
    assert st.psr(0.0, 100) == pytest.approx(0.5)
    assert math.isnan(st.psr(float("nan"), 100))
    assert st.expected_max_sharpe(1, 0.3) == 0.0  # one trial: DSR = PSR(0)
    assert st.dsr(0.05, 500, 1, float("nan")) == pytest.approx(st.psr(0.05, 500))
    assert st.skew_kurt(np.ones(10)) == (0.0, 3.0)


# ---------------------------------------------------------------- bootstrap


def test_stationary_indices_have_the_mean_block_length():
    rng = np.random.default_rng(0)
    idx = st.stationary_indices(1000, 200, 8.0, rng)
    assert idx.shape == (200, 1000) and idx.min() >= 0 and idx.max() < 1000
    breaks = (np.diff(idx, axis=1) % 1000) != 1  # a new block starts where the index jumps
    assert 1000 * 200 / (breaks.sum() + 200) == pytest.approx(8.0, rel=0.05)


def test_sharpe_intervals_cover_the_true_sharpe_at_their_nominal_rate():
    """200 simulated paths (2 years of daily normal returns, true annual Sharpe 0.05 * sqrt(252)):
    the 95 % stationary-bootstrap interval holds the truth in 0.95 +/- 0.04 of them."""
    rng = np.random.default_rng(2021)
    truth = 0.05 * math.sqrt(252)
    hits = 0
    for i in range(200):
        r = rng.normal(0.0005, 0.01, size=(504, 1))
        draws, _ = st.bootstrap_sharpes(r, [[0]], 252, reps=1000, seed=i)
        lo, hi = st.percentile_interval(draws)
        hits += bool(lo[0] <= truth <= hi[0])
    assert hits / 200 == pytest.approx(0.95, abs=0.04)


def test_bootstraps_are_seeded():
    r = np.random.default_rng(1).normal(0.0005, 0.01, size=(300, 3))
    a, _ = st.bootstrap_sharpes(r, [[0, 1], [2]], 252, reps=300, seed=7)
    b, _ = st.bootstrap_sharpes(r, [[0, 1], [2]], 252, reps=300, seed=7)
    c, _ = st.bootstrap_sharpes(r, [[0, 1], [2]], 252, reps=300, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert st.spa_pvalue(r[:, 0], r[:, 1:], reps=200, seed=3) == st.spa_pvalue(r[:, 0], r[:, 1:], reps=200, seed=3)


# ---------------------------------------------------------------- Sharpe difference (Ledoit-Wolf)


def test_sharpe_difference_se_matches_the_iid_normal_formula():
    """For independent iid normal returns Var(SR^) = (1 + SR^2 / 2) / T (Lo 2002; Jobson-Korkie),
    so the difference of two has twice that variance."""
    rng = np.random.default_rng(5)
    t, sr = 100_000, 0.1
    r = rng.normal(sr, 1.0, size=(t, 2))
    delta, se, p = st.sharpe_difference_test(r[:, 0], r[:, 1], 1.0)
    assert se == pytest.approx(math.sqrt(2 * (1 + sr**2 / 2) / t), rel=0.03)
    assert delta == pytest.approx(st.sharpe_per_period(r[:, 0]) - st.sharpe_per_period(r[:, 1]))


def test_sharpe_difference_test_holds_its_size_and_finds_a_real_edge():
    """Two correlated paths (rho 0.7) with the same true Sharpe: rejected at 5 % in about 5 % of
    500 simulations; with a daily Sharpe gap of 0.15 (2.4 a year) over 2 years, where the
    asymptotic power is Z(0.15 / sqrt(2 (1 - 0.7) / 504) - 1.96) = 0.99: in more than 90 %."""
    rng = np.random.default_rng(9)
    chol = np.linalg.cholesky([[1.0, 0.7], [0.7, 1.0]])
    null = alt = 0
    for _ in range(500):
        z = rng.normal(size=(504, 2)) @ chol.T
        null += st.sharpe_difference_test(0.05 + z[:, 0], 0.05 + z[:, 1], 252)[2] < 0.05
        alt += st.sharpe_difference_test(0.20 + z[:, 0], 0.05 + z[:, 1], 252)[2] < 0.05
    assert null / 500 == pytest.approx(0.05, abs=0.03)
    assert alt / 500 > 0.9


# ---------------------------------------------------------------- across seeds


def test_iqm_and_probability_of_improvement_known_answers():
    assert st.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert st.iqm([0, 0, 1, 1, 1, 1, 100, -100]) == pytest.approx(0.75)
    assert st.probability_of_improvement([2, 3], [1]) == 1.0
    assert st.probability_of_improvement([1, 3], [2, 2]) == 0.5
    assert st.probability_of_improvement([1], [1]) == 0.5
    lo, hi = st.iqm_interval([1.0, 1.0, 1.0])
    assert lo == hi == 1.0


# ---------------------------------------------------------------- PBO (CSCV)


def test_pbo_of_noise_is_near_half_or_above_and_of_a_real_drift_near_zero():
    """Bailey et al. (2017): strategies without skill give PBO around 0.5 or above (the in-sample
    best is a random draw out of sample, and symmetric splits make it a little worse); one
    strategy with a real drift is picked in sample and stays on top out of sample: PBO near 0."""
    noise, drift = [], []
    for seed in range(20):
        r = np.random.default_rng(seed).normal(0.0, 0.01, size=(1000, 10))
        noise.append(st.pbo_cscv(r)["pbo"])
        r[:, 3] += 0.0025  # daily Sharpe 0.25
        drift.append(st.pbo_cscv(r)["pbo"])
    assert 0.4 <= np.mean(noise) <= 0.75
    assert max(drift) < 0.05
    res = st.pbo_cscv(np.random.default_rng(0).normal(size=(160, 4)))
    assert res["n_combinations"] == 12870 and res["logits"].shape == (12870,)
    assert math.isnan(st.pbo_cscv(np.zeros((100, 1)))["pbo"])


# ---------------------------------------------------------------- rows and a run


def test_row_kinds():
    assert st.row_kind("index") == st.row_kind("index_SPY") == "index"
    assert st.row_kind("index_gated") == st.row_kind("equal_weight") == st.row_kind("min_variance") == "rule"
    assert st.row_kind("a2c") == st.row_kind("ensemble") == st.row_kind("moe_single") == "learned"


def _values(rng, n, mu, sd=0.01, dates=None):
    v = 1e6 * np.cumprod(np.concatenate([[1.0], 1.0 + rng.normal(mu, sd, n - 1)]))
    return pd.Series(v, index=dates)


def test_run_statistics_of_a_small_run():
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2020-01-01", periods=400)
    mkt = rng.normal(0.0003, 0.01, 399)
    idx = pd.Series(1e6 * np.cumprod(np.concatenate([[1.0], 1 + mkt])), index=dates)
    # a learned agent = the index + a real daily edge of 0.001 and small noise, three seeds
    ppo = [pd.Series(1e6 * np.cumprod(np.concatenate([[1.0], 1 + mkt + 0.001 + rng.normal(0, 0.002, 399)])),
                     index=dates) for _ in range(3)]
    ew = _values(rng, 400, 0.0002, dates=dates)
    paths = {"index": [idx], "ppo": ppo, "equal_weight": [ew]}
    from benchmarks.metrics import compute_metrics

    table = pd.DataFrame({"agent": list(paths),
                          "sharpe": [np.mean([compute_metrics(s)["sharpe"] for s in v]) for v in paths.values()]})
    rows, run = st.run_statistics(paths, table, 252, reps=500, seed=0)
    rows = rows.set_index("agent")
    assert run["n_trials"] == 4 and run["index_row"] == "index" and run["best_rule"] == "equal_weight"
    assert run["pbo_strategies"] == ["equal_weight", "ppo"] and run["spa_models"] == ["ppo"]
    assert run["spa_pvalue"] < 0.05  # the edge is real
    for a in paths:
        assert rows.loc[a, "sharpe_lo"] < table.set_index("agent").loc[a, "sharpe"] < rows.loc[a, "sharpe_hi"]
    assert rows.loc["ppo", "p_index"] < 0.01 and rows.loc["ppo", "sr_diff_index"] > 0
    assert rows.loc["ppo", "p_improve_index"] == 1.0
    assert math.isnan(rows.loc["index", "sr_diff_index"]) and math.isnan(rows.loc["index", "dsr"])
    assert 0.0 <= rows.loc["ppo", "dsr"] <= rows.loc["ppo", "psr"] <= 1.0
    again, run2 = st.run_statistics(paths, table, 252, reps=500, seed=0)
    pd.testing.assert_frame_equal(rows, again.set_index("agent"))
    assert run2["spa_pvalue"] == run["spa_pvalue"] and run2["pbo"] == run["pbo"]


def test_tuning_trials_count_from_the_tuned_files(tmp_path):
    """N counts every tuning trial: ``finmeta tune`` writes each trial into the tuned file that
    ``config.tuned`` names."""
    import yaml

    f = tmp_path / "ppo.yaml"
    f.write_text(yaml.safe_dump({"agent": "ppo", "params": {}, "trials": [{"number": i} for i in range(7)]}))
    man = {"config": {"tuned": {"ppo": {"file": str(f), "params": {}},
                                "a2c": {"file": str(tmp_path / "gone.yaml"), "params": {}}}}}
    assert st.count_tuning_trials(man) == {"ppo": 7}
    assert st.count_tuning_trials(None) == {} and st.count_tuning_trials({"config": {}}) == {}
