"""One strict reader of user-given dates: ISO 8601 only, so ``05-06-2020`` is an error, not May 6.

``parse_date(value, key)`` accepts ``datetime``/``date``/``pd.Timestamp``/``np.datetime64`` objects
(YAML reads an unquoted ``2016-01-04`` as a date) and strings ``YYYY-MM-DD`` with an optional time
(``YYYY-MM-DD HH:MM[:SS[.fff]]``, ``T`` separator, ``Z`` or ``+HH:MM`` offset); anything else raises
one :class:`~finmeta.errors.ConfigError` naming ``key`` (the config key or CLI option).
"""

from __future__ import annotations

import datetime as _dt
import re

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")


def parse_date(value, key: str) -> pd.Timestamp:
    """``value`` as a Timestamp; a string must be ISO 8601 (``YYYY-MM-DD[ HH:MM[:SS]][offset]``)."""
    if isinstance(value, (pd.Timestamp, _dt.datetime, _dt.date, np.datetime64)):
        return pd.Timestamp(value)
    text = str(value).strip()
    if not _ISO.match(text):
        raise ConfigError(f"{key}: {value!r} is not an ISO date; write YYYY-MM-DD (e.g. 2020-05-06), so that day "
                          f"and month cannot be swapped")
    try:
        return pd.Timestamp(text)
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not a valid date ({exc})") from None


def as_utc(ts) -> pd.Timestamp:
    """``ts`` as a tz-aware UTC Timestamp (a naive time is read as UTC: intraday bars are UTC)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def utc_wall(times):
    """Times as tz-naive UTC wall times: a tz-aware ``Series`` / ``DatetimeIndex`` is converted to UTC
    and its zone dropped; a naive one is returned as it is (naive times are UTC, or dates). The one
    series-level coercion of the data layer (:func:`as_utc` / :func:`naive_day` are its scalar
    siblings). A ``Series`` keeps its index; anything else comes back as a ``DatetimeIndex``."""
    if isinstance(times, pd.Series):
        return times.dt.tz_convert("UTC").dt.tz_localize(None) if times.dt.tz is not None else times
    idx = pd.DatetimeIndex(times)
    return idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx


def naive_day(ts) -> pd.Timestamp:
    """``ts`` as a tz-naive day (a tz-aware time is first converted to UTC wall time; daily bars are naive dates)."""
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert(None)
    return t.normalize()
