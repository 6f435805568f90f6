"""Feeds of the trade loop: the bars up to now, one new bar at a time.

* :class:`ReplayFeed`: a stored dataset (or the run's own data), bar by bar, as if live.
* :class:`LiveFeed`: new bars through the data layer's sources (the config's ``data.source``,
  downloaded with the same cleaning and features as training by :func:`benchmarks.run.build_arrays`);
  tests pass a ``fetch`` function instead (no network).

Both give :meth:`upto`: the bars ``[lo, i]`` plus the bar orders fill at (the kernel sizes orders
at the fill price, as the backtest does; the observation reads bars ``<= i`` only). A replay's fill
bar is the dataset's next bar; live, it is a placeholder copy of bar ``i`` (opening at its close,
the best estimate of the next open).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd

from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError


class ReplayFeed:
    """Bars of stored arrays, one at a time."""

    live = False

    def __init__(self, arrays: MarketArrays) -> None:
        self.arrays = arrays
        self.times = pd.DatetimeIndex(arrays.times)

    def refresh(self) -> None:
        pass

    def bar(self, i: int) -> tuple[pd.Timestamp, np.ndarray, np.ndarray]:
        """(time, close row, open row) of bar ``i``, float64."""
        a = self.arrays
        return self.times[i], np.asarray(a.close[i], np.float64), np.asarray(a.open[i], np.float64)

    def upto(self, lo: int, i: int) -> MarketArrays:
        return self.arrays.slice(lo, min(i + 2, len(self.times)))


def with_placeholder(a: MarketArrays) -> MarketArrays:
    """``a`` plus one bar after its last: a copy of the last bar that opens at its close (live order
    sizing only; the observation never reads it)."""
    def add(x, last=None):
        if x is None:
            return None
        row = x[-1:] if last is None else last
        return np.concatenate([x, row], axis=0)

    times = pd.DatetimeIndex(a.times)
    step = (times[-1] - times[-2]) if len(times) > 1 else pd.Timedelta(days=1)
    return replace(
        a, times=np.concatenate([a.times, (times[-1:] + step).to_numpy().astype(a.times.dtype)]),
        close=add(a.close), open=add(a.open, a.close[-1:]), high=add(a.high), low=add(a.low),
        volume=add(a.volume), features=add(a.features),
        turbulence=add(a.turbulence), vix=add(a.vix),
        preclose=None if a.preclose is None else add(a.preclose, a.close[-1:]),
        tradable=add(a.tradable), is_st=add(a.is_st))


class LiveFeed:
    """New bars from the config's data source (see the module doc)."""

    live = True

    def __init__(self, config: dict, arrays: MarketArrays | None = None,
                 fetch: Callable[[], MarketArrays] | None = None) -> None:
        self.config = config
        self.fetch = fetch or self._download
        self.arrays = arrays
        self.times = pd.DatetimeIndex([] if arrays is None else arrays.times)

    @staticmethod
    def check_config(config: dict) -> None:
        data = config.get("data") or {}
        for key in ("dataset", "file", "files"):
            if key in data:
                raise ConfigError(f"live trading downloads new bars through data.source; this config reads "
                                  f"data.{key} (stored data): replay it with --replay instead")

    def _download(self) -> MarketArrays:
        from benchmarks.dataset import build_arrays

        cfg = copy.deepcopy(self.config)
        tomorrow = (pd.Timestamp.now(tz="UTC").normalize() + pd.Timedelta(days=1)).date()
        cfg.setdefault("data", {})["end"] = str(tomorrow)
        arrays, _ = build_arrays(cfg)
        return arrays

    def refresh(self) -> None:
        self.arrays = self.fetch()
        self.times = pd.DatetimeIndex(self.arrays.times)

    def bar(self, i: int) -> tuple[pd.Timestamp, np.ndarray, np.ndarray]:
        a = self.arrays
        return self.times[i], np.asarray(a.close[i], np.float64), np.asarray(a.open[i], np.float64)

    def upto(self, lo: int, i: int) -> MarketArrays:
        return with_placeholder(self.arrays.slice(lo, i + 1))
