"""The hand-off between the data layer and the env layer.

:class:`MarketArrays` is the *only* input the env layer needs. All arrays are float32 (bool for
masks), C-contiguous, and indexed ``[t, i]`` with ``t`` in ``range(T)`` (time) and ``i`` in
``range(N)`` (asset, in the order of ``tickers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from finmeta.errors import DataValidationError


@dataclass(frozen=True)
class MarketArrays:
    """Aligned market arrays.

    Attributes:
        times: (T,) ``datetime64[ns]`` bar times.
        tickers: N ticker names.
        close: (T, N) close prices -- "prices" in the env layer.
        open: (T, N) open prices (the default fill price is the *next* bar's open).
        high, low: (T, N).
        volume: (T, N) traded quantity (for volume-participation impact).
        features: (T, N, K) per-asset features (indicators, sentiment, ...).
        feature_names: K names, in the order of the last axis of ``features``.
        turbulence: (T,) turbulence index or None.
        vix: (T,) VIX level or None.
        preclose: (T, N) previous close (A-share limit rules) or None.
        tradable: (T, N) bool, False on suspended bars (Baostock ``tradestatus == 0``) or before
            an asset's first real bar.
        is_st: (T, N) bool, ST/*ST flag (A-share ±5% limit) or None.
        meta: free-form provenance (dataset name, hash, frequency).
    """

    times: np.ndarray
    tickers: tuple[str, ...]
    close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    turbulence: np.ndarray | None = None
    vix: np.ndarray | None = None
    preclose: np.ndarray | None = None
    tradable: np.ndarray | None = None
    is_st: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def prices(self) -> np.ndarray:
        """(T, N) close prices (alias used by the env layer)."""
        return self.close

    @property
    def num_times(self) -> int:
        return int(self.close.shape[0])

    @property
    def num_assets(self) -> int:
        return int(self.close.shape[1])

    def slice(self, start: int, stop: int) -> "MarketArrays":
        """Rows ``start:stop`` of every time-indexed array (a window; copies nothing it can avoid)."""
        def s(a):
            return None if a is None else a[start:stop]
        return replace(
            self,
            times=self.times[start:stop],
            close=self.close[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            volume=self.volume[start:stop],
            features=self.features[start:stop],
            turbulence=s(self.turbulence),
            vix=s(self.vix),
            preclose=s(self.preclose),
            tradable=s(self.tradable),
            is_st=s(self.is_st),
        )

    def window(self, start: str | pd.Timestamp, end: str | pd.Timestamp) -> "MarketArrays":
        """Rows with ``start <= time < end`` (dates as strings or timestamps)."""
        t = pd.DatetimeIndex(self.times)
        lo = int(t.searchsorted(pd.Timestamp(start), side="left"))
        hi = int(t.searchsorted(pd.Timestamp(end), side="left"))
        if hi <= lo:
            raise DataValidationError(f"window {start}..{end} holds no bars (data spans {t[0]}..{t[-1]})")
        return self.slice(lo, hi)


def frame_hash(df: pd.DataFrame) -> str:
    """The dataset hash of a cleaned, featured long frame: sha256 of pandas' row hashes (values and
    column order, not the index). The bench records it in every manifest and checkpoint fingerprint;
    :meth:`~data_processors.processor.DataProcessor.to_arrays` puts the same hash in ``meta``."""
    import hashlib

    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def to_arrays(
    df: pd.DataFrame,
    feature_columns: list[str] | tuple[str, ...] | None = None,
    *,
    meta: dict | None = None,
) -> MarketArrays:
    """Pivot a cleaned canonical long frame (one row per time and ticker, no gaps) into arrays.

    Args:
        df: cleaned frame with ``time``, ``tic``, OHLCV and the feature columns; every ticker must
            have a row at every time (the cleaner guarantees it).
        feature_columns: the K per-asset feature columns; default: every numeric column that is not
            OHLCV, a key, or a market-wide column (``turbulence``, ``vix``).
    """
    if df.empty:
        raise DataValidationError("to_arrays: the frame is empty")
    times = pd.DatetimeIndex(pd.unique(df["time"])).sort_values()
    tickers = tuple(sorted(pd.unique(df["tic"]).tolist()))
    T, N = len(times), len(tickers)
    if len(df) != T * N:
        counts = df.groupby("tic").size()
        bad = counts[counts != T]
        raise DataValidationError(
            f"to_arrays: frame is not a full panel ({len(df)} rows for {T} times x {N} tickers); "
            f"tickers with missing rows: {bad.index.tolist()[:10]} -- clean it first"
        )
    d = df.sort_values(["time", "tic"], kind="stable")
    skip = {"time", "tic", "open", "high", "low", "close", "volume", "amount", "preclose",
            "tradestatus", "is_st", "adj_factor", "adjcp", "turbulence", "vix", "day"}
    if feature_columns is None:
        feature_columns = [c for c in d.columns if c not in skip and pd.api.types.is_numeric_dtype(d[c])]
    feature_columns = list(feature_columns)

    def panel(col: str) -> np.ndarray:
        return d[col].to_numpy().reshape(T, N)

    feats = (np.stack([panel(c) for c in feature_columns], axis=-1) if feature_columns
             else np.zeros((T, N, 0)))

    def market(col: str):
        if col not in d.columns:
            return None
        return _f32(panel(col)[:, 0])

    return MarketArrays(
        # the frame's own wall clock (UTC for schema frames; a tz-aware non-UTC frame, e.g. weekly bars
        # at local midnight, keeps its local dates): not utc_wall, which would shift them
        times=times.tz_localize(None).to_numpy() if times.tz is not None else times.to_numpy(),
        tickers=tickers,
        close=_f32(panel("close")),
        open=_f32(panel("open")),
        high=_f32(panel("high")),
        low=_f32(panel("low")),
        volume=_f32(panel("volume")),
        features=_f32(feats),
        feature_names=tuple(feature_columns),
        turbulence=market("turbulence"),
        vix=market("vix"),
        preclose=_f32(panel("preclose")) if "preclose" in d.columns else None,
        tradable=(np.ascontiguousarray(panel("tradestatus").astype(bool)) if "tradestatus" in d.columns else None),
        is_st=(np.ascontiguousarray(panel("is_st").astype(bool)) if "is_st" in d.columns else None),
        meta=dict(meta or {}),
    )
