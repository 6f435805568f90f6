"""``canonical``: FinMeta's own long format (CSV or Parquet).

Columns ``time, tic, open, high, low, close, volume`` plus any of ``amount, preclose,
tradestatus, is_st, adj_factor, adjcp``. ``date``, ``datetime`` or ``timestamp`` are accepted as
the time column and ``symbol``/``ticker`` as ``tic``. Times with a UTC offset are read as such;
naive intraday times are taken in ``tz`` (default UTC) and, with ``label="end"``, as bar *end*
times (the bar length is ``freq`` or inferred), so an Alpha-Vantage-style US file imports with
``tz="America/New_York", label="end"``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import finalize, parse_times, rename, require_columns, to_canonical_times, where
from .base import DataSource

_TIME_ALIASES = ("time", "date", "datetime", "timestamp", "Date", "Datetime")


class CanonicalSource(DataSource):
    """FinMeta's canonical long format (CSV or Parquet), with tz/label options for intraday files."""

    name = "canonical"
    calendar = "XNYS"

    def _read_raw(self, path: Path, **options) -> pd.DataFrame:
        suffixes = "".join(path.suffixes).lower()
        if ".parquet" in suffixes or suffixes.endswith(".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        tz: str | None = None,
        label: str = "open",
        freq: str | None = None,
        time_col: str | None = None,
        keep_extra: bool = False,
        **_: object,
    ) -> pd.DataFrame:
        """Canonical/long frame -> canonical frame (see the module docstring for the options).

        Args:
            raw: (n, k) long frame, one row per (time, tic).
            tz: zone of naive intraday times (default UTC).
            label: ``"open"`` (stamp = bar open) or ``"end"`` (stamp = bar end).
            freq: bar frequency (``"1d"``, ``"1m"``, ...); inferred when None.
            time_col: name of the time column when it is not one of the usual names.
            keep_extra: keep non-canonical columns (after the canonical ones).
        """
        what = where(path, self.name)
        df = raw
        if df.index.name in _TIME_ALIASES and df.index.name not in df.columns:
            df = df.reset_index()
        if time_col is None:
            time_col = next((c for c in _TIME_ALIASES if c in df.columns), "time")
        require_columns(df, [time_col], what, self.name)
        df = rename(df, {"symbol": "tic", "ticker": "tic"}).rename(columns={time_col: "time"})
        require_columns(df, ["tic", "open", "high", "low", "close", "volume"], what, self.name)
        times = parse_times(df["time"], what)
        df = df.assign(time=to_canonical_times(times, df["tic"], what, freq=freq, tz=tz, label=label))
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)
