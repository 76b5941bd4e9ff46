"""Tensor specifications, quantization parameters and the dtype <-> V2 datatype table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError, TensorSpecError

# One table, read both ways: numpy dtype name <-> KServe V2 / Open Inference Protocol datatype.
V2_DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}
_DTYPES_BY_V2: dict[str, str] = {v2: name for name, v2 in V2_DATATYPES.items()}


def to_v2_datatype(dtype: np.dtype | str) -> str:
    """The V2 datatype name ("FP32", ...) of a numpy dtype."""
    name = np.dtype(dtype).name
    if name.startswith(("str", "bytes")):
        return "BYTES"
    try:
        return V2_DATATYPES[name]
    except KeyError:
        raise InvalidInputError(
            f"dtype {name} has no V2 datatype; supported: {', '.join(V2_DATATYPES)}"
        ) from None


def from_v2_datatype(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name."""
    try:
        return np.dtype(_DTYPES_BY_V2[datatype])
    except KeyError:
        raise InvalidInputError(
            f"unknown V2 datatype {datatype!r}; valid: {', '.join(_DTYPES_BY_V2)}"
        ) from None


MAX_ADDRESSABLE_BYTES = 2**62  # numpy refuses a shape whose non-zero dims x itemsize pass ~2**63


def check_shape(name: str, shape: Sequence[int], dtype: np.dtype | str) -> tuple[int, ...]:
    """A concrete shape numpy can hold: dims >= 0 whose product (zeros skipped) x itemsize fits in memory.

    A zero dim makes the element count 0, but numpy still refuses [0, 2**62, 4]: that is a 4xx, not a 500.
    """
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidInputError(f"input {name!r}: shape {list(dims)} has a negative dimension")
    extent = np.dtype(dtype).itemsize or 1
    for dim in dims:
        extent *= max(dim, 1)
        if extent > MAX_ADDRESSABLE_BYTES:
            raise InvalidInputError(f"input {name!r}: shape {list(dims)} is too large to address "
                                    f"(over 2**62 bytes even when empty)")
    return dims


@dataclass(frozen=True)
class Quantization:
    """Affine per-tensor quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


Dim = int | None  # None marks a dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for dynamic dims), dtype and optional quantization of one tensor."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(self.shape))

    def describe(self) -> str:
        """Human-readable form, e.g. ``input: float32[?,3,224,224]``."""
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        text = f"{self.name}: {self.dtype.name}[{dims}]"
        if self.quantization is not None:
            q = self.quantization
            text += f" (scale={q.scale:g}, zero_point={q.zero_point})"
        return text

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """True when a concrete shape fits this spec's rank and static dims."""
        if len(shape) != len(self.shape):
            return False
        return all(want is None or want == got for want, got in zip(self.shape, shape, strict=True))

    def check(self, array: np.ndarray) -> None:
        """Raise TensorSpecError unless ``array`` matches this spec's dtype and shape."""
        if array.dtype != self.dtype or not self.accepts_shape(array.shape):
            got = ",".join(str(d) for d in array.shape)
            raise TensorSpecError(
                f"input {self.name!r} expects {self.describe()}, got {array.dtype.name}[{got}]"
            )
