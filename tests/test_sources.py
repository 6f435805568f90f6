"""Vendor sources, mocked at their library call with frames/objects in the library's real format.

Formats follow the installed libraries' source: yfinance 1.7 ``multi.download`` (per-ticker
``history`` frames concatenated with ``names=['Ticker', 'Price']`` then ``swaplevel``), akshare
``stock_zh_a_hist`` (Chinese headers, 日期 as ``datetime.date``, volume in lots), tushare
``DataApi.query`` (``pd.DataFrame(items, columns=fields)``, newest first), baostock ``ResultData``
(string rows via ``next()``/``get_row_data()``, 2,000-row pages), ccxt ``fetch_ohlcv`` (lists).
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import pytest

from data_processors.sources import REGISTRY, get_source
from data_processors.sources._common import ashare_code
from data_processors.sources._timeout import VendorTimeout, call_with_timeout
from data_processors.sources.base import formats, read_vendor_file
from finmeta.errors import DataSourceError, DataValidationError

FAST = {"timeout": 0.3, "attempts": 3, "backoff": 0.001}


@pytest.fixture
def release():
    """An event that hanging mocks wait on; set at teardown so no thread outlives the test long."""
    ev = threading.Event()
    yield ev
    ev.set()


class Counter:
    def __init__(self, fn):
        self.fn, self.calls, self.args, self.kwargs = fn, 0, [], []

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.args.append(args)
        self.kwargs.append(kwargs)
        return self.fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# registry, helpers
# ---------------------------------------------------------------------------------------------
def test_registry_names_and_aliases():
    for key in ("canonical", "yahoo", "akshare", "tushare", "baostock", "binance", "netease", "fx"):
        assert key in REGISTRY and REGISTRY[key].name == key
    assert REGISTRY["yahoofinance"] is REGISTRY["yahoo"]
    assert REGISTRY["forex"] is REGISTRY["fx"]
    assert {"canonical", "yahoo", "fx", "netease"} <= set(formats())
    assert "yahoofinance" not in formats()
    with pytest.raises(DataSourceError, match="unknown source"):
        get_source("bloomberg")


@pytest.mark.parametrize(
    "raw, index, want",
    [("sh.600519", False, "600519.SH"), ("600519", False, "600519.SH"), ("'000001", False, "000001.SZ"),
     ("000300", True, "000300.SH"), ("399001", True, "399001.SZ"), ("SZ000001", False, "000001.SZ"),
     ("600519.XSHG", False, "600519.SH"), ("830799", False, "830799.BJ"), ("sz.399006", False, "399006.SZ")],
)
def test_ashare_code_spellings(raw, index, want):
    assert ashare_code(raw, index=index) == want


def test_call_with_timeout(release):
    assert call_with_timeout(lambda x: x + 1, 1.0, 1) == 2
    with pytest.raises(KeyError):
        call_with_timeout(lambda: {}["x"], 1.0)
    t0 = time.monotonic()
    with pytest.raises(VendorTimeout):
        call_with_timeout(release.wait, 0.1, 10)
    assert time.monotonic() - t0 < 1.0


# ---------------------------------------------------------------------------------------------
# yahoo / fx
# ---------------------------------------------------------------------------------------------
def yf_frame(tickers, index, base=100.0):
    """Exactly how yfinance 1.7 ``multi.download`` assembles its result (group_by='column')."""
    dfs = {}
    for k, tic in enumerate(tickers):
        n = len(index)
        close = base + k + np.arange(n, dtype=float)
        dfs[tic] = pd.DataFrame(
            {"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close, "Adj Close": close * 0.98,
             "Volume": np.full(n, 1000 + k, dtype="int64")},
            index=index,
        )
    data = pd.concat(dfs.values(), axis=1, sort=True, keys=dfs.keys(), names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    return data.sort_index(level=0, axis=1)  # yfinance does this in place


def yf_empty(tickers):
    import yfinance.utils as yu

    dfs = {t: yu.empty_df() for t in tickers}
    data = pd.concat(dfs.values(), axis=1, sort=True, keys=dfs.keys(), names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    return data


DAYS = pd.DatetimeIndex(["2020-12-29", "2020-12-30", "2020-12-31"], name="Date")


def test_yahoo_daily(monkeypatch):
    import yfinance

    fake = Counter(lambda tickers, **kw: yf_frame(tickers, DAYS))
    monkeypatch.setattr(yfinance, "download", fake)
    df = get_source("yahoo", **FAST).download(["AAPL", "^VIX"], "2020-12-29", "2021-01-01")
    assert fake.calls == 1
    kw = fake.kwargs[0]
    assert kw["timeout"] == 0.3 and kw["auto_adjust"] is False and kw["interval"] == "1d"
    assert df.shape[0] == 6 and list(df["tic"].unique()) == ["AAPL", "^VIX"]
    assert df["time"].dt.tz is None and df["time"].iloc[0] == pd.Timestamp("2020-12-29")
    row = df[(df["tic"] == "AAPL") & (df["time"] == "2020-12-31")].iloc[0]
    assert row["close"] == 102.0 and row["adjcp"] == pytest.approx(102.0 * 0.98) and row["volume"] == 1000.0
    assert df["volume"].dtype == np.float64


def test_yahoo_intraday_is_utc_bar_open(monkeypatch):
    import yfinance

    idx = pd.DatetimeIndex(pd.date_range("2024-01-02 09:30", periods=3, freq="1min", tz="America/New_York"),
                           name="Datetime")
    monkeypatch.setattr(yfinance, "download", lambda tickers, **kw: yf_frame(tickers, idx))
    df = get_source("yahoofinance", **FAST).download(["SPY"], "2024-01-02", "2024-01-03", freq="1m")
    assert str(df["time"].dt.tz) == "UTC"
    assert df["time"].iloc[0] == pd.Timestamp("2024-01-02 14:30", tz="UTC")


def test_yahoo_empty_is_error_and_retries_are_bounded(monkeypatch):
    import yfinance

    fake = Counter(lambda tickers, **kw: yf_empty(tickers))
    monkeypatch.setattr(yfinance, "download", fake)
    with pytest.raises(DataSourceError) as ei:
        get_source("yahoo", **FAST).download(["AAPL"], "2020-01-01", "2020-02-01")
    assert fake.calls == 3
    msg = str(ei.value)
    assert "yahoo" in msg and "AAPL" in msg and "no data" in msg and "3 attempts" in msg


def test_yahoo_partial_failure_names_the_missing_ticker(monkeypatch):
    import yfinance

    def fake(tickers, **kw):
        data = yf_frame(tickers, DAYS)
        data.loc[:, pd.IndexSlice[:, "BADTIC"]] = np.nan  # what yfinance leaves for a failed ticker
        return data

    monkeypatch.setattr(yfinance, "download", fake)
    with pytest.raises(DataSourceError, match="BADTIC"):
        get_source("yahoo", **FAST).download(["AAPL", "BADTIC"], "2020-12-29", "2021-01-01")


def test_yahoo_retry_then_success(monkeypatch):
    import yfinance

    state = {"n": 0}

    def flaky(tickers, **kw):
        state["n"] += 1
        if state["n"] == 1:
            raise ConnectionError("connection reset by peer")
        return yf_frame(tickers, DAYS)

    monkeypatch.setattr(yfinance, "download", flaky)
    df = get_source("yahoo", **FAST).download(["MSFT"], "2020-12-29", "2021-01-01")
    assert state["n"] == 2 and len(df) == 3


def test_yahoo_hang_is_timeout_error(monkeypatch, release):
    import yfinance

    monkeypatch.setattr(yfinance, "download", lambda *a, **k: release.wait(30))
    src = get_source("yahoo", timeout=0.05, attempts=2, backoff=0.001)
    t0 = time.monotonic()
    with pytest.raises(DataSourceError, match="timed out"):
        src.download(["AAPL"], "2020-01-01", "2020-02-01")
    assert time.monotonic() - t0 < 2.0  # 2 attempts x 0.2 s hard limit


def test_fx_download_maps_symbols(monkeypatch):
    import yfinance

    def fake(tickers, **kw):
        data = yf_frame(tickers, DAYS, base=1.1)
        data.loc[:, pd.IndexSlice["Volume", :]] = 0  # Yahoo has no FX volume
        return data

    fake = Counter(fake)
    monkeypatch.setattr(yfinance, "download", fake)
    df = get_source("fx", **FAST).download(["EURUSD"], "2020-12-29", "2021-01-01")
    assert fake.calls == 1 and list(fake.args[0][0]) == ["EURUSD=X"]
    assert set(df["tic"]) == {"EURUSD"} and (df["volume"] == 0).all()


def test_yahoo_saved_yfinance_csv_and_single_ticker_export(tmp_path):
    wide = yf_frame(["AAPL", "MSFT"], DAYS)
    p = tmp_path / "yf.csv"
    wide.to_csv(p)
    df = read_vendor_file(p, "yahoo")
    assert len(df) == 6 and set(df["tic"]) == {"AAPL", "MSFT"}
    one = tmp_path / "AAPL.csv"
    pd.DataFrame({"Date": ["2020-12-30", "2020-12-31"], "Open": [1.0, 2], "High": [2.0, 3], "Low": [0.5, 1],
                  "Close": [1.5, 2.5], "Adj Close": [1.4, 2.4], "Volume": [10, 20]}).to_csv(one, index=False)
    df = read_vendor_file(one, "yahoo")
    assert list(df["tic"]) == ["AAPL", "AAPL"] and list(df["adjcp"]) == [1.4, 2.4]


# ---------------------------------------------------------------------------------------------
# akshare
# ---------------------------------------------------------------------------------------------
def ak_frame(symbol, dates, close0=1000.0):
    """The frame ``akshare.stock_zh_a_hist`` builds (column order, dtypes, 日期 as datetime.date)."""
    n = len(dates)
    close = close0 + np.arange(n, dtype=float)
    df = pd.DataFrame({
        "日期": [dt.date.fromisoformat(d) for d in dates], "股票代码": symbol, "开盘": close - 1, "收盘": close,
        "最高": close + 2, "最低": close - 2, "成交量": np.arange(1, n + 1) * 1000, "成交额": close * 1e5,
        "振幅": 1.0, "涨跌幅": 0.1, "涨跌额": np.full(n, 1.5), "换手率": 0.2})
    return df


def test_akshare_daily_units_and_tickers(monkeypatch):
    import akshare

    fake = Counter(lambda symbol, **kw: ak_frame(symbol, ["2020-01-02", "2020-01-03"]))
    monkeypatch.setattr(akshare, "stock_zh_a_hist", fake)
    df = get_source("akshare", **FAST).download(["600519", "sz.000001"], "2020-01-02", "2020-01-04", adjust="qfq")
    assert fake.calls == 2
    kw = fake.kwargs[0]
    assert kw["timeout"] == 0.3 and kw["adjust"] == "qfq" and kw["period"] == "daily"
    assert kw["start_date"] == "20200102" and kw["end_date"] == "20200103"  # [start, end) -> inclusive end
    assert sorted(df["tic"].unique()) == ["000001.SZ", "600519.SH"]
    r = df[(df["tic"] == "600519.SH")].iloc[0]
    assert r["volume"] == 1000 * 100.0  # lots -> shares
    assert r["preclose"] == pytest.approx(r["close"] - 1.5)
    assert df["time"].dt.tz is None


def test_akshare_empty_frame_is_error(monkeypatch):
    import akshare

    monkeypatch.setattr(akshare, "stock_zh_a_hist", lambda **kw: pd.DataFrame())
    with pytest.raises(DataSourceError, match="600519"):
        get_source("akshare", **FAST).download(["600519"], "2020-01-01", "2020-02-01")


def test_akshare_index_without_timeout_arg_is_hard_limited(monkeypatch, release):
    import akshare

    fake = Counter(lambda **kw: release.wait(30))
    monkeypatch.setattr(akshare, "index_zh_a_hist", fake)
    t0 = time.monotonic()
    with pytest.raises(DataSourceError, match="timed out"):
        get_source("akshare", timeout=0.1, attempts=2, backoff=0.001).download(
            ["000300"], "2020-01-01", "2020-02-01", asset="index")
    assert time.monotonic() - t0 < 1.5 and fake.calls == 2
    assert "timeout" not in fake.kwargs[0]  # index_zh_a_hist has no timeout parameter


def test_akshare_connection_error_retried_and_bounded(monkeypatch):
    import akshare
    import requests

    def boom(**kw):
        raise requests.exceptions.ConnectionError("Max retries exceeded")

    fake = Counter(boom)
    monkeypatch.setattr(akshare, "stock_zh_a_hist", fake)
    with pytest.raises(DataSourceError, match="ConnectionError") as ei:
        get_source("akshare", **FAST).download(["600519"], "2020-01-01", "2020-02-01")
    assert fake.calls == 3 and "akshare" in str(ei.value) and "600519" in str(ei.value)


# ---------------------------------------------------------------------------------------------
# tushare
# ---------------------------------------------------------------------------------------------
TS_FIELDS = ["ts_code", "trade_date", "open", "high", "low", "close", "pre_close", "change", "pct_chg", "vol", "amount"]


class FakePro:
    """Stands in for ``tushare.pro.client.DataApi``: frames built as ``pd.DataFrame(items, columns=fields)``."""

    def __init__(self, token, timeout=30, fail=None):
        self.token, self.timeout, self.fail, self.calls = token, timeout, fail, []

    def daily(self, ts_code, start_date, end_date, **kw):
        self.calls.append(("daily", ts_code, start_date, end_date))
        if self.fail:
            raise Exception(self.fail)
        items = [  # newest first, like the API
            [ts_code, "20200103", 1117.0, 1117.0, 1076.9, 1078.56, 1130.0, -51.44, -4.5522, 130318.78, 14145300.5],
            [ts_code, "20200102", 1128.0, 1145.06, 1116.0, 1130.0, 1183.0, -53.0, -4.4801, 148099.16, 16787800.0],
        ]
        return pd.DataFrame(items, columns=TS_FIELDS)

    def adj_factor(self, ts_code, start_date, end_date, **kw):
        self.calls.append(("adj_factor", ts_code))
        return pd.DataFrame([[ts_code, "20200103", 8.0], [ts_code, "20200102", 4.0]],
                            columns=["ts_code", "trade_date", "adj_factor"])


def test_tushare_missing_token_is_clear_error(monkeypatch):
    import tushare

    called = Counter(lambda *a, **k: None)
    monkeypatch.setattr(tushare, "pro_api", called)
    with pytest.raises(DataSourceError, match="TUSHARE_TOKEN"):
        get_source("tushare", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert called.calls == 0


def test_tushare_units_adjustment_and_token_from_env(monkeypatch):
    import tushare

    made = []

    def pro_api(token="", timeout=30):
        made.append(FakePro(token, timeout))
        return made[-1]

    monkeypatch.setattr(tushare, "pro_api", pro_api)
    monkeypatch.setenv("TUSHARE_TOKEN", "secret-token-123")
    df = get_source("tushare", **FAST).download(["600519"], "2020-01-02", "2020-01-04")
    pro = made[0]
    assert pro.token == "secret-token-123" and pro.timeout == 0.3
    assert pro.calls[0] == ("daily", "600519.SH", "20200102", "20200103")
    assert list(df["time"]) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]  # oldest first
    last = df.iloc[-1]
    assert last["close"] == 1078.56 and last["preclose"] == 1130.0
    assert last["volume"] == pytest.approx(13_031_878.0)  # lots -> shares
    assert last["amount"] == pytest.approx(14_145_300_500.0)  # thousand CNY -> CNY
    assert list(df["adj_factor"]) == [4.0, 8.0]
    qfq = get_source("tushare", **FAST).download(["600519.SH"], "2020-01-02", "2020-01-04", adjust="qfq")
    assert qfq["close"].tolist() == pytest.approx([1130.0 * 4 / 8, 1078.56])
    assert "adj_factor" not in qfq.columns
    hfq = get_source("tushare", **FAST).download(["600519.SH"], "2020-01-02", "2020-01-04", adjust="hfq")
    assert hfq["close"].tolist() == pytest.approx([1130.0 * 4, 1078.56 * 8])


def test_tushare_bad_token_not_retried_and_not_leaked(monkeypatch):
    import tushare

    made = []

    def pro_api(token="", timeout=30):
        made.append(FakePro(token, timeout, fail="抱歉，您的token不对，请确认。"))
        return made[-1]

    monkeypatch.setattr(tushare, "pro_api", pro_api)
    monkeypatch.setenv("TUSHARE_TOKEN", "wrong-token-xyz")
    with pytest.raises(DataSourceError, match="token") as ei:
        get_source("tushare", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert len(made[0].calls) == 1  # permanent: no retry
    assert "wrong-token-xyz" not in str(ei.value)


def _chain(exc):
    """The exception and everything chained to it (as a traceback would print it)."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return seen


