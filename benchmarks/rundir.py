"""The run directory: its layout and its writers, in one place.

Every file a run writes is named here, and every write goes through :func:`finmeta.fs.write_atomic`
(temporary file in the same folder, fsync, rename): a run killed mid-write leaves the previous file
or none, never half a table. Who writes what (one writer per artefact):

=================================  =====================================  ========================
path (under the run directory)     content                                written by
=================================  =====================================  ========================
``fingerprint.json``               hash of config + data (resume guard)   ``loop.WalkForward``
``checkpoints/<a>_seed<s>/         one finished window (values, actions,  ``loop.WalkForward``
window_<www>.npz``                 costs, turnover, record, state)
``models/<a>_seed<s>/              the window's trained agent, its        ``loop.WalkForward``
window_<www>.zip|.json|.lock``     identity file and its training lock
``windows.csv``                    per window: dates, stop threshold,     ``run``
                                   stop bars
``values/<a>_seed<s>.csv``         account values (+ turnover, cost)      ``report``
``actions/<a>_seed<s>.csv``        the actions taken per bar              ``report``
``table.csv|.md|.tex``,            the result tables, statistics          ``report``
``table_seeds.csv``, ``stats.json``
``*.png``, ``tearsheets/``         plots and tear sheets                  ``report``
``manifest.json``                  config, hashes, seeds, versions,       ``report``
                                   invocations
=================================  =====================================  ========================
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from finmeta.fs import write_atomic

FINGERPRINT = "fingerprint.json"
MANIFEST = "manifest.json"
WINDOWS = "windows.csv"
TABLE = "table"            # table.csv / table.md / table.tex
TABLE_SEEDS = "table_seeds.csv"
STATS = "stats.json"
VALUES = "values"
ACTIONS = "actions"
CHECKPOINTS = "checkpoints"
MODELS = "models"
TEARSHEETS = "tearsheets"


def chain_folder(agent: str, seed: int) -> str:
    """The per-chain folder name under ``checkpoints/`` and ``models/``."""
    return f"{agent}_seed{int(seed)}"


def checkpoint_path(run_dir: str | Path, agent: str, seed: int, window: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / chain_folder(agent, seed) / f"window_{int(window):03d}.npz"


def model_path(run_dir: str | Path, agent: str, seed: int, window: int) -> Path:
    """The saved agent of one window (``.zip``; its identity file is ``.json``, its lock ``.lock``)."""
    return Path(run_dir) / MODELS / chain_folder(agent, seed) / f"window_{int(window):03d}.zip"


def table_paths(run_dir: str | Path) -> dict[str, Path]:
    run = Path(run_dir)
    return {ext: run / f"{TABLE}.{ext}" for ext in ("csv", "md", "tex")}


# -- writers (all atomic) -------------------------------------------------------------------------
def write_bytes(path: str | Path, data: bytes) -> Path:
    write_atomic(path, data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame, **to_csv: Any) -> Path:
    """``frame.to_csv(**to_csv)`` written atomically (same bytes as ``to_csv(path)``)."""
    buf = io.StringIO()
    frame.to_csv(buf, **to_csv)
    return write_text(path, buf.getvalue())


def write_parquet(path: str | Path, frame: pd.DataFrame, **to_parquet: Any) -> Path:
    buf = io.BytesIO()
    frame.to_parquet(buf, **to_parquet)
    return write_bytes(path, buf.getvalue())


def save_figure(fig, path: str | Path, **savefig: Any) -> Path:
    """A matplotlib figure written atomically (the format from the file's suffix)."""
    path = Path(path)
    buf = io.BytesIO()
    savefig.setdefault("format", path.suffix.lstrip(".") or "png")
    fig.savefig(buf, **savefig)
    return write_bytes(path, buf.getvalue())
