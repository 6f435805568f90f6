"""``baostock``: China A-shares and indices through ``baostock`` (daily/weekly/monthly, 5/15/30/60 min).

Download: ``baostock.login()`` (anonymous; it can block on its socket, so it runs under a hard
timeout), then per ticker ``baostock.query_history_k_data_plus("sh.600519", fields, start_date,
end_date, frequency="d"|"w"|"m"|"5"|"15"|"30"|"60", adjustflag="3"|"2"|"1")`` and
``baostock.logout()``. Rows are read with ``rs.next()`` / ``rs.get_row_data()`` (``rs.get_data()``
breaks on pandas >= 2 above 2,000 rows). ``error_code != "0"`` (login or query) is a
:class:`DataSourceError` carrying baostock's ``error_msg``. baostock keeps one global connection:
do not download from several threads at once.

Raw format (strings): daily ``date, code, open, high, low, close, preclose, volume (shares),
amount (CNY), adjustflag, turn, tradestatus, pctChg, isST``; weekly/monthly without preclose,
tradestatus, isST; minutes ``date, time (YYYYMMDDHHMMSSsss, Beijing time, bar END), code, open,
high, low, close, volume, amount, adjustflag``. Canonical: ``sh.600519 -> 600519.SH``, minute
bars -> UTC bar open (end - bar length), ``isST -> is_st``, ``tradestatus`` kept (0 = suspended,
OHLC = previous close, volume 0), ``turn``/``pctChg`` kept with ``keep_extra=True``.

Adjustment (``adjust``): ``none`` (adjustflag 3, default), ``qfq`` (2), ``hfq`` (1). ``preclose``
is ex-rights adjusted by baostock even for raw prices.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from finmeta.errors import DataSourceError

from ._common import BAR_LENGTH, ashare_codes, finalize, parse_times, rename, require_columns, \
    to_canonical_times, where
from .base import DataSource

_FREQ = {"1d": "d", "1w": "w", "1mo": "m", "5m": "5", "15m": "15", "30m": "30", "60m": "60", "1h": "60"}
_ADJUST = {"none": "3", "qfq": "2", "hfq": "1"}
FIELDS_DAILY = "date,code,open,high,low,close,preclose,volume,amount,adjustflag,turn,tradestatus,pctChg,isST"
FIELDS_WEEKLY = "date,code,open,high,low,close,volume,amount,adjustflag,turn,pctChg"
FIELDS_MINUTE = "date,time,code,open,high,low,close,volume,amount,adjustflag"
_BAR = {"5": "5m", "15": "15m", "30": "30m", "60": "60m"}


def baostock_code(canonical: str) -> str:
    """``600519.SH`` -> ``sh.600519``."""
    code, exch = canonical.split(".")
    return f"{exch.lower()}.{code}"


class BaostockSource(DataSource):
    """Baostock: A-shares and indices, daily/weekly/monthly and 5/15/30/60-minute K-lines."""

    name = "baostock"
    calendar = "XSHG"

    def _fetch(
        self, tickers: list[str], start: str, end: str, freq: str, *, adjust: str = "none", asset: str = "stock", **_
    ) -> pd.DataFrame:
        if freq not in _FREQ:
            raise DataSourceError(self.name, tickers, f"freq must be one of {list(_FREQ)}, not {freq!r}")
        if adjust not in _ADJUST:
            raise DataSourceError(self.name, tickers, f"adjust must be none, qfq or hfq, not {adjust!r}")
        import baostock as bs

        bfreq = _FREQ[freq]
        fields = FIELDS_DAILY if bfreq == "d" else FIELDS_WEEKLY if bfreq in "wm" else FIELDS_MINUTE
        start_s = pd.Timestamp(start).strftime("%Y-%m-%d")
        end_s = (pd.Timestamp(end) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")  # baostock's end is inclusive
        codes = ashare_codes(pd.Series(tickers), index=asset == "index", what=self.name)

        def login() -> object:
            with _quiet():
                lg = bs.login()
            _check(lg, self.name, tickers, "login")
            return lg

        def logout() -> object:
            with _quiet():
                return bs.logout()

        self.call(login, tickers=tickers, hard_timeout=self.timeout)
        try:
            frames = []
            for tic, code in zip(tickers, codes):

                def query(code=code) -> tuple[list[str], list[list[str]], object]:
                    with _quiet():
                        rs = bs.query_history_k_data_plus(baostock_code(code), fields, start_date=start_s,
                                                          end_date=end_s, frequency=bfreq,
                                                          adjustflag=_ADJUST[adjust])
                        _check(rs, self.name, [tic], "query_history_k_data_plus")
                        rows = []
                        while (rs.error_code == "0") and rs.next():  # next() may fetch the next page
                            rows.append(rs.get_row_data())
                    _check(rs, self.name, [tic], "reading rows")
                    return list(rs.fields), rows

                cols, rows = self.call(query, tickers=[tic])
                if not rows:
                    raise DataSourceError(self.name, [tic], f"baostock returned no rows for {code} {start}..{end}")
                frames.append(pd.DataFrame(rows, columns=cols))
        finally:
            try:
                self.call(logout, tickers=tickers, hard_timeout=min(self.timeout, 5.0))
            except DataSourceError:
                pass  # the data is in; a failed logout only leaks baostock's session
        return pd.concat(frames, ignore_index=True)

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        freq: str | None = None,
        keep_extra: bool = False,
        **_: object,
    ) -> pd.DataFrame:
        """baostock rows (strings from ``get_row_data`` or a CSV written from them) -> canonical.

        Args:
            raw: (n, 10-14) frame with baostock field names.
            freq: bar frequency of minute data (inferred from the stamps when None).
        """
        what = where(path, self.name)
        df = rename(raw, {"code": "tic", "isST": "is_st"})
        require_columns(df, ["date", "tic", "open", "high", "low", "close", "volume"], what, self.name)
        df = df.assign(tic=ashare_codes(df["tic"], what=what))
        if "time" in df.columns:  # minute bars: bar END in Beijing time
            t = parse_times(df["time"].astype(str).str.slice(0, 14), what, fmt="%Y%m%d%H%M%S")
            intraday_freq = freq if freq in BAR_LENGTH else None
            t = to_canonical_times(t, df["tic"], what, freq=intraday_freq, tz="Asia/Shanghai", label="end")
            df = df.assign(time=t)
        else:
            t = parse_times(df["date"].astype(str), what, fmt="%Y-%m-%d")
            df = df.assign(time=to_canonical_times(t, df["tic"], what, freq="1d"))
        if "tradestatus" in df.columns:  # suspended bars traded nothing (baostock leaves a few empty)
            halted = pd.to_numeric(df["tradestatus"], errors="coerce").eq(0)
            for c in ("volume", "amount"):
                if c in df.columns:
                    empty = df[c].isna() | df[c].astype(str).str.strip().eq("")
                    df[c] = df[c].where(~(halted & empty), 0)
        drop = ["date", "adjustflag"] + ([] if keep_extra else ["turn", "pctChg"])
        df = df.drop(columns=[c for c in drop if c in df.columns])
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)


class BaostockNetworkError(ConnectionError):
    """baostock reported a network error code (10002xxx): worth a retry."""


def _quiet():
    """baostock prints "login success!" and the like to stdout: results must keep stdout to themselves."""
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())


def _check(result: object, source: str, tickers: list[str], what: str) -> None:
    """Raise on ``error_code != "0"``: network codes (10002xxx) retryably, others as DataSourceError."""
    code = str(getattr(result, "error_code", "0"))
    if code != "0":
        msg = f"baostock {what} failed: error_code={code} {getattr(result, 'error_msg', '')}"
        if code.startswith("10002"):
            raise BaostockNetworkError(msg)
        raise DataSourceError(source, tickers, msg)
