"""``binance``: crypto OHLCV from Binance through ``ccxt``.

Download: ``ccxt.binance({"timeout": ms, "enableRateLimit": True})`` then
``fetch_ohlcv("BTC/USDT", timeframe, since=ms, limit=1000)`` paged forward from ``start`` until
``end`` (each page a separate time-limited, retried call). ``market="future"`` uses the USD-M
perpetual (``BTC/USDT:USDT``). ccxt returns ``[[open_time_ms, open, high, low, close,
volume_base], ...]``. ccxt's ``BadSymbol``/``AuthenticationError`` are not retried.

Files (all normalised by the same code):

* CryptoDataDownload export, as in the shared folder (``timestamp, symbol, open, high, low, close,
  volume_base, volume_quote, tradecount``) or raw (URL banner line, ``unix, date, symbol, open,
  high, low, close, Volume BTC, Volume USDT, tradecount``; unix in s or ms, newest first);
* Binance public kline dumps (``open_time, open, high, low, close, volume, close_time,
  quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore``; with or without header;
  open_time in ms or us; symbol from ``symbol=`` or the file name ``BTCUSDT-1m-2022-05-02.csv``),
  also with leading ``timestamp, symbol`` columns.

Canonical: ``tic`` = ``BTCUSDT``; volume = base-asset volume; amount = quote volume (USDT) where
given; daily bars -> tz-naive UTC dates; intraday -> UTC bar open. Prices are trade prices (no
adjustment exists for crypto).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from finmeta.errors import DataSourceError, DataValidationError

from ._common import epoch_to_utc, finalize, parse_times, rename, require_columns, to_canonical_times, where
from .base import DataSource

_TIMEFRAME = {"1d": "1d", "1w": "1w", "1mo": "1M", "1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m",
              "60m": "1h", "1h": "1h"}
_TF_MS = {"1d": 86_400_000, "1w": 7 * 86_400_000, "1m": 60_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
          "60m": 3_600_000, "1h": 3_600_000}
_QUOTES = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")
KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                 "taker_buy_volume", "taker_buy_quote_volume", "ignore")
_CCXT_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")


def split_pair(ticker: str) -> tuple[str, str]:
    """``BTCUSDT`` / ``BTC/USDT`` / ``BTC-USDT`` -> (``BTC``, ``USDT``)."""
    t = ticker.upper().split(":")[0]
    parts = re.split(r"[/\-_]", t)
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    for q in _QUOTES:
        if t.endswith(q) and len(t) > len(q):
            return t[: -len(q)], q
    raise ValueError(f"cannot split {ticker!r} into base/quote; write it as BASE/QUOTE")


class BinanceSource(DataSource):
    """Binance (ccxt): crypto pairs, 24/7, minute to monthly bars; CryptoDataDownload and kline files."""

    name = "binance"
    calendar = "24/7"
    #: Bars per fetch_ohlcv page (Binance allows 1000 on spot, 1500 on futures).
    page: int = 1000

    def is_permanent(self, exc: BaseException) -> bool:
        return type(exc).__name__ in ("BadSymbol", "AuthenticationError", "PermissionDenied", "NotSupported",
                                      "ArgumentsRequired", "BadRequest")

    def _fetch(self, tickers: list[str], start: str, end: str, freq: str, *, market: str = "spot", **_) -> pd.DataFrame:
        import ccxt

        if freq not in _TIMEFRAME:
            raise DataSourceError(self.name, tickers, f"unsupported freq {freq!r}")
        options = {"timeout": int(self.timeout * 1000), "enableRateLimit": True}
        if market != "spot":
            options["options"] = {"defaultType": market}
        exchange = ccxt.binance(options)
        start_ms = int(pd.Timestamp(start, tz="UTC").timestamp() * 1000)
        end_ms = int(pd.Timestamp(end, tz="UTC").timestamp() * 1000)
        step = _TF_MS.get(freq, 28 * 86_400_000)
        frames = []
        for tic in tickers:
            try:
                base, quote = split_pair(tic)
            except ValueError as exc:
                raise DataSourceError(self.name, [tic], str(exc)) from None
            symbol = f"{base}/{quote}" + (f":{quote}" if market == "future" else "")
            rows: list[list] = []
            since = start_ms
            while since < end_ms:
                batch = self.call(exchange.fetch_ohlcv, symbol, _TIMEFRAME[freq], since, self.page, tickers=[tic])
                if not batch:
                    break
                rows.extend(r for r in batch if start_ms <= r[0] < end_ms)
                nxt = int(batch[-1][0]) + step
                if nxt <= since:  # the exchange did not move forward: stop, do not loop forever
                    break
                since = nxt
            if not rows:
                raise DataSourceError(self.name, [tic], f"binance returned no {freq} bars for {symbol} {start}..{end}")
            df = pd.DataFrame(rows, columns=list(_CCXT_COLUMNS)).drop_duplicates("open_time", keep="last")
            frames.append(df.assign(symbol=base + quote))
        return pd.concat(frames, ignore_index=True)

    def _read_raw(self, path: Path, **options) -> pd.DataFrame:
        first = pd.read_csv(path, nrows=1, header=None, dtype=str).iloc[0].tolist()
        if str(first[0]).lower().startswith("http") or len([x for x in first if pd.notna(x)]) == 1:
            return pd.read_csv(path, skiprows=1)  # CryptoDataDownload banner line
        if re.fullmatch(r"\d+(\.\d+)?", str(first[0]).strip()):  # headerless kline dump
            raw = pd.read_csv(path, header=None)
            if raw.shape[1] != len(KLINE_COLUMNS):
                raise ValueError(f"headerless file with {raw.shape[1]} columns; a Binance kline dump has 12")
            raw.columns = list(KLINE_COLUMNS)
            return raw
        return pd.read_csv(path)

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        symbol: str | None = None,
        freq: str | None = None,
        keep_extra: bool = False,
        **_: object,
    ) -> pd.DataFrame:
        """ccxt rows / CryptoDataDownload / kline-dump frame -> canonical frame.

        Args:
            raw: (n, k) frame in one of the formats of the module docstring.
            symbol: pair for files without a symbol column (default: from the file name).
            freq: bar frequency; inferred (daily = all midnights) when None.
        """
        what = where(path, self.name)
        df = raw.copy()
        df.columns = [str(c).strip() for c in df.columns]
        # CryptoDataDownload raw: "Volume BTC" / "Volume USDT"
        vol_cols = [c for c in df.columns if c.lower().startswith("volume ")]
        if vol_cols and "symbol" in df.columns:
            sym0 = str(df["symbol"].iloc[0])
            try:
                base, quote = split_pair(sym0)
            except ValueError:
                base, quote = "", ""
            for c in vol_cols:
                unit = c.split(" ", 1)[1].upper()
                df = df.rename(columns={c: "volume_quote" if unit == quote else "volume_base" if unit == base else c})
        df = rename(df, {"volume_base": "volume", "volume_quote": "amount", "quote_volume": "amount",
                         "Symbol": "symbol", "tic": "symbol"})
        if symbol is not None:
            df = df.assign(symbol=symbol)
        elif "symbol" not in df.columns:
            if path is None:
                raise DataValidationError(f"{what}: no symbol column; pass symbol=")
            df = df.assign(symbol=Path(path).name.split("-")[0].split(".")[0])
        require_columns(df, ["open", "high", "low", "close", "volume"], what, self.name)
        if "unix" in df.columns:
            times = epoch_to_utc(df["unix"], what)
        elif "open_time" in df.columns:
            times = epoch_to_utc(df["open_time"], what)
        elif "timestamp" in df.columns or "date" in df.columns:
            col = "timestamp" if "timestamp" in df.columns else "date"
            times = parse_times(df[col], what)
        else:
            require_columns(df, ["timestamp"], what, self.name)
        if times.dt.tz is None:
            times = times.dt.tz_localize("UTC")
        tic = df["symbol"].astype(str).str.upper().str.replace(r"[/\-_]|:.*$", "", regex=True)
        df = df.assign(tic=tic, time=to_canonical_times(times, tic, what, freq=freq, tz="UTC"))
        drop = ["symbol", "unix", "date", "timestamp", "open_time", "close_time", "ignore"]
        df = df.drop(columns=[c for c in drop if c in df.columns])
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)
