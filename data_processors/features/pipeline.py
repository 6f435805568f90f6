"""``add_features``: indicators + VIX + turbulence + sentiment on a cleaned canonical frame.

Every feature on day t is computed from data up to day t only (tests/test_features.py perturbs
every row after t and checks that nothing up to t changes). Nothing is back-filled: warm-up
values are whatever the engine defines (stockstats: partial windows; TA-Lib: NaN for its
look-back, see :func:`data_processors.features.indicators.talib_lookback`), turbulence is 0.0
until a full window of past returns exists, VIX is NaN before its first close, and sentiment is
0.0 (neutral) on sessions without news.
"""

from __future__ import annotations

import time as _time
from pathlib import Path

import numpy as np
import pandas as pd

from data_processors.schema import DEFAULT_INDICATORS
from finmeta.errors import DataValidationError

from .indicators import compute_indicators
from .sentiment import daily_sentiment, sentiment_columns
from .turbulence import compute_turbulence
from .vix import align_vix, as_vix


def add_features(
    df: pd.DataFrame,
    *,
    indicators: tuple[str, ...] | list[str] | None = DEFAULT_INDICATORS,
    engine: str = "stockstats",
    vix: "pd.DataFrame | pd.Series | str | Path | None" = None,
    turbulence: bool = True,
    turbulence_window: int = 252,
    sentiment: pd.DataFrame | None = None,
    turbulence_mode: str = "returns",
) -> pd.DataFrame:
    """Add feature columns to a cleaned canonical long frame.

    Args:
        df: cleaned canonical frame (``time, tic, open, high, low, close, volume, ...``), one row
            per (time, tic); R rows.
        indicators: indicator names (:mod:`~data_processors.features.indicators`); None or ()
            for none.
        engine: ``"stockstats"`` or ``"talib"``.
        vix: VIX closes by date: a Series, a frame with date/close, a canonical frame holding
            ``^VIX`` rows, or a path to such a CSV. Aligned by forward fill only.
        turbulence: add the ``turbulence`` column.
        turbulence_window: trading days in the turbulence window (``"icaif2020"``: the first day
            with a value).
        turbulence_mode: ``"returns"`` (FinRL's definition: Mahalanobis distance of the day's
            returns from a trailing window of returns) or ``"icaif2020"`` (what the ICAIF 2020 code
            computes: of the day's price LEVELS from all earlier days, expanding); see
            :func:`~data_processors.features.turbulence.compute_turbulence`.
        sentiment: daily sentiment frame (``time, tic, sentiment`` from
            :func:`~data_processors.features.sentiment.daily_sentiment`; without ``tic`` or with
            ``tic == ""``: market-wide) or a normalised news frame (``published, tic, text``),
            which is scored first (XNYS sessions).

    Returns:
        A copy of ``df`` (same rows, same order) plus one float64 column per indicator, then
        ``vix``, ``turbulence``, ``sentiment`` (and ``market_sentiment`` when the sentiment frame
        holds both per-ticker and market-wide rows) as requested. ``out.attrs["feature_seconds"]``
        holds the time spent per stage.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(f"add_features: expected a DataFrame, got {type(df).__name__}")
    for c in ("time", "tic", "close"):
        if c not in df.columns:
            raise DataValidationError(f"add_features: the frame lacks column {c!r}")
    if df.empty:
        raise DataValidationError("add_features: the frame is empty")
    timings: dict[str, float] = {}
    new: dict[str, np.ndarray] = {}

    t0 = _time.perf_counter()
    if indicators:
        ind = compute_indicators(df, tuple(indicators), engine=engine)
        for c in ind.columns:
            new[c] = ind[c].to_numpy()
    timings["indicators"] = _time.perf_counter() - t0

    times = pd.DatetimeIndex(df["time"])
    uniq = times.unique().sort_values()
    row_t = uniq.get_indexer(times)  # (R,) index of each row's time in uniq

    if vix is not None:
        t0 = _time.perf_counter()
        new["vix"] = align_vix(as_vix(vix), uniq)[row_t]
        timings["vix"] = _time.perf_counter() - t0

    if turbulence:
        t0 = _time.perf_counter()
        turb = compute_turbulence(df, window=turbulence_window, mode=turbulence_mode)
        new["turbulence"] = turb.reindex(uniq).to_numpy()[row_t]
        timings["turbulence"] = _time.perf_counter() - t0

    if sentiment is not None:
        t0 = _time.perf_counter()
        daily = sentiment
        if isinstance(daily, pd.DataFrame) and "text" in daily.columns and "sentiment" not in daily.columns:
            daily = daily_sentiment(daily)
        if not isinstance(daily, pd.DataFrame):
            raise DataValidationError(f"add_features: sentiment must be a DataFrame, got {type(daily).__name__}")
        new.update(sentiment_columns(times.to_numpy(), df["tic"].astype(str).to_numpy(), daily))
        timings["sentiment"] = _time.perf_counter() - t0

    clash = [c for c in new if c in df.columns]
    if clash:
        raise DataValidationError(f"add_features: the frame already has column(s) {clash}; drop them first")
    out = df.assign(**new)
    out.attrs["feature_seconds"] = timings
    return out
