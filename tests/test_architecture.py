"""Layer contracts of issue 12: the kernel's backend protocol and the one annualisation rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meta.backend import Backend, NumpyBackend, TorchBackend, get_backend

ROOT = Path(__file__).resolve().parents[1]


def _protocol_members() -> set[str]:
    names = set(getattr(Backend, "__annotations__", {}))
    names |= {k for k, v in vars(Backend).items() if callable(v) and not k.startswith("_")}
    return names


def test_both_backends_implement_the_backend_protocol():
    assert isinstance(get_backend("numpy"), Backend)
    assert isinstance(get_backend("torch"), Backend)
    members = _protocol_members()
    for backend in (NumpyBackend("float64"), TorchBackend("float64")):
        missing = [m for m in members if not hasattr(backend, m)]
        assert not missing, (type(backend).__name__, missing)


def test_the_protocol_lists_every_backend_operation_the_env_layer_calls():
    used: set[str] = set()
    for f in ("kernel.py", "schemes.py", "envs.py"):
        text = (ROOT / "meta" / f).read_text()
        used |= set(re.findall(r"\bB\.([a-z_][a-z0-9_]*)", text))
    used.discard("torch")  # the torch module itself, reached only behind `B.name == "torch"`
    assert used, "no backend calls found"
    assert used <= _protocol_members(), sorted(used - _protocol_members())
