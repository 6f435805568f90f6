"""``yahoo`` (alias ``yahoofinance``): Yahoo Finance through ``yfinance``.

Download: ``yfinance.download(tickers, start, end, interval, auto_adjust=False, actions=False,
timeout=...)`` in chunks of tickers. yfinance 1.x returns a wide frame with ``(Price, Ticker)``
MultiIndex columns (``Adj Close, Close, High, Low, Open, Volume``), a tz-naive ``Date`` index for
daily bars and a tz-aware exchange-time ``Datetime`` index (bar *open*) for intraday bars. It does
not raise when offline or for an unknown ticker: it logs the error and returns an empty frame or
all-NaN columns. Both are detected here and raised as :class:`DataSourceError` with yfinance's
logged message.

Prices (``adjust="none"``, default): OHLC split-adjusted, not dividend-adjusted; ``adjcp`` =
Yahoo's split+dividend adjusted close. ``adjust="auto"``: yfinance ``auto_adjust=True``, OHLC
split+dividend adjusted, no ``adjcp``.

Files: (a) FinRL long format (``date, tic, open, high, low, close[, adjcp], volume`` + extra
columns such as FinRL's indicators, kept with ``keep_extra=True``); (b) a yfinance frame saved with
``to_csv`` (two header rows ``Price``/``Ticker``); (c) one-ticker Yahoo CSV export
(``Date, Open, High, Low, Close, Adj Close, Volume``; ticker from ``symbol=`` or the file name).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import ClassVar

import pandas as pd

from finmeta.errors import DataSourceError, DataValidationError

from ._common import finalize, parse_times, rename, require_columns, to_canonical_times, where
from .base import DataSource

_INTERVAL = {"1d": "1d", "1w": "1wk", "1mo": "1mo", "1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m",
             "60m": "60m", "1h": "1h"}
_COLUMNS = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Adj Close": "adjcp",
            "Volume": "volume", "Date": "time", "Datetime": "time", "date": "time", "datetime": "time",
            "adj_close": "adjcp", "adj close": "adjcp", "symbol": "tic", "ticker": "tic"}


class _LogCapture(logging.Handler):
    """Collects yfinance's logged errors (it logs instead of raising)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip())


class YahooSource(DataSource):
    """Yahoo Finance (yfinance): US stocks, ETFs, indices (^DJI, ^VIX); daily and intraday."""

    name = "yahoo"
    aliases = ("yahoofinance",)
    calendar = "XNYS"
    #: Tickers per yfinance.download call.
    chunk: ClassVar[int] = 20

    def __init__(self, adjust: str = "none", **kw) -> None:
        super().__init__(**kw)
        if adjust not in ("none", "auto"):
            raise DataSourceError(self.name, [], f"adjust must be 'none' or 'auto', not {adjust!r}")
        self.adjust = adjust

    # -- download -----------------------------------------------------------------------------
    def vendor_symbol(self, ticker: str) -> str:
        return ticker.upper()

    def _fetch(self, tickers: list[str], start: str, end: str, freq: str, **kw) -> pd.DataFrame:
        import yfinance as yf

        symbols = [self.vendor_symbol(t) for t in tickers]
        frames = []
        for i in range(0, len(symbols), self.chunk):
            chunk = symbols[i : i + self.chunk]
            frames.append(self._fetch_chunk(yf, chunk, start, end, freq))
        raw = pd.concat(frames, axis=1) if len(frames) > 1 else frames[0]
        return raw

    def _fetch_chunk(self, yf, chunk: list[str], start: str, end: str, freq: str) -> pd.DataFrame:
        def one_call() -> pd.DataFrame:
            capture = _LogCapture()
            logger = logging.getLogger("yfinance")
            logger.addHandler(capture)
            try:
                with warnings.catch_warnings():
                    # yfinance's own pandas deprecation warnings are not the user's business
                    warnings.filterwarnings("ignore", module=r"yfinance(\..*)?")
                    data = yf.download(
                        chunk, start=start, end=end, interval=_INTERVAL[freq], auto_adjust=self.adjust == "auto",
                        actions=False, progress=False, threads=True, timeout=self.timeout,
                        group_by="column", multi_level_index=True,
                    )
            finally:
                logger.removeHandler(capture)
            missing = _missing_tickers(data, chunk)
            if missing:
                detail = "; ".join(capture.messages[-3:]) or "yfinance returned no rows"
                if len(missing) == len(chunk):  # nothing came back: offline looks like "possibly delisted"
                    detail = _network_failure(detail) or detail
                # offline / rate-limited: transient, so raise something with_retries retries
                raise ConnectionError(f"no data for {missing}: {detail}")
            return data

        return self.call(one_call, tickers=chunk, hard_timeout=self.timeout * self.hard_timeout_factor * 2)

    # -- files --------------------------------------------------------------------------------
    def _read_raw(self, path: Path, **options) -> pd.DataFrame:
        head = pd.read_csv(path, nrows=3, header=None)
        two_row_header = len(head) >= 2 and str(head.iat[0, 0]).strip() in ("Price", "Ticker") \
            and str(head.iat[1, 0]).strip() in ("Ticker", "Price")
        if two_row_header:
            return pd.read_csv(path, header=[0, 1], index_col=0, skiprows=[2])
        return pd.read_csv(path)

    # -- normalise ----------------------------------------------------------------------------
    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        symbol: str | None = None,
        keep_extra: bool = False,
        freq: str | None = None,
        tz: str | None = None,
        label: str = "open",
        **_: object,
    ) -> pd.DataFrame:
        """yfinance wide frame / FinRL long file / Yahoo CSV -> canonical frame.

        Args:
            raw: yfinance ``download`` output ((T, 6*N) with (Price, Ticker) columns), or a long
                (n, k) frame with ``date, tic, open, ...``.
            symbol: ticker for one-ticker files without a ``tic`` column (default: file stem).
            keep_extra: keep extra columns of FinRL files (``day``, indicators, ``vix``, ...).
            freq, tz, label: for intraday files with naive stamps (see ``canonical``); yfinance's
                own intraday stamps are tz-aware bar opens and need none of them.
        """
        what = where(path, self.name)
        if isinstance(raw.columns, pd.MultiIndex):
            long = _stack_wide(raw, what)
        else:
            long = raw
            if long.index.name in ("Date", "Datetime", "date") and long.index.name not in long.columns:
                long = long.reset_index()
            long = rename(long, _COLUMNS)
            if "tic" not in long.columns:
                tic = symbol or (Path(path).name.split(".")[0] if path is not None else None)
                if tic is None:
                    raise DataValidationError(f"{what}: no 'tic' column; pass symbol=")
                long = long.assign(tic=tic)
            elif symbol is not None:
                long = long.assign(tic=symbol)
        require_columns(long, ["time"], what, self.name)
        times = parse_times(long["time"], what)
        long = long.assign(time=to_canonical_times(times, long["tic"], what, freq=freq, tz=tz, label=label))
        long = long.assign(tic=long["tic"].map(self.canonical_ticker))
        return finalize(long, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)

    def canonical_ticker(self, vendor: str) -> str:
        return str(vendor).upper() if not str(vendor).startswith("^") else str(vendor)


