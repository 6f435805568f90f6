"""Features: technical indicators (stockstats | TA-Lib), VIX, turbulence, VADER news sentiment.

``add_features`` (:mod:`.pipeline`) is the entry point; see ``docs/features.md``.
"""

from __future__ import annotations

from data_processors.schema import DEFAULT_INDICATORS

from .indicators import ENGINES, compute_indicators, parse_indicator, talib_lookback
from .pipeline import add_features
from .sentiment import daily_sentiment, read_news, score_texts
from .turbulence import compute_turbulence
from .vix import align_vix, load_vix_file, vix_series

__all__ = [
    "DEFAULT_INDICATORS",
    "ENGINES",
    "add_features",
    "align_vix",
    "compute_indicators",
    "compute_turbulence",
    "daily_sentiment",
    "load_vix_file",
    "parse_indicator",
    "read_news",
    "score_texts",
    "talib_lookback",
    "vix_series",
]
