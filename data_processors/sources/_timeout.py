"""A hard wall-clock timeout for vendor calls that may hang.

Some vendor libraries have no timeout at all (akshare's ``index_zh_a_hist``), and some block on a
raw socket (baostock's ``login()``). :func:`call_with_timeout` runs the call in a daemon thread and
stops *waiting* for it after ``timeout`` seconds. Python cannot kill a thread: a call that really
hangs keeps its (daemon) thread until the process exits, but the caller gets a
:class:`VendorTimeout` on time and the interpreter can still exit.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class VendorTimeout(TimeoutError):
    """A vendor call did not return within its hard timeout."""


def call_with_timeout(fn: Callable[..., T], timeout: float | None, /, *args: Any, **kwargs: Any) -> T:
    """Return ``fn(*args, **kwargs)``, or raise :class:`VendorTimeout` after ``timeout`` seconds.

    ``timeout=None`` (or ``<= 0``) calls ``fn`` directly in this thread. Exceptions raised by
    ``fn`` are re-raised here unchanged. ``fn`` and ``timeout`` are positional-only, so the
    vendor call may itself take a ``timeout=`` keyword.
    """
    if timeout is None or timeout <= 0:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}
    done = threading.Event()

    def _run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
        finally:
            done.set()

    name = getattr(fn, "__qualname__", getattr(fn, "__name__", "vendor-call"))
    worker = threading.Thread(target=_run, name=f"finmeta-timeout:{name}", daemon=True)
    worker.start()
    if not done.wait(timeout):
        raise VendorTimeout(f"{name} did not return within {timeout:g} s (hard timeout)")
    if "error" in box:
        raise box["error"]
    return box["value"]
