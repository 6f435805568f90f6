"""Validation, calendars and cleaning (data_processors.clean / calendars)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_processors.arrays import to_arrays
from data_processors.calendars import calendar_times
from data_processors.clean import clean, infer_freq, validate
from finmeta.errors import ConfigError, DataValidationError

DAYS = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"])


def frame(tickers=("AAA", "BBB"), days=DAYS, base=10.0) -> pd.DataFrame:
    """A tiny, valid, sorted canonical frame: close rises by 1 per day, per ticker offset."""
    rows = []
    for t, day in enumerate(days):
        for j, tic in enumerate(tickers):
            c = base + 100 * j + t
            rows.append({"time": day, "tic": tic, "open": c - 0.5, "high": c + 1, "low": c - 1,
                         "close": c, "volume": 1000.0 + t})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# validation: one clear error naming file / row / ticker
# ----------------------------------------------------------------------------------------------
def _set(df, row, **values):
    df = df.copy()
    for k, v in values.items():
        df.loc[row, k] = v
    return df


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: _set(d, 2, high=10.0, low=11.0, open=10.5, close=10.5),
     "dow30.csv: row 2 (AAA 2020-01-03): high 10.0 < low 11.0"),
    (lambda d: _set(d, 3, close=np.nan), "dow30.csv: row 3 (BBB 2020-01-03): close is nan"),
    (lambda d: _set(d, 5, volume=np.inf), "dow30.csv: row 5 (BBB 2020-01-06): volume is inf"),
    (lambda d: _set(d, 4, open=-1.0), "dow30.csv: row 4 (AAA 2020-01-06): open -1.0 is not positive"),
    (lambda d: _set(d, 4, low=0.0), "dow30.csv: row 4 (AAA 2020-01-06): low 0.0 is not positive"),
    (lambda d: _set(d, 6, volume=-5.0), "dow30.csv: row 6 (AAA 2020-01-07): volume -5.0 is negative"),
    (lambda d: _set(d, 7, high=112.8), "dow30.csv: row 7 (BBB 2020-01-07): high 112.8 < max(open 112.5, close 113.0)"),
    (lambda d: _set(d, 1, low=111.0), "dow30.csv: row 1 (BBB 2020-01-02): low 111.0 > min(open"),
    (lambda d: _set(d, 3, tic="AAA"), "dow30.csv: row 3 (AAA 2020-01-03): duplicate (time, tic) key, first seen at row 2"),
    (lambda d: d.iloc[[0, 1, 3, 2, 4, 5, 6, 7, 8, 9]].reset_index(drop=True),
     "dow30.csv: row 3 (AAA 2020-01-03): not sorted by (time, tic)"),
    (lambda d: _set(d, 9, time=pd.Timestamp("2020-01-08 10:30")),
     "dow30.csv: row 9 (BBB 2020-01-08T10:30:00): intraday time in a 1d frame"),
    (lambda d: d.drop(columns="volume"), "dow30.csv: missing columns ['volume']"),
])
def test_validation_errors_name_file_row_ticker(mutate, expected):
    df = mutate(frame())
    with pytest.raises(DataValidationError) as info:
        validate(df, where="dow30.csv")
    assert expected in str(info.value)


def test_validation_counts_further_bad_rows():
    df = _set(_set(frame(), 2, low=100.0), 4, low=100.0)
    with pytest.raises(DataValidationError, match=r"row 2 \(AAA 2020-01-03\).*and 1 more row"):
        validate(df, where="f.csv")


def test_validation_mixed_frequency_tickers():
    daily = frame(("AAA",), days=pd.bdate_range("2020-01-01", periods=30))
    weekly = frame(("WWW",), days=pd.date_range("2020-01-03", periods=6, freq="7D"))
    df = pd.concat([daily, weekly]).sort_values(["time", "tic"]).reset_index(drop=True)
    with pytest.raises(DataValidationError, match=r"ticker WWW has 1w bars while the frame has 1d bars"):
        validate(df, where="mix.csv")


def test_validation_mixed_intraday_bars():
    t1 = pd.date_range("2022-05-02", periods=60, freq="1min", tz="UTC")
    one = frame(("AAA", "BBB"), days=t1)
    sparse = one[(one.tic == "AAA") | one.time.dt.minute.isin([0, 3, 4, 9, 17, 18])]  # illiquid BBB is fine
    assert validate(sparse.reset_index(drop=True), "x") == "1m"
    five = frame(("CCC",), days=t1[::5])
    mixed = pd.concat([one, five]).sort_values(["time", "tic"]).reset_index(drop=True)
    with pytest.raises(DataValidationError, match="ticker CCC has 5m bars while the frame has 1m bars"):
        validate(mixed, "x")


def test_validation_intraday_requires_utc_and_regular_steps():
    t = pd.date_range("2022-05-02 00:00", periods=12, freq="5min", tz="UTC")
    df = frame(("BTCUSDT",), days=t)
    assert validate(df, "x") == "5m"
    odd = df.copy()
    odd.loc[6, "time"] = odd.loc[6, "time"] + pd.Timedelta(minutes=2)
    with pytest.raises(DataValidationError, match=r"row 6 \(BTCUSDT 2022-05-02T00:32:00\+00:00\).*mixed frequencies"):
        validate(odd, "x")
    naive = df.assign(time=df["time"].dt.tz_localize(None))
    with pytest.raises(DataValidationError, match="tz-aware UTC"):
        validate(naive, "x")


def test_infer_freq():
    assert infer_freq(frame()) == "1d"
    assert infer_freq(frame(days=pd.date_range("2020-01-01", periods=5, freq="h", tz="UTC"))) == "1h"
    assert infer_freq(frame(days=pd.date_range("2020-01-03", periods=5, freq="7D"))) == "1w"


# ----------------------------------------------------------------------------------------------
# calendars
# ----------------------------------------------------------------------------------------------
def test_calendars():
    xnys = calendar_times("XNYS", "2019-12-30", "2020-01-03")
    assert list(xnys.strftime("%Y-%m-%d")) == ["2019-12-30", "2019-12-31", "2020-01-02", "2020-01-03"]
    assert xnys.tz is None
    m = calendar_times("XNYS", "2019-02-11", "2019-02-12 23:59", "1m")
    assert len(m) == 2 * 390 and str(m[0]) == "2019-02-11 14:30:00+00:00" and str(m[-1]) == "2019-02-12 20:59:00+00:00"
    sh = calendar_times("XSHG", "2020-01-02", "2020-01-02 23:59", "30m")
    hours = set(sh.tz_convert("Asia/Shanghai").strftime("%H:%M"))
    assert "09:30" in hours and "13:00" in hours and "11:30" not in hours and "12:00" not in hours
    assert len(calendar_times("24/7", "2020-02-01", "2020-02-29")) == 29
    fx = calendar_times("FX", "2020-01-03 00:00", "2020-01-06 00:00", "1h").tz_convert("America/New_York")
    # Friday bars stop at 16:00 NY (the 16:00-17:00 bar is the last), Sunday resumes at 17:00
    assert fx[fx.day_of_week == 4][-1].hour == 16
    assert fx[fx.day_of_week == 6][0].hour == 17
    assert not (fx.day_of_week == 5).any()
    with pytest.raises(ConfigError, match="calendar='NOPE'"):
        calendar_times("NOPE", "2020-01-01", "2020-01-10")


# ----------------------------------------------------------------------------------------------
# cleaning on hand-made frames
# ----------------------------------------------------------------------------------------------
def test_forward_fill_only_never_backfill():
    df = frame()
    # BBB has no bar on 2020-01-06 (row 5) -> must carry 2020-01-03's close, not 2020-01-07's
    df = df.drop(index=5).reset_index(drop=True)
    out, rep = clean(df, "XNYS", where="t")
    assert len(out) == 10 and rep.filled == {"AAA": 0, "BBB": 1}
    row = out[(out.tic == "BBB") & (out.time == "2020-01-06")].iloc[0]
    assert row.close == 111.0  # previous close (2020-01-03); back-fill would give 113.0
    assert row.open == row.high == row.low == 111.0
    assert row.volume == 0 and row.tradestatus == 0
    # every other bar is untouched and tradable
    real = out[~((out.tic == "BBB") & (out.time == "2020-01-06"))]
    assert (real.tradestatus == 1).all()
    pd.testing.assert_series_equal(real.close.reset_index(drop=True), df.close, check_names=False)
    assert list(out.columns) == list(df.columns) + ["tradestatus"]
    assert out.equals(out.sort_values(["time", "tic"]).reset_index(drop=True))


def test_late_start_is_cut_or_dropped_never_invented():
    df = frame(("AAA", "BBB", "CCC"))
    df = df[~((df.tic == "CCC") & (df.time < "2020-01-06"))].reset_index(drop=True)  # CCC starts late
    out, rep = clean(df, "XNYS")
    assert out.time.min() == pd.Timestamp("2020-01-06") and len(out) == 9
    assert rep.cut_start == ("2020-01-02", "2020-01-06") and rep.late_start == {"CCC": "2020-01-06"}
    assert sum(rep.filled.values()) == 0  # nothing before CCC's first bar was made up
    out2, rep2 = clean(df, "XNYS", late_start="drop")
    assert sorted(out2.tic.unique()) == ["AAA", "BBB"] and len(out2) == 10
    assert "CCC" in rep2.dropped and "late_start='drop'" in rep2.dropped["CCC"]


def test_unsorted_input_is_sorted_by_clean():
    df = frame().sample(frac=1.0, random_state=0).reset_index(drop=True)
    with pytest.raises(DataValidationError, match="not sorted"):
        validate(df, "x")
    out, _ = clean(df, "XNYS")
    pd.testing.assert_frame_equal(out.drop(columns="tradestatus"), frame(), check_dtype=False)


def test_coverage_and_gap_policies_report_reasons():
    days = calendar_times("XNYS", "2020-01-02", "2020-02-28")
    df = frame(("AAA", "BBB"), days=days)
    gap = (df.tic == "BBB") & (df.time >= "2020-01-10") & (df.time <= "2020-01-24")  # 10 sessions (MLK day)
    df = df[~gap].reset_index(drop=True)
    out, rep = clean(df, "XNYS", max_gap=5)
    assert rep.tickers == ["AAA"] and "10 consecutive missing bars > max_gap 5" in rep.dropped["BBB"]
    out, rep = clean(df, "XNYS", min_coverage=0.9)
    assert "coverage" in rep.dropped["BBB"]
    out, rep = clean(df, "XNYS")  # defaults keep it, forward-filled and reported
    assert rep.filled["BBB"] == 10 and rep.max_gap == {"BBB": 10}
    with pytest.raises(DataValidationError, match="no ticker left"):
        clean(df[df.tic == "BBB"], "XNYS", max_gap=0)
    with pytest.raises(ConfigError, match="late_start"):
        clean(df, "XNYS", late_start="backfill")


def test_suspension_pins_price_and_keeps_preclose_consistent():
    df = frame(("AAA",))
    df["preclose"] = df["close"].shift(1).fillna(9.0)
    df["tradestatus"] = 1
    df["is_st"] = 0
    # 2020-01-06 suspended with vendor junk prices; 2020-01-07 missing entirely
    df.loc[2, ["open", "high", "low", "close", "volume", "tradestatus"]] = [50.0, 50.0, 50.0, 50.0, 7.0, 0]
    df = df.drop(index=3).reset_index(drop=True)
    df.loc[3, "preclose"] = 11.0  # the vendor's (ex-rights) preclose of the first bar back
    out, rep = clean(df, "XSHG")  # XSHG is open on all of these dates
    assert rep.suspended == {"AAA": 1} and rep.filled == {"AAA": 1}
    assert out.close.tolist() == [10.0, 11.0, 11.0, 11.0, 14.0]
    assert out.preclose.tolist() == [9.0, 10.0, 11.0, 11.0, 11.0]
    assert out.tradestatus.tolist() == [1, 1, 0, 0, 1]
    assert out.volume.tolist()[2:4] == [0.0, 0.0]
    arrays = to_arrays(out)
    assert arrays.tradable[:, 0].tolist() == [True, True, False, False, True]
    np.testing.assert_allclose(arrays.preclose[:, 0], [9, 10, 11, 11, 11])


def test_off_calendar_rows_dropped_or_rejected():
    df = frame(("AAA",))
    sat = df.iloc[[0]].assign(time=pd.Timestamp("2020-01-04"))
    df2 = pd.concat([df, sat]).reset_index(drop=True)
    with pytest.raises(DataValidationError, match=r"row 2 \(AAA 2020-01-04\) is not a XNYS 1d bar"):
        clean(df2, "XNYS", where="f.csv")  # 1 of 6 rows > 5% -> wrong calendar?
    out, rep = clean(df2, "XNYS", max_off_calendar=0.5)
    assert rep.off_calendar == {"AAA": 1} and len(out) == 5


# ----------------------------------------------------------------------------------------------
# real data
# ----------------------------------------------------------------------------------------------
def _dow(shared_data, start="2018-12-20", end="2020-01-31") -> pd.DataFrame:
    df = pd.read_csv(shared_data / "us_equities/dow30_daily.csv.gz", parse_dates=["date"])
    df = df.rename(columns={"date": "time"})
    return df[(df.time >= start) & (df.time <= end)].reset_index(drop=True)


def test_dow30_alignment_on_xnys(shared_data):
    df = _dow(shared_data)
    validate(df, "dow30_daily.csv.gz")
    # knock out bars: AAPL on 2019-07-05 (after a holiday), MSFT over 3 sessions
    holes = ((df.tic == "AAPL") & (df.time == "2019-07-05")) | (
        (df.tic == "MSFT") & df.time.isin(pd.to_datetime(["2019-11-26", "2019-11-27", "2019-11-29"])))
    out, rep = clean(df[~holes], "XNYS", where="dow30")
    sessions = calendar_times("XNYS", "2019-03-20", "2020-01-31")
    assert rep.cut_start == ("2018-12-20", "2019-03-20") and rep.late_start == {"DOW": "2019-03-20"}
    assert list(pd.DatetimeIndex(out.time.unique())) == list(sessions)
    assert len(out) == len(sessions) * 30
    assert rep.filled["AAPL"] == 1 and rep.filled["MSFT"] == 3 and sum(rep.filled.values()) == 4
    a = out[out.tic == "AAPL"].set_index("time")
    assert a.loc["2019-07-05", "close"] == a.loc["2019-07-03", "close"]  # 07-04 is a holiday
    assert a.loc["2019-07-05", "tradestatus"] == 0
    m = out[out.tic == "MSFT"].set_index("time")
    assert (m.loc["2019-11-26":"2019-11-29", "close"] == m.loc["2019-11-25", "close"]).all()
    # real bars are unchanged
    merged = out.merge(df[~holes], on=["time", "tic"], suffixes=("", "_raw"))
    assert len(merged) == len(out) - 4
    np.testing.assert_array_equal(merged.close, merged.close_raw)
    arrays = to_arrays(out)
    assert arrays.close.shape == (len(sessions), 30) and arrays.tradable.sum() == arrays.tradable.size - 4


def _sse50(shared_data) -> pd.DataFrame:
    raw = pd.read_csv(shared_data / "china_a_shares/sse50_baostock_daily_unadjusted_2017-01-03_2023-02-13.csv.gz",
                      parse_dates=["date"])
    df = raw.rename(columns={"date": "time", "code": "tic", "isST": "is_st"}).drop(columns=["turn", "pctChg"])
    return df


def test_sse50_baostock_suspensions_on_xshg(shared_data):
    df = _sse50(shared_data)
    df = df[(df.time >= "2020-06-01") & (df.time <= "2021-12-31")]
    bad = df.volume.isna()
    assert not bad.any()  # the NaN-volume row (2022-10-26) lies outside this slice
    susp = df[df.tradestatus == 0]
    assert len(susp) > 0
    out, rep = clean(df.reset_index(drop=True), "XSHG", where="sse50")
    # late listings inside the slice: the panel starts where all exist (sh.600905 lists 2021-06-10)
    assert rep.cut_start[1] == "2021-06-10" and len(out) == rep.num_times * 50
    assert list(pd.DatetimeIndex(out.time.unique())) == list(calendar_times("XSHG", "2021-06-10", "2021-12-31"))
    s = out[out.tradestatus == 0]
    assert sum(rep.suspended.values()) == len(s) > 0 and sum(rep.filled.values()) == 0
    assert (s.volume == 0).all()
    # a suspended bar is flat at the previous close and its preclose is that close
    wide = out.pivot(index="time", columns="tic", values="close")
    prev = wide.shift(1).stack().rename("prev").reset_index()
    chk = s.merge(prev, on=["time", "tic"])
    np.testing.assert_allclose(chk.close, chk.prev)
    np.testing.assert_allclose(chk.preclose, chk.prev)
    np.testing.assert_allclose(chk.high, chk.prev)
    arrays = to_arrays(out)
    assert (~arrays.tradable).sum() == len(s)


def test_sse50_removed_suspension_rows_are_forward_filled(shared_data):
    """Tushare-style data lacks suspension days: they become filled, untradable bars."""
    df = _sse50(shared_data)
    df = df[(df.time >= "2021-06-10") & (df.time <= "2021-12-31")].reset_index(drop=True)
    n_susp = int((df.tradestatus == 0).sum())
    out, rep = clean(df[df.tradestatus == 1].drop(columns=["tradestatus", "preclose"]), "XSHG")
    assert sum(rep.filled.values()) == n_susp and len(out) == rep.num_times * 50
    assert ((out.tradestatus == 0) == (out.volume == 0)).all()


def test_us_minute_bars_on_xnys_sessions(shared_data):
    raw = pd.read_csv(shared_data / "us_intraday/us_stocks_etfs_1min_2019-02-11_to_2019-02-15.csv.gz",
                      parse_dates=["datetime"])
    raw = raw[raw.tic.isin(["AAPL", "PPLT", "SPY"])]
    t = raw["datetime"].dt.tz_localize("America/New_York").dt.tz_convert("UTC") - pd.Timedelta(minutes=1)
    df = raw.drop(columns="datetime").assign(time=t)
    out, rep = clean(df, "XNYS", freq="1m")
    assert rep.num_times == 5 * 390 and len(out) == 3 * 5 * 390
    assert rep.filled["PPLT"] > 1000 and rep.filled["SPY"] < 20
    assert str(out.time.dt.tz) == "UTC"


# ----------------------------------------------------------------------------------------------
# DataProcessor chain
# ----------------------------------------------------------------------------------------------
def test_data_processor_chain_synthetic():
    from data_processors.processor import DataProcessor

    p = DataProcessor("synthetic").download(["AAA", "BBB"], "2020-01-01", "2020-07-01")
    assert p.freq == "1d"
    p.df = p.df[~((p.df.tic == "AAA") & (p.df.time == "2020-03-02"))].reset_index(drop=True)
    p.clean().add_features(indicators=["macd", "rsi_30"], turbulence=True, turbulence_window=40)
    assert p.report.calendar == "XNYS" and p.report.filled == {"AAA": 1, "BBB": 0}
    arrays = p.to_arrays()
    T = len(calendar_times("XNYS", "2020-01-02", "2020-06-30"))
    assert arrays.close.shape == (T, 2) and arrays.features.shape == (T, 2, 2)
    assert arrays.feature_names == ("macd", "rsi_30") and arrays.turbulence.shape == (T,)
    assert int((~arrays.tradable).sum()) == 1
    m = p.save("chain")
    assert [s["step"] for s in m["params"]["steps"]] == ["download", "clean", "features"]
    from data_processors.processor import DataProcessor as DP

    q = DP().load("chain")
    pd.testing.assert_frame_equal(q.df, p.df)


def test_data_processor_import_baostock(shared_data):
    from data_processors.processor import DataProcessor

    p = DataProcessor("baostock")
    p.import_file(shared_data / "china_a_shares/cn_indices_baostock_daily.csv.gz")
    p.clean(late_start="drop")
    assert p.report.calendar == "XSHG" and p.report.tickers == ["000300.SH"]
    a = p.to_arrays()
    assert a.tickers == ("000300.SH",) and a.preclose is not None and a.num_times == p.report.num_times


def test_utc_midnight_daily_bars_become_dates_on_24_7():
    days = pd.date_range("2020-02-27", periods=5, freq="D", tz="UTC")  # crosses 2020-02-29
    df = frame(("BTCUSDT", "ETHUSDT"), days=days)
    df = df.drop(index=4).reset_index(drop=True)  # BTCUSDT 2020-02-29 missing
    out, rep = clean(df, "24/7")
    assert out.time.dt.tz is None and list(out.time.dt.strftime("%m-%d").unique()) == ["02-27", "02-28", "02-29",
                                                                                          "03-01", "03-02"]
    assert rep.filled == {"BTCUSDT": 1, "ETHUSDT": 0}


def test_fx_5min_file_on_fx_calendar(shared_data):
    from data_processors.sources import get_source

    df = get_source("fx").read_file(
        shared_data / "forex/finrl_meta_fx_5min_2017_mislabelled_gbpusd_is_eurusd.csv.gz", symbol="EURUSD")
    df = df[df.time < pd.Timestamp("2017-03-01", tz="UTC")].reset_index(drop=True)
    out, rep = clean(df, where="fx")
    assert rep.calendar == "FX" and rep.freq == "5m" and len(out) == rep.num_times
    ny = pd.DatetimeIndex(out.time).tz_convert("America/New_York")
    assert not (ny.day_of_week == 5).any()  # nothing on Saturdays
    assert not ((ny.day_of_week == 4) & (ny.hour >= 17)).any()
    assert sum(rep.off_calendar.values()) < 0.05 * len(df)
    real = out[out.tradestatus == 1].merge(df, on=["time", "tic"], suffixes=("", "_raw"))
    np.testing.assert_array_equal(real.close, real.close_raw)


def test_drop_policy_measures_lateness_from_kept_tickers():
    df = frame(("AAA", "BBB", "CCC"), days=calendar_times("XNYS", "2020-01-02", "2020-01-31"))
    t0 = df.time.unique()
    aaa_gappy = (df.tic == "AAA") & ~df.time.isin(t0[:3])  # AAA: only 3 bars, at the very start
    later = df.tic.isin(["BBB", "CCC"]) & df.time.isin(t0[:2])  # BBB, CCC start on the 3rd session
    df = df[~aaa_gappy & ~later].reset_index(drop=True)
    out, rep = clean(df, "XNYS", min_coverage=0.5, late_start="drop")
    assert rep.tickers == ["BBB", "CCC"] and list(rep.dropped) == ["AAA"]
    assert rep.cut_start == (str(t0[0].date()), str(t0[2].date()))
    assert out.time.min() == t0[2] and len(out) == 2 * (len(t0) - 2)


# ----------------------------------------------------------------------------------------------
# bad ticks: every problem class in one pass, and an explicit repair policy (issue 19)
# ----------------------------------------------------------------------------------------------
def _bad_ticks() -> pd.DataFrame:
    """Rows 2, 5 with high < max(open, close); rows 3, 6, 8 with low > min(open, close)."""
    df = frame()
    df.loc[[2, 5], "high"] = df.loc[[2, 5], "close"] - 0.2
    df.loc[[3, 6, 8], "low"] = df.loc[[3, 6, 8], "open"] + 0.2
    return df


def test_every_bad_tick_class_is_reported_in_one_pass():
    with pytest.raises(DataValidationError) as info:
        validate(_bad_ticks(), where="fx.csv")
    msg = str(info.value)
    assert "row 2 (AAA 2020-01-03): high 10.8 < max(open 10.5, close 11.0) (and 1 more row)" in msg
    assert "also row 3 (BBB 2020-01-03): low 110.7 > min(open 110.5, close 111.0) (and 2 more rows)" in msg
    assert "--on-bad-ohlc clip|drop" in msg and len(msg.splitlines()) == 1


def test_clip_widens_only_the_flagged_bars_and_counts_them():
    from data_processors.clean import repair_ohlc

    bad = _bad_ticks()
    fixed, rec = repair_ohlc(bad, "clip", "fx.csv")
    assert rec == {"policy": "clip", "rows_changed": 5, "high_below_low": 0, "high_below_open_close": 2,
                   "low_above_open_close": 3}
    validate(fixed, where="fx.csv")
    changed = (fixed[["high", "low"]] != bad[["high", "low"]]).any(axis=1)
    assert sorted(np.flatnonzero(changed)) == [2, 3, 5, 6, 8]
    assert (fixed.loc[[2, 5], "high"] == bad.loc[[2, 5], ["open", "close"]].max(axis=1)).all()
    assert (fixed.loc[[3, 6, 8], "low"] == bad.loc[[3, 6, 8], ["open", "close"]].min(axis=1)).all()
    untouched, rec = repair_ohlc(frame(), "clip")
    assert rec["rows_changed"] == 0 and untouched.equals(frame())
    with pytest.raises(ConfigError, match="on_bad_ohlc='fix'"):
        repair_ohlc(bad, "fix")


def test_clean_drop_policy_removes_bad_bars_and_reports_them():
    out, report = clean(_bad_ticks(), "XNYS", on_bad_ohlc="drop")
    assert report.ohlc_repair["rows_changed"] == 5 and report.ohlc_repair["policy"] == "drop"
    assert "on_bad_ohlc=drop: 5 bars dropped" in report.summary()
    # a dropped bar is missing, so it is forward-filled and not tradable (never invented from the future)
    assert int((out["tradestatus"] == 0).sum()) == 5
    with pytest.raises(DataValidationError, match="also"):
        clean(_bad_ticks(), "XNYS")


def test_import_on_bad_ohlc_records_the_count_in_the_manifest(tmp_path, capsys):
    from data_processors.store import dataset_info
    from finmeta.cli import main

    f = tmp_path / "fx.csv"
    _bad_ticks().assign(time=lambda d: d["time"].dt.strftime("%Y-%m-%d")).to_csv(f, index=False)
    assert main(["data", "import", str(f), "--name", "fx"]) == 2
    err = capsys.readouterr().err
    assert "high 10.8 < max" in err and "low 110.7 > min" in err
    assert main(["data", "import", str(f), "--name", "fx", "--on-bad-ohlc", "clip"]) == 0
    assert "--on-bad-ohlc clip: 5 bars clipped" in capsys.readouterr().err
    rec = dataset_info("fx")["params"]["ohlc_repair"]
    assert rec["rows_changed"] == 5 and rec["policy"] == "clip"
    assert main(["data", "import", str(f), "--name", "fx2", "--on-bad-ohlc", "mend"]) == 2
    assert "--on-bad-ohlc 'mend'" in capsys.readouterr().err


def test_cut_start_carries_the_last_earlier_close_into_the_panel():
    """A ticker with no bar on the cut panel's first day (or none after it) is flat at its last
    earlier close there, not NaN: forward fill from before the cut, never a NaN price (issue 19 C)."""
    rows = [("2020-01-02", "A", 9.0), ("2020-01-03", "A", 10.0), ("2020-01-07", "A", 11.0),
            ("2020-01-06", "B", 20.0), ("2020-01-07", "B", 21.0), ("2020-01-02", "C", 4.0), ("2020-01-03", "C", 5.0)]
    df = pd.DataFrame(rows, columns=["time", "tic", "close"]).assign(time=lambda f: pd.to_datetime(f["time"]))
    df = df.assign(open=df["close"], high=df["close"], low=df["close"], volume=1.0, is_st=0.0)
    df.loc[df["tic"] == "C", "is_st"] = 1.0
    out, rep = clean(df.sort_values(["time", "tic"]).reset_index(drop=True), "XNYS")
    assert rep.cut_start == ("2020-01-02", "2020-01-06")
    assert out[["open", "high", "low", "close"]].notna().all().all()
    first = out[out["time"] == pd.Timestamp("2020-01-06")].set_index("tic")
    assert first.loc["A", "close"] == 10.0 and first.loc["A", "tradestatus"] == 0 and first.loc["A", "volume"] == 0
    assert first.loc["C", "close"] == 5.0 and first.loc["C", "is_st"] == 1
    assert first.loc["B", "close"] == 20.0 and first.loc["B", "tradestatus"] == 1
    assert out[out["tic"] == "C"]["close"].tolist() == [5.0, 5.0] and rep.filled == {"A": 1, "B": 0, "C": 2}


def test_to_arrays_keeps_the_local_dates_of_a_tz_aware_weekly_frame():
    """Weekly bars stamped at local midnight in a non-UTC zone pass clean with their zone; to_arrays
    keeps their wall clock (the dates), as before utc_wall: converting to UTC would stamp them 05:00 /
    04:00 (New York) or move them to the previous day (Shanghai)."""
    for tz in ("America/New_York", "Asia/Shanghai"):
        t = pd.date_range("2020-01-06", periods=40, freq="W-MON", tz=tz)
        rows = [{"time": x, "tic": tic, "open": 100.0 + i, "high": 101.0 + i, "low": 99.0 + i,
                 "close": 100.0 + i, "volume": 1e3} for tic in ("A", "B") for i, x in enumerate(t)]
        d, _ = clean(pd.DataFrame(rows))
        a = to_arrays(d)
        assert list(pd.DatetimeIndex(a.times)) == list(t.tz_localize(None))
