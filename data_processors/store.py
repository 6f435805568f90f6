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
half-written is ever referenced. After the commit the one Parquet file the *previous* manifest
named is removed (never any other: a file another writer just committed stays referenced).

Concurrency: a writer holds an exclusive ``flock`` on ``<name>/.lock`` (:func:`finmeta.fs.file_lock`)
from reading the previous manifest to removing its file, so two ``finmeta data import --name N``
at once serialize (the last one wins, both leave a complete dataset); readers hold it shared while
they read the manifest and its file. A SIGKILL between the data write and the manifest write leaves
an unreferenced ``data-*.parquet`` (or ``.tmp``) file: :func:`check_dataset` (``finmeta data check``)
verifies every artefact and removes such orphans.

A manifest's ``file`` must be a plain file name inside the dataset folder (``data-<hash>.parquet``);
any other value (an absolute path, ``../x``) is refused as an integrity error.

Loading reads the file's bytes once, checks their sha256 against the manifest and only then parses
them: a truncated or modified file raises :class:`~finmeta.errors.DatasetIntegrityError` and is
never used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
from pathlib import Path

import pandas as pd

from finmeta.errors import ConfigError, DatasetIntegrityError, DataValidationError
from finmeta.fs import file_lock, write_atomic
from finmeta.jsonutil import to_jsonable
from finmeta.versions import library_versions
from finmeta.paths import datasets_dir

MANIFEST = "manifest.json"
LOCK = ".lock"
_DATA_FILE = re.compile(r"^data-[0-9a-f]{16}\.parquet$")
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
    return library_versions(_VERSIONED, missing="skip")


_jsonable = to_jsonable


def _fmt(t) -> str:
    t = pd.Timestamp(t)
    return str(t.date()) if t.tzinfo is None and t == t.normalize() else t.isoformat()


def _write_atomic(folder: Path, final: str, data: bytes) -> None:
    write_atomic(folder / final, data)


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
    text = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
    with file_lock(folder / LOCK):
        previous = _previous_file(folder)
        _write_atomic(folder, fname, data)
        _write_atomic(folder, MANIFEST, text)  # the commit point
        if previous is not None and previous != fname:
            (folder / previous).unlink(missing_ok=True)
    return manifest


def _previous_file(folder: Path) -> str | None:
    """The data file the current manifest of ``folder`` names (None: no valid manifest)."""
    try:
        name = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) and _DATA_FILE.match(name) else None


def _check_file_field(name: str, path: Path, value) -> None:
    if not isinstance(value, str) or not _DATA_FILE.match(value):
        raise DatasetIntegrityError(
            f"dataset {name}: {path} names data file {value!r}, which is not a data-<hash>.parquet file inside "
            f"the dataset folder; re-create the dataset")


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
    _check_file_field(name, path, manifest["file"])
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
    with _reading(name):
        manifest = _read_manifest(name)
        data = _read_verified(name, manifest)
    try:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # hash matched but parquet unreadable: still an integrity problem
        raise DatasetIntegrityError(f"dataset {name}: cannot parse {manifest['file']}: {exc}") from exc


def dataset_info(name: str, *, verify: bool = True) -> dict:
    """The manifest of ``name`` plus ``path`` and (``verify=True``) ``integrity``: ``"ok"`` or a reason."""
    with _reading(name):
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


def _reading(name: str):
    """A shared lock on the dataset while a reader reads its manifest and file (no-op if absent)."""
    folder = dataset_path(name)
    if not folder.is_dir():
        import contextlib

        return contextlib.nullcontext()
    return file_lock(folder / LOCK, shared=True)


def stored_calendar(name: str, stated: str | None = None, *, key: str = "data.calendar") -> str:
    """The calendar stored dataset ``name`` is cleaned on: the one its manifest recorded
    (``params.calendar``, as ``finmeta data import``/``features`` write it), else its source's
    (``baostock`` -> XSHG ...), else XNYS. An explicit ``stated`` calendar (a config's
    ``data.calendar``, ``--calendar``) must agree with a recorded one (ConfigError).

    The one rule for the bench (:func:`benchmarks.dataset.load_frame`), ``finmeta data features`` and
    :meth:`data_processors.processor.DataProcessor.load`.
    """
    from .sources import REGISTRY

    info = dataset_info(name, verify=False)
    recorded = (info.get("params") or {}).get("calendar")
    source_cls = REGISTRY.get(str(info.get("source")))
    default = recorded or getattr(source_cls, "calendar", None) or "XNYS"
    if stated is None:
        return str(default)
    if recorded and str(stated).upper() != str(recorded).upper():
        raise ConfigError(f"{key}: {stated}, but dataset {name} was stored on the {recorded} calendar "
                          f"(cleaning it on {stated} would drop its real bars and invent others); remove "
                          f"{key} to use {recorded}")
    return str(stated)


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
    with file_lock(folder / LOCK):
        (folder / MANIFEST).unlink()
        for p in folder.iterdir():
            if p.name != LOCK:
                p.unlink()
    (folder / LOCK).unlink(missing_ok=True)
    folder.rmdir()


