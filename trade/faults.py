"""Fault injection for the crash-safety tests: kill the process at a named point.

``FINMETA_TRADE_FAULT="<point>:<n>"`` makes the trade process SIGKILL itself the n-th time (1-based)
it reaches ``<point>``. Points, in the order a bar passes them: ``bar_start``, ``after_advance``
(the paper broker filled the previous bar's orders), ``after_reconcile``, ``after_submit`` (an order
reached the broker, the bar's transaction is not committed yet), ``before_commit``,
``after_commit``. Unset (always, outside tests) it costs one dict lookup per point.
"""

from __future__ import annotations

import os
import signal

POINTS = ("bar_start", "after_advance", "after_reconcile", "after_submit", "before_commit", "after_commit")
_seen: dict[str, int] = {}


def hit(point: str) -> None:
    spec = os.environ.get("FINMETA_TRADE_FAULT")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
