"""Peer implementations (FinRL 0.3.7 code loaded by file path) for parity tests and benchmarks.

FinRL 0.3.7 is installed with ``--no-deps`` (``benchmarks/peers/install_peers.sh``): importing the
``finrl`` *package* fails on its old pins, so the peers execute single FinRL files by path, with
stub modules in ``sys.modules`` only while the file runs (:func:`exec_finrl_file`).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from finmeta.errors import FinMetaError

__all__ = ["FinRLNotInstalled", "finrl_root", "exec_finrl_file"]


class FinRLNotInstalled(FinMetaError):
    """finrl (0.3.7, installed with --no-deps) is not importable by file path."""


def finrl_root() -> Path:
    """The folder of the installed ``finrl`` package, found without importing it."""
    spec = importlib.util.find_spec("finrl")
    if spec is None or not spec.submodule_search_locations:
        raise FinRLNotInstalled(
            "finrl is not installed: run benchmarks/peers/install_peers.sh "
            "(pip install --no-deps finrl==0.3.7 elegantrl==0.3.6)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def exec_finrl_file(name: str, path: Path, stubs: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """Execute the FinRL source file ``path`` as a private module called ``name``.

    ``stubs`` are put into ``sys.modules`` while the file executes and the previous entries are
    restored afterwards, whatever happens. A missing dependency raises :class:`FinRLNotInstalled`.
    """
    if not path.is_file():
        raise FinRLNotInstalled(f"finrl file not found: {path} (expected finrl==0.3.7)")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FinRLNotInstalled(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    stubs = dict(stubs or {})
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:  # a missing dependency of the file itself
        raise FinRLNotInstalled(f"cannot load {path}: {exc}") from exc
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module