def test_tushare_token_is_scrubbed_from_vendor_errors(monkeypatch):
    """A vendor message (or URL in it) holding the token comes out masked, chain included (issue 19 B).

    The real ``tushare.pro_api`` / ``DataApi.query`` run; only ``requests.post`` is mocked: once
    answering the API's JSON error (``{"code": ..., "msg": ...}`` -> ``Exception(msg)``), once
    raising a ConnectionError whose URL carries the token.
    """
    import traceback

    import requests
    import tushare.pro.client as client

    token = "0123456789abcdef0123456789abcdef0123456789abcdef01234567"  # 56 hex, like a real token
    monkeypatch.setenv("TUSHARE_TOKEN", token)
    posts = []

    class Resp:
        def __init__(self, body):
            self.text, self.status_code = body, 200

        def __bool__(self):
            return True

    def rejected(url, json=None, timeout=None):
        posts.append(json)
        import json as _json

        return Resp(_json.dumps({"code": 40101, "msg": f"您的token {json['token']} 不对，请确认。", "data": None}))

    def refused(url, json=None, timeout=None):
        posts.append(json)
        raise requests.exceptions.ConnectionError(
            f"HTTPConnectionPool(host='api.waditu.com', port=80): Max retries exceeded with url: "
            f"/dataapi/daily?token={json['token']}&ts_code=600519.SH (Caused by NewConnectionError('refused'))")

    for post, calls in ((rejected, 1), (refused, 3)):
        posts.clear()
        monkeypatch.setattr(client.requests, "post", post)
        with pytest.raises(DataSourceError) as ei:
            get_source("tushare", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")
        err = ei.value
        assert len(posts) == calls and posts[0]["token"] == token  # the token did reach the vendor
        assert "***" in str(err) and "600519.SH" in str(err)
        text = "".join(traceback.format_exception(err))
        for e in _chain(err):
            assert token not in str(e) and token not in repr(e.args)
        assert token not in text and token not in err.cause


TS_MIN_FIELDS = ["ts_code", "trade_time", "close", "open", "high", "low", "vol", "amount"]  # stk_mins, in its order


class FakeMinApi:
    """``DataApi`` stand-in for ``stk_mins``: two sessions of 5-minute bars, newest first, like the API.

    Tushare labels a minute bar by its END (``(09:30, 09:35]`` -> ``09:35:00``); vol in shares,
    amount in CNY (the stk_mins documentation).
    """

    def stk_mins(self, ts_code, start_date="", end_date="", freq="1min", **kw):
        stamps = [f"{d} {t}" for d in ("2023-01-03", "2023-01-04") for t in ("09:35:00", "09:40:00", "13:05:00", "15:00:00")]
        items = [[ts_code, s, 10.0 + i / 100, 10.0 + i / 100, 10.1 + i / 100, 9.9 + i / 100, 1000.0 * (i + 1), 10000.0 * (i + 1)]
                 for i, s in enumerate(stamps)]
        return pd.DataFrame(items[::-1], columns=TS_MIN_FIELDS)


def test_tushare_minute_bars_keep_their_times(tmp_path):
    """stk_mins / pro_bar(freq='5min') frames keep one distinct UTC bar-open time per bar (issue 19 A)."""
    import tushare

    raw = FakeMinApi().stk_mins(ts_code="600519.SH", freq="5min")
    # pro_bar's own post-processing on top (adds trade_date and pre_close = previous BAR's close)
    bar = tushare.pro_bar(ts_code="600519.SH", api=FakeMinApi(), freq="5min",
                          start_date="2023-01-03 09:00:00", end_date="2023-01-04 15:00:00")
    assert {"trade_time", "trade_date", "pre_close"} <= set(bar.columns)
    path = tmp_path / "ts_5min.csv"
    bar.to_csv(path, index=False)
    src = get_source("tushare")
    want = [pd.Timestamp(f"{d} {t}", tz="Asia/Shanghai").tz_convert("UTC") - pd.Timedelta(minutes=5)
            for d in ("2023-01-03", "2023-01-04") for t in ("09:35", "09:40", "13:05", "15:00")]
    for df in (src.normalize(raw), src.normalize(bar, freq="5min"), read_vendor_file(path, "tushare"),
               read_vendor_file(path, "tushare", freq="5min")):
        assert len(df) == 8 and df["time"].is_unique
        assert str(df["time"].dt.tz) == "UTC"
        assert list(df["time"]) == want  # 09:35 Beijing bar end -> 01:30 UTC bar open
        assert df["volume"].tolist() == [1000.0 * (i + 1) for i in range(8)]  # already shares
        assert df["amount"].iloc[-1] == 80000.0  # already CNY
        assert "preclose" not in df.columns  # pro_bar's is the previous bar's close, not a session preclose
    with pytest.raises(DataValidationError, match="intraday"):
        src.normalize(raw, freq="1d")
    # daily data stays a date
    daily = src.normalize(FakePro("t").daily("600519.SH", "20200102", "20200103"))
    assert list(daily["time"]) == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]
    assert daily["time"].dt.tz is None


