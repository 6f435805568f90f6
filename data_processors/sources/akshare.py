"""``akshare``: China A-shares (East Money) through ``akshare``.

Download: ``akshare.stock_zh_a_hist(symbol="600519", period="daily"|"weekly"|"monthly",
start_date="YYYYMMDD", end_date="YYYYMMDD", adjust=""|"qfq"|"hfq", timeout=...)`` per ticker;
indices (``asset="index"``) with ``akshare.index_zh_a_hist``, which takes no timeout: a hard
timeout is enforced around every call. akshare returns an empty frame for an unknown code; that
is an error here.

Raw format (Chinese headers): 日期 (date), 股票代码, 开盘, 收盘, 最高, 最低, 成交量 (**lots of 100
shares**), 成交额 (CNY), 振幅, 涨跌幅 (%), 涨跌额 (change vs previous close), 换手率 (%).
Canonical: volume = 成交量 x 100 shares, amount = 成交额, preclose = 收盘 - 涨跌额 (on the same
adjustment basis as the prices); 振幅/涨跌幅/换手率 kept with ``keep_extra=True``.

Adjustment (``adjust``): ``none`` raw prices; ``qfq`` forward-adjusted (latest price real, history
scaled for splits, bonus shares and dividends); ``hfq`` backward-adjusted (first price real).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from finmeta.errors import DataSourceError, DataValidationError

from ._common import (
    ashare_codes,
    finalize,
    parse_times,
    rename,
    require_columns,
    to_canonical_times,
    to_numeric_checked,
    where,
)
from .base import DataSource

_PERIOD = {"1d": "daily", "1w": "weekly", "1mo": "monthly"}
_ADJUST = {"none": "", "qfq": "qfq", "hfq": "hfq", "": ""}
_COLUMNS = {"日期": "time", "股票代码": "tic", "开盘": "open", "收盘": "close", "最高": "high", "最低": "low",
            "成交量": "volume", "成交额": "amount"}


class AkshareSource(DataSource):
    """akshare (East Money): A-shares and indices, daily/weekly/monthly, none/qfq/hfq."""

    name = "akshare"
    calendar = "XSHG"

    def _fetch(
        self, tickers: list[str], start: str, end: str, freq: str, *, adjust: str = "none", asset: str = "stock", **_
    ) -> pd.DataFrame:
        import akshare as ak

        if freq not in _PERIOD:
            raise DataSourceError(self.name, tickers, f"daily-type data only: freq must be one of {list(_PERIOD)}")
        if adjust not in _ADJUST:
            raise DataSourceError(self.name, tickers, f"adjust must be none, qfq or hfq, not {adjust!r}")
        start_s = pd.Timestamp(start).strftime("%Y%m%d")
        end_s = (pd.Timestamp(end) - pd.Timedelta(days=1)).strftime("%Y%m%d")  # akshare's end is inclusive
        codes = ashare_codes(pd.Series(tickers), index=asset == "index", what=self.name)
        frames = []
        for tic, code in zip(tickers, codes):
            symbol = code.split(".")[0]
            if asset == "index":
                df = self.call(ak.index_zh_a_hist, symbol=symbol, period=_PERIOD[freq], start_date=start_s,
                               end_date=end_s, tickers=[tic], hard_timeout=self.timeout)
                df = df.assign(股票代码=code) if df is not None and not df.empty else df
            else:
                df = self.call(ak.stock_zh_a_hist, symbol=symbol, period=_PERIOD[freq], start_date=start_s,
                               end_date=end_s, adjust=_ADJUST[adjust], timeout=self.timeout, tickers=[tic],
                               hard_timeout=self.timeout * self.hard_timeout_factor)
            if df is None or df.empty:
                raise DataSourceError(self.name, [tic], f"no rows for {start}..{end} ({_PERIOD[freq]})")
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        asset: str = "stock",
        symbol: str | None = None,
        keep_extra: bool = False,
        freq: str | None = None,
        **_: object,
    ) -> pd.DataFrame:
        """akshare ``stock_zh_a_hist`` / ``index_zh_a_hist`` frame (or its CSV) -> canonical frame.

        Args:
            raw: (n, 11-12) frame with the Chinese headers above.
            asset: ``"index"`` spells bare 000xxx codes as SSE indices (``000300.SH``).
            symbol: code for frames without 股票代码 (``index_zh_a_hist`` output).
        """
        what = where(path, self.name)
        require_columns(raw, ["日期", "开盘", "收盘", "最高", "最低", "成交量"], what, self.name)
        if symbol is None and "股票代码" not in raw.columns:
            raise DataValidationError(f"{what}: no 股票代码 column; pass symbol=")
        df = rename(raw, _COLUMNS)
        if symbol is not None:
            df = df.assign(tic=symbol)
        require_columns(df, ["time", "tic", "open", "high", "low", "close", "volume"], what, self.name)
        df = df.assign(
            tic=ashare_codes(df["tic"].astype(str).str.zfill(6), index=asset == "index", what=what),
            volume=to_numeric_checked(df["volume"], "成交量", what) * 100.0,  # lots -> shares
        )
        if "涨跌额" in df.columns:
            close = to_numeric_checked(df["close"], "收盘", what)
            df["preclose"] = (close - to_numeric_checked(df["涨跌额"], "涨跌额", what)).round(4)
        times = parse_times(df["time"].astype(str), what)
        df = df.assign(time=to_canonical_times(times, df["tic"], what, freq=_daily_freq(freq, what)))
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)


def _daily_freq(freq: str | None, what: str) -> str:
    """akshare bars are days, weeks or months (dated by their last session)."""
    if freq is None:
        return "1d"
    if freq not in _PERIOD:
        raise DataValidationError(f"{what}: freq must be one of {list(_PERIOD)} for akshare data, not {freq!r}")
    return freq
