"""``DataProcessor``: the FinRL-Meta-style chain built on the data layer's pieces.

::

    p = DataProcessor("yahoo")                       # a source name (data_processors.sources)
    p.download(["AAPL", "MSFT"], "2020-01-01", "2021-01-01")   # or p.import_file(path) / p.load(name)
    p.clean()                                        # exchange calendar, forward fill only
    p.add_features(vix=vix_frame)                    # indicators, VIX, turbulence, sentiment
    p.save("dow_features")                           # Parquet + manifest (optional)
    arrays = p.to_arrays()                           # MarketArrays for the env layer

Each step returns ``self`` (chainable) and keeps the current frame in :attr:`df`; the cleaning
report is :attr:`report`, and :attr:`steps` records every step's parameters (stored in the
manifest by :meth:`save`). FinRL-Meta's names (``download_data``, ``clean_data``,
``add_technical_indicator``, ``df_to_array``) are aliases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from finmeta.errors import DataValidationError

from .arrays import MarketArrays, frame_hash, to_arrays
from .clean import CleanReport, clean, repair_ohlc, validate
from .schema import DEFAULT_INDICATORS
from .store import load_dataset, save_dataset


class DataProcessor:
    """Source -> download/import -> clean -> features -> arrays.

    Args:
        source: a registered source name (``yahoo``, ``baostock``, ``binance``, ``fx``,
            ``synthetic``, ``canonical``, ...) or None when starting from :meth:`load`/:meth:`from_frame`.
        calendar: trading calendar for :meth:`clean` (default: the source's own calendar).
        **source_kwargs: passed to ``get_source(source, **source_kwargs)``.
    """

    def __init__(self, source: str | None = None, *, calendar: str | None = None, **source_kwargs: Any) -> None:
        self.source_name = source
        self._source = None
        self._source_kwargs = source_kwargs
        self.calendar = calendar
        self.df: pd.DataFrame | None = None
        self.report: CleanReport | None = None
        self.steps: list[dict[str, Any]] = []
        self.freq: str | None = None

    # -- input --------------------------------------------------------------------------------
    @property
    def source(self):
        """The :class:`~data_processors.sources.base.DataSource` instance (created on first use)."""
        if self._source is None:
            if not self.source_name:
                raise DataValidationError("DataProcessor: no source given; pass DataProcessor('yahoo', ...)")
            from .sources import get_source

            self._source = get_source(self.source_name, **self._source_kwargs)
        return self._source

    def _calendar(self) -> str:
        if self.calendar:
            return self.calendar
        if self.df is not None and self.df.attrs.get("calendar"):
            return str(self.df.attrs["calendar"])
        if self.source_name:
            return str(getattr(self.source, "calendar", "XNYS"))
        return "XNYS"

    def download(self, tickers: Iterable[str] | str, start: str, end: str, freq: str = "1d", *,
                 on_bad_ohlc: str = "error", **kw: Any) -> "DataProcessor":
        """Download ``tickers`` over ``[start, end)`` through the source; validates the result.

        ``on_bad_ohlc``: ``"error"``, ``"clip"`` or ``"drop"`` (:func:`~data_processors.clean.repair_ohlc`).
        """
        tickers = [tickers] if isinstance(tickers, str) else list(tickers)
        df = self.source.download(tickers, start, end, freq, **kw)
        df, ohlc = repair_ohlc(df, on_bad_ohlc, f"{self.source_name} download")
        self.freq = validate(df, where=f"{self.source_name} download")
        self.df = df
        self.steps.append({"step": "download", "source": self.source_name, "tickers": tickers,
                           "start": str(start), "end": str(end), "freq": freq, **_plain(kw), "ohlc_repair": ohlc})
        return self

    def import_file(self, path: str | Path, *, on_bad_ohlc: str = "error", **options: Any) -> "DataProcessor":
        """Read a vendor file through the source's normaliser; validates the result (``on_bad_ohlc`` as in :meth:`download`)."""
        df = self.source.read_file(path, **options)
        df, ohlc = repair_ohlc(df, on_bad_ohlc, str(path))
        self.freq = validate(df, where=str(path))
        self.df = df
        self.steps.append({"step": "import", "source": self.source_name, "file": Path(path).name, **_plain(options),
                           "ohlc_repair": ohlc})
        return self

    def load(self, name: str) -> "DataProcessor":
        """Start from a stored dataset (hash-checked)."""
        from .store import stored_calendar

        self.df = load_dataset(name)
        if not self.calendar:  # cleaned on the calendar it was stored on, as the bench does
            self.calendar = stored_calendar(name)
        self.steps.append({"step": "load", "dataset": name})
        return self

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, calendar: str | None = None, source: str | None = None) -> "DataProcessor":
        """Start from a canonical frame already in memory."""
        p = cls(source, calendar=calendar)
        p.df = df
        p.steps.append({"step": "frame", "rows": len(df)})
        return p

    # -- processing ---------------------------------------------------------------------------
    def _need(self) -> pd.DataFrame:
        if self.df is None:
            raise DataValidationError("DataProcessor: no data yet; call download(), import_file() or load() first")
        return self.df

    def clean(self, **kw: Any) -> "DataProcessor":
        """:func:`data_processors.clean.clean` with this processor's calendar; keeps the report."""
        df = self._need()
        kw.setdefault("calendar", self._calendar())
        kw.setdefault("where", self.source_name or "frame")
        self.df, self.report = clean(df, **kw)
        self.freq = self.report.freq
        self.steps.append({"step": "clean", **_plain({k: v for k, v in kw.items() if k != "where"}),
                           "report": self.report.to_dict()})
        return self

    def add_features(
        self,
        *,
        indicators: Iterable[str] | None = DEFAULT_INDICATORS,
        engine: str = "stockstats",
        vix: Any = None,
        turbulence: bool = True,
        turbulence_window: int = 252,
        sentiment: Any = None,
    ) -> "DataProcessor":
        """Indicators / VIX / turbulence / sentiment (``data_processors.features.pipeline.add_features``).

        Cleans first when :meth:`clean` has not run (features need a full panel).
        """
        from .features.pipeline import add_features

        indicators = tuple(indicators or ())
        if self.report is None:
            self.clean()
        self.df = add_features(self._need(), indicators=tuple(indicators), engine=engine, vix=vix,
                               turbulence=turbulence, turbulence_window=turbulence_window, sentiment=sentiment)
        self.steps.append({"step": "features", "indicators": list(indicators), "engine": engine,
                           "vix": None if vix is None else (vix if isinstance(vix, str) else "frame"),
                           "turbulence": turbulence, "turbulence_window": turbulence_window,
                           "sentiment": sentiment is not None})
        return self

    # -- output -------------------------------------------------------------------------------
    def to_arrays(self, feature_columns: list[str] | None = None, *, meta: dict | None = None) -> MarketArrays:
        """The cleaned frame as :class:`MarketArrays` (cleans first when needed)."""
        if self.report is None:
            self.clean()
        m = {"source": self.source_name, "freq": self.freq, "calendar": self._calendar(),
             "dataset_hash": frame_hash(self._need())}  # the bench's hash of the same frame
        m.update(meta or {})
        return to_arrays(self._need(), feature_columns, meta=m)

    def save(self, name: str, **params: Any) -> dict:
        """Store the current frame as dataset ``name``; the manifest records every step."""
        return save_dataset(name, self._need(), source=self.source_name or "frame",
                            params={"steps": self.steps, **params})

    # -- FinRL-Meta names ---------------------------------------------------------------------
    def download_data(self, ticker_list, start_date, end_date, time_interval="1d", **kw) -> pd.DataFrame:
        """FinRL-Meta alias of :meth:`download`; returns the frame."""
        return self.download(ticker_list, start_date, end_date, time_interval, **kw).df

    def clean_data(self, **kw) -> pd.DataFrame:
        """FinRL-Meta alias of :meth:`clean`; returns the frame."""
        return self.clean(**kw).df

    def add_technical_indicator(self, tech_indicator_list=DEFAULT_INDICATORS, **kw) -> pd.DataFrame:
        """FinRL-Meta alias: indicators only (no VIX, no turbulence); returns the frame."""
        kw.setdefault("turbulence", False)
        return self.add_features(indicators=tech_indicator_list, **kw).df

    def df_to_array(self, feature_columns: list[str] | None = None) -> MarketArrays:
        """FinRL-Meta alias of :meth:`to_arrays`."""
        return self.to_arrays(feature_columns)


def _plain(d: dict) -> dict:
    """Keyword arguments as JSON-friendly values (frames are summarised)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, pd.DataFrame):
            out[k] = f"<frame {len(v)} rows>"
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [str(x) for x in v]
        else:
            out[k] = str(v)
    return out