# ---------------------------------------------------------------------------------------------
# baostock
# ---------------------------------------------------------------------------------------------
def bs_result(rows, fields, error_code="0", error_msg="success"):
    """A real ``baostock.data.resultset.ResultData`` whose pages are served from memory."""
    from baostock.data.resultset import ResultData

    class PagedResult(ResultData):
        def __init__(self):
            super().__init__()
            self.pages = [rows[i : i + 2000] for i in range(0, len(rows), 2000)] or [[]]
            self.page_i = 0
            self.data = self.pages[0]
            self.fields = list(fields)
            self.error_code, self.error_msg = error_code, error_msg

        def next(self):  # the real next() asks the server for page k+1 once a full page is read
            if self.cur_row_num < len(self.data):
                return True
            if len(self.data) == 2000 and self.page_i + 1 < len(self.pages):
                self.page_i += 1
                self.data, self.cur_row_num = self.pages[self.page_i], 0
                return bool(self.data)
            return False

        def get_data(self):
            raise AssertionError("get_data() breaks on pandas >= 2 above 2,000 rows; must not be used")

    return PagedResult()


def bs_daily_rows(code, n):
    days = pd.bdate_range("2010-01-04", periods=n)
    return [[d.strftime("%Y-%m-%d"), code, "10.0", "10.5", "9.5", f"{10 + i * 0.001:.3f}", "9.9", "12345", "123450.0",
             "3", "0.5", "1", "0.1", "0"] for i, d in enumerate(days)]


