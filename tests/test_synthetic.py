"""The ``synthetic`` source: determinism, schema, calendar, stylized facts, fBm, calibration."""

from __future__ import annotations

import json

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from data_processors.sources.calibrate_synthetic import DATA_FILE, acf, fit, sha256_file, stylized_facts
from data_processors.schema import REQUIRED_COLUMNS
from data_processors.sources import get_source
from data_processors.sources.base import REGISTRY
from data_processors.sources.synthetic import (
    DEFAULT_PARAMS_PATH,
    SyntheticSource,
    bridge_extremes,
    fgn_autocovariance,
    fractional_gaussian_noise,
)
from finmeta.errors import ConfigError, DataSourceError, DataValidationError

PARAMS = json.loads(DEFAULT_PARAMS_PATH.read_text(encoding="utf-8"))
N_CAL = PARAMS["fitted_by"]["n_assets"]  # 29 calibrated profiles
SEEDS = range(5)  # stylized facts: 5 seeds x 29 assets x 3,500 days


@pytest.fixture(scope="module")
def src() -> SyntheticSource:
    return SyntheticSource()


@pytest.fixture(scope="module")
def long_samples() -> list[dict[str, np.ndarray]]:
    """Five independent 29 x 3,500 markets with the default (calibrated) model."""
    return [SyntheticSource.generate_arrays(N_CAL, 3500, seed=s) for s in SEEDS]


def _mean_facts(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    facts = [stylized_facts(a["log_return"]) for a in samples]
    return {k: np.mean([np.asarray(f[k]) for f in facts], axis=0) for k in facts[0]}


# -- registry, determinism, schema, calendar ------------------------------------------------------
def test_registered_under_its_name():
    s = get_source("synthetic")
    assert isinstance(s, SyntheticSource) and REGISTRY["synthetic"] is SyntheticSource
    assert s.name == "synthetic" and s.calendar == "XNYS"


def test_same_seed_bitwise_identical_and_seeds_differ(src):
    a = src.download(8, "2015-01-01", "2017-01-01", seed=7)
    b = src.download(8, "2015-01-01", "2017-01-01", seed=7)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for col in ("open", "high", "low", "close", "volume"):
        assert a[col].to_numpy().tobytes() == b[col].to_numpy().tobytes()
    c = src.download(8, "2015-01-01", "2017-01-01", seed=8)
    assert (a["time"].equals(c["time"])) and a["tic"].equals(c["tic"])
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())
    # fBm mode is seeded too.
    f1 = src.download(3, "2015-01-01", "2016-01-01", seed=1, hurst=0.7)
    f2 = src.download(3, "2015-01-01", "2016-01-01", seed=1, hurst=0.7)
    pd.testing.assert_frame_equal(f1, f2, check_exact=True)
    assert not np.allclose(f1["close"].to_numpy(), src.download(3, "2015-01-01", "2016-01-01", seed=2, hurst=0.7)["close"].to_numpy())


