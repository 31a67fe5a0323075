"""Helpers shared by the fastnn.ops wrappers."""
from __future__ import annotations

import numpy as np


def as_f32(x, op: str, name: str) -> np.ndarray:
    """Explicit, documented input conversion: C-contiguous float32 (no copy if already)."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    try:
        arr = np.asarray(x)
    except Exception as e:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{op}: argument '{name}' must be array-like, got {type(x).__name__}") from e
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{op}: argument '{name}' must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_labels(y, op: str, name: str, num_classes: int) -> np.ndarray:
    """Integer class labels as C-contiguous int32, checked to lie in [0, num_classes)."""
    arr = np.asarray(y)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{op}: argument '{name}' must hold integer class labels")
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{op}: argument '{name}' must be integer labels, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)].ravel()[0]
        raise ValueError(
            f"{op}: argument '{name}' has label {bad.item()!r} outside [0, {num_classes})")
    return np.ascontiguousarray(arr, dtype=np.int32)


def new_out(shape, out, op: str, name: str = "out") -> np.ndarray:
    """Return `out` if given (checked later by the kernel binding), else a new float32 array."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: argument '{name}' must be a numpy.ndarray, got {type(out).__name__}")
    return out
