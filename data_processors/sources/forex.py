"""``fx`` (alias ``forex``): currency pairs.

Download: Yahoo Finance through yfinance (``EURUSD`` is requested as ``EURUSD=X``; the canonical
ticker is ``EURUSD``), with everything the ``yahoo`` source does (timeouts, retries, empty = error).
Yahoo reports no FX volume (0); the canonical ``volume`` is 0.0 for FX.

Files: the FinRL-Meta FX format (``time, symbol, Open, High, Low, Close`` [+ ``Volume`` and
indicator/calendar columns, dropped unless ``keep_extra``]). Options: ``symbol=`` overrides the
file's symbol (the shared 2017 file says GBPUSD but holds EURUSD prices: pass
``symbol="EURUSD"``); ``tz=`` the zone of the naive stamps (default UTC; the FinRL-Meta file's zone
is undocumented); ``label="open"|"end"``. No volume column -> ``volume = 0.0`` (OTC market, no
consolidated volume; do not use volume-based slippage on FX). Any yahoo-format file also imports.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import finalize, parse_times, rename, require_columns, to_canonical_times, where
from .yahoofinance import YahooSource

_FX_COLUMNS = {"time": "time", "symbol": "tic", "tic": "tic", "Open": "open", "High": "high", "Low": "low",
               "Close": "close", "Volume": "volume"}


class ForexSource(YahooSource):
    """Foreign exchange: Yahoo ``EURUSD=X`` downloads; FinRL-Meta FX 5-minute files."""

    name = "fx"
    aliases = ("forex",)
    calendar = "FX"

    def vendor_symbol(self, ticker: str) -> str:
        t = ticker.upper().replace("/", "")
        return t if t.endswith("=X") else f"{t}=X"

    def canonical_ticker(self, vendor: str) -> str:
        return str(vendor).upper().removesuffix("=X").replace("/", "")

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        symbol: str | None = None,
        tz: str | None = None,
        label: str = "open",
        freq: str | None = None,
        keep_extra: bool = False,
        **_: object,
    ) -> pd.DataFrame:
        """FX raw frame -> canonical frame; volume 0.0 where the vendor has none.

        Args:
            raw: yfinance frame for ``XXXYYY=X`` tickers, or a FinRL-Meta FX frame (n, k).
            symbol: ticker to use instead of the file's ``symbol`` column.
            tz, label, freq: see :func:`~data_processors.sources._common.to_canonical_times`.
        """
        what = where(path, self.name)
        is_finrl_meta = not isinstance(raw.columns, pd.MultiIndex) and "time" in raw.columns
        if not is_finrl_meta:
            flat = not isinstance(raw.columns, pd.MultiIndex)
            if flat and "Volume" not in raw.columns and "volume" not in raw.columns:
                raw = raw.assign(volume=0.0)
            df = super().normalize(raw, path=path, symbol=symbol, keep_extra=keep_extra, freq=freq, tz=tz, label=label)
            df["volume"] = df["volume"].fillna(0.0)
            return df
        df = rename(raw, _FX_COLUMNS)
        if symbol is not None:
            df = df.assign(tic=symbol)
        require_columns(df, ["tic", "open", "high", "low", "close"], what, self.name)
        if "volume" not in df.columns:
            df = df.assign(volume=0.0)
        df = df.assign(tic=df["tic"].map(self.canonical_ticker))
        times = parse_times(df["time"], what)
        df = df.assign(time=to_canonical_times(times, df["tic"], what, freq=freq, tz=tz, label=label))
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)