def test_canonical_schema_and_ohlc_consistency(src):
    df = src.download(30, "2009-01-01", "2023-01-01", seed=3)
    assert list(df.columns) == list(REQUIRED_COLUMNS)
    assert df["time"].dtype == "datetime64[ns]" and df["time"].dt.tz is None
    assert (df["time"] == df["time"].dt.normalize()).all()
    assert pd.api.types.is_string_dtype(df["tic"])
    assert sorted(df["tic"].unique()) == [f"SYN{i:02d}" for i in range(30)]
    assert not df.duplicated(["time", "tic"]).any()
    assert df.equals(df.sort_values(["time", "tic"]).reset_index(drop=True))
    num = df[["open", "high", "low", "close", "volume"]].to_numpy()
    assert num.dtype == np.float64 and np.isfinite(num).all()
    o, h, lo, c, v = num.T
    assert (lo > 0).all() and (v >= 0).all()
    assert (lo <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all()
    assert (h > lo).mean() > 0.99  # a real intraday range, not degenerate bars
    assert len(df) == 30 * df["time"].nunique()


@pytest.mark.filterwarnings("ignore:Series.values returning an ndarray")  # exchange-calendars under pandas 3
def test_times_are_xnys_sessions_end_exclusive(src):
    df = src.download(2, "2020-01-01", "2021-01-04", seed=0)
    cal = xcals.get_calendar("XNYS")
    expected = cal.sessions_in_range("2020-01-01", "2021-01-01")
    times = pd.DatetimeIndex(df["time"].unique())
    assert times.equals(pd.DatetimeIndex(expected.tz_localize(None) if expected.tz else expected).as_unit("ns"))
    assert len(times) == 253  # NYSE 2020
    for holiday in ("2020-01-20", "2020-04-10", "2020-07-03", "2020-11-26", "2020-12-25", "2021-01-01"):
        assert pd.Timestamp(holiday) not in times
    assert pd.Timestamp("2021-01-04") not in times  # end is exclusive


def test_ticker_names_map_by_position(src):
    by_count = src.download(3, "2019-01-01", "2019-03-01", seed=5)
    by_names = src.download(["SYN00", "SYN01", "SYN02"], "2019-01-01", "2019-03-01", seed=5)
    pd.testing.assert_frame_equal(by_count, by_names, check_exact=True)
    renamed = src.download(["ZZZ", "AAA"], "2019-01-01", "2019-03-01", seed=5)
    assert list(renamed["tic"].unique()) == ["AAA", "ZZZ"]  # sorted within each time
    two = src.download(2, "2019-01-01", "2019-03-01", seed=5)  # same N, same draws: position 0 = ZZZ
    first = two[two["tic"] == "SYN00"]["close"].to_numpy()
    assert np.array_equal(renamed[renamed["tic"] == "ZZZ"]["close"].to_numpy(), first)
    assert src.download(101, "2019-01-01", "2019-01-10")["tic"].iloc[0] == "SYN000"


def test_bad_input_gives_one_clear_error(src):
    with pytest.raises(ConfigError, match="freq"):
        src.download(2, "2020-01-01", "2020-02-01", freq="1h")
    with pytest.raises(ConfigError, match="hurts"):
        src.download(2, "2020-01-01", "2020-02-01", hurts=0.7)
    with pytest.raises(ConfigError, match="hurst"):
        src.download(2, "2020-01-01", "2020-02-01", hurst=1.2)
    with pytest.raises(ConfigError, match="start_price"):
        src.download(2, "2020-01-01", "2020-02-01", start_price=-1.0)
    with pytest.raises(DataSourceError, match="no XNYS sessions"):
        src.download(2, "2020-07-04", "2020-07-05")
    with pytest.raises(ConfigError, match="assets"):
        src.download(2, "2020-01-01", "2020-02-01", params={"regimes": {}})
    bad = src.download(2, "2020-01-01", "2020-01-10").assign(high=1e-3)
    with pytest.raises(DataValidationError, match="row 0"):
        src.normalize(bad)


def test_read_file_round_trip_and_bad_file(src, tmp_path):
    df = src.download(3, "2020-01-01", "2020-03-01", seed=2)
    path = tmp_path / "syn.csv.gz"
    df.to_csv(path, index=False)
    pd.testing.assert_frame_equal(src.read_file(path), df, check_exact=False, rtol=1e-12)
    df.assign(low=df["high"] * 1.01).to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"syn\.csv\.gz: row 0 .*tic=SYN00"):
        src.read_file(path)


def test_start_price_and_options(src):
    df = src.download(2, "2020-01-01", "2020-03-01", seed=1, start_price=[50.0, 200.0], garch=False, regimes=False)
    first = df[df["time"] == df["time"].min()]
    gap = np.log(first["open"].to_numpy() / np.array([50.0, 200.0]))
    assert np.all(np.abs(gap) < 0.1)


# -- stylized facts --------------------------------------------------------------------------------
# Tolerances come from 40 seeds of the 29 x 3,500 default model (docs/synthetic.md): the 5-seed mean
# of the average pairwise correlation has sd 0.015 (bound 0.05 ~ 3 sd), of acf(r) at lags 1-5 sd
# <= 0.009 (bound 0.04), of acf(|r|) sd <= 0.012 around 0.15-0.20 (bound > 0.08).
def test_volatility_clustering_without_return_autocorrelation(long_samples):
    m = _mean_facts(long_samples)
    assert np.all(m["median_acf_abs_r"] > 0.08), m["median_acf_abs_r"]
    assert np.all(np.abs(m["median_acf_r"]) < 0.04), m["median_acf_r"]


def test_clustering_comes_from_garch_and_regimes():
    """Negative control: without GARCH and regimes, |r| is (nearly) serially uncorrelated."""
    m = _mean_facts([SyntheticSource.generate_arrays(N_CAL, 3500, seed=s, garch=False, regimes=False) for s in (0, 1)])
    assert np.all(np.abs(m["median_acf_abs_r"]) < 0.03), m["median_acf_abs_r"]


def test_fat_tails(long_samples):
    m = _mean_facts(long_samples)
    assert m["median_kurtosis"] > 5.0  # Gaussian = 3; Dow 30 2009-2022 median = 12.3
    pooled = np.concatenate([a["log_return"] for a in long_samples])
    z = (pooled - pooled.mean(0)) / pooled.std(0)
    assert np.mean(np.abs(z) > 4) > 5 * 6.3e-5  # 4-sigma days far more common than Gaussian


def test_correlation_and_scale_match_calibration(long_samples):
    m = _mean_facts(long_samples)
    t = PARAMS["targets"]
    assert abs(m["avg_pairwise_corr"] - t["avg_pairwise_corr"]) < 0.05
    assert abs(m["median_sigma"] / t["median_sigma"] - 1) < 0.08
    # Crisis regime: correlations rise (factor scale grows faster than idiosyncratic scale).
    a = long_samples[0]
    r, reg = a["log_return"], a["regime"]
    crisis = int(np.argmax(np.asarray(PARAMS["regimes"]["factor_scale"])[:, 0]))
    c_in = stylized_facts(r[reg == crisis])["avg_pairwise_corr"]
    c_out = stylized_facts(r[reg == 0])["avg_pairwise_corr"]
    assert c_in > c_out + 0.1


