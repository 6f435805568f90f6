"""File-system primitives every layer shares: one atomic writer and one advisory lock.

``write_atomic(path, data)``
    Writes ``data`` to a temporary file in the same folder, flushes and ``fsync``-s it, then
    ``os.replace``-s it over ``path`` (atomic on POSIX and Windows). A crash or error before the
    rename leaves the previous file (or none) and no temporary file behind (on errors; a SIGKILL
    can leave a ``.<name>.*.tmp`` file, which ``finmeta data check`` removes from the store).

``file_lock(path, shared=False)``
    Holds a POSIX ``flock`` on ``path`` (created empty if absent; it stays) for the ``with``
    block: exclusive for writers, shared for readers. The lock belongs to the open file, so it
    serializes threads of one process too, and the kernel releases it when the process dies (no
    stale locks). Without ``fcntl`` (Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or ``shared``) ``flock`` on ``path`` while the block runs (blocks until free)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
