"""Data layer: sources -> canonical frame -> cleaning -> features -> store -> arrays.

See ``docs/architecture.md``. The env layer consumes only :class:`MarketArrays`.
"""

from __future__ import annotations

from .arrays import MarketArrays, to_arrays
from .schema import CANONICAL_COLUMNS, DEFAULT_INDICATORS, REQUIRED_COLUMNS

__all__ = ["MarketArrays", "to_arrays", "CANONICAL_COLUMNS", "REQUIRED_COLUMNS", "DEFAULT_INDICATORS"]