def test_ohlc_and_volume_match_calibration(long_samples):
    o = PARAMS["ohlc"]
    q, ratio = [], []
    for a in long_samples:
        r = a["log_return"]
        q.append(np.median(np.log(a["open"][1:] / a["close"][:-1]).var(0) / r[1:].var(0)))
        ratio.append(np.median(np.log(a["high"] / a["low"]).mean(0) / r.std(0)))
    assert abs(np.mean(q) - o["overnight_share"]) < 0.02
    assert abs(np.mean(ratio) - o["range_ratio_target"]) < 0.05
    lv = np.log(long_samples[0]["volume"])
    v = PARAMS["volume"]
    assert abs(lv.mean() - v["log_level_mean"]) < 3 * v["log_level_sd"] / np.sqrt(N_CAL) + 0.1
    assert np.median(acf(lv, 1)) > 0.5  # persistent volume
    absr = np.abs(long_samples[0]["log_return"])
    assert np.median([np.corrcoef(absr[:, i], lv[:, i])[0, 1] for i in range(N_CAL)]) > 0.1


def test_bridge_extremes_bound_open_and_close():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.02, 100_000)
    mx, mn = bridge_extremes(d, np.full_like(d, 0.02), 1 - rng.random(d.size), 1 - rng.random(d.size))
    assert (mx >= np.maximum(d, 0)).all() and (mn <= np.minimum(d, 0)).all()
    # Brownian bridge 0 -> 0 with unit variance: E[max] = sqrt(pi / 8).
    mx0, _ = bridge_extremes(np.zeros(200_000), np.ones(200_000), 1 - rng.random(200_000), rng.random(200_000) + 1e-12)
    assert abs(mx0.mean() - np.sqrt(np.pi / 8)) < 0.005


# -- fBm option ------------------------------------------------------------------------------------
def _hurst_aggregated_variance(x: np.ndarray, blocks=(1, 2, 4, 8, 16, 32, 64)) -> float:
    """Aggregated-variance Hurst estimate: Var(block sum of m increments) ~ m^(2H); x (T, N)."""
    x = x - x.mean(0)
    logv = []
    for m in blocks:
        nb = x.shape[0] // m
        logv.append(np.log(x[: nb * m].reshape(nb, m, -1).sum(1).var(0).mean()))
    return float(np.polyfit(np.log(blocks), logv, 1)[0] / 2)


def test_fgn_has_exact_autocovariance():
    x = fractional_gaussian_noise(0.7, 256, 4000, np.random.default_rng(1))
    emp = [(x[k:] * x[: 256 - k]).mean() for k in range(4)]
    assert np.allclose(emp, fgn_autocovariance(0.7, 4), atol=0.01)
    y = fractional_gaussian_noise(0.3, 256, 4000, np.random.default_rng(2))
    assert (y[1:] * y[:-1]).mean() == pytest.approx(fgn_autocovariance(0.3, 2)[1], abs=0.01)  # negative


# Over 20 seeds of 30 x 3,500 the estimator gives 0.297 +- 0.009 (H=0.3), 0.494 +- 0.009 (H=0.5) and
# 0.687 +- 0.011 (H=0.7) (small downward bias of the method); 0.05 is > 3 sd + bias and < half the
# distance between the requested values, so a wrong H (or plain Brownian motion) fails.
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_fbm_option_hurst_exponent(src, hurst):
    a = src.generate_arrays(30, 3500, seed=11, hurst=hurst)
    assert abs(_hurst_aggregated_variance(a["log_return"]) - hurst) < 0.05
    df = src.download(3, "2010-01-01", "2011-01-01", seed=11, hurst=hurst)
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all() and (df["close"] > 0).all()


def test_fbm_half_is_brownian(src):
    a = src.generate_arrays(30, 3500, seed=4, hurst=0.5)
    assert abs(_hurst_aggregated_variance(a["log_return"]) - 0.5) < 0.05
    assert np.all(np.abs(np.median([acf(a["log_return"], k) for k in (1, 2)], axis=1)) < 0.03)


# -- calibration -----------------------------------------------------------------------------------
def test_committed_params_are_what_the_script_fits(shared_data):
    path = shared_data / DATA_FILE
    fb = PARAMS["fitted_by"]
    assert fb["script"] == "data_processors/sources/calibrate_synthetic.py" and fb["data_file"] == path.name
    assert fb["data_sha256"] == sha256_file(path)
    assert (fb["start"], fb["end"]) == ("2009-01-02", "2022-12-30")
    refit = fit(path)
    assert refit["fitted_by"] == fb

    def close(a, b, where):
        if isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for k in a:
                close(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, str) or (isinstance(a, list) and a and isinstance(a[0], str)):
            assert a == b, where
        else:
            assert np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-3, atol=1e-7), where

    close(refit, PARAMS, "params")
    assert PARAMS["factors"]["model_avg_pairwise_corr"] == pytest.approx(PARAMS["targets"]["avg_pairwise_corr"], abs=0.01)
