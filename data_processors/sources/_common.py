"""Helpers shared by the source normalisers: ticker spelling, times, and the final canonical frame.

Every helper is vectorised over a long frame with ``n`` rows; none loops over rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from finmeta.errors import DataValidationError
from finmeta.timeparse import utc_wall

from ..schema import CANONICAL_COLUMNS, OPTIONAL_COLUMNS, PRICE_COLUMNS, REQUIRED_COLUMNS

#: Frequencies whose bars are whole days (tz-naive dates in the canonical frame).
DAILY_FREQS = frozenset({"1d", "1w", "1mo"})
#: Bar length of the intraday frequencies.
BAR_LENGTH: dict[str, pd.Timedelta] = {
    "1m": pd.Timedelta(minutes=1),
    "5m": pd.Timedelta(minutes=5),
    "15m": pd.Timedelta(minutes=15),
    "30m": pd.Timedelta(minutes=30),
    "60m": pd.Timedelta(hours=1),
    "1h": pd.Timedelta(hours=1),
}
_FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "amount", "preclose", "adj_factor", "adjcp")
_FLAG_COLUMNS = {"tradestatus": 1, "is_st": 0}  # value used where the vendor left the flag empty


def where(path: str | Path | None, source: str) -> str:
    """How error messages name the input: the file when there is one, else the source."""
    return f"{path}" if path is not None else f"{source} data"


def require_columns(raw: pd.DataFrame, columns: Iterable[str], what: str, fmt: str) -> None:
    """Raise one :class:`DataValidationError` listing the columns of ``columns`` missing in ``raw``."""
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DataValidationError(
            f"{what}: missing column(s) {missing} for format {fmt!r}; found {list(map(str, raw.columns))}"
        )


# ---------------------------------------------------------------------------------------------
# A-share tickers
# ---------------------------------------------------------------------------------------------
_CODE_RE = re.compile(
    r"^\s*'?(?:(?P<pre>sh|sz|bj)\.?)?(?P<code>\d{6})(?:\.(?P<suf>sh|sz|bj|xshg|xshe|ss))?\s*$", re.IGNORECASE
)
_SUFFIX = {"sh": "SH", "ss": "SH", "xshg": "SH", "sz": "SZ", "xshe": "SZ", "bj": "BJ"}


def ashare_code(raw: str, index: bool = False) -> str:
    """One A-share/index code in the canonical spelling ``600519.SH`` / ``000001.SZ`` / ``000300.SH``.

    Accepts ``600519``, ``'600519`` (NetEase), ``sh.600519`` (baostock), ``sh600519``,
    ``600519.SH`` (tushare), ``600519.XSHG``. A bare code gets its exchange from its first digit
    (6/9/5 -> SH, 0/1/2/3 -> SZ, 4/8 -> BJ, 92 -> BJ); with ``index=True`` a bare ``000xxx`` is an
    SSE/CSI index (``000300.SH``) and ``399xxx`` an SZSE index.
    """
    m = _CODE_RE.match(str(raw))
    if m is None:
        raise ValueError(f"not an A-share code: {raw!r}")
    code = m.group("code")
    exch = m.group("pre") or m.group("suf")
    if exch:
        return f"{code}.{_SUFFIX[exch.lower()]}"
    if index:
        return f"{code}.SZ" if code.startswith("399") else f"{code}.SH"
    if code.startswith("92") or code[0] in "48":
        return f"{code}.BJ"
    return f"{code}.SH" if code[0] in "695" else f"{code}.SZ"


def ashare_codes(values: pd.Series, index: bool = False, what: str = "") -> pd.Series:
    """Vectorised :func:`ashare_code` over the (few) unique values of ``values``."""
    uniq = pd.unique(values.astype(str))
    mapping = {}
    for u in uniq:
        try:
            mapping[u] = ashare_code(u, index=index)
        except ValueError as exc:
            raise DataValidationError(f"{what}: {exc}") from None
    return values.astype(str).map(mapping)


# ---------------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------------
def parse_times(values: pd.Series | pd.Index, what: str, fmt: str | None = None, unit: str | None = None) -> pd.Series:
    """Parse a time column; a value that does not parse raises naming its row."""
    s = pd.Series(values)
    if unit is not None:
        num = pd.to_numeric(s, errors="coerce")
        out = pd.to_datetime(num, unit=unit, utc=True, errors="coerce")
    elif pd.api.types.is_datetime64_any_dtype(s):
        return s
    else:
        text = s.astype(str)
        has_offset = text.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True, na=False).any()
        out = pd.to_datetime(s, format=fmt, errors="coerce", utc=bool(has_offset))
        if fmt is None and out.isna().any():  # mixed spellings
            out = pd.to_datetime(s, format="mixed", errors="coerce", utc=bool(has_offset))
    bad = out.isna() & s.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(f"{what}: row {i}: time {s.iloc[i]!r} does not parse")
    if s.isna().any():
        i = int(np.flatnonzero(s.isna().to_numpy())[0])
        raise DataValidationError(f"{what}: row {i}: time is empty")
    return out


def epoch_to_utc(values: pd.Series, what: str = "times") -> pd.Series:
    """Epoch stamps (each row s, ms or us by its own magnitude, so mixed exports work) -> UTC.

    A stamp outside what a nanosecond time can hold (1677-09-22 .. 2262-04-11) raises naming its row.
    """
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    scale = np.where(v > 1e14, 1e3, np.where(v > 1e11, 1e6, 1e9))  # -> nanoseconds
    ns = np.round(v * scale)
    out_of_range = ~(np.abs(ns) < 9.2e18)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise DataValidationError(f"{what}: row {i}: epoch stamp {values.iloc[i]} is outside 1677-09-22 .. 2262-04-11"
                                  f"{_and_more(int(out_of_range.sum()))}")
    return pd.Series(pd.to_datetime(ns.astype("int64"), unit="ns", utc=True), index=values.index)


def _and_more(n: int) -> str:
    return f" (and {n - 1} more row(s))" if n > 1 else ""


#: A daily bar may carry a date up to this far ahead of UTC (the exchanges furthest east, UTC+14).
_DATE_LEAD = pd.Timedelta(hours=14)
#: An intraday bar may open at most this far after the local clock (clock skew).
_CLOCK_SKEW = pd.Timedelta(minutes=5)
_NS_MIN, _NS_MAX = pd.Timestamp.min.ceil("D"), pd.Timestamp.max.floor("D")


def now_utc() -> pd.Timestamp:
    """The current time (UTC); a function so that tests can move the clock."""
    return pd.Timestamp.now(tz="UTC")


def _rows(t: pd.Series, tics: pd.Series, mask: np.ndarray, limit: int = 5) -> str:
    pos = np.flatnonzero(mask)
    def stamp(x) -> str:
        x = pd.Timestamp(x)
        return str(x.date()) if x.tzinfo is None and x == x.normalize() else x.isoformat()

    shown = ", ".join(f"row {int(i)} ({tics.iloc[int(i)]} {stamp(t.iloc[int(i)])})" for i in pos[:limit])
    return shown + (f" and {pos.size - limit} more" if pos.size > limit else "")


def check_time_range(times: pd.Series, tics: pd.Series, what: str) -> None:
    """Refuse times a nanosecond clock cannot hold (1677 .. 2262), naming the rows."""
    t = pd.Series(times)
    wall = utc_wall(t)
    bad = ((wall < _NS_MIN) | (wall > _NS_MAX)).to_numpy()
    if bad.any():
        raise DataValidationError(f"{what}: {int(bad.sum())} bar(s) dated outside {_NS_MIN.date()} .. {_NS_MAX.date()}: "
                                  f"{_rows(t, tics, bad)}")


def check_not_future(times: pd.Series, tics: pd.Series, what: str, *, daily: bool) -> None:
    """Refuse bars that cannot exist yet: a date after today, or an intraday bar opening after now."""
    now = now_utc()
    t = pd.Series(times)
    if daily:
        limit = (now + _DATE_LEAD).tz_localize(None).normalize()
        bad = (t > limit).to_numpy()
        when = f"after {limit.date()} (the latest date anywhere on Earth now)"
    else:
        limit = now + _CLOCK_SKEW
        bad = (t > limit).to_numpy()
        when = f"opening after now ({now.floor('s').isoformat()})"
    if bad.any():
        raise DataValidationError(f"{what}: {int(bad.sum())} bar(s) dated {when}: {_rows(t, tics, bad)}; a bar cannot "
                                  f"come from the future: fix or drop these rows")


def is_daily(times: pd.Series, tics: pd.Series | None = None) -> bool:
    """True when every time is a midnight and bars of one ticker are at least a day apart."""
    t = pd.Series(times)
    t = utc_wall(t)
    if not (t == t.dt.normalize()).all():
        return False
    if len(t) < 2:
        return True
    key = tics if tics is not None else pd.Series(0, index=t.index)
    frame = pd.DataFrame({"k": key.to_numpy(), "t": t.to_numpy()}).sort_values(["k", "t"])
    d = frame.groupby("k")["t"].diff().dropna()
    return bool(d.empty or d.min() >= pd.Timedelta(days=1))


def infer_bar(times: pd.Series, tics: pd.Series | None = None) -> pd.Timedelta:
    """The most common positive spacing of one ticker's bars (the bar length of an intraday file)."""
    key = tics if tics is not None else pd.Series(0, index=times.index)
    frame = pd.DataFrame({"k": key.to_numpy(), "t": pd.Series(times).to_numpy()}).sort_values(["k", "t"])
    d = frame.groupby("k")["t"].diff().dropna()
    d = d[d > pd.Timedelta(0)]
    if d.empty:
        raise ValueError("cannot infer the bar length from fewer than two bars per ticker; pass freq=")
    return pd.Timedelta(d.mode().iloc[0])