@pytest.fixture
def fake_baostock(monkeypatch):
    import baostock

    from data_processors.sources.baostock import FIELDS_DAILY

    state = {"login": Counter(lambda **k: bs_result([], [], "0", "success")), "logout": 0, "queries": []}

    def query(code, fields, start_date=None, end_date=None, frequency="d", adjustflag="3"):
        state["queries"].append((code, fields, start_date, end_date, frequency, adjustflag))
        return state.get("result") or bs_result(bs_daily_rows(code, 2500), FIELDS_DAILY.split(","))

    def logout(*a, **k):
        state["logout"] += 1

    monkeypatch.setattr(baostock, "login", lambda *a, **k: state["login"]())
    monkeypatch.setattr(baostock, "query_history_k_data_plus", query)
    monkeypatch.setattr(baostock, "logout", logout)
    return state


def test_baostock_reads_more_than_2000_rows(fake_baostock):
    df = get_source("baostock", **FAST).download(["600519.SH"], "2010-01-01", "2020-01-01")
    assert len(df) == 2500 and set(df["tic"]) == {"600519.SH"}
    q = fake_baostock["queries"][0]
    assert q[0] == "sh.600519" and q[4] == "d" and q[5] == "3" and q[3] == "2019-12-31"
    assert fake_baostock["logout"] == 1
    assert {"preclose", "tradestatus", "is_st", "amount"} <= set(df.columns)
    assert df["volume"].iloc[0] == 12345.0 and df["tradestatus"].dtype == np.int8


