"""The canonical long frame: the one format every source normalises to.

One row per (time, tic), sorted by (time, tic), unique keys.

=============  =========  ===================================================================
column         dtype      meaning
=============  =========  ===================================================================
time           datetime   daily: midnight dates (tz-naive, the exchange's local date);
                          intraday: bar *open* time in UTC (tz-aware ``UTC``)
tic            str        the ticker as the vendor spells it after normalisation
                          (``AAPL``, ``^VIX``, ``600519.SH``, ``BTCUSDT``, ``EURUSD``)
open/high/     float64    prices; see ``docs/conventions.md`` for which are adjusted
low/close
volume         float64    traded quantity in shares (A-shares: shares, not lots) / base units
=============  =========  ===================================================================

Optional columns (kept when a source has them):

``amount`` (traded value, quote currency), ``preclose`` (previous close, ex-rights adjusted by the
vendor; needed by the A-share limit rules), ``tradestatus`` (1 traded, 0 suspended), ``is_st``
(1 for ST/*ST names), ``adj_factor`` (multiply raw prices by it to get adjusted prices),
``adjcp`` (vendor's split+dividend adjusted close).
"""

from __future__ import annotations

KEY_COLUMNS: tuple[str, ...] = ("time", "tic")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
REQUIRED_COLUMNS: tuple[str, ...] = ("time", "tic", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("amount", "preclose", "tradestatus", "is_st", "adj_factor", "adjcp")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

#: The default technical-indicator set (FinRL's INDICATORS), same names in both engines.
DEFAULT_INDICATORS: tuple[str, ...] = (
    "macd",
    "boll_ub",
    "boll_lb",
    "rsi_30",
    "cci_30",
    "dx_30",
    "close_30_sma",
    "close_60_sma",
)
