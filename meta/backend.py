"""A tiny array backend: the ~30 operations the market kernel needs (:class:`Backend`), for numpy and torch.

The kernel (``meta/kernel.py``) is written once. Arithmetic, comparisons, ``x.sum(1)``,
``x.cumsum(1)``, ``x.reshape(-1)[idx]`` and ``x[idx]`` (row gathers) are spelled the same in numpy
and torch, so the kernel uses them directly; everything that differs between the two libraries goes
through a backend object. The numpy backend binds numpy's functions directly (no wrapper call on
the hot path); the torch backend wraps torch's where the signatures differ.
"""

from __future__ import annotations

from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Protocol,
    Sequence,
    Union,
    runtime_checkable,
)

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from finmeta.errors import ConfigError

if TYPE_CHECKING:  # annotations only: torch is imported lazily, by TorchBackend
    import torch

#: an array of the backend: ``numpy.ndarray`` (numpy backend) or ``torch.Tensor`` (torch backend).
#: Shape names in the docstrings: E envs, N assets, T bars, D observation width, A action width.
Array = Any
#: a dtype of the backend (``numpy.dtype`` or ``torch.dtype``)
DType = Any
Shape = Union[int, Sequence[int]]


@runtime_checkable
class Backend(Protocol):
    """The operations the market kernel (``meta/kernel.py``, ``meta/schemes.py``, ``meta/envs.py``)
    calls on its backend object ``B``; :class:`NumpyBackend` and :class:`TorchBackend` implement it.

    What numpy and torch spell the same (arithmetic, comparisons, ``x.sum(1)``, ``x.reshape(-1)``,
    ``x[idx]``) is used on the arrays directly and is not listed. A new kernel term written with
    these operations only runs on both backends. Row-wise operations take ``(E, N)`` arrays.
    """

    #: ``"numpy"`` or ``"torch"``
    name: str
    #: ``"cpu"`` (numpy) or a ``torch.device``
    device: Any
    #: the kernel's float dtype (``EnvConfig.dtype``), int64, bool and float32 (observations)
    float: DType
    int: DType
    bool: DType
    f32: DType

    # elementwise (``a`` / ``b`` may be Python scalars where the kernel passes one)
    where: Callable[[Array, Any, Any], Array]
    minimum: Callable[[Any, Any], Array]
    maximum: Callable[[Any, Any], Array]
    floor: Callable[[Array], Array]
    trunc: Callable[[Array], Array]
    floordiv: Callable[[Array, Any], Array]
    abs: Callable[[Array], Array]
    log: Callable[[Array], Array]
    exp: Callable[[Array], Array]
    sqrt: Callable[[Array], Array]
    isfinite: Callable[[Array], Array]

    # reductions and gathers
    def rsum(self, x: Array) -> Array:
        """Row sums: ``(E, N) -> (E,)``."""

    def any(self, x: Array) -> bool:
        """Whether any element of a bool array is true (a Python bool: syncs a GPU)."""

    def rows(self, x: Array, t: Array) -> Array:
        """Row gather ``x[t]``: ``(T, ...)`` table and ``(E,)`` int bar indices -> ``(E, ...)``."""

    def nonzero(self, x: Array) -> Array:
        """Indices of the true entries of a 1-D bool array, ``(M,)`` int."""

    def amax(self, x: Array) -> Array:
        """Row maxima: ``(E, N) -> (E,)``."""

    # construction / conversion
    def asarray(self, x: Any, dtype: DType | None = None) -> Array:
        """``x`` (numpy, list, scalar or a backend array) as a backend array on the backend's device."""

    def zeros(self, shape: Shape, dtype: DType | None = None) -> Array:
        """Zeros (default dtype: :attr:`float`)."""

    def full(self, shape: Shape, value: Any, dtype: DType | None = None) -> Array:
        """Filled with ``value`` (default dtype: :attr:`float`)."""

    def arange(self, n: int) -> Array:
        """``0 .. n-1`` as int64, ``(n,)``."""

    def astype(self, x: Array, dtype: DType) -> Array:
        """``x`` converted to ``dtype`` (a copy)."""

    def copy(self, x: Array) -> Array:
        """A copy of ``x`` (state arrays are rebound, never written in place, see ``reset``)."""

    def to_numpy(self, x: Array) -> np.ndarray:
        """A numpy view or copy on the CPU."""

    # shape / ordering
    def concat(self, parts: Sequence[Array], dtype: DType | None = None) -> Array:
        """Concatenate ``(E, n_i)`` parts along axis 1 -> ``(E, sum n_i)``."""

    def tcopy(self, x: Array) -> Array:
        """Contiguous transpose of a 2-D array: ``(E, N) -> (N, E)``."""

    def argsort(self, x: Array, stable: bool) -> Array:
        """Row-wise argsort ``(E, N) -> (E, N)`` int (``stable=False``: numpy's default, FinRL's)."""

    def flip(self, x: Array) -> Array:
        """Reverse the columns of an ``(E, N)`` array."""

    def exp_softmax(self, x: Array) -> Array:
        """Row-wise softmax ``(E, N) -> (E, N)``."""