def _is_leftover(p: Path) -> bool:
    """A file a writer leaves behind: a data file, a temporary file, or the lock."""
    return p.is_file() and (p.name == LOCK or (p.name.startswith(".") and p.name.endswith(".tmp"))
                            or (p.name.startswith("data-") and p.name.endswith(".parquet")))


def check_dataset(name: str, *, remove_orphans: bool = True) -> dict:
    """Verify every artefact of dataset folder ``name`` and remove the files nothing references.

    Checks, under the dataset's exclusive lock: the manifest parses and names a data file inside
    the folder; that file exists, has the manifest's byte count and sha256, parses as Parquet and
    has the manifest's rows and columns. Orphans are ``data-*.parquet`` files the manifest does
    not name and ``.*.tmp`` files (a writer killed mid-write); a folder without a manifest that
    holds only such files (a first import killed before its commit) is an orphan as a whole.
    Nothing is removed while the manifest is unreadable (its data may be worth recovering).

    Returns:
        ``{"name", "status": "ok" | "FAILED", "problems": [str], "orphans": [file names],
        "removed": bool, "rows", "sha256"}``.
    """
    folder = dataset_path(name)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset {name!r} not found in {datasets_dir()}")
    out: dict = {"name": name, "status": "ok", "problems": [], "orphans": [], "removed": False,
                 "rows": None, "sha256": None}
    with file_lock(folder / LOCK):
        files = sorted(p for p in folder.iterdir() if p.name != LOCK)
        if not (folder / MANIFEST).is_file():
            if all(_is_leftover(p) for p in files):
                out["orphans"] = [p.name for p in files]
                out["problems"].append("no manifest.json: an import that never committed")
                if remove_orphans:
                    for p in files:
                        p.unlink(missing_ok=True)
                    out["removed"] = True
            else:
                out["problems"].append(f"no manifest.json and files that no writer makes "
                                       f"({[p.name for p in files if not _is_leftover(p)][:5]}); left alone")
            out["status"] = "FAILED"
        else:
            try:
                manifest = _read_manifest(name)
            except DatasetIntegrityError as exc:
                out["problems"].append(str(exc))
                manifest = None
            if manifest is not None:
                out["rows"], out["sha256"] = manifest.get("rows"), manifest.get("sha256")
                out["problems"] += _verify_contents(name, manifest)
                ref = manifest["file"]
                out["orphans"] = [p.name for p in files if _is_leftover(p) and p.name != ref]
                if remove_orphans and out["orphans"]:
                    for o in out["orphans"]:
                        (folder / o).unlink(missing_ok=True)
                    out["removed"] = True
            if out["problems"]:
                out["status"] = "FAILED"
    if out["removed"] and not (folder / MANIFEST).exists() and not any(
            p.name != LOCK for p in folder.iterdir()):
        (folder / LOCK).unlink(missing_ok=True)
        folder.rmdir()
    return out


def _verify_contents(name: str, manifest: dict) -> list[str]:
    try:
        data = _read_verified(name, manifest)
    except DatasetIntegrityError as exc:
        return [str(exc)]
    problems = []
    if manifest.get("bytes") is not None and int(manifest["bytes"]) != len(data):
        problems.append(f"dataset {name}: {manifest['file']} has {len(data)} bytes, the manifest says {manifest['bytes']}")
    try:
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:
        return problems + [f"dataset {name}: cannot parse {manifest['file']}: {exc}"]
    if manifest.get("rows") is not None and int(manifest["rows"]) != len(frame):
        problems.append(f"dataset {name}: {manifest['file']} has {len(frame)} rows, the manifest says {manifest['rows']}")
    cols = [str(c) for c in frame.columns]
    if manifest.get("columns") is not None and list(manifest["columns"]) != cols:
        problems.append(f"dataset {name}: {manifest['file']} has columns {cols}, the manifest says {manifest['columns']}")
    return problems


def store_folders() -> list[str]:
    """Every folder under the datasets directory, with or without a manifest (for ``data check``)."""
    root = datasets_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _NAME.match(p.name))
