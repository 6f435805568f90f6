"""One JSON sanitiser for every layer (manifests, saved-model metadata, clean reports).

``to_jsonable(x)``
    A JSON-ready copy of ``x``: dict keys as strings, lists/tuples as lists, sets as lists sorted by
    ``str``, NumPy scalars as Python numbers, NumPy arrays as lists, objects with ``to_dict()`` or
    dataclasses as dicts, and anything else (timestamps, paths, dates) as ``str(x)``.
``json_default(o)``
    The ``default=`` hook of ``json.dumps`` for the same types; an unknown type raises ``TypeError``
    (a manifest with an unexpected object is a bug to see, not to hide).
``json_default_repr(o)``
    As ``json_default`` but an unknown type becomes its ``repr`` (saved-model metadata: an agent's
    exotic option must not stop ``save``).

The walk-forward fingerprint keeps its own ``json.dumps(..., default=str)``: its bytes decide
whether a run directory resumes, so they must not change.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def to_jsonable(x: Any) -> Any:
    """``x`` as JSON-compatible values (see the module doc)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x, key=str) if isinstance(x, (set, frozenset)) else x
        return [to_jsonable(v) for v in items]
    if isinstance(x, (np.bool_, np.integer, np.floating)):
        return json_default(x)  # the one NumPy-scalar mapping
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if hasattr(x, "to_dict"):
        return to_jsonable(x.to_dict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    return str(x)


def json_default(o: Any) -> Any:
    """``json.dumps(..., default=json_default)``: NumPy scalars/arrays, paths, timestamps, dates, sets."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    if isinstance(o, (Path, pd.Timestamp, _dt.date)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_default_repr(o: Any) -> Any:
    """``json_default``, with ``repr(o)`` for an unknown type."""
    try:
        return json_default(o)
    except TypeError:
        return repr(o)
