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

Secrets: a source lists the environment variables holding its credentials in ``secret_env``
(tushare: ``TUSHARE_TOKEN``; a subclass may extend :meth:`DataSource.secrets`). Every error that
leaves :meth:`DataSource.download` or :meth:`DataSource.call` has them masked as ``***``: its
message, and every exception chained to it (a chained vendor exception whose text holds a secret
is replaced by a :class:`ScrubbedVendorError` with the masked text and the original traceback).
"""

from __future__ import annotations

import abc
import bz2
import csv
import gzip
import inspect
import lzma
import os
import re
import time as _time
import zipfile
import zlib
from urllib.parse import quote, quote_plus
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import pandas as pd

from finmeta.errors import DataSourceError, DataValidationError, FinMetaError, UnknownSourceError

from ._timeout import VendorTimeout, call_with_timeout

REGISTRY: dict[str, type["DataSource"]] = {}

#: Frequencies understood across sources: "1d", "1w", "1mo", "1m", "5m", "15m", "30m", "60m", "1h".
FREQUENCIES: tuple[str, ...] = ("1d", "1w", "1mo", "1m", "5m", "15m", "30m", "60m", "1h")

T = TypeVar("T")

#: What a secret becomes in error text.
MASK = "***"


class ScrubbedVendorError(Exception):
    """Stands in, in an exception chain, for a vendor exception whose text held a secret.

    Its message is ``"<module.Type>: <masked text>"``; it carries the original traceback.
    """


def scrub_text(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """``text`` with every secret (and its URL-encoded forms) replaced by :data:`MASK`.

    Secrets of 8+ characters are masked wherever they occur; shorter ones only where they stand
    alone (not inside a longer run of letters and digits), so that a short value cannot blank out
    ordinary words of the message.
    """
    text = str(text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        for form in dict.fromkeys((secret, quote(secret, safe=""), quote_plus(secret))):
            if len(form) >= 8:
                text = text.replace(form, MASK)
            else:
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", MASK, text)
    return text


def _holds(exc: BaseException, secrets: list[str]) -> bool:
    try:
        texts = [str(exc), repr(exc.args)]
    except Exception:  # an exception whose __str__ fails: treat as unsafe
        return True
    return any(scrub_text(t, secrets) != t for t in texts)


def scrub_exception(exc: BaseException, secrets: list[str]) -> BaseException:
    """Mask ``secrets`` in ``exc`` (a FinMeta error: in place) and along its whole cause/context chain.

    A vendor exception whose text holds a secret is replaced by a :class:`ScrubbedVendorError`;
    links without secrets are kept as they are. Returns the (possibly new) exception.
    """
    secrets = [s for s in secrets if s]
    if not secrets:
        return exc
    done: dict[int, BaseException] = {}  # id(original) -> what replaces it (shared links, cycles)

    def fix(e: BaseException | None) -> BaseException | None:
        if e is None:
            return None
        if id(e) in done:
            return done[id(e)]
        out = done[id(e)] = e
        if isinstance(e, FinMetaError):
            e.args = tuple(scrub_text(a, secrets) if isinstance(a, str) else a for a in e.args)
            if isinstance(getattr(e, "cause", None), str):
                e.cause = scrub_text(e.cause, secrets)
        elif _holds(e, secrets):
            try:
                text = str(e)
            except Exception:
                text = "<unprintable>"
            out = ScrubbedVendorError(f"{type(e).__module__}.{type(e).__qualname__}: {scrub_text(text, secrets)}")
            out = out.with_traceback(e.__traceback__)
            out.__suppress_context__ = e.__suppress_context__
            cause, context = e.__cause__, e.__context__
            out.__cause__, out.__context__ = cause, context
            done[id(e)] = e = out
        e.__cause__ = fix(e.__cause__)
        e.__context__ = fix(e.__context__)
        return out

    return fix(exc)


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
    #: Environment variables holding this source's credentials: masked in every error text.
    secret_env: ClassVar[tuple[str, ...]] = ()

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
        from finmeta.timeparse import parse_date

        t0, t1 = parse_date(start, "start"), parse_date(end, "end")  # before any network call
        if t1 <= t0:
            raise DataSourceError(self.name, tickers, f"end {end} is not after start {start} (end is exclusive)")
        try:
            try:
                raw = self._fetch(tickers, start, end, freq, **kw)
            except FinMetaError:
                raise
            except ModuleNotFoundError as exc:  # the vendor's library is an optional dependency
                raise DataSourceError(self.name, tickers, f"the {exc.name!r} package is not installed; install the "
                                      f"data sources with: pip install 'finmeta[sources]'") from exc
            except Exception as exc:  # a bug or an unexpected vendor format: still one clear error
                raise DataSourceError(self.name, tickers, f"{type(exc).__name__}: {exc}") from exc
            if raw is None or (isinstance(raw, pd.DataFrame) and raw.empty):
                raise DataSourceError(self.name, tickers, f"empty result for {start}..{end} freq={freq}")
            df = self._normalize(raw, freq=freq, **kw)
        except FinMetaError as err:  # whatever the message quotes (vendor text, URLs): no secret in it
            self._scrub(err)
            raise
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

    def secrets(self) -> list[str]:
        """The secret strings to mask in error text: the values of :attr:`secret_env` now set."""
        return [v for v in (os.environ.get(k, "").strip() for k in self.secret_env) if v]

    def _scrub(self, err: BaseException) -> BaseException:
        """Mask this source's secrets in ``err`` (in place) and along its chain; see :func:`scrub_exception`."""
        return scrub_exception(err, self.secrets())

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
        permanent = False
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except FinMetaError as err:
                self._scrub(err)
                raise
            except Exception as exc:  # vendor libraries raise anything
                last = exc
                if self.is_permanent(exc):
                    permanent = True
                    break
                if attempt < self.attempts:
                    _time.sleep(delay)
                    delay *= 2
        # raised outside the except block, so the vendor exception is only the (scrubbed) cause
        if permanent:
            err = DataSourceError(self.name, tickers, f"{type(last).__name__}: {last}")
        else:
            what = "timed out" if isinstance(last, VendorTimeout) else f"{type(last).__name__}: {last}"
            err = DataSourceError(self.name, tickers, f"{what} (after {self.attempts} attempts)")
        err.__cause__ = last
        raise self._scrub(err)


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
        raise UnknownSourceError(name, sorted(REGISTRY)) from None
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
