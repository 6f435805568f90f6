"""Walk-forward windows over a bar index.

A window is three half-open index ranges into ``MarketArrays`` rows: ``train``, ``validation`` and
``trade``. The ICAIF 2020 ensemble scheme (FinRL's ``run_ensemble_strategy``): starting at the
first validation bar, every ``rebalance`` bars

* validate on the ``validation`` bars just before the trade window,
* train on everything from ``train_start`` up to the validation window (``mode="expanding"``) or on
  the last ``train_length`` bars before it (``mode="rolling"``),
* trade the next ``rebalance`` bars, carrying the portfolio over from the previous window.

The env of each stage is built from ``arrays.slice(lo, hi)`` of its own range only, so no stage can
read a bar past its range (enforced, and tested, in the loop).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import pandas as pd

from finmeta.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """Index ranges ``[lo, hi)`` into the bar axis."""

    index: int
    train: tuple[int, int]
    validation: tuple[int, int] | None
    trade: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def _pos(times: pd.DatetimeIndex, when, name: str) -> int:
    from finmeta.timeparse import parse_date

    ts = parse_date(when, f"windows.{name}")
    if times.tz is not None and ts.tz is None:
        ts = ts.tz_localize(times.tz)
    i = int(times.searchsorted(ts, side="left"))
    if i >= len(times):
        raise ConfigError(f"windows.{name}={when} is after the last bar of the data ({times[-1].date()})")
    return i


def make_windows(
    times,
    *,
    train_start,
    trade_start,
    trade_end=None,
    rebalance: int = 63,
    validation: int = 63,
    mode: str = "expanding",
    train_length: int | None = None,
) -> list[Window]:
    """Cut the walk-forward windows.

    Args:
        times: (T,) bar times.
        train_start: first training bar (date).
        trade_start: first traded bar (date); the first validation window is the ``validation``
            bars before it.
        trade_end: end of trading (exclusive; default: the end of the data).
        rebalance: bars traded per window (the retraining period).
        validation: bars per validation window (0 for none).
        mode: ``"expanding"`` (train from ``train_start``) or ``"rolling"`` (last ``train_length``).
    """
    t = pd.DatetimeIndex(times)
    if mode not in ("expanding", "rolling"):
        raise ConfigError(f"windows.mode must be 'expanding' or 'rolling', not {mode!r}")
    if rebalance <= 0 or validation < 0:
        raise ConfigError("windows.rebalance must be > 0 and windows.validation >= 0")
    lo = _pos(t, train_start, "train_start")
    first = _pos(t, trade_start, "trade_start")
    end = len(t) if trade_end is None else int(t.searchsorted(pd.Timestamp(trade_end), side="left"))
    if first - validation - lo < 2:
        raise ConfigError(
            f"windows: only {first - validation - lo} training bars before the first validation window "
            f"(train_start={train_start}, trade_start={trade_start}, validation={validation}; the data span "
            f"{t[0].date()} .. {t[-1].date()})"
        )
    if mode == "rolling" and not train_length:
        raise ConfigError("windows.mode='rolling' needs windows.train_length (bars)")
    out: list[Window] = []
    start = first
    k = 0
    while start < end:
        stop = min(start + rebalance, end)
        v_lo = start - validation
        t_lo = lo if mode == "expanding" else max(lo, v_lo - int(train_length))
        out.append(Window(k, (t_lo, v_lo), (v_lo, start) if validation else None, (start, stop)))
        start = stop
        k += 1
    if not out:
        raise ConfigError(f"windows: no trading bars between trade_start={trade_start} and trade_end={trade_end}")
    return out


def window_seed(seed: int, window: int, salt: str = "") -> int:
    """A per-window seed that depends only on (seed, window, salt): resuming a run re-derives it."""
    return zlib.crc32(f"{int(seed)}/{int(window)}/{salt}".encode()) & 0x7FFFFFFF
