"""The VIX feature: the CBOE volatility index close, aligned to a panel's dates.

Sources:

* a file: the team's ``us_equities/indices_dji_vix_daily.csv.gz`` (canonical long format with
  tic ``^VIX``) or any canonical/Yahoo file holding ``^VIX`` (:func:`load_vix_file`);
* a frame or Series already in memory (:func:`vix_series`);
* Yahoo Finance through the ``yahoo`` source (:func:`download_vix`, network).

Alignment (:func:`align_vix`) is *backward-looking only*: the value on panel day t is the last VIX
close on or before t (forward fill); a panel day before the first VIX close is NaN. The VIX close
of day t is known at t's close, like the stocks' closes used by every other feature on t.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finmeta.errors import DataValidationError
from finmeta.timeparse import utc_wall

VIX_TICKER = "^VIX"


def vix_series(vix: pd.DataFrame | pd.Series, *, where: str = "vix") -> pd.Series:
    """Normalise VIX input to a Series of closes indexed by tz-naive date, sorted, unique.

    Args:
        vix: a Series (index = dates, values = VIX close); a frame with ``time``/``date`` and
            ``close`` (or ``vix``) columns; or a canonical long frame containing tic ``^VIX``
            (or ``VIX``; other tickers are ignored; a single-ticker frame is used as is).
        where: name used in error messages.

    Returns:
        (T_vix,) float64 Series named ``vix``.
    """
    if isinstance(vix, pd.Series):
        s = vix.astype(np.float64)
        idx = pd.DatetimeIndex(pd.to_datetime(s.index))
    elif isinstance(vix, pd.DataFrame):
        d = vix
        if "tic" in d.columns:
            tic = d["tic"].astype(str)
            tics = set(tic.unique())
            pick = next((t for t in (VIX_TICKER, "VIX") if t in tics), None)
            if pick is None and len(tics) == 1:
                pick = tics.pop()  # a single-series frame: whatever its ticker is called
            if pick is None:
                raise DataValidationError(f"{where}: no rows with tic {VIX_TICKER!r} among {sorted(tics)[:10]}")
            d = d[tic == pick]
        tcol = next((c for c in ("time", "date", "Date", "datadate") if c in d.columns), None)
        vcol = next((c for c in ("close", "vix", "Close", "adjcp") if c in d.columns), None)
        if tcol is None or vcol is None:
            raise DataValidationError(
                f"{where}: need a time/date column and a close/vix column, got {list(d.columns)}")
        s = pd.Series(d[vcol].to_numpy(dtype=np.float64, na_value=np.nan))
        idx = pd.DatetimeIndex(pd.to_datetime(d[tcol].to_numpy()))
    else:
        raise DataValidationError(f"{where}: expected a DataFrame or Series, got {type(vix).__name__}")
    idx = utc_wall(idx)
    s = pd.Series(s.to_numpy(), index=idx.normalize(), name="vix")
    s = s[np.isfinite(s.to_numpy())]
    if s.empty:
        raise DataValidationError(f"{where}: no finite VIX value")
    if s.index.has_duplicates:
        dup = s.index[s.index.duplicated()][0]
        raise DataValidationError(f"{where}: duplicate VIX date {dup.date()}")
    if (s <= 0).any():
        bad = s.index[(s <= 0).to_numpy()][0]
        raise DataValidationError(f"{where}: non-positive VIX close on {bad.date()}")
    return s.sort_index()


def load_vix_file(path: str | Path) -> pd.Series:
    """VIX closes from a CSV file (canonical long file with ``^VIX`` rows, or date/close)."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"{p}: VIX file not found")
    return vix_series(pd.read_csv(p), where=str(p))


def download_vix(start: str, end: str) -> pd.Series:
    """VIX closes from Yahoo Finance via the ``yahoo`` source (network; ``[start, end)``)."""
    from data_processors.sources import get_source

    return vix_series(get_source("yahoo").download([VIX_TICKER], start, end, "1d"), where="yahoo ^VIX")


def align_vix(vix: pd.Series, times: pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """The last VIX close on or before each of ``times`` (forward fill only, never back-fill).

    Args:
        vix: output of :func:`vix_series`.
        times: (T,) panel dates (tz-naive).

    Returns:
        (T,) float64; NaN before the first VIX date.
    """
    t = utc_wall(pd.DatetimeIndex(times))
    pos = vix.index.searchsorted(t.normalize(), side="right") - 1
    vals = vix.to_numpy()
    out = np.where(pos >= 0, vals[np.clip(pos, 0, None)], np.nan)
    return out


def as_vix(vix: "pd.DataFrame | pd.Series | str | Path") -> pd.Series:
    """Accept a path, a frame or a Series (what ``add_features(vix=...)`` takes)."""
    if isinstance(vix, (str, Path)):
        return load_vix_file(vix)
    return vix_series(vix)
