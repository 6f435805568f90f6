"""Data layer: sources -> canonical frame -> cleaning -> features -> store -> arrays.

See ``docs/architecture.md``. The env layer consumes only :class:`MarketArrays`.
"""

from __future__ import annotations

from .arrays import MarketArrays, to_arrays
from .clean import CleanReport, clean, validate
from .processor import DataProcessor
from .schema import CANONICAL_COLUMNS, DEFAULT_INDICATORS, REQUIRED_COLUMNS
from .store import dataset_info, list_datasets, load_dataset, save_dataset

__all__ = ["MarketArrays", "to_arrays", "CANONICAL_COLUMNS", "REQUIRED_COLUMNS", "DEFAULT_INDICATORS",
           "CleanReport", "clean", "validate", "DataProcessor",
           "save_dataset", "load_dataset", "dataset_info", "list_datasets"]
