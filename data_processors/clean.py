"""Validation and cleaning of canonical long frames.

Two steps, used in this order by :class:`~data_processors.processor.DataProcessor` and the CLI:

``validate(df, where=...)``
    Checks a canonical frame (:mod:`data_processors.schema`) and raises ONE
    :class:`~finmeta.errors.DataValidationError` naming the file (``where``), the row, the ticker and
    the time at fault, e.g. ``"dow30.csv: row 1234 (AAPL 2020-01-03): high 10.0 < low 11.0"``.
    ``row`` is the 0-based position of the row in the frame that was checked (for a source file this
    is the position after the source's normaliser, which sorts by (time, tic)). Checks, in order:
    missing columns, empty frame, column types, NaT/NaN/inf in required columns, duplicate
    (time, tic) keys, unsorted rows, non-positive prices, negative volume, ``high < low``,
    ``high < max(open, close)``, ``low > min(open, close)``, mixed bar frequencies. The value checks
    (non-positive prices, negative volume, the three high/low classes) are reported together: one
    message names the first row and the count of every class found (Qlib-style health check);
    :func:`repair_ohlc` applies an explicit ``on_bad_ohlc`` policy (error, clip, drop) first.

    Sort policy: ``validate`` *flags* unsorted input (``check_sorted=True``, the default: a vendor
    normaliser must sort); :func:`clean` *sorts* first and then validates, so it accepts any order.

``clean(df, calendar=...)`` -> ``(frame, CleanReport)``
    Aligns every ticker to the calendar (:mod:`data_processors.calendars`) and returns a full panel
    (every kept ticker at every calendar time), sorted by (time, tic):

    * forward fill only -- never back-fill: a value never comes from the future. A bar a ticker
      lacks becomes a flat bar at the previous close (``open = high = low = close = previous
      close``), ``volume = 0`` (``amount = 0``), ``tradestatus = 0`` (not tradable).
    * suspensions (rows with ``tradestatus == 0``, e.g. Baostock): the price is pinned to the
      previous close, volume 0, not tradable. ``preclose`` of a filled or suspended bar is the
      previous bar's close, so the first real bar after a suspension carries the vendor's
      (ex-rights adjusted) ``preclose`` and everything before it stays consistent.
    * ``tradestatus`` is always in the output (1 traded, 0 filled/suspended); ``to_arrays`` turns it
      into ``MarketArrays.tradable``. ``is_st``/``adj_factor``/``adjcp`` and other extra columns are
      forward-filled.
    * leading bars before a ticker's first real bar are never invented: with
      ``late_start="cut"`` (default) the panel starts where every kept ticker exists; with
      ``late_start="drop"`` late tickers are dropped instead. After a cut, a ticker without a bar on
      the new first bar is flat at its last earlier close there (forward fill across the cut).
    * a panel of fewer than 2 bars (e.g. one bar per ticker, or a late-start cut to the last day)
      is an error naming why, raised before the panel is built.
    * tickers are dropped when their coverage (real bars / calendar bars over the span of the data kept by start/end)
      is below ``min_coverage`` or their longest run of missing bars (trailing run included)
      exceeds ``max_gap``; the report says which and why.
    * rows whose time is not a calendar bar are dropped and counted; more than
      ``max_off_calendar`` of them (a wrong calendar or time zone) is an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError, DataValidationError
from finmeta.timeparse import utc_wall

from .calendars import calendar_times, freq_to_timedelta
from .schema import KEY_COLUMNS, PRICE_COLUMNS, REQUIRED_COLUMNS

_DAY = np.int64(86_400 * 10**9)
_MIN = np.int64(60 * 10**9)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _fmt_time(t) -> str:
    t = pd.Timestamp(t)
    if t is pd.NaT or pd.isna(t):
        return "NaT"
    if t.tzinfo is None and t == t.normalize():
        return str(t.date())
    return t.isoformat()


def _row(df: pd.DataFrame, pos: int) -> str:
    """``row 12 (AAPL 2020-01-03)`` for the row at 0-based position ``pos``."""
    tic = df["tic"].iloc[pos] if "tic" in df.columns else "?"
    t = df["time"].iloc[pos] if "time" in df.columns else None
    return f"row {pos} ({tic} {_fmt_time(t)})"


def _more(n: int) -> str:
    return f" (and {n - 1} more row{'s' if n > 2 else ''})" if n > 1 else ""


def _time_i8(times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch (UTC instant for tz-aware, wall time for naive)."""
    return utc_wall(pd.DatetimeIndex(times)).as_unit("ns").asi8


