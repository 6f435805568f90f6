"""One interface for every data source.

A source turns a vendor's raw return format into the canonical long frame
(:mod:`data_processors.schema`). The *same* normaliser serves both paths:

* ``download(tickers, start, end, freq)`` calls the vendor library (with explicit timeouts,
  bounded retries with backoff, and a :class:`~finmeta.errors.DataSourceError` naming source,
  tickers and cause; an empty download is an error), then ``normalize(raw)``;
* ``read_file(path, **options)`` reads a vendor file from disk as the vendor writes it, then
  ``normalize``.

Sources register themselves by ``name`` (and ``aliases``) in :data:`REGISTRY`;
``get_source(name)`` instantiates one and :func:`read_vendor_file` imports a file by format name
(the ``--format`` of ``finmeta data import``).

Network calls go through :meth:`DataSource.call`: a hard wall-clock timeout per attempt (a daemon
thread, see :mod:`._timeout`) on top of the vendor's own timeout, and at most ``attempts`` tries
with exponential backoff. A hard timeout cannot kill the hung thread; it only stops waiting.
"""

from __future__ import annotations

import abc
import bz2
import csv
import gzip
import inspect
import lzma
import time as _time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import pandas as pd

from finmeta.errors import DataSourceError, DataValidationError, FinMetaError

from ._timeout import VendorTimeout, call_with_timeout

REGISTRY: dict[str, type["DataSource"]] = {}

#: Frequencies understood across sources: "1d", "1w", "1mo", "1m", "5m", "15m", "30m", "60m", "1h".
FREQUENCIES: tuple[str, ...] = ("1d", "1w", "1mo", "1m", "5m", "15m", "30m", "60m", "1h")

T = TypeVar("T")