def test_baostock_error_code_is_source_error(fake_baostock):
    fake_baostock["result"] = bs_result([], [], "10004011", "股票代码不存在")
    with pytest.raises(DataSourceError, match="股票代码不存在") as ei:
        get_source("baostock", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert "10004011" in str(ei.value) and "600519.SH" in str(ei.value)
    assert fake_baostock["logout"] == 1


def test_baostock_login_error_and_login_hang(fake_baostock, release):
    fake_baostock["login"] = Counter(lambda: bs_result([], [], "10001002", "用户名或密码错误"))
    with pytest.raises(DataSourceError, match="用户名或密码错误"):
        get_source("baostock", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert fake_baostock["login"].calls == 1  # not a network code: no retry
    fake_baostock["login"] = Counter(lambda: release.wait(30))
    t0 = time.monotonic()
    with pytest.raises(DataSourceError, match="timed out"):
        get_source("baostock", timeout=0.1, attempts=2, backoff=0.001).download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert time.monotonic() - t0 < 1.0 and fake_baostock["login"].calls == 2


def test_baostock_minutes_to_utc_bar_open(fake_baostock):
    from data_processors.sources.baostock import FIELDS_MINUTE

    rows = [["2023-01-03", "20230103093500000", "sz.000001", "13.2", "13.3", "13.1", "13.25", "100", "1325.0", "3"],
            ["2023-01-03", "20230103094000000", "sz.000001", "13.25", "13.4", "13.2", "13.3", "200", "2660.0", "3"]]
    fake_baostock["result"] = bs_result(rows, FIELDS_MINUTE.split(","))
    df = get_source("baostock", **FAST).download(["000001.SZ"], "2023-01-03", "2023-01-04", freq="5m")
    assert fake_baostock["queries"][0][4] == "5"
    # 09:35 Beijing bar END = 09:30 Beijing bar open = 01:30 UTC
    assert df["time"].tolist() == [pd.Timestamp("2023-01-03 01:30", tz="UTC"), pd.Timestamp("2023-01-03 01:35", tz="UTC")]
    assert set(df["tic"]) == {"000001.SZ"}


# ---------------------------------------------------------------------------------------------
# binance (ccxt)
# ---------------------------------------------------------------------------------------------
class FakeBinance:
    """``ccxt.binance``: ``fetch_ohlcv`` returns ``[[ms, o, h, l, c, v], ...]``, at most ``limit`` rows."""

    instances: list = []

    def __init__(self, config=None):
        self.config = config or {}
        self.calls = []
        self.fail_first = 0
        FakeBinance.instances.append(self)

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None, params={}):
        self.calls.append((symbol, timeframe, since, limit))
        if self.fail_first:
            self.fail_first -= 1
            import ccxt

            raise ccxt.NetworkError("binance GET https://api.binance.com/api/v3/klines 502 Bad Gateway")
        if symbol.startswith("NOPE"):
            import ccxt

            raise ccxt.BadSymbol("binance does not have market symbol NOPE/USDT")
        step = 60_000
        stop = int(pd.Timestamp("2022-05-02 00:25", tz="UTC").timestamp() * 1000)  # data ends here
        out = []
        t = since
        while len(out) < min(limit or 500, 1000) and t < stop:
            p = 100.0 + (t // step) % 50
            out.append([t, p, p + 1, p - 1, p + 0.5, 2.5])
            t += step
        return out


@pytest.fixture
def fake_ccxt(monkeypatch):
    import ccxt

    FakeBinance.instances = []
    monkeypatch.setattr(ccxt, "binance", FakeBinance)
    return FakeBinance


def test_binance_paginates_and_stops_at_end(fake_ccxt, monkeypatch):
    from data_processors.sources.binance import BinanceSource

    monkeypatch.setattr(BinanceSource, "page", 7)
    df = get_source("binance", **FAST).download(["BTCUSDT", "ETH/USDT"], "2022-05-02 00:00", "2022-05-02 00:20", freq="1m")
    ex = fake_ccxt.instances[0]
    assert ex.config["timeout"] == 300 and ex.config["enableRateLimit"] is True
    btc_calls = [c for c in ex.calls if c[0] == "BTC/USDT"]
    assert len(btc_calls) == 3 and all(c[3] == 7 for c in btc_calls)  # 20 bars in pages of 7
    assert df.groupby("tic").size().to_dict() == {"BTCUSDT": 20, "ETHUSDT": 20}
    assert df["time"].iloc[0] == pd.Timestamp("2022-05-02 00:00", tz="UTC")
    assert df["time"].max() == pd.Timestamp("2022-05-02 00:19", tz="UTC")  # end is exclusive


def test_binance_retry_then_success_and_bad_symbol(fake_ccxt):
    src = get_source("binance", **FAST)
    orig_init = FakeBinance.__init__

    def init(self, config=None):
        orig_init(self, config)
        self.fail_first = 2

    FakeBinance.__init__ = init
    try:
        df = src.download(["BTCUSDT"], "2022-05-02 00:00", "2022-05-02 00:05", freq="1m")
    finally:
        FakeBinance.__init__ = orig_init
    assert len(df) == 5 and len(fake_ccxt.instances[-1].calls) == 3
    with pytest.raises(DataSourceError, match="BadSymbol"):
        src.download(["NOPEUSDT"], "2022-05-02", "2022-05-03", freq="1m")
    assert len(fake_ccxt.instances[-1].calls) == 1  # not retried


def test_binance_empty_is_error(fake_ccxt):
    with pytest.raises(DataSourceError, match="no 1m bars"):
        get_source("binance", **FAST).download(["BTCUSDT"], "2030-01-01", "2030-01-02", freq="1m")


def test_binance_file_formats(tmp_path):
    # raw CryptoDataDownload: banner line, unix ms, newest first, "Volume BTC"/"Volume USDT"
    cdd = tmp_path / "Binance_BTCUSDT_1h.csv"
    cdd.write_text(
        "https://www.CryptoDataDownload.com\n"
        "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount\n"
        "1609282800000,2020-12-29 23:00:00,BTC/USDT,27000,27100,26900,27050,100.5,2718525.0,5000\n"
        "1609279200,2020-12-29 10:00 PM,BTC/USDT,26950,27010,26940,27000,50.0,1350000.0,\n"
    )
    df = read_vendor_file(cdd, "binance")
    assert df["time"].tolist() == [pd.Timestamp("2020-12-29 22:00", tz="UTC"), pd.Timestamp("2020-12-29 23:00", tz="UTC")]
    assert df["volume"].tolist() == [50.0, 100.5] and df["amount"].iloc[1] == 2718525.0
    assert set(df["tic"]) == {"BTCUSDT"}
    # headerless Binance kline dump: symbol from the file name
    dump = tmp_path / "ETHUSDT-1m-2022-05-02.csv"
    dump.write_text("1651449600000,2823.38,2827.12,2823.38,2826.68,797.968,1651449659999,2254282.28,2352,573.8,1621171.4,0\n"
                    "1651449660000,2826.68,2829.0,2825.0,2828.0,500.0,1651449719999,1414000.0,2000,250.0,707000.0,0\n")
    df = read_vendor_file(dump, "binance")
    assert set(df["tic"]) == {"ETHUSDT"} and df["time"].iloc[1] == pd.Timestamp("2022-05-02 00:01", tz="UTC")
    assert df["amount"].iloc[0] == 2254282.28


# ---------------------------------------------------------------------------------------------
# the remaining error paths per vendor: hang, connection error, empty
# ---------------------------------------------------------------------------------------------
def test_tushare_hang_connection_error_and_empty(monkeypatch, release):
    import requests
    import tushare

    behaviour = {}

    class Pro(FakePro):
        def daily(self, ts_code, start_date, end_date, **kw):
            self.calls.append(("daily", ts_code))
            return behaviour["daily"]()

    made = []
    monkeypatch.setattr(tushare, "pro_api", lambda token="", timeout=30: made.append(Pro(token, timeout)) or made[-1])
    monkeypatch.setenv("TUSHARE_TOKEN", "t")
    src = get_source("tushare", timeout=0.05, attempts=2, backoff=0.001)
    behaviour["daily"] = lambda: release.wait(30)
    with pytest.raises(DataSourceError, match="timed out"):
        src.download(["600519.SH"], "2020-01-01", "2020-02-01")

    def refused():
        raise requests.exceptions.ConnectionError("Connection refused")

    behaviour["daily"] = refused
    with pytest.raises(DataSourceError, match="ConnectionError.*2 attempts"):
        src.download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert len(made[-1].calls) == 2
    behaviour["daily"] = lambda: pd.DataFrame([], columns=TS_FIELDS)  # what DataApi.query gives for no items
    with pytest.raises(DataSourceError, match="no rows"):
        src.download(["600519.SH"], "2020-01-01", "2020-02-01")


def test_binance_hang_is_timeout_error(fake_ccxt, release, monkeypatch):
    monkeypatch.setattr(FakeBinance, "fetch_ohlcv", lambda self, *a, **k: release.wait(30))
    t0 = time.monotonic()
    with pytest.raises(DataSourceError, match="timed out.*BTCUSDT|BTCUSDT.*timed out"):
        get_source("binance", timeout=0.05, attempts=2, backoff=0.001).download(["BTCUSDT"], "2022-05-02", "2022-05-03")
    assert time.monotonic() - t0 < 1.0


def test_baostock_network_code_retried_and_empty_is_error(fake_baostock):
    fake_baostock["login"] = Counter(lambda: bs_result([], [], "10002007", "网络接收错误。"))
    with pytest.raises(DataSourceError, match="10002007.*3 attempts"):
        get_source("baostock", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")
    assert fake_baostock["login"].calls == 3
    fake_baostock["login"] = Counter(lambda: bs_result([], [], "0", "success"))
    from data_processors.sources.baostock import FIELDS_DAILY

    fake_baostock["result"] = bs_result([], FIELDS_DAILY.split(","))
    with pytest.raises(DataSourceError, match="no rows"):
        get_source("baostock", **FAST).download(["600519.SH"], "2020-01-01", "2020-02-01")


# ---------------------------------------------------------------------------------------------
# netease, canonical, bad input
# ---------------------------------------------------------------------------------------------
NETEASE_HEADER = "日期,股票代码,名称,收盘价,最高价,最低价,开盘价,前收盘,涨跌额,涨跌幅,换手率,成交量,成交金额,总市值,流通市值\n"


@pytest.mark.parametrize("encoding", ["gbk", "utf-8"])
def test_netease_stock_file(tmp_path, encoding):
    p = tmp_path / f"600519_{encoding}.csv"
    text = (NETEASE_HEADER
            + "2020-01-03,'600519,贵州茅台,1078.56,1117.0,1076.9,1117.0,1130.0,-51.44,-4.5522,0.1037,13031878,14145300500.0,1.35e12,1.35e12\n"
            + "2020-01-02,'600519,贵州茅台,1130.0,1145.06,1116.0,1128.0,1183.0,-53.0,-4.4801,0.1179,14809916,16787800000.0,1.42e12,1.42e12\n")
    p.write_bytes(text.encode(encoding))
    df = read_vendor_file(p, "netease")
    assert df["tic"].tolist() == ["600519.SH", "600519.SH"]
    assert df["time"].tolist() == [pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")]
    assert df["volume"].tolist() == [14809916.0, 13031878.0]  # stock: already shares
    assert df["preclose"].tolist() == [1183.0, 1130.0]


def test_canonical_roundtrip_csv_and_parquet(tmp_path):
    df = pd.DataFrame({"time": pd.to_datetime(["2024-01-02 14:30", "2024-01-02 14:31"]).tz_localize("UTC"),
                       "tic": ["SPY", "SPY"], "open": [1.0, 2.0], "high": [2.0, 3.0], "low": [0.5, 1.0],
                       "close": [1.5, 2.5], "volume": [10.0, 20.0]})
    for name in ("c.csv", "c.parquet"):
        p = tmp_path / name
        df.to_csv(p, index=False) if name.endswith("csv") else df.to_parquet(p)
        back = read_vendor_file(p, "canonical")
        pd.testing.assert_frame_equal(back[df.columns.tolist()], df, check_dtype=False, check_index_type=False)
        assert str(back["time"].dt.tz) == "UTC"


def test_bad_input_names_file_column_and_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("date,tic,open,high,low,volume\n2020-01-02,AAPL,1,2,0.5,10\n")
    with pytest.raises(DataValidationError, match=r"bad\.csv.*missing column.*close"):
        read_vendor_file(p, "yahoo")
    p.write_text("date,tic,open,high,low,close,volume\n2020-01-02,AAPL,1,2,0.5,1.5,10\n2020-01-03,AAPL,1,2,0.5,abc,10\n")
    with pytest.raises(DataValidationError, match=r"bad\.csv: row 1: column 'close'.*'abc'"):
        read_vendor_file(p, "yahoo")
    p.write_text("date,tic,open,high,low,close,volume\n2020-01-02,AAPL,1,2,0.5,1.5,10\n2020-01-02,AAPL,1,2,0.5,1.5,10\n")
    with pytest.raises(DataValidationError, match=r"duplicate bar for AAPL at 2020-01-02"):
        read_vendor_file(p, "yahoo")
    p.write_text("date,tic,open,high,low,close,volume\nnot-a-date,AAPL,1,2,0.5,1.5,10\n")
    with pytest.raises(DataValidationError, match=r"row 0: time 'not-a-date'"):
        read_vendor_file(p, "canonical")
    with pytest.raises(DataValidationError, match="no such file"):
        read_vendor_file(tmp_path / "missing.csv", "baostock")
    p.write_text("date,code,open,high,low,close,volume\n2020-01-02,XX123,1,2,0.5,1.5,10\n")
    with pytest.raises(DataValidationError, match="not an A-share code: 'XX123'"):
        read_vendor_file(p, "baostock")


def test_read_file_rejects_options_that_do_not_apply(tmp_path):
    p = tmp_path / "ne.csv"
    p.write_text(NETEASE_HEADER + "2020-01-02,'000300,沪深300,4152.24,4172.66,4117.02,4121.35,4096.58,55.66,1.36,,182,2.7e11,,\n",
                 encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"option\(s\) \['tz'\] do not apply to format 'netease'"):
        read_vendor_file(p, "netease", tz="Asia/Shanghai")
    df = read_vendor_file(p, "netease")
    assert df["tic"].tolist() == ["000300.SH"] and df["volume"].tolist() == [18200.0]  # index: lots -> shares


def test_file_only_sources_refuse_download():
    with pytest.raises(DataSourceError, match="cannot download"):
        get_source("netease").download(["000300"], "2020-01-01", "2020-02-01")


def test_baostock_chatter_stays_off_stdout(fake_baostock, capsys):
    """baostock prints "login success!" etc. to stdout; stdout carries results only (issue 18)."""
    def chatty_login(*a, **k):
        print("login success!")
        return bs_result([], [], "0", "success")

    fake_baostock["login"] = Counter(chatty_login)
    get_source("baostock", **FAST).download(["600519.SH"], "2010-01-01", "2020-01-01")
    assert "login success" not in capsys.readouterr().out


def test_dates_are_iso_and_ordered_before_any_vendor_call(fake_baostock):
    from finmeta.errors import ConfigError

    with pytest.raises(ConfigError, match=r"start: '05-06-2020' is not an ISO date"):
        get_source("baostock", **FAST).download(["600519.SH"], "05-06-2020", "2021-01-01")
    with pytest.raises(DataSourceError, match="end 2020-01-01 is not after start 2020-06-01"):
        get_source("baostock", **FAST).download(["600519.SH"], "2020-06-01", "2020-01-01")
    with pytest.raises(DataSourceError, match="end 2020-01-01 is not after start"):
        get_source("synthetic").download(3, "2020-06-01", "2020-01-01")
    assert fake_baostock["login"].calls == 0 and fake_baostock["queries"] == []


def test_a_missing_vendor_library_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_yfinance(name, *a, **k):
        if name == "yfinance":
            raise ModuleNotFoundError("No module named 'yfinance'", name="yfinance")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_yfinance)
    with pytest.raises(DataSourceError, match=r"'yfinance' package is not installed.*pip install 'finmeta\[sources\]'"):
        get_source("yahoo", **FAST).download(["AAPL"], "2020-01-01", "2020-02-01")


def _yf_offline(tickers, **kw):
    """What yfinance 1.x does offline: log "possibly delisted; no timezone found" per ticker, return empty."""
    import logging

    for t in tickers:
        logging.getLogger("yfinance").error(f"${t}: possibly delisted; no timezone found")
    return yf_empty(tickers)


def test_yahoo_offline_is_reported_as_a_network_failure(monkeypatch):
    """Offline, yfinance blames the ticker ("possibly delisted"); the error must say it is the network
    (issue 18). The conftest guard refuses the reachability probe as an offline machine would."""
    import yfinance

    monkeypatch.setattr(yfinance, "download", _yf_offline)
    with pytest.raises(DataSourceError) as ei:
        get_source("yahoo", **FAST).download(["AAPL"], "2020-01-01", "2020-02-01")
    msg = str(ei.value)
    assert "network failure, cannot reach query2.finance.yahoo.com" in msg and "AAPL" in msg


def test_yahoo_unknown_ticker_online_keeps_yfinances_reason(monkeypatch):
    """Reachable host, no rows: not a network failure; yfinance's own words stay."""
    import socket

    import yfinance

    class Reachable:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(yfinance, "download", _yf_offline)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Reachable())
    with pytest.raises(DataSourceError) as ei:
        get_source("yahoo", **FAST).download(["NOSUCH"], "2020-01-01", "2020-02-01")
    msg = str(ei.value)
    assert "possibly delisted; no timezone found" in msg and "network failure" not in msg


def test_an_unknown_format_is_a_config_mistake_not_a_failed_download():
    """It read "nonsense: download of [] failed: unknown source" for `data import --format nonsense`."""
    from finmeta.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        get_source("nonsense")
    assert isinstance(ei.value, DataSourceError)  # callers catching DataSourceError still catch it
    assert "download" not in str(ei.value) and "'nonsense': unknown source (or file format)" in str(ei.value)


def test_utc_wall_is_the_one_series_level_coercion():
    """Aware times become naive UTC wall times (the instant kept, not the local clock); naive times
    pass unchanged; a Series keeps its index, anything else comes back as a DatetimeIndex."""
    from finmeta.timeparse import utc_wall

    ny = pd.Series(pd.to_datetime(["2020-03-06 09:30", "2020-03-09 09:30"]).tz_localize("America/New_York"),
                   index=[7, 9])
    out = utc_wall(ny)
    assert list(out.index) == [7, 9] and out.dt.tz is None
    # EST (UTC-5) before the DST switch of 2020-03-08, EDT (UTC-4) after it
    assert list(out) == [pd.Timestamp("2020-03-06 14:30"), pd.Timestamp("2020-03-09 13:30")]
    naive = pd.Series(pd.to_datetime(["2020-01-02", "2020-01-03"]))
    assert utc_wall(naive) is naive
    idx = utc_wall(np.array(ny.dt.tz_convert("UTC").to_list()))
    assert isinstance(idx, pd.DatetimeIndex) and idx.tz is None and list(idx) == list(out)
