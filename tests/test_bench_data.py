"""A bench config's data section: a stored dataset is cleaned on the calendar it was stored with."""

from __future__ import annotations

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from benchmarks.run import build_arrays, dataset_calendar
from data_processors.store import save_dataset
from finmeta.errors import ConfigError


def _xshg_frame() -> pd.DataFrame:
    days = xcals.get_calendar("XSHG").sessions_in_range("2019-06-03", "2020-03-31").tz_localize(None)
    rng = np.random.default_rng(0)
    rows = []
    for j, tic in enumerate(["sh.600000", "sh.600036", "sh.601318"]):
        close = 10 * (1 + j) * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
        op = close * (1 + rng.normal(0, 0.002, len(days)))
        rows.append(pd.DataFrame({"time": days, "tic": tic, "open": op, "close": close,
                                  "high": np.maximum(op, close) * 1.01, "low": np.minimum(op, close) * 0.99,
                                  "volume": 1e6}))
    return pd.concat(rows).sort_values(["time", "tic"]).reset_index(drop=True)


CONFIG = {"data": {"dataset": "sse_tiny"}, "features": {"indicators": ["macd"], "turbulence": False}}


def test_a_stored_dataset_is_cleaned_on_its_recorded_calendar():
    raw = _xshg_frame()
    save_dataset("sse_tiny", raw, source="canonical", params={"calendar": "XSHG"})
    assert dataset_calendar("sse_tiny") == "XSHG"
    arrays, meta = build_arrays(CONFIG)
    times = pd.DatetimeIndex(arrays.times)
    # every real bar kept (XNYS would drop 2020-01-20, MLK day), none invented (the Spring Festival)
    assert times.equals(pd.DatetimeIndex(sorted(raw["time"].unique())))
    assert pd.Timestamp("2020-01-20") in times
    assert pd.Timestamp("2020-01-28") not in times
    assert meta["calendar"] == "XSHG"


def test_the_source_calendar_is_used_when_none_was_recorded_and_a_contradiction_is_refused():
    save_dataset("sse_src", _xshg_frame(), source="baostock", params={})
    assert dataset_calendar("sse_src") == "XSHG"
    save_dataset("sse_tiny", _xshg_frame(), source="canonical", params={"calendar": "XSHG"})
    with pytest.raises(ConfigError, match=r"data.calendar: XNYS, but dataset sse_tiny was stored on the XSHG"):
        build_arrays({**CONFIG, "data": {"dataset": "sse_tiny", "calendar": "XNYS"}})
    assert dataset_calendar("sse_tiny", "xshg") == "xshg"  # the same calendar, stated: fine


def test_a_config_states_its_bad_tick_policy_and_the_count_reaches_the_provenance():
    raw = _xshg_frame()
    raw.loc[[4, 40, 41], "high"] = raw.loc[[4, 40, 41], ["open", "close"]].max(axis=1) * 0.999
    save_dataset("sse_bad", raw, source="canonical", params={"calendar": "XSHG"})
    cfg = {**CONFIG, "data": {"dataset": "sse_bad"}}
    with pytest.raises(Exception, match=r"high .* < max\(open"):
        build_arrays(cfg)
    arrays, prov = build_arrays({**cfg, "data": {"dataset": "sse_bad", "clean": {"on_bad_ohlc": "clip"}}})
    rec = prov["clean_report"]["ohlc_repair"]
    assert rec["policy"] == "clip" and rec["rows_changed"] == 3 and rec["high_below_open_close"] == 3
    with pytest.raises(ConfigError, match="on_bad_ohlc='mend'"):
        build_arrays({**cfg, "data": {"dataset": "sse_bad", "clean": {"on_bad_ohlc": "mend"}}})