class DataSource(abc.ABC):
    """Base class of all sources.

    Subclasses set ``name`` (registry key and ``--format`` name), optional ``aliases``,
    ``calendar`` (exchange-calendars code such as ``"XNYS"``/``"XSHG"``, ``"24/7"`` for crypto,
    ``"FX"`` for forex) and implement :meth:`normalize`, and :meth:`_fetch` where the source
    downloads (each network call inside ``_fetch`` goes through :meth:`call`).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    calendar: ClassVar[str] = "XNYS"
    #: Default network timeout (seconds) for every vendor call.
    timeout: float = 30.0
    #: Attempts per call (1 + retries) and the first backoff delay (doubles each retry).
    attempts: int = 3
    backoff: float = 1.0
    #: Hard wall-clock limit per attempt = ``timeout * hard_timeout_factor`` (the vendor's own
    #: timeout applies per HTTP request; one library call may make a few).
    hard_timeout_factor: float = 2.0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            REGISTRY[cls.name] = cls
            for alias in cls.__dict__.get("aliases", ()):
                REGISTRY[alias] = cls

    def __init__(
        self,
        timeout: float | None = None,
        attempts: int | None = None,
        backoff: float | None = None,
        hard_timeout_factor: float | None = None,
    ) -> None:
        if timeout is not None:
            if timeout <= 0:
                raise DataSourceError(self.name, [], f"timeout must be > 0 seconds, not {timeout}")
            self.timeout = float(timeout)
        if attempts is not None:
            if attempts < 1:
                raise DataSourceError(self.name, [], f"attempts must be >= 1, not {attempts}")
            self.attempts = int(attempts)
        if backoff is not None:
            self.backoff = float(backoff)
        if hard_timeout_factor is not None:
            self.hard_timeout_factor = float(hard_timeout_factor)

    # -- public API ---------------------------------------------------------------------------
    def download(self, tickers: list[str], start: str, end: str, freq: str = "1d", **kw) -> pd.DataFrame:
        """Download ``tickers`` over ``[start, end)`` and return the canonical frame.

        Every vendor call inside is retried and time-limited (:meth:`call`); any failure ends as
        one :class:`DataSourceError` naming source, tickers and cause. An empty result is an error.
        """
        tickers = [tickers] if isinstance(tickers, str) else list(tickers)
        if not tickers:
            raise DataSourceError(self.name, tickers, "no tickers given")
        if freq not in FREQUENCIES:
            raise DataSourceError(self.name, tickers, f"unknown freq {freq!r}; choose one of {FREQUENCIES}")
        try:
            raw = self._fetch(tickers, start, end, freq, **kw)
        except FinMetaError:
            raise
        except Exception as exc:  # a bug or an unexpected vendor format: still one clear error
            raise DataSourceError(self.name, tickers, f"{type(exc).__name__}: {exc}") from exc
        if raw is None or (isinstance(raw, pd.DataFrame) and raw.empty):
            raise DataSourceError(self.name, tickers, f"empty result for {start}..{end} freq={freq}")
        df = self._normalize(raw, freq=freq, **kw)
        if df.empty:
            raise DataSourceError(self.name, tickers, f"no rows left after normalisation for {start}..{end}")
        return df

    def read_file(self, path: str | Path, **options) -> pd.DataFrame:
        """Read a vendor file (CSV, optionally compressed) as the vendor writes it and normalise it.

        ``options`` are the source's file options (see each source's ``normalize``). Unreadable or
        malformed input raises one :class:`DataValidationError` naming the file.
        """
        path = Path(path)
        if not path.is_file():
            raise DataValidationError(f"{path}: no such file")
        try:
            if not is_parquet(path):
                check_text_complete(path)
            raw = self._read_raw(path, **options)
        except FinMetaError:
            raise
        except READ_ERRORS as exc:
            raise DataValidationError(f"{path}: cannot read as {self.name!r} file: {_reason(exc)}") from None
        self._check_options(path, options)
        df = self._normalize(raw, path=path, **options)
        if df.empty:
            raise DataValidationError(f"{path}: no price rows in this {self.name!r} file")
        return df

    @abc.abstractmethod
    def normalize(self, raw: pd.DataFrame, **options) -> pd.DataFrame:
        """Vendor raw format -> canonical frame (sorted by time, tic; unique keys)."""

    # -- for subclasses -----------------------------------------------------------------------
    def _fetch(self, tickers: list[str], start: str, end: str, freq: str, **kw) -> pd.DataFrame:
        raise DataSourceError(self.name, tickers, "this source cannot download; import its files instead")

    def _read_raw(self, path: Path, **options) -> pd.DataFrame:
        """The vendor file as a raw frame (default: CSV; gzip etc. by suffix)."""
        return pd.read_csv(path)

    def _normalize(self, raw: pd.DataFrame, **options) -> pd.DataFrame:
        """Call :meth:`normalize` with the options its signature accepts."""
        params = inspect.signature(self.normalize).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            options = {k: v for k, v in options.items() if k in params}
        return self.normalize(raw, **options)

    def file_options(self) -> list[str]:
        """The keyword options :meth:`read_file` accepts for this source."""
        params = inspect.signature(self.normalize).parameters.values()
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "path"]

    def _check_options(self, path: Path, options: dict) -> None:
        allowed = self.file_options()
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise DataValidationError(
                f"{path}: option(s) {unknown} do not apply to format {self.name!r}; it takes {allowed}"
            )

    def is_permanent(self, exc: BaseException) -> bool:
        """True for failures that a retry cannot fix (bad credentials, unknown symbol)."""
        return False

    def call(
        self, fn: Callable[..., T], *args: Any, tickers: Any = (), hard_timeout: float | None = None, **kwargs: Any
    ) -> T:
        """One vendor call with a hard timeout per attempt and bounded retries with backoff."""
        limit = hard_timeout if hard_timeout is not None else self.timeout * self.hard_timeout_factor
        return self.with_retries(lambda: call_with_timeout(fn, limit, *args, **kwargs), tickers)

    def with_retries(self, fn: Callable[[], T], tickers: Any) -> T:
        """Call ``fn`` up to ``attempts`` times with exponential backoff; wrap failures.

        :class:`DataSourceError` and :meth:`is_permanent` failures are not retried.
        """
        last: BaseException | None = None
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except FinMetaError:
                raise
            except Exception as exc:  # vendor libraries raise anything
                last = exc
                if self.is_permanent(exc):
                    raise DataSourceError(self.name, tickers, f"{type(exc).__name__}: {exc}") from exc
                if attempt < self.attempts:
                    _time.sleep(delay)
                    delay *= 2
        what = "timed out" if isinstance(last, VendorTimeout) else f"{type(last).__name__}: {last}"
        raise DataSourceError(self.name, tickers, f"{what} (after {self.attempts} attempts)") from last


#: What reading a damaged or foreign file raises (parsers, decoders, decompressors).
READ_ERRORS: tuple[type[BaseException], ...] = (
    pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError, EOFError,
    zlib.error, lzma.LZMAError, zipfile.BadZipFile, csv.Error)

_OPENERS: dict[str, Callable[[Path], Any]] = {
    ".gz": lambda p: gzip.open(p, "rb"),
    ".bz2": lambda p: bz2.open(p, "rb"),
    ".xz": lambda p: lzma.open(p, "rb"),
}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return f"the compressed stream ends early ({exc}): the file is truncated"
    if isinstance(exc, (zlib.error, gzip.BadGzipFile, lzma.LZMAError, zipfile.BadZipFile)):
        return f"the compressed data is damaged ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ValueError, OSError)) else str(exc)


def is_parquet(path: Path) -> bool:
    with open(path, "rb") as fh:
        return path.suffix.lower() in (".parquet", ".pq") or fh.read(4) == b"PAR1"


def check_text_complete(path: Path, chunk: int = 1 << 20) -> None:
    """Refuse a text (CSV) file that was cut short, before any parsing.

    Decompresses ``.gz``/``.bz2``/``.xz`` (a truncated stream fails here, named as such) and looks
    at the first lines and the last one: the file must end with a newline, and its last line must
    have as many comma-separated fields as the widest of its first three lines (the header; a
    CryptoDataDownload banner line has fewer). A file cut mid-line fails one of the two; a
    complete file passes both. Zip archives are left to pandas.
    """
    opener = _OPENERS.get(path.suffix.lower())
    if path.suffix.lower() == ".zip":
        return
    head = b""
    tail = b""
    with (opener(path) if opener else open(path, "rb")) as fh:
        if opener is None:  # plain file: the head, then seek to the tail
            head = fh.read(chunk)
            size = path.stat().st_size
            if size > chunk:
                fh.seek(max(size - chunk, 0))
                tail = fh.read()
            else:
                tail = head
        else:
            for block in iter(lambda: fh.read(chunk), b""):
                if len(head) < chunk:
                    head += block[: chunk - len(head)]
                tail = (tail + block)[-chunk:]
    if not tail.strip():
        return  # empty file: pandas raises EmptyDataError with its own message
    text_head = head.decode("utf-8", errors="replace").splitlines()[:3]
    stripped = tail.rstrip(b" \t")
    lines = [line for line in tail.decode("utf-8", errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    n_lines = "the last line"
    if not stripped.endswith((b"\n", b"\r")):
        raise DataValidationError(
            f"{path}: {n_lines} ({last[:80]!r}) has no final newline: the file looks cut short; if it is complete, "
            f"end it with a newline")
    if len(text_head) > 1:
        width = max(_fields(line) for line in text_head)
        got = _fields(last)
        if got < width:
            raise DataValidationError(
                f"{path}: {n_lines} ({last[:80]!r}) has {got} field(s), the header has {width}: the file looks cut short")


def _fields(line: str) -> int:
    try:
        row = next(csv.reader([line]))
    except (StopIteration, csv.Error):
        return 0
    return len(row)


def get_source(name: str, **kwargs) -> DataSource:
    """Instantiate the registered source ``name`` (aliases such as ``yahoofinance`` work too)."""
    from data_processors import sources as _  # noqa: F401  (imports every source module)

    try:
        cls = REGISTRY[name]
    except KeyError:
        raise DataSourceError(name, [], f"unknown source; choose one of {sorted(REGISTRY)}") from None
    return cls(**kwargs)


def formats() -> dict[str, str]:
    """``{format name: one-line description}`` of every registered source (aliases left out)."""
    from data_processors import sources as _  # noqa: F401  (imports every source module)

    out = {}
    for key, cls in sorted(REGISTRY.items()):
        if key != cls.name:
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        out[key] = doc[0] if doc else key
    return out


def read_vendor_file(path: str | Path, fmt: str, **options) -> pd.DataFrame:
    """Import one vendor file: ``get_source(fmt).read_file(path, **options)``.

    This is what ``finmeta data import FILE --format FMT`` calls. ``fmt`` is a registry key
    (``canonical, yahoo, akshare, tushare, baostock, binance, netease, fx``; aliases
    ``yahoofinance``, ``forex``). Returns the canonical frame; errors are
    :class:`DataValidationError` (bad file) or :class:`DataSourceError` (unknown format).
    """
    return get_source(fmt).read_file(path, **options)
