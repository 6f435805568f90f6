"""Data sources: one module each, one interface (:class:`~data_processors.sources.base.DataSource`).

Importing this package registers every source. Vendor libraries (yfinance, akshare, tushare,
baostock, ccxt) are imported lazily inside the calls, so the package imports without them.
"""

from __future__ import annotations

import importlib

from .base import REGISTRY, DataSource, get_source

_MODULES = ("canonical", "yahoofinance", "akshare", "tushare", "baostock", "binance", "forex", "netease", "synthetic")
for _m in _MODULES:
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as exc:  # module not written yet
        if exc.name != f"{__name__}.{_m}":
            raise

__all__ = ["DataSource", "REGISTRY", "get_source"]
