"""Installed library versions, for dataset and run manifests (one collector for both)."""

from __future__ import annotations

from importlib import metadata
from typing import Iterable


def library_versions(names: Iterable[str], *, missing: str = "none") -> dict[str, str | None]:
    """``{name: version}`` of the installed distributions ``names``.

    ``missing="none"`` maps a distribution that is not installed to None (run manifests list every
    library they care about); ``missing="skip"`` leaves it out (dataset manifests).
    """
    if missing not in ("none", "skip"):
        raise ValueError(f"missing={missing!r}; use 'none' or 'skip'")
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if missing == "none":
                out[name] = None
    return out