def freq_label(step_ns: int) -> str:
    """A bar spacing in nanoseconds -> frequency name (``"1m"`` .. ``"1h"``, ``"1d"``, ``"1w"``, ``"1mo"``)."""
    step = int(step_ns)
    if step <= 0:
        raise DataValidationError(f"bar spacing {step} ns is not positive")
    if step < _DAY:
        minutes = step / _MIN
        if minutes != int(minutes):
            return f"{int(step // 10**9)}s"
        m = int(minutes)
        return "1h" if m == 60 else (f"{m // 60}h" if m % 60 == 0 else f"{m}m")
    days = step / _DAY
    if days <= 4:
        return "1d"
    if days <= 10:
        return "1w"
    if 27 <= days <= 32:
        return "1mo"
    return f"{int(round(days))}d"


def _ticker_diffs(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-ticker time steps. Returns (positions of the later row, diffs ns, tic codes, order)."""
    codes, _ = pd.factorize(df["tic"], sort=False)
    t = _time_i8(df["time"])
    order = np.lexsort((t, codes))
    ts, cs = t[order], codes[order]
    same = cs[1:] == cs[:-1]
    diffs = (ts[1:] - ts[:-1])[same]
    later = order[1:][same]
    return later, diffs, cs[1:][same], order


def infer_freq(df: pd.DataFrame) -> str:
    """The bar frequency of a canonical frame: the most common per-ticker time step.

    A frame where no ticker has two bars is read as daily when its times are midnight.
    """
    _, diffs, _, _ = _ticker_diffs(df)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return "1d"
    vals, counts = np.unique(diffs, return_counts=True)
    return freq_label(int(vals[np.argmax(counts)]))


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def validate(
    df: pd.DataFrame,
    where: str = "frame",
    *,
    check_sorted: bool = True,
    check_ohlc: bool = True,
    ohlc_rtol: float = 1e-6,
) -> str:
    """Check a canonical long frame; raise one :class:`DataValidationError` on the first problem.

    Args:
        df: canonical long frame (``time, tic, open, high, low, close, volume`` + optional columns).
        where: the file or dataset name used as the message prefix.
        check_sorted: flag rows that are not sorted by (time, tic) (see the module doc).
        check_ohlc: run the high/low consistency checks (off for files whose ``close`` is an
            adjusted close next to raw open/high/low, such as FinRL's tutorial CSVs).
        ohlc_rtol: relative tolerance of the high/low consistency checks (vendor rounding).

    Returns:
        the inferred bar frequency (``"1d"``, ``"1h"``, ``"5m"``, ...).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: missing columns {missing} (the frame has {list(df.columns)})")
    if df.empty:
        raise DataValidationError(f"{where}: the frame has no rows")
    if not pd.api.types.is_datetime64_any_dtype(df["time"]):
        raise DataValidationError(f"{where}: column 'time' must be datetime, got {df['time'].dtype}")
    num_cols = [c for c in REQUIRED_COLUMNS if c not in KEY_COLUMNS]
    for c in num_cols:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            raise DataValidationError(f"{where}: column {c!r} must be numeric, got {df[c].dtype}")

    nat = np.flatnonzero(df["time"].isna().to_numpy())
    if nat.size:
        raise DataValidationError(f"{where}: {_row(df, int(nat[0]))}: time is missing{_more(nat.size)}")
    notic = np.flatnonzero((df["tic"].isna() | (df["tic"].astype(str).str.strip() == "")).to_numpy())
    if notic.size:
        raise DataValidationError(f"{where}: {_row(df, int(notic[0]))}: tic is missing{_more(notic.size)}")

    values = df[num_cols].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        r = int(rows[0])
        col = num_cols[int(np.flatnonzero(bad[r])[0])]
        raise DataValidationError(f"{where}: {_row(df, r)}: {col} is {values[r, num_cols.index(col)]}{_more(rows.size)}")

    dup = np.flatnonzero(df.duplicated(list(KEY_COLUMNS), keep="first").to_numpy())
    if dup.size:
        r = int(dup[0])
        key = (df["time"].iloc[r], df["tic"].iloc[r])
        first = int(np.flatnonzero(((df["time"] == key[0]) & (df["tic"] == key[1])).to_numpy())[0])
        raise DataValidationError(
            f"{where}: {_row(df, r)}: duplicate (time, tic) key, first seen at row {first}{_more(dup.size)}")

    if check_sorted and len(df) > 1:
        t = _time_i8(df["time"])
        tic = df["tic"].astype(str).to_numpy(dtype=object)
        ok = (t[1:] > t[:-1]) | ((t[1:] == t[:-1]) & (tic[1:] > tic[:-1]))
        if not ok.all():
            bad_rows = np.flatnonzero(~ok) + 1
            r = int(bad_rows[0])
            raise DataValidationError(
                f"{where}: {_row(df, r)}: not sorted by (time, tic): it comes after {_row(df, r - 1)}"
                f"{_more(bad_rows.size)}; sort the frame or use clean(), which sorts")

    # value checks: every problem class is reported in one pass (first row of each, and a count)
    o, h, lo, c, v = (values[:, num_cols.index(k)] for k in ("open", "high", "low", "close", "volume"))
    price = values[:, [num_cols.index(k) for k in PRICE_COLUMNS]]
    nonpos = price <= 0

    def first_nonpos(r: int) -> str:
        k = int(np.flatnonzero(nonpos[r])[0])
        return f"{PRICE_COLUMNS[k]} {price[r, k]} is not positive"

    problems = [(nonpos.any(axis=1), first_nonpos), (v < 0, lambda r: f"volume {v[r]} is negative")]
    ohlc = ohlc_masks(o, h, lo, c, ohlc_rtol) if check_ohlc else {}
    problems += [(ohlc[k], lambda r, k=k: _OHLC_TEXT[k](o[r], h[r], lo[r], c[r])) for k in ohlc]
    found = [(np.flatnonzero(mask), msg) for mask, msg in problems]
    found = [(rows, msg) for rows, msg in found if rows.size]
    if found:
        text = "; also ".join(f"{_row(df, int(rows[0]))}: {msg(int(rows[0]))}{_more(rows.size)}" for rows, msg in found)
        if any(ohlc[k].any() for k in ohlc):
            text += ("; to repair high/low instead, import with --on-bad-ohlc clip|drop "
                     "(clean(on_bad_ohlc=...), data.clean.on_bad_ohlc in a config)")
        raise DataValidationError(f"{where}: {text}")

    return _check_frequency(df, where)


#: The high/low consistency classes, in the order they are reported.
OHLC_CLASSES = ("high_below_low", "high_below_open_close", "low_above_open_close")
_OHLC_TEXT = {
    "high_below_low": lambda o, h, lo, c: f"high {h} < low {lo}",
    "high_below_open_close": lambda o, h, lo, c: f"high {h} < max(open {o}, close {c})",
    "low_above_open_close": lambda o, h, lo, c: f"low {lo} > min(open {o}, close {c})",
}
#: ``on_bad_ohlc`` policies: refuse, widen high/low to enclose open/close, or drop the bar.
OHLC_POLICIES = ("error", "clip", "drop")


def ohlc_masks(o, h, lo, c, rtol: float = 1e-6) -> dict[str, np.ndarray]:
    """Row masks of the three high/low consistency problems (relative tolerance ``rtol``)."""
    tol = rtol * np.maximum(np.abs(h), np.abs(lo))
    return {
        "high_below_low": h < lo - tol,
        "high_below_open_close": h < np.maximum(o, c) - tol,
        "low_above_open_close": lo > np.minimum(o, c) + tol,
    }


def repair_ohlc(df: pd.DataFrame, policy: str = "error", where: str = "frame", *,
                rtol: float = 1e-6) -> tuple[pd.DataFrame, dict]:
    """Apply an explicit repair policy to bars whose high/low do not enclose open/close.

    Args:
        df: canonical long frame (``open, high, low, close`` numeric).
        policy: ``"error"`` (change nothing; :func:`validate` then reports every class),
            ``"clip"`` (set ``high = max(open, high, low, close)`` and ``low = min(...)`` on the
            flagged rows only) or ``"drop"`` (remove the flagged rows; :func:`clean` then treats the
            bar as missing and forward-fills it, not tradable).
        where: file/dataset name for the error message.
        rtol: tolerance of the checks (vendor rounding), as in :func:`validate`.

    Returns:
        ``(frame, record)``: ``record = {"policy", "rows_changed", "high_below_low",
        "high_below_open_close", "low_above_open_close"}`` (the class counts, a row may fall in
        two); it goes into the dataset manifest / clean report.
    """
    if policy not in OHLC_POLICIES:
        raise ConfigError(f"on_bad_ohlc={policy!r}: use one of {', '.join(OHLC_POLICIES)}")
    record = {"policy": policy, "rows_changed": 0, **{k: 0 for k in OHLC_CLASSES}}
    if policy == "error" or not all(k in df.columns for k in PRICE_COLUMNS):
        return df, record
    cols = {k: pd.to_numeric(df[k], errors="coerce").to_numpy(dtype=np.float64) for k in PRICE_COLUMNS}
    masks = ohlc_masks(cols["open"], cols["high"], cols["low"], cols["close"], rtol)
    bad = np.zeros(len(df), dtype=bool)
    for k, m in masks.items():
        record[k] = int(m.sum())
        bad |= m
    record["rows_changed"] = int(bad.sum())
    if not bad.any():
        return df, record
    if policy == "drop":
        out = df.loc[~bad].reset_index(drop=True)
        out.attrs = dict(df.attrs) if isinstance(df.attrs, dict) else {}
        return out, record
    stack = np.stack([cols[k] for k in PRICE_COLUMNS])
    out = df.copy()
    out["high"] = np.where(bad, np.nanmax(stack, axis=0), cols["high"])
    out["low"] = np.where(bad, np.nanmin(stack, axis=0), cols["low"])
    return out, record


def _check_frequency(df: pd.DataFrame, where: str) -> str:
    """Raise on mixed bar frequencies; return the frame's frequency."""
    later, diffs, codes, _ = _ticker_diffs(df)
    if diffs.size == 0:
        g = _DAY
    else:
        vals, counts = np.unique(diffs, return_counts=True)
        g = int(vals[np.argmax(counts)])
    freq = freq_label(g)
    times = pd.DatetimeIndex(df["time"])
    if g >= _DAY:
        wall = times.tz_localize(None) if times.tz is not None else times
        off = np.flatnonzero(np.asarray(wall != wall.normalize()))
        if off.size:
            r = int(off[0])
            raise DataValidationError(
                f"{where}: {_row(df, r)}: intraday time in a {freq} frame: mixed frequencies{_more(off.size)}")
        finer = np.flatnonzero(diffs < g // 2)
    else:
        if times.tz is None:
            raise DataValidationError(
                f"{where}: intraday ({freq}) times must be tz-aware UTC bar open times (schema); "
                f"localize them, e.g. time.dt.tz_localize('America/New_York').dt.tz_convert('UTC')")
        finer = np.flatnonzero((diffs < g) | (diffs % g != 0))
    if finer.size:
        r = int(later[finer[0]])
        step = pd.Timedelta(int(diffs[finer[0]]), unit="ns")
        raise DataValidationError(
            f"{where}: {_row(df, r)}: {step} after the previous bar of this ticker in a {freq} frame: "
            f"mixed frequencies{_more(finer.size)}")
    # a whole ticker at a coarser frequency (e.g. weekly bars among daily ones)
    if diffs.size:
        s = pd.DataFrame({"c": codes, "d": diffs})
        if g < _DAY:  # intraday: every step of the ticker is a multiple of a coarser bar
            steps = s.groupby("c")["d"].agg(lambda x: int(np.gcd.reduce(x.to_numpy())))
            coarse = steps[steps >= 2 * g]
        else:  # daily: no two bars of the ticker closer than 5 days (weekly/monthly bars)
            steps = s.groupby("c")["d"].min()
            coarse = steps[steps > 3 * _DAY + g]
        if len(coarse):
            code = int(coarse.index[0])
            tic = pd.factorize(df["tic"], sort=False)[1][code]
            raise DataValidationError(
                f"{where}: ticker {tic} has {freq_label(int(coarse.iloc[0]))} bars while the frame has {freq} bars: "
                f"mixed frequencies")
    return freq


# --------------------------------------------------------------------------------------------
# cleaning
# --------------------------------------------------------------------------------------------
@dataclass
class CleanReport:
    """What :func:`clean` did. ``to_dict()`` is JSON-ready (stored in the dataset manifest)."""

    calendar: str
    freq: str
    start: str | None = None
    end: str | None = None
    rows_in: int = 0
    rows_out: int = 0
    num_times: int = 0
    tickers_in: list[str] = field(default_factory=list)
    tickers: list[str] = field(default_factory=list)
    #: dropped ticker -> reason
    dropped: dict[str, str] = field(default_factory=dict)
    #: kept ticker -> number of forward-filled (invented, not tradable) bars in the output
    filled: dict[str, int] = field(default_factory=dict)
    #: kept ticker -> number of vendor suspension rows (tradestatus == 0) in the output
    suspended: dict[str, int] = field(default_factory=dict)
    #: ticker -> rows dropped because their time is not a calendar bar
    off_calendar: dict[str, int] = field(default_factory=dict)
    #: ticker -> its first real bar, for tickers that start after the requested start
    late_start: dict[str, str] = field(default_factory=dict)
    #: (from, to) when the panel start was cut to where every kept ticker exists
    cut_start: tuple[str, str] | None = None
    #: ticker -> share of calendar bars it has over the requested span
    coverage: dict[str, float] = field(default_factory=dict)
    #: ticker -> longest run of missing calendar bars (trailing run included)
    max_gap: dict[str, int] = field(default_factory=dict)
    #: what the ``on_bad_ohlc`` policy did (see :func:`repair_ohlc`)
    ohlc_repair: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cut_start"] = list(self.cut_start) if self.cut_start else None
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"{len(self.tickers)}/{len(self.tickers_in)} tickers x {self.num_times} {self.freq} bars "
                 f"({self.calendar}) {self.start} .. {self.end}: {self.rows_out} rows"]
        if self.cut_start:
            lines.append(f"start cut from {self.cut_start[0]} to {self.cut_start[1]} (late starters: "
                         f"{', '.join(f'{k} {v}' for k, v in self.late_start.items())}); "
                         f"late_start='drop' keeps the full span without them")
        for tic, why in self.dropped.items():
            lines.append(f"dropped {tic}: {why}")
        nf = sum(self.filled.values())
        if nf:
            lines.append(f"forward-filled {nf} bars (not tradable) in {sum(1 for v in self.filled.values() if v)} tickers")
        ns = sum(self.suspended.values())
        if ns:
            lines.append(f"{ns} suspended bars (not tradable)")
        no = sum(self.off_calendar.values())
        if no:
            lines.append(f"dropped {no} off-calendar rows")
        if self.ohlc_repair.get("rows_changed"):
            r = self.ohlc_repair
            lines.append(f"on_bad_ohlc={r['policy']}: {r['rows_changed']} bars "
                         f"{'dropped' if r['policy'] == 'drop' else 'clipped'} "
                         f"({', '.join(f'{k} {r[k]}' for k in OHLC_CLASSES if r.get(k))})")
        return "\n".join(lines)


def _max_run_fast(missing: np.ndarray) -> np.ndarray:
    """Longest run of True along axis 0, fully vectorized. (T, N) bool -> (N,) int."""
    T, N = missing.shape
    if T == 0:
        return np.zeros(N, dtype=np.int64)
    m = np.vstack([np.zeros((1, N), bool), missing, np.zeros((1, N), bool)]).astype(np.int8)
    d = np.diff(m, axis=0)  # +1 at run starts, -1 after run ends
    best = np.zeros(N, dtype=np.int64)
    starts_t, starts_n = np.nonzero(d == 1)
    ends_t, ends_n = np.nonzero(d == -1)
    if starts_t.size == 0:
        return best
    # np.nonzero is row-major (by t); reorder by asset so starts/ends pair up
    so = np.lexsort((starts_t, starts_n))
    eo = np.lexsort((ends_t, ends_n))
    lengths = ends_t[eo] - starts_t[so]
    np.maximum.at(best, starts_n[so], lengths)
    return best


def _ffill(a: np.ndarray, seed: np.ndarray | None = None) -> np.ndarray:
    """Forward fill NaN along axis 0 of a (T, N) float array (never backward).

    ``seed`` (N,): the values just before row 0 (a ticker's last bar before a cut panel start).
    """
    if seed is None:
        return pd.DataFrame(a).ffill().to_numpy()
    return pd.DataFrame(np.vstack([seed[None, :], a])).ffill().to_numpy()[1:]


def clean(
    df: pd.DataFrame,
    calendar: str | None = None,
    *,
    freq: str | None = None,
    start=None,
    end=None,
    where: str = "frame",
    min_coverage: float = 0.0,
    max_gap: int | None = None,
    late_start: str = "cut",
    max_off_calendar: float = 0.05,
    check_ohlc: bool = True,
    on_bad_ohlc: str = "error",
) -> tuple[pd.DataFrame, CleanReport]:
    """Validate, align to ``calendar``, forward-fill, and return a full (time, tic) panel.

    Args:
        df: canonical long frame, any row order.
        calendar: ``"XNYS"``, ``"XSHG"`` (any exchange-calendars code), ``"24/7"`` or ``"FX"``;
            None: the source's calendar recorded in ``df.attrs["calendar"]``, else ``"XNYS"``.
        freq: bar frequency; inferred from the data when None.
        start, end: optional inclusive bounds of the panel (default: the data's span).
        where: file/dataset name for error messages.
        min_coverage: drop tickers with fewer real bars than this share of the calendar bars over
            the requested span (0 keeps all).
        max_gap: drop tickers with a longer run of missing calendar bars (None: no limit).
        late_start: ``"cut"`` (start the panel where every kept ticker exists) or ``"drop"`` (drop
            tickers whose first bar is after the panel start).
        max_off_calendar: the largest share of rows whose time is not a calendar bar that is
            dropped silently (reported); more raises (wrong calendar or time zone).
        check_ohlc: see :func:`validate`.
        on_bad_ohlc: ``"error"`` (default), ``"clip"`` or ``"drop"``: see :func:`repair_ohlc`;
            the count of bars changed is in ``report.ohlc_repair``.

    Returns:
        ``(frame, report)``: the frame has T*N rows sorted by (time, tic), columns of the input plus
        ``tradestatus``; see :class:`CleanReport`.
    """
    if late_start not in ("cut", "drop"):
        raise ConfigError(f"late_start={late_start!r}: use 'cut' or 'drop'")
    if not 0.0 <= float(min_coverage) <= 1.0:
        raise ConfigError(f"min_coverage={min_coverage!r}: must lie in [0, 1]")
    if max_gap is not None and int(max_gap) < 0:
        raise ConfigError(f"max_gap={max_gap!r}: must be >= 0 or None")
    if on_bad_ohlc not in OHLC_POLICIES:
        raise ConfigError(f"on_bad_ohlc={on_bad_ohlc!r}: use one of {', '.join(OHLC_POLICIES)}")
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")

    calendar = calendar or (df.attrs.get("calendar") if isinstance(df.attrs, dict) else None) or "XNYS"
    d = df
    if ("time" in d.columns and "tic" in d.columns and pd.api.types.is_datetime64_any_dtype(d["time"])
            and getattr(d["time"].dt, "tz", None) is not None):
        wall = utc_wall(d["time"])
        if (wall == wall.dt.normalize()).all() and freq_to_timedelta(infer_freq(d)) >= pd.Timedelta(days=1):
            d = d.assign(time=wall)  # daily bars stamped at UTC midnight -> tz-naive dates (schema)
    if all(c in d.columns for c in KEY_COLUMNS):
        d = d.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    ohlc_record = {"policy": on_bad_ohlc, "rows_changed": 0}
    if check_ohlc and on_bad_ohlc != "error":
        d, ohlc_record = repair_ohlc(d, on_bad_ohlc, where)
    found = validate(d, where, check_sorted=False, check_ohlc=check_ohlc)
    freq = freq or found
    step = freq_to_timedelta(freq)
    intraday = step < pd.Timedelta(days=1)

    rows_in = len(d)
    tickers_in = sorted(pd.unique(d["tic"]).astype(str).tolist())
    d = d.assign(tic=d["tic"].astype(str))

    lo = d["time"].min() if start is None else _bound(start, intraday)
    hi = d["time"].max() if end is None else _bound(end, intraday)
    d = d[(d["time"] >= lo) & (d["time"] <= hi)]
    if d.empty:
        raise DataValidationError(f"{where}: no rows between {_fmt_time(lo)} and {_fmt_time(hi)}")

    if step > pd.Timedelta(days=1):  # weekly / monthly: align on the tickers' own times
        cal = pd.DatetimeIndex(np.sort(pd.unique(d["time"])), name="time")
        cal_name = "data"
    else:
        cal = calendar_times(calendar, lo, hi, freq)
        cal_name = str(calendar)
        if cal.tz is None and d["time"].dt.tz is not None:
            raise DataValidationError(f"{where}: daily calendar but tz-aware intraday times")

    report = CleanReport(calendar=cal_name, freq=freq, rows_in=rows_in, tickers_in=tickers_in, ohlc_repair=ohlc_record)

    on_cal = d["time"].isin(cal).to_numpy()
    if not on_cal.all():
        n_off = int((~on_cal).sum())
        report.off_calendar = {str(k): int(v) for k, v in d.loc[~on_cal, "tic"].value_counts().sort_index().items()}
        if n_off > max_off_calendar * len(d):
            pos = int(np.flatnonzero(~on_cal)[0])
            raise DataValidationError(
                f"{where}: {_row(d, pos)} is not a {cal_name} {freq} bar, and {n_off} of {len(d)} rows are off the "
                f"calendar: wrong calendar or time zone? (calendars: XNYS, XSHG, 24/7, FX)")
        d = d[on_cal]
    if len(cal) == 0 or d.empty:
        raise DataValidationError(f"{where}: no {cal_name} {freq} bars between {_fmt_time(lo)} and {_fmt_time(hi)}")
    cal = cal[(cal >= d["time"].min()) & (cal <= d["time"].max())]
    T0 = len(cal)

    # per-ticker presence on the full requested span: (T0, N) bool
    tick = np.array(sorted(pd.unique(d["tic"]).tolist()), dtype=object)
    ti = cal.get_indexer(d["time"])
    ni = np.searchsorted(tick, d["tic"].to_numpy(dtype=object))
    present = np.zeros((T0, len(tick)), dtype=bool)
    present[ti, ni] = True
    first = present.argmax(axis=0)
    coverage = present.sum(axis=0) / T0
    after_first = np.arange(T0)[:, None] >= first[None, :]
    gaps = _max_run_fast(~present & after_first)
    report.coverage = {str(t): round(float(c), 6) for t, c in zip(tick, coverage)}
    report.max_gap = {str(t): int(g) for t, g in zip(tick, gaps) if g}

    keep = np.ones(len(tick), dtype=bool)
    for t in set(tickers_in) - set(tick.tolist()):
        report.dropped[t] = "no bars on the calendar in the requested span"
    for j, t in enumerate(tick):
        if coverage[j] < min_coverage:
            keep[j] = False
            report.dropped[t] = f"coverage {coverage[j]:.1%} < min_coverage {min_coverage:.1%}"
        elif max_gap is not None and gaps[j] > int(max_gap):
            keep[j] = False
            report.dropped[t] = f"{int(gaps[j])} consecutive missing bars > max_gap {int(max_gap)}"
    if not keep.any():
        raise DataValidationError(f"{where}: no ticker left after cleaning: {report.dropped}")

    base = int(first[keep].min())  # the first bar of the earliest kept ticker
    late = [j for j in np.flatnonzero(keep) if first[j] > base]
    if late:  # one label per calendar bar, not one Timestamp per ticker (200k tickers: seconds)
        labels = np.array([_fmt_time(t) for t in cal[np.unique(first[late])]], dtype=object)
        at = np.searchsorted(np.unique(first[late]), first[late])
        report.late_start = dict(zip(tick[late].astype(str).tolist(), labels[at].tolist()))
    s0 = base
    if late and late_start == "drop":
        for j in late:
            keep[j] = False
            report.dropped[str(tick[j])] = (f"starts {_fmt_time(cal[first[j]])}, after the panel start "
                                            f"{_fmt_time(cal[base])} (late_start='drop')")
    elif late:
        s0 = int(first[keep].max())
    if s0 > 0:
        report.cut_start = (_fmt_time(cal[0]), _fmt_time(cal[s0]))

    kept = tick[keep]
    times = cal[s0:]
    T, N = len(times), len(kept)
    if T < 2:  # before the (T x N) reindex and any feature work: nothing downstream can use it
        raise DataValidationError(_one_bar_panel(where, times, kept, present.sum(axis=0)[keep], report, freq))
    pres = present[s0:][:, keep]

    d = d[d["tic"].isin(set(kept.tolist()))]
    # each kept ticker's last bar before a cut start seeds the forward fill (else: NaN prices on
    # the first panel bar of a ticker without a bar there)
    prior = d[d["time"] < times[0]].groupby("tic", sort=False).tail(1).set_index("tic").reindex(kept.tolist())
    d = d[d["time"] >= times[0]]
    full = pd.MultiIndex.from_product([times, pd.Index(kept.tolist(), dtype=d["tic"].dtype)], names=["time", "tic"])
    out = d.set_index(["time", "tic"]).reindex(full).reset_index()

    cols = {c: out[c].to_numpy(dtype=np.float64, na_value=np.nan).reshape(T, N)
            for c in out.columns if c not in KEY_COLUMNS and pd.api.types.is_numeric_dtype(out[c])}
    seed = {c: prior[c].to_numpy(dtype=np.float64, na_value=np.nan) if c in prior.columns else np.full(N, np.nan)
            for c in cols}
    filled = ~pres
    if "tradestatus" in cols:
        status = np.where(filled, 0.0, np.nan_to_num(cols["tradestatus"], nan=1.0))
    else:
        status = np.where(filled, 0.0, 1.0)
    suspended = (~filled) & (status == 0)
    frozen = filled | suspended
    # the last *traded* close, carried forward; a ticker suspended on its first bar keeps the vendor's
    close = _ffill(np.where(frozen, np.nan, cols["close"]), seed["close"])
    close = np.where(np.isnan(close), _ffill(cols["close"], seed["close"]), close)
    prev_close = np.vstack([seed["close"][None, :], close[:-1]])
    for c in PRICE_COLUMNS:  # filled / suspended bars are flat at that close
        cols[c] = np.where(frozen, close, cols[c])
    for c in ("volume", "amount"):
        if c in cols:
            cols[c] = np.where(filled | suspended, 0.0, cols[c])
    if "preclose" in cols:
        cols["preclose"] = np.where(frozen & ~np.isnan(prev_close), prev_close, cols["preclose"])
    for c in cols:
        if c not in PRICE_COLUMNS and c not in ("volume", "amount", "preclose", "tradestatus"):
            cols[c] = np.where(filled, _ffill(cols[c], seed[c]), cols[c])
    cols["tradestatus"] = status

    res = out[list(KEY_COLUMNS)].copy()
    for c in out.columns:
        if c in KEY_COLUMNS:
            continue
        if c in cols:
            res[c] = cols[c].reshape(-1)
        else:  # non-numeric extra column: forward fill within ticker
            res[c] = out[c].groupby(out["tic"], sort=False).ffill()
    res["tradestatus"] = cols["tradestatus"].reshape(-1).astype(np.int8)
    if "is_st" in res.columns and not res["is_st"].isna().any():
        res["is_st"] = res["is_st"].astype(np.int8)

    res.attrs = {**(df.attrs if isinstance(df.attrs, dict) else {}), "calendar": cal_name, "freq": freq}
    report.tickers = [str(t) for t in kept]
    report.filled = {str(t): int(n) for t, n in zip(kept, filled.sum(axis=0))}
    report.suspended = {str(t): int(n) for t, n in zip(kept, suspended.sum(axis=0)) if n}
    report.start, report.end = _fmt_time(times[0]), _fmt_time(times[-1])
    report.rows_out, report.num_times = len(res), T
    return res, report


def _one_bar_panel(where: str, times: pd.DatetimeIndex, kept: np.ndarray, bars: np.ndarray,
                   report: CleanReport, freq: str) -> str:
    """The message for a panel of fewer than 2 bars (no returns, indicators or env step possible)."""
    when = f" ({_fmt_time(times[0])})" if len(times) else ""
    msg = (f"{where}: the cleaned panel has {len(times)} bar{when} for {len(kept)} tickers; a panel needs at "
           f"least 2 {freq} bars (returns, indicators, turbulence and every env step need a time series)")
    single = int((bars == 1).sum())
    if single:
        msg += f"; {single} of {len(kept)} tickers have a single bar"
    if report.cut_start:
        n_late = len(report.late_start)
        msg += (f"; start cut from {report.cut_start[0]} to {report.cut_start[1]} by {n_late} late-starting "
                f"ticker{'s' if n_late != 1 else ''}: --late-start drop (late_start='drop') keeps the full "
                f"span without them")
    return msg


def _bound(x, intraday: bool) -> pd.Timestamp:
    from finmeta.timeparse import as_utc, naive_day

    return as_utc(x) if intraday else naive_day(x)
