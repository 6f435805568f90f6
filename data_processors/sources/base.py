"""One interface for every data source.

A source turns a vendor's raw return format into the canonical long frame
(:mod:`data_processors.schema`). The *same* normaliser serves both paths:

* ``download(tickers, start, end, freq)`` calls the vendor library (with explicit timeouts,
  bounded retries with backoff, and a :class:`~finmeta.errors.DataSourceError` naming source,
  tickers and cause; an empty download is an error), then ``normalize(raw)``;
* ``read_file(path)`` reads a vendor file from disk as the vendor writes it, then ``normalize``.

Sources register themselves by ``name`` in :data:`REGISTRY`; ``get_source(name)`` instantiates one.
"""

from __future__ import annotations

import abc
import time as _time
from pathlib import Path
from typing import Callable, ClassVar, TypeVar

import pandas as pd

from finmeta.errors import DataSourceError

REGISTRY: dict[str, type["DataSource"]] = {}

#: Frequencies understood across sources: "1d", "1w", "1mo", "1m", "5m", "15m", "30m", "60m", "1h".
FREQUENCIES: tuple[str, ...] = ("1d", "1w", "1mo", "1m", "5m", "15m", "30m", "60m", "1h")

T = TypeVar("T")


class DataSource(abc.ABC):
    """Base class of all sources.

    Subclasses set ``name`` (registry key and ``--format`` name), ``calendar`` (exchange-calendars
    code such as ``"XNYS"``/``"XSHG"``, ``"24/7"`` for crypto, ``"FX"`` for forex) and implement
    :meth:`normalize`, and :meth:`_fetch` where the source downloads.
    """

    name: ClassVar[str] = ""
    calendar: ClassVar[str] = "XNYS"
    #: Default network timeout (seconds) for every vendor call.
    timeout: float = 30.0
    #: Attempts per call (1 + retries) and the first backoff delay (doubles each retry).
    attempts: int = 3
    backoff: float = 1.0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls

    # -- public API ---------------------------------------------------------------------------
    def download(self, tickers: list[str], start: str, end: str, freq: str = "1d", **kw) -> pd.DataFrame:
        """Download ``tickers`` over ``[start, end)`` and return the canonical frame."""
        tickers = list(tickers)
        raw = self.with_retries(lambda: self._fetch(tickers, start, end, freq, **kw), tickers)
        if raw is None or (isinstance(raw, pd.DataFrame) and raw.empty):
            raise DataSourceError(self.name, tickers, f"empty result for {start}..{end} freq={freq}")
        df = self.normalize(raw)
        if df.empty:
            raise DataSourceError(self.name, tickers, f"no rows left after normalisation for {start}..{end}")
        return df

    def read_file(self, path: str | Path) -> pd.DataFrame:
        """Read a vendor file (CSV, optionally gzip) and normalise it."""
        return self.normalize(pd.read_csv(path))

    @abc.abstractmethod
    def normalize(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Vendor raw format -> canonical frame (sorted by time, tic; unique keys)."""

    # -- for subclasses -----------------------------------------------------------------------
    def _fetch(self, tickers: list[str], start: str, end: str, freq: str, **kw) -> pd.DataFrame:
        raise DataSourceError(self.name, tickers, "this source cannot download; import its files instead")

    def with_retries(self, fn: Callable[[], T], tickers: list[str]) -> T:
        """Call ``fn`` up to ``attempts`` times with exponential backoff; wrap failures."""
        last: BaseException | None = None
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except DataSourceError:
                raise
            except Exception as exc:  # vendor libraries raise anything
                last = exc
                if attempt < self.attempts:
                    _time.sleep(delay)
                    delay *= 2
        raise DataSourceError(self.name, tickers, f"{type(last).__name__}: {last} (after {self.attempts} attempts)")


def get_source(name: str, **kwargs) -> DataSource:
    """Instantiate the registered source ``name``."""
    from data_processors import sources as _  # noqa: F401  (imports every source module)

    try:
        cls = REGISTRY[name]
    except KeyError:
        raise DataSourceError(name, [], f"unknown source; choose one of {sorted(REGISTRY)}") from None
    return cls(**kwargs)
