"""One-line, key-free error text for the brokers (trade/alpaca_broker.py, trade/ccxt_broker.py)."""

from __future__ import annotations

from collections.abc import Iterable

MAX_LEN = 300


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s ``__cause__`` / ``__context__`` chain (``exc`` if none)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def one_line(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``, whitespace collapsed, cut to 300 characters."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = " ".join(text.split())
    return text if len(text) <= MAX_LEN else text[: MAX_LEN - 3] + "..."


def describe(exc: BaseException, secrets: Iterable[str]) -> str:
    """``Type (RootType: root message): message``, one line, without the secrets: the socket-level
    root cause (refused connection, timeout, DNS) first, as SDKs wrap it into vaguer messages."""
    root = root_cause(exc)
    head = type(exc).__name__
    # the socket-level cause (refused, timeout, DNS), not an HTTP error whose body the SDK already quotes
    if root is not exc and getattr(root, "response", None) is None and str(root) and str(root) not in str(exc)[:80]:
        head += f" ({type(root).__name__}: {root})"
    return one_line(f"{head}: {exc}", secrets)