def test_a_featured_dataset_feeds_a_config_with_or_without_a_features_section():
    """`finmeta data features` output used to fail in bench with "add_features: the frame already has
    column(s)" (issue 18): without a features section its stored features are used as they are; with
    one they are recomputed from the config after cleaning."""
    from data_processors.clean import clean
    from data_processors.features.pipeline import add_features

    raw = _xshg_frame()
    cleaned, _ = clean(raw, "XSHG")
    feat = add_features(cleaned, indicators=["macd", "rsi_30"], turbulence=False)
    save_dataset("sse_feat", feat, source="canonical",
                 params={"calendar": "XSHG", "features": {"indicators": ["macd", "rsi_30"]}})
    arrays, prov = build_arrays({"data": {"dataset": "sse_feat"}})
    assert list(arrays.feature_names) == ["macd", "rsi_30"]
    wide = feat.pivot(index="time", columns="tic", values="rsi_30").to_numpy(np.float32)
    np.testing.assert_array_equal(arrays.features[:, :, 1], wide)
    assert prov["stored_features"] == {"columns": ["macd", "rsi_30"], "used": True}
    arrays2, prov2 = build_arrays({"data": {"dataset": "sse_feat"}, "features": {"indicators": ["macd"],
                                                                                  "turbulence": False}})
    assert list(arrays2.feature_names) == ["macd"] and prov2["stored_features"]["used"] is False
    np.testing.assert_allclose(arrays2.features[:, :, 0], arrays.features[:, :, 0], rtol=1e-6)


def test_too_few_training_bars_after_a_late_listing_cut_says_why_and_what_to_do(tmp_path):
    """A raw dataset with one late-listing ticker is cut to that ticker's first bar; the windows error
    used to say only "only -63 training bars" (issue 18)."""
    from benchmarks.loop import WalkForward

    raw = _xshg_frame()
    late = (raw.tic == "sh.601318") & (raw.time < pd.Timestamp("2020-01-02"))
    save_dataset("sse_late", raw[~late].reset_index(drop=True), source="canonical", params={"calendar": "XSHG"})
    config = {**CONFIG, "data": {"dataset": "sse_late"},
              "windows": {"train_start": "2019-06-03", "trade_start": "2019-12-02", "rebalance": 21, "validation": 21}}
    arrays, _ = build_arrays(config)
    with pytest.raises(ConfigError) as ei:
        WalkForward(arrays, config, tmp_path / "run")
    msg = str(ei.value)
    assert "training bars before the first validation window" in msg
    assert "the data start at 2020-01-02, not 2019-06-03" in msg and "sh.601318 2020-01-02" in msg
    assert "data.clean.late_start: drop" in msg
    dropped = {**config, "data": {"dataset": "sse_late", "clean": {"late_start": "drop"}}}
    arrays, _ = build_arrays(dropped)
    assert len(WalkForward(arrays, dropped, tmp_path / "run2").windows) > 0


def test_the_three_frame_to_arrays_chains_agree_on_calendar_and_hash(capsys):
    """The bench (build_arrays), DataProcessor and `finmeta data features` clean a stored dataset on
    its recorded calendar and give the same dataset hash for the same frame (issue 12: they used to
    disagree; DataProcessor cleaned an XSHG dataset on XNYS and recorded no hash)."""
    from data_processors.processor import DataProcessor
    from data_processors.store import load_dataset
    from finmeta.cli import main

    raw = _xshg_frame()
    save_dataset("sse_chain", raw, source="canonical", params={"calendar": "XSHG"})
    arrays, prov = build_arrays({"data": {"dataset": "sse_chain"}, "features": CONFIG["features"]})
    p = DataProcessor().load("sse_chain")
    assert p.calendar == "XSHG"
    dp = p.clean().add_features(indicators=["macd"], turbulence=False).to_arrays(["macd"])
    assert dp.meta["calendar"] == "XSHG" and dp.meta["dataset_hash"] == prov["dataset_hash"]
    np.testing.assert_array_equal(dp.times, arrays.times)
    np.testing.assert_array_equal(dp.features, arrays.features)
    # the features CLI: the same calendar rule, and a conflicting --calendar is refused by the same check
    assert main(["data", "features", "sse_chain", "--out", "sse_chain_f", "--indicators", "macd",
                 "--no-turbulence"]) == 0
    stored = load_dataset("sse_chain_f")
    assert pd.DatetimeIndex(sorted(stored["time"].unique())).equals(pd.DatetimeIndex(arrays.times))
    capsys.readouterr()
    assert main(["data", "features", "sse_chain", "--out", "sse_chain_g", "--calendar", "XNYS"]) == 2
    err = capsys.readouterr().err
    assert "--calendar: XNYS, but dataset sse_chain was stored on the XSHG calendar" in err
