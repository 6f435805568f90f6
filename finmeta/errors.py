"""Errors shared by every layer.

Every error a user can cause derives from :class:`FinMetaError`. The command line prints such an
error as one line (what is wrong, what to do) and exits with code 2; ``--debug`` shows the traceback.
Messages must name the file, ticker, row or parameter at fault.
"""

from __future__ import annotations


class FinMetaError(Exception):
    """Base class of all user-facing errors."""


class DataSourceError(FinMetaError):
    """A vendor download failed (network, timeout, empty result, bad credentials).

    Always names the source, the tickers and the cause.
    """

    def __init__(self, source: str, tickers: object, cause: str) -> None:
        self.source = source
        self.tickers = list(tickers) if isinstance(tickers, (list, tuple, set)) else tickers
        self.cause = cause
        super().__init__(f"{source}: download of {self.tickers} failed: {cause}")


class DataValidationError(FinMetaError):
    """A frame or file does not satisfy the canonical schema (names file/ticker/row)."""


class DatasetIntegrityError(FinMetaError):
    """A stored dataset's content hash does not match its manifest (truncated or tampered)."""


class ConfigError(FinMetaError):
    """A configuration value is invalid (names the key)."""


class InvalidActionError(FinMetaError, ValueError):
    """An action handed to an env step is unusable (wrong shape or dtype, NaN / inf, None).

    Names the sub-env and the asset at fault. Raised before the kernel touches the books, so the
    account state is unchanged.
    """


class UnknownSourceError(ConfigError, DataSourceError):
    """A source / file format name that is not registered: a configuration mistake, not a failed
    download (still a :class:`DataSourceError` for callers that catch that)."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.source, self.tickers = name, []
        self.cause = f"unknown source; choose one of {known}"
        FinMetaError.__init__(self, f"{name!r}: unknown source (or file format); choose one of {known}")