def bar_length(freq: str | None) -> pd.Timedelta | None:
    if freq is None:
        return None
    if freq in BAR_LENGTH:
        return BAR_LENGTH[freq]
    try:
        return pd.Timedelta(freq.replace("m", "min") if freq.endswith("m") else freq)
    except ValueError:
        raise DataValidationError(f"unknown frequency {freq!r}") from None


def to_canonical_times(
    times: pd.Series,
    tics: pd.Series,
    what: str,
    *,
    freq: str | None = None,
    tz: str | None = None,
    label: str = "open",
) -> pd.Series:
    """Vendor bar times -> canonical times.

    Daily (``freq`` in 1d/1w/1mo, or inferred: all midnights, >= 1 day apart): tz-naive dates.
    Intraday: naive times are local to ``tz`` (default UTC); ``label="end"`` means the stamp is the
    bar's *end* and the bar length (``freq`` or inferred) is subtracted; result is UTC bar open.
    """
    if label not in ("open", "end"):
        raise DataValidationError(f"{what}: label must be 'open' or 'end', not {label!r}")
    t = pd.Series(times)
    tics = pd.Series(tics)
    check_time_range(t, tics, what)
    daily = (freq in DAILY_FREQS) if freq is not None else is_daily(t, tics)
    if daily:
        if t.dt.tz is not None:
            t = t.dt.tz_convert(tz) if tz else t
            t = t.dt.tz_localize(None)
        out = t.dt.normalize().astype("datetime64[ns]")
        check_not_future(out, tics, what, daily=True)
        return out
    if t.dt.tz is None:
        try:
            t = t.dt.tz_localize(tz or "UTC", ambiguous="raise", nonexistent="raise")
        except Exception as exc:  # DST edge
            raise DataValidationError(f"{what}: cannot localise times to {tz!r}: {exc}") from None
    if label == "end":
        try:
            bar = bar_length(freq) if freq else infer_bar(t, tics)
        except ValueError as exc:
            raise DataValidationError(f"{what}: {exc}") from None
        t = t - bar
    out = t.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    check_not_future(out, tics, what, daily=False)
    return out