def _ticker_level(columns: pd.MultiIndex) -> int:
    names = list(columns.names)
    if "Ticker" in names:
        return names.index("Ticker")
    fields = set(_COLUMNS)
    return 1 if set(columns.get_level_values(0)) <= fields else 0


def _stack_wide(raw: pd.DataFrame, what: str) -> pd.DataFrame:
    """(T, fields x tickers) -> long (T*N, fields + time + tic)."""
    level = _ticker_level(raw.columns)
    df = raw.copy()
    df.columns = df.columns.set_names(["Price", "Ticker"] if level == 1 else ["Ticker", "Price"])
    df.index = df.index.rename("time")
    long = df.stack(level="Ticker").reset_index()
    long.columns = [str(c) for c in long.columns]
    long = long.rename(columns={"Ticker": "tic"})
    return rename(long, _COLUMNS)


#: The host yfinance downloads from; a TCP connect to it tells "offline" from "no such ticker".
YAHOO_HOST = ("query2.finance.yahoo.com", 443)
_NETWORK_WORDS = ("could not resolve host", "failed to perform", "timed out", "connection refused",
                  "network is unreachable", "dnserror", "connectionerror")


def _network_failure(detail: str, probe_timeout: float = 3.0) -> str | None:
    """A network-failure message when Yahoo cannot be reached, else ``None``.

    yfinance reports an offline machine per ticker as "possibly delisted; no timezone found" (or a
    curl error): when its messages already name a network error, or a TCP connect to
    :data:`YAHOO_HOST` fails, the user is told it is the network, not the tickers.
    """
    import socket

    if any(w in detail.lower() for w in _NETWORK_WORDS):
        return f"network failure, Yahoo Finance could not be reached (yfinance: {detail})"
    try:
        with socket.create_connection(YAHOO_HOST, timeout=probe_timeout):
            return None
    except OSError as exc:
        return (f"network failure, cannot reach {YAHOO_HOST[0]} ({type(exc).__name__}: {exc}); check the "
                f"connection or proxy (yfinance said: {detail})")


def _missing_tickers(data: pd.DataFrame | None, tickers: list[str]) -> list[str]:
    """Tickers of ``tickers`` for which a yfinance frame holds no price at all."""
    if data is None or data.empty:
        return list(tickers)
    if not isinstance(data.columns, pd.MultiIndex):
        return [] if data.get("Close", pd.Series(dtype=float)).notna().any() else list(tickers)
    level = _ticker_level(data.columns)
    other = 1 - level
    if "Close" not in data.columns.get_level_values(other):
        return list(tickers)
    close = data.xs("Close", axis=1, level=other, drop_level=True)
    have = {str(t).upper() for t in close.columns[close.notna().any(axis=0).to_numpy()]}
    return [t for t in tickers if t.upper() not in have]
