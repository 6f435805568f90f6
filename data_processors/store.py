"""The dataset store: Parquet + ``manifest.json`` under ``$FINMETA_HOME/datasets/<name>/``.

Layout of one dataset::

    datasets/<name>/
        manifest.json              # the commit point (see below)
        data-<sha256[:16]>.parquet # the frame

``manifest.json`` holds ``name, source, params, rows, tickers, num_tickers, start, end, freq,
columns, dtypes, file, bytes, sha256, created, versions`` (library versions).

Atomic writes: the Parquet file is written to a temporary file in the dataset folder, flushed and
``fsync``-ed, hashed, then renamed to its content-addressed name; the manifest is written the same
way and renamed over ``manifest.json`` last (``os.replace`` is atomic on POSIX and Windows). A
crash or error before that rename leaves the previous dataset (or none) intact; nothing
half-written is ever referenced. Superseded Parquet files are removed after the commit.

Loading reads the file's bytes once, checks their sha256 against the manifest and only then parses
them: a truncated or modified file raises :class:`~finmeta.errors.DatasetIntegrityError` and is
never used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError, DatasetIntegrityError, DataValidationError
from finmeta.paths import datasets_dir

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSIONED = ("finmeta", "pandas", "numpy", "pyarrow", "exchange-calendars", "stockstats", "ta-lib")


class DatasetNotFoundError(ConfigError):
    """No dataset of that name in the store."""


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (for provenance of imported/fitted files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"dataset name {name!r}: use letters, digits, '.', '_' or '-' (no '/' or spaces), "
                          f"starting with a letter or digit")
    return name


def dataset_path(name: str) -> Path:
    """The folder of dataset ``name`` (may not exist)."""
    return datasets_dir() / _check_name(name)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _jsonable(x):
    """Parameters -> JSON-compatible values (timestamps/paths/numpy scalars as strings/numbers)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in (sorted(x, key=str) if isinstance(x, set) else x)]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    return str(x)


def _fmt(t) -> str:
    t = pd.Timestamp(t)
    return str(t.date()) if t.tzinfo is None and t == t.normalize() else t.isoformat()


def _write_atomic(folder: Path, final: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{final}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_dataset(name: str, df: pd.DataFrame, *, source: str, params: dict | None = None) -> dict:
    """Store ``df`` as dataset ``name`` (replacing an existing one atomically).

    Args:
        name: dataset name (letters, digits, ``._-``).
        df: canonical long frame (``time``, ``tic`` + columns), any extra columns allowed.
        source: where it came from (source name, or ``"features:<parent>"``...).
        params: JSON-able parameters that produced it (tickers, dates, cleaning report, ...).

    Returns:
        the manifest (dict), also written to ``manifest.json``.
    """
    _check_name(name)
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise DataValidationError(f"dataset {name}: refusing to store an empty frame")
    for c in ("time", "tic"):
        if c not in df.columns:
            raise DataValidationError(f"dataset {name}: missing column {c!r}")
    from .clean import infer_freq

    folder = dataset_path(name)
    folder.mkdir(parents=True, exist_ok=True)
    frame = df.reset_index(drop=True)

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, engine="pyarrow")
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    fname = f"data-{digest[:16]}.parquet"
    _write_atomic(folder, fname, data)

    try:
        freq = infer_freq(frame)
    except DataValidationError:
        freq = None
    tickers = sorted(pd.unique(frame["tic"]).astype(str).tolist())
    manifest = {
        "name": name,
        "source": str(source),
        "params": _jsonable(params or {}),
        "rows": int(len(frame)),
        "num_tickers": len(tickers),
        "tickers": tickers,
        "start": _fmt(frame["time"].min()),
        "end": _fmt(frame["time"].max()),
        "freq": freq,
        "columns": [str(c) for c in frame.columns],
        "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()},
        "file": fname,
        "bytes": len(data),
        "sha256": digest,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    _write_atomic(folder, MANIFEST, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())
    for old in folder.glob("data-*.parquet"):
        if old.name != fname:
            old.unlink(missing_ok=True)
    return manifest


def _read_manifest(name: str) -> dict:
    folder = dataset_path(name)
    path = folder / MANIFEST
    if not path.is_file():
        known = list_datasets()
        raise DatasetNotFoundError(f"dataset {name!r} not found in {datasets_dir()} "
                                   f"(known: {known[:20]}); create it with `finmeta data import` or `download`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["file"], manifest["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetIntegrityError(f"dataset {name}: {path} is not a valid manifest ({exc}); re-create the dataset")
    return manifest


def _read_verified(name: str, manifest: dict) -> bytes:
    path = dataset_path(name) / str(manifest["file"])
    if not path.is_file():
        raise DatasetIntegrityError(f"dataset {name}: data file {path} is missing; re-create the dataset")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise DatasetIntegrityError(
            f"dataset {name}: {path.name} has sha256 {digest[:16]}... ({len(data)} bytes) but the manifest says "
            f"{str(manifest['sha256'])[:16]}... ({manifest.get('bytes')} bytes): the file is truncated or was "
            f"modified; re-create the dataset")
    return data


def load_dataset(name: str) -> pd.DataFrame:
    """Load dataset ``name`` after checking its sha256 (raises :class:`DatasetIntegrityError`)."""
    manifest = _read_manifest(name)
    data = _read_verified(name, manifest)
    try:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # hash matched but parquet unreadable: still an integrity problem
        raise DatasetIntegrityError(f"dataset {name}: cannot parse {manifest['file']}: {exc}") from exc


def dataset_info(name: str, *, verify: bool = True) -> dict:
    """The manifest of ``name`` plus ``path`` and (``verify=True``) ``integrity``: ``"ok"`` or a reason."""
    manifest = _read_manifest(name)
    info = dict(manifest)
    info["path"] = str(dataset_path(name))
    if verify:
        try:
            _read_verified(name, manifest)
            info["integrity"] = "ok"
        except DatasetIntegrityError as exc:
            info["integrity"] = f"FAILED: {exc}"
    return info


def list_datasets() -> list[str]:
    """Names of the stored datasets (folders with a manifest), sorted."""
    root = datasets_dir()
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())


def delete_dataset(name: str) -> None:
    """Remove dataset ``name`` (manifest first, so a half-deleted dataset is never loadable)."""
    folder = dataset_path(name)
    if not (folder / MANIFEST).is_file():
        raise DatasetNotFoundError(f"dataset {name!r} not found in {datasets_dir()}")
    (folder / MANIFEST).unlink()
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