# ---------------------------------------------------------------------------------------------
# The final frame
# ---------------------------------------------------------------------------------------------
def to_numeric_checked(s: pd.Series, name: str, what: str) -> pd.Series:
    """Floats; an unparseable non-empty cell raises naming its row ('' / None / 'None' -> NaN)."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.astype("float64")
    text = s.astype("string").str.strip()
    blank = text.isna() | text.isin(["", "None", "none", "nan", "NaN", "NULL", "null", "-", "--"])
    out = pd.to_numeric(text.where(~blank), errors="coerce").astype("float64")
    bad = out.isna() & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(f"{what}: row {i}: column {name!r} has non-numeric value {s.iloc[i]!r}")
    return out


def finalize(
    df: pd.DataFrame,
    what: str,
    *,
    source: str,
    calendar: str,
    keep_extra: bool | Iterable[str] = False,
) -> pd.DataFrame:
    """Make ``df`` (already renamed to canonical names) a canonical frame.

    Checks required columns, casts to float64 (flags to int8), drops bars whose four prices are all
    missing (vendors pad absent tickers with NaN rows), sorts by (time, tic) and rejects duplicate
    keys with an error naming the first one. ``keep_extra=True`` keeps every other column after
    the canonical ones (e.g. FinRL indicator columns); a list keeps only those.
    """
    require_columns(df, REQUIRED_COLUMNS, what, source)
    out = pd.DataFrame(index=df.index)
    out["time"] = df["time"]
    out["tic"] = df["tic"].astype(str)
    for c in CANONICAL_COLUMNS[2:]:
        if c not in df.columns:
            continue
        col = to_numeric_checked(df[c], c, what)
        if c in _FLAG_COLUMNS:
            col = col.fillna(_FLAG_COLUMNS[c]).astype("int8")
        out[c] = col
    if keep_extra:
        extra = [c for c in df.columns if c not in out.columns and not str(c).startswith("Unnamed")]
        if not isinstance(keep_extra, bool):
            extra = [c for c in extra if c in set(keep_extra)]
        for c in extra:
            out[c] = df[c]
    empty = out[list(PRICE_COLUMNS)].isna().all(axis=1)
    out = out.loc[~empty]
    out = out.sort_values(["time", "tic"], kind="stable").reset_index(drop=True)
    dup = out.duplicated(["time", "tic"], keep=False)
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataValidationError(
            f"{what}: duplicate bar for {out['tic'].iat[i]} at {out['time'].iat[i]} ({int(dup.sum())} duplicated rows)"
        )
    out.attrs = {"source": source, "calendar": calendar}
    return out


def rename(raw: pd.DataFrame, mapping: Mapping[str, str]) -> pd.DataFrame:
    """Rename vendor columns (exact names first, then case-insensitively)."""
    lower = {str(k).lower(): v for k, v in mapping.items()}
    cols = {c: mapping.get(c, lower.get(str(c).lower(), c)) for c in raw.columns}
    return raw.rename(columns=cols)


__all__ = [
    "DAILY_FREQS",
    "OPTIONAL_COLUMNS",
    "ashare_code",
    "ashare_codes",
    "epoch_to_utc",
    "finalize",
    "infer_bar",
    "is_daily",
    "parse_times",
    "rename",
    "require_columns",
    "to_canonical_times",
    "to_numeric_checked",
    "where",
]
