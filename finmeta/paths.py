"""Where FinMeta keeps things.

* ``FINMETA_HOME`` (default ``~/.finmeta``): the dataset store (``datasets/``) and caches.
* Run directories of ``finmeta bench`` / ``backtest`` go where ``--out`` says, by default
  ``./runs/<config name>`` beside the command (like CleanRL's and SB3's ``runs/``), so a run's tables
  sit next to the user's work; see ``benchmarks.run.default_run_dir``.
* ``FINMETA_DATA_DIR``: an optional folder of real market data (the team's ``shared/data``);
  tests and benchmarks use it when set, the product never requires it.
"""

from __future__ import annotations

import os
from pathlib import Path


def finmeta_home() -> Path:
    """The root folder for the dataset store and caches (created on demand)."""
    home = Path(os.environ.get("FINMETA_HOME", Path.home() / ".finmeta")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def datasets_dir() -> Path:
    d = finmeta_home() / "datasets"
    d.mkdir(parents=True, exist_ok=True)
    return d


def data_dir() -> Path | None:
    """The real-data folder from ``FINMETA_DATA_DIR``, or None when unset or missing."""
    value = os.environ.get("FINMETA_DATA_DIR")
    if not value:
        return None
    p = Path(value).expanduser().resolve()
    return p if p.is_dir() else None
