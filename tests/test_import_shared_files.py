"""Every price file of the shared data folder imports through its vendor's normaliser.

Row counts, ranges and spot values are the ones stated in ``shared/data/README.md``; cross-source
checks compare two vendors' copies of the same series after normalisation (units must agree).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_processors.schema import REQUIRED_COLUMNS
from data_processors.sources.base import read_vendor_file

US = "us_equities"
CN = "china_a_shares"
CRYPTO = "crypto"

_cache: dict[tuple, pd.DataFrame] = {}


def load(shared_data, rel: str, fmt: str, **opts) -> pd.DataFrame:
    key = (rel, fmt, tuple(sorted(opts.items())))
    if key not in _cache:
        _cache[key] = read_vendor_file(shared_data / rel, fmt, **opts)
    return _cache[key]


def close_on(df: pd.DataFrame, tic: str, day: str) -> float:
    row = df[(df["tic"] == tic) & (df["time"] == pd.Timestamp(day, tz=df["time"].dt.tz))]
    assert len(row) == 1, (tic, day, len(row))
    return float(row["close"].iloc[0])


def check_canonical(df: pd.DataFrame, intraday: bool) -> None:
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    for c in ("open", "high", "low", "close", "volume"):
        assert df[c].dtype == np.float64, c
    assert not df.duplicated(["time", "tic"]).any()
    assert df.sort_values(["time", "tic"]).index.equals(df.index)
    tz = df["time"].dt.tz
    if intraday:
        assert str(tz) == "UTC"
    else:
        assert tz is None and (df["time"] == df["time"].dt.normalize()).all()


@pytest.mark.parametrize(
    "rel, fmt, opts, rows, ntic, first, last",
    [
        (f"{US}/dow30_daily.csv.gz", "yahoo", {}, 165_593, 30, "2000-01-03", "2022-12-30"),
        (f"{US}/former_dow_members_daily.csv.gz", "yahoo", {}, 17_361, 3, "2000-01-03", "2022-12-30"),
        (f"{US}/indices_dji_vix_daily.csv.gz", "yahoo", {}, 16_124, 2, "1990-01-02", "2022-12-30"),
        (f"{US}/finrl_neurips2018_trade_data.csv.gz", "yahoofinance", {"keep_extra": True}, 9_715, 29,
         "2020-07-01", "2021-10-27"),
        (f"{CN}/sse50_baostock_daily_unadjusted_2017-01-03_2023-02-13.csv.gz", "baostock", {}, 70_399, 50,
         "2017-01-03", "2023-02-13"),
        (f"{CN}/cn_indices_baostock_daily.csv.gz", "baostock", {}, 6_378, 3, "2010-01-04", "2024-01-12"),
        (f"{CN}/csi300_index_netease_2002-01-04_2020-10-16.csv.gz", "netease", {}, 4_556, 1, "2002-01-04",
         "2020-10-16"),
        (f"{CN}/finrl_meta_sse15_tushare_daily_2015-01-05_2020-01-03.csv.gz", "tushare", {}, 17_960, 15,
         "2015-01-05", "2020-01-03"),
        (f"{CRYPTO}/binance_spot_btc_eth_daily_2017-08-17_2020-12-29.csv.gz", "binance", {}, 2_462, 2,
         "2017-08-17", "2020-12-29"),
        (f"{CRYPTO}/binance_spot_btc_eth_hourly_2017-08-17_2020-12-29.csv.gz", "binance", {}, 59_062, 2,
         "2017-08-17 04:00", "2020-12-29 23:00"),
        (f"{CRYPTO}/binance_usdm_futures_btc_eth_1min_2022-05-02_2022-05-15.csv.gz", "binance", {}, 40_320, 2,
         "2022-05-02 00:00", "2022-05-15 23:59"),
        ("forex/finrl_meta_fx_5min_2017_mislabelled_gbpusd_is_eurusd.csv.gz", "fx", {"symbol": "EURUSD"}, 74_529, 1,
         "2017-01-02 01:00", "2017-12-29 23:55"),
        # Alpha-Vantage-like: US/Eastern bar END stamps 09:31..16:00 -> UTC bar open 14:30..20:59 (EST)
        ("us_intraday/us_stocks_etfs_1min_2019-02-11_to_2019-02-15.csv.gz", "canonical",
         {"tz": "America/New_York", "label": "end"}, 43_164, 24, "2019-02-11 14:30", "2019-02-15 20:59"),
    ],
)
def test_every_price_file_imports(shared_data, rel, fmt, opts, rows, ntic, first, last):
    df = load(shared_data, rel, fmt, **opts)
    intraday = ":" in first
    check_canonical(df, intraday)
    assert len(df) == rows
    assert df["tic"].nunique() == ntic
    tz = "UTC" if intraday else None
    assert df["time"].iloc[0] == pd.Timestamp(first, tz=tz)
    assert df["time"].iloc[-1] == pd.Timestamp(last, tz=tz)


def test_us_spot_values(shared_data):
    dow = load(shared_data, f"{US}/dow30_daily.csv.gz", "yahoo")
    assert close_on(dow, "AAPL", "2020-12-31") == pytest.approx(132.69, abs=0.005)
    assert close_on(dow, "AAPL", "2020-08-28") == pytest.approx(124.81, abs=0.005)  # post-split basis
    assert close_on(dow, "JPM", "2020-12-31") == pytest.approx(127.07, abs=0.005)
    assert "adjcp" in dow.columns and dow["adjcp"].notna().all()
    assert dow.groupby("tic")["time"].min()["DOW"] == pd.Timestamp("2019-03-20")
    idx = load(shared_data, f"{US}/indices_dji_vix_daily.csv.gz", "yahoo")
    assert close_on(idx, "^DJI", "2020-12-31") == pytest.approx(30606.48, abs=0.01)
    assert close_on(idx, "^VIX", "2020-03-16") == pytest.approx(82.69, abs=0.005)
    trade = load(shared_data, f"{US}/finrl_neurips2018_trade_data.csv.gz", "yahoofinance", keep_extra=True)
    for c in ("macd", "rsi_30", "vix", "turbulence"):
        assert c in trade.columns and trade[c].notna().all()
    assert trade["time"].nunique() == 335
    assert not any(str(c).startswith("Unnamed") for c in trade.columns)


def test_a_share_spot_values_and_units(shared_data):
    sse = load(shared_data, f"{CN}/sse50_baostock_daily_unadjusted_2017-01-03_2023-02-13.csv.gz", "baostock")
    assert close_on(sse, "600519.SH", "2020-01-03") == pytest.approx(1078.56)
    assert close_on(sse, "600519.SH", "2021-02-10") == pytest.approx(2601.00)
    assert sse["time"].nunique() == 1_484
    assert int((sse["tradestatus"] == 0).sum()) == 993
    assert sse["volume"].notna().all()  # the one empty volume is on a suspension row -> 0
    assert set(sse.columns) >= {"preclose", "amount", "tradestatus", "is_st"}
    assert sse["tic"].str.fullmatch(r"\d{6}\.SH").all()

    tus = load(shared_data, f"{CN}/finrl_meta_sse15_tushare_daily_2015-01-05_2020-01-03.csv.gz", "tushare")
    assert close_on(tus, "600519.SH", "2020-01-03") == pytest.approx(1078.56)
    m = tus.merge(sse, on=["time", "tic"], suffixes=("_ts", "_bs"))
    assert len(m) == 6_461
    assert np.array_equal(m["close_ts"].to_numpy(), m["close_bs"].to_numpy())
    # tushare lots x 100 == baostock shares (both are shares after normalisation)
    traded = m["volume_bs"] > 0
    np.testing.assert_allclose(m.loc[traded, "volume_ts"], m.loc[traded, "volume_bs"], rtol=1e-6)


def test_csi300_netease_matches_baostock(shared_data):
    ne = load(shared_data, f"{CN}/csi300_index_netease_2002-01-04_2020-10-16.csv.gz", "netease")
    assert (ne["tic"] == "000300.SH").all()
    assert np.isnan(ne["preclose"].iloc[0]) and ne["time"].iloc[0] == pd.Timestamp("2002-01-04")  # 'None'
    assert close_on(ne, "000300.SH", "2020-10-16") == pytest.approx(4791.676)
    bs = load(shared_data, f"{CN}/cn_indices_baostock_daily.csv.gz", "baostock")
    assert (bs["tic"] == "000300.SH").sum() == 3_410
    assert set(bs["tic"]) == {"000300.SH", "000001.SH", "000016.SH"}
    m = ne.merge(bs, on=["time", "tic"], suffixes=("_ne", "_bs"))
    assert len(m) == 2_620
    np.testing.assert_allclose(m["close_ne"], m["close_bs"], rtol=5e-7)  # README: "within 3e-7" (3.1e-7 max)
    np.testing.assert_allclose(m["volume_ne"], m["volume_bs"], rtol=1e-6)  # NetEase index lots x 100


def test_crypto_and_fx_spot_values(shared_data):
    daily = load(shared_data, f"{CRYPTO}/binance_spot_btc_eth_daily_2017-08-17_2020-12-29.csv.gz", "binance")
    assert daily.groupby("tic").size().tolist() == [1_231, 1_231]
    crash = daily[(daily["tic"] == "BTCUSDT") & (daily["time"] == pd.Timestamp("2020-03-12"))]
    assert float(crash["low"].iloc[0]) == pytest.approx(4410.0, abs=1.0)
    assert "amount" in daily.columns  # volume_quote (USDT)
    fut = load(shared_data, f"{CRYPTO}/binance_usdm_futures_btc_eth_1min_2022-05-02_2022-05-15.csv.gz", "binance")
    per_day = fut.groupby([fut["tic"], fut["time"].dt.date]).size()
    assert (per_day == 1_440).all()
    fx = load(shared_data, "forex/finrl_meta_fx_5min_2017_mislabelled_gbpusd_is_eurusd.csv.gz", "fx", symbol="EURUSD")
    assert (fx["tic"] == "EURUSD").all() and (fx["volume"] == 0.0).all()
    assert 1.03 < fx["close"].min() < 1.04 and 1.20 < fx["close"].max() < 1.21
    raw_label = read_vendor_file(shared_data / "forex/finrl_meta_fx_5min_2017_mislabelled_gbpusd_is_eurusd.csv.gz", "forex")
    assert set(raw_label["tic"]) == {"GBPUSD"}  # without the override the file's (wrong) label stays


def test_us_intraday_bar_open_utc(shared_data):
    df = load(shared_data, "us_intraday/us_stocks_etfs_1min_2019-02-11_to_2019-02-15.csv.gz", "canonical",
              tz="America/New_York", label="end")
    aapl = df[df["tic"] == "AAPL"]
    first = aapl.iloc[0]
    # file row "2019-02-11 09:31:00,AAPL,171.14,..." is the bar 09:30-09:31 EST = 14:30 UTC
    assert first["time"] == pd.Timestamp("2019-02-11 14:30", tz="UTC") and first["open"] == pytest.approx(171.14)
    assert aapl["close"].between(169.0, 173.0).all()
    assert df.groupby("tic").size()["PPLT"] == 566
