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
``manifest.json``                  config, hashes, seeds, versions,       ``report`` (with
                                   invocations                            :func:`write_manifest`)
``report.lock``                    held while a report is written         ``run``, ``report``
                                                                          (:func:`report_lock`)
=================================  =====================================  ========================

Several ``finmeta bench`` invocations may write one run directory at once (say two processes, one
per chain): the models have one lock each, and the report stage (read the previous manifest's
invocations, write tables, values and manifest) runs under :func:`report_lock`, so no invocation's
record is lost and no table mixes two writers. ``finmeta report`` takes the same lock.

The manifest (what a run was: config, dataset hash, seeds, versions, git commit, machine,
invocations) is built, written and read here (:func:`build_manifest`, :func:`write_manifest`,
:func:`read_manifest`, :func:`invocations`, :func:`machine_info`); ``benchmarks.report`` re-exports
the first three for existing imports.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from finmeta.fs import file_lock, write_atomic
from finmeta.jsonutil import json_default

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
REPORT_LOCK = "report.lock"


def chain_folder(agent: str, seed: int) -> str:
    """The per-chain folder name under ``checkpoints/`` and ``models/``."""
    return f"{agent}_seed{int(seed)}"


def checkpoint_path(run_dir: str | Path, agent: str, seed: int, window: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / chain_folder(agent, seed) / f"window_{int(window):03d}.npz"


def model_path(run_dir: str | Path, agent: str, seed: int, window: int) -> Path:
    """The saved agent of one window (``.zip``; its identity file is ``.json``, its lock ``.lock``)."""
    return Path(run_dir) / MODELS / chain_folder(agent, seed) / f"window_{int(window):03d}.zip"


def report_lock(run_dir: str | Path):
    """Exclusive lock on ``<run>/report.lock`` for the report stage (blocks until free; see the module
    doc). Not re-entrant: a process that holds it must not take it again."""
    return file_lock(Path(run_dir) / REPORT_LOCK)


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


# -- the manifest ---------------------------------------------------------------------------------
#: the libraries whose versions a manifest records
MANIFEST_LIBRARIES = (
    "numpy", "pandas", "scipy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib",
    "empyrical-reloaded", "quantstats", "matplotlib", "exchange-calendars", "stockstats", "ta-lib",
)


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the source tree, with ``+dirty`` when tracked files have uncommitted changes
    (None outside a git checkout)."""
    where = str(cwd or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                              timeout=5, check=False)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def library_versions(names: Sequence[str] = MANIFEST_LIBRARIES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None when not installed)."""
    from finmeta.versions import library_versions as _versions

    return _versions(names, missing="none")


def build_manifest(
    config: Mapping[str, Any] | None = None,
    dataset_hash: str | None = None,
    seeds: Sequence[int] | None = None,
    wall_time_s: float | None = None,
    periods_per_year: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A run manifest: config, dataset hash, seeds, periods a year, library versions, git commit
    (this tree's, unless ``git_commit`` is given in ``extra``), Python/platform, creation time (UTC
    ISO) and wall time in seconds; ``extra`` keys are added."""
    from finmeta import __version__

    manifest: dict[str, Any] = {
        "finmeta_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config) if config is not None else {},
        "dataset_hash": dataset_hash,
        "seeds": [int(s) for s in seeds] if seeds is not None else [],
        "periods_per_year": periods_per_year,
        "wall_time_s": None if wall_time_s is None else float(wall_time_s),
        "git_commit": extra.pop("git_commit") if "git_commit" in extra else git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
    }
    manifest.update(extra)
    return manifest


def write_manifest(run_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``<run>/manifest.json`` (indented, sorted keys) atomically (a crash mid-write leaves the
    previous manifest, never a truncated one)."""
    text = json.dumps(manifest, indent=2, sort_keys=True, default=json_default) + "\n"
    return write_text(Path(run_dir) / MANIFEST, text)


def read_fingerprint(run_dir: str | Path) -> str | None:
    """The run's fingerprint (``<run>/fingerprint.json``), None when the file is absent
    (:class:`~benchmarks.metrics.RunDirError` when it is not the JSON the loop writes)."""
    from .metrics import RunDirError

    path = Path(run_dir) / FINGERPRINT
    if not path.is_file():
        return None
    try:
        fp = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(fp, str):
        raise RunDirError(f"{path}: no 'fingerprint' string in it")
    return fp


def write_fingerprint(run_dir: str | Path, fingerprint: str) -> Path:
    """Write ``<run>/fingerprint.json`` (atomically); its one writer is ``loop.WalkForward``."""
    return write_bytes(Path(run_dir) / FINGERPRINT, json.dumps({"fingerprint": fingerprint}).encode())


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """``<run>/manifest.json`` as a dict, or None when absent (:class:`~benchmarks.metrics.RunDirError`
    when it is not JSON)."""
    from .metrics import RunDirError

    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: invalid JSON: {exc}") from exc


def invocations(run_dir: Path, manifest: dict) -> list[dict]:
    """Every ``finmeta bench`` that wrote this run directory, oldest first: ``{created_utc, command,
    wall_time_s, git_commit, agents, seeds}``. A resumed run's ``wall_time_s`` is only its own
    (seconds, not the first run's minutes): the earlier ones stay here."""
    from finmeta.errors import FinMetaError

    try:
        previous = read_manifest(run_dir) or {}
    except FinMetaError:
        previous = {}
    keys = ("created_utc", "command", "wall_time_s", "git_commit", "agents", "seeds")
    history = list(previous.get("invocations") or ([{k: previous.get(k) for k in keys}] if previous else []))
    return history + [{k: manifest.get(k) for k in keys}]


def machine_info() -> dict[str, Any]:
    """CPU count and memory of this machine, for the manifest (timings depend on them)."""
    import os

    info: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        pass
    return info