class NumpyBackend:
    """numpy on the CPU (the reference backend)."""

    name = "numpy"
    device = "cpu"

    def __init__(self, dtype: str = "float64") -> None:
        self.float = np.dtype(dtype)
        self.int = np.dtype(np.int64)
        self.bool = np.dtype(np.bool_)
        self.f32 = np.dtype(np.float32)
        # direct bindings: no Python wrapper between the kernel and numpy
        self.where = np.where
        self.minimum = np.minimum
        self.maximum = np.maximum
        self.floor = np.floor
        self.trunc = np.trunc
        self.floordiv = np.floor_divide
        self.abs = np.abs
        self.log = np.log
        self.exp = np.exp
        self.sqrt = np.sqrt
        self.isfinite = np.isfinite
        # C-level partials / one-line lambdas: the cheapest calls numpy offers for tiny arrays
        self.rsum = partial(np.add.reduce, axis=1)            # row sums of (E, N)
        _or = np.logical_or.reduce
        self.any = lambda x: bool(x[0]) if x.size == 1 else bool(_or(x, axis=None))
        self.rows = lambda x, t: x.take(t, 0)                 # x[t] for an (E,) int index
        self.nonzero = lambda x: x.nonzero()[0]              # 1-D
        self.astype = np.ndarray.astype
        self.copy = np.ndarray.copy

    # construction / conversion -------------------------------------------------------------
    def asarray(self, x: Any, dtype: npt.DTypeLike = None) -> NDArray[Any]:
        return np.asarray(x, dtype=dtype)

    def zeros(self, shape: Shape, dtype: npt.DTypeLike = None) -> NDArray[Any]:
        """Zeros of ``shape`` (default dtype: :attr:`float`)."""
        return np.zeros(shape, dtype=self.float if dtype is None else dtype)

    def full(self, shape: Shape, value: Any, dtype: npt.DTypeLike = None) -> NDArray[Any]:
        """``shape`` filled with the scalar ``value`` (default dtype: :attr:`float`)."""
        return np.full(shape, value, dtype=self.float if dtype is None else dtype)

    def arange(self, n: int) -> NDArray[np.int64]:
        return np.arange(n, dtype=np.int64)

    def to_numpy(self, x: npt.ArrayLike) -> NDArray[Any]:
        return np.asarray(x)

    # shape / ordering ------------------------------------------------------------------------
    def concat(self, parts: Sequence[NDArray[Any]], dtype: npt.DTypeLike = None) -> NDArray[Any]:
        """``(E, n_i)`` parts joined along axis 1 -> ``(E, sum n_i)``."""
        return np.concatenate(parts, axis=1, dtype=dtype)

    def tcopy(self, x: NDArray[Any]) -> NDArray[Any]:
        """Contiguous transpose of a 2-D array: ``(E, N) -> (N, E)``."""
        return np.ascontiguousarray(x.T)

    def argsort(self, x: NDArray[Any], stable: bool) -> NDArray[np.intp]:
        """Row-wise argsort of an (E, N) array. ``stable=False`` is numpy's default sort (FinRL's)."""
        return np.argsort(x, axis=1, kind="stable" if stable else None)

    def flip(self, x: NDArray[Any]) -> NDArray[Any]:
        """The columns of an ``(E, N)`` array reversed (a view)."""
        return x[:, ::-1]

    def amax(self, x: NDArray[Any]) -> NDArray[Any]:
        """Row maxima: ``(E, N) -> (E,)``."""
        return x.max(1)

    def exp_softmax(self, x: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
        """Row-wise softmax: ``(E, N) -> (E, N)``."""
        z = np.exp(x - x.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)


class TorchBackend:
    """torch tensors on any device (CPU in the tests, CUDA for large E)."""

    name = "torch"

    def __init__(self, dtype: str = "float64", device: str = "cpu") -> None:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is a dependency
            raise ConfigError("backend='torch' needs torch installed") from exc
        self.torch = torch
        self.device = torch.device(device)
        self.float = {"float64": torch.float64, "float32": torch.float32}[str(dtype)]
        self.int = torch.int64
        self.bool = torch.bool
        self.f32 = torch.float32
        self.floor = torch.floor
        self.trunc = torch.trunc
        self.floordiv = torch.floor_divide
        self.abs = torch.abs
        self.log = torch.log
        self.exp = torch.exp
        self.sqrt = torch.sqrt
        self.isfinite = torch.isfinite

    def _t(self, x: Any) -> torch.Tensor:
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x
        return torch.as_tensor(x, device=self.device)

    def where(self, c: torch.Tensor, a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
        """``a`` where the bool ``c`` is true, else ``b``; a scalar ``a`` / ``b`` broadcasts (shape of ``c``)."""
        torch = self.torch
        if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            a = torch.as_tensor(a, dtype=self.float, device=self.device)
        return torch.where(c, a, b)

    def minimum(self, a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
        """Elementwise minimum; one of ``a`` / ``b`` may be a Python scalar (not both)."""
        torch = self.torch
        if not isinstance(b, torch.Tensor):
            return a.clamp(max=b)
        if not isinstance(a, torch.Tensor):
            return b.clamp(max=a)
        return torch.minimum(a, b)

    def maximum(self, a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
        """Elementwise maximum; one of ``a`` / ``b`` may be a Python scalar (not both)."""
        torch = self.torch
        if not isinstance(b, torch.Tensor):
            return a.clamp(min=b)
        if not isinstance(a, torch.Tensor):
            return b.clamp(min=a)
        return torch.maximum(a, b)

    def asarray(self, x: Any, dtype: Any = None) -> torch.Tensor:
        """``x`` as a tensor on :attr:`device`; ``dtype``: a torch dtype or a numpy float32/64, int64 or bool."""
        torch = self.torch
        if isinstance(dtype, np.dtype) or dtype in (np.float32, np.float64, np.int64, np.bool_):
            dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                     np.dtype(np.int64): torch.int64, np.dtype(np.bool_): torch.bool}[np.dtype(dtype)]
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=dtype or x.dtype)
        return torch.as_tensor(np.asarray(x), device=self.device, dtype=dtype)

    def zeros(self, shape: Shape, dtype: torch.dtype | None = None) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return self.torch.zeros(shape, dtype=self.float if dtype is None else dtype, device=self.device)

    def full(self, shape: Shape, value: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return self.torch.full(shape, value, dtype=self.float if dtype is None else dtype, device=self.device)

    def arange(self, n: int) -> torch.Tensor:
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def astype(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x.to(dtype)

    def copy(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def to_numpy(self, x: torch.Tensor | npt.ArrayLike) -> NDArray[Any]:
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def concat(self, parts: Sequence[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(E, n_i)`` parts joined along dim 1 -> ``(E, sum n_i)``."""
        parts = [p if p.dtype == (dtype or p.dtype) else p.to(dtype) for p in parts]
        return self.torch.cat(parts, dim=1)

    def tcopy(self, x: torch.Tensor) -> torch.Tensor:
        """Contiguous transpose of a 2-D tensor: ``(E, N) -> (N, E)``."""
        return x.T.contiguous()

    def argsort(self, x: torch.Tensor, stable: bool) -> torch.Tensor:
        """Row-wise argsort ``(E, N) -> (E, N)`` int64; always stable on torch (``stable`` is accepted, not read)."""
        return self.torch.argsort(x, dim=1, stable=True)

    def flip(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1)

    def amax(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(1)

    def any(self, x: torch.Tensor) -> bool:
        return bool(x.any())

    def rsum(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(1)

    def rows(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Row gather ``x[t]``: ``(T, ...)`` and ``(E,)`` int64 -> ``(E, ...)``."""
        return x[t]

    def nonzero(self, x: torch.Tensor) -> torch.Tensor:
        """Indices of the true entries of a 1-D bool tensor, ``(M,)`` int64."""
        return self.torch.nonzero(x).flatten()

    def exp_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return self.torch.softmax(x, dim=1)


def get_backend(name: str = "numpy", dtype: str = "float64", device: str = "cpu") -> Backend:
    """The backend object for ``name`` (``"numpy"`` or ``"torch"``), a :class:`Backend`."""
    if dtype not in ("float64", "float32"):
        raise ConfigError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if name == "numpy":
        if str(device) != "cpu":
            raise ConfigError(f"backend='numpy' runs on the CPU only (device={device!r}); use backend='torch'")
        return NumpyBackend(dtype)
    if name == "torch":
        return TorchBackend(dtype, device)
    raise ConfigError(f"backend must be 'numpy' or 'torch', got {name!r}")
