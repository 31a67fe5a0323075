"""Helpers shared by the fastnn.ops wrappers."""
from __future__ import annotations

import numpy as np

_DLPACK_CPU = 1  # DLDeviceType.kDLCPU
_DLPACK_DEVICES = {1: "CPU", 2: "CUDA", 3: "CUDA host (pinned)", 4: "OpenCL", 7: "Vulkan",
                   8: "Metal", 9: "VPI", 10: "ROCm", 11: "ROCm host", 12: "ext_dev",
                   13: "CUDA managed", 14: "oneAPI", 15: "WebGPU", 16: "Hexagon", 17: "MAIA"}
_np_from_dlpack = getattr(np, "from_dlpack", None)


def _described(x) -> str:
    """'Tensor (torch.float32)': the type of x and its dtype when it has one."""
    dtype = getattr(x, "dtype", None)
    return type(x).__name__ + ("" if dtype is None else f" ({dtype})")


def _from_dlpack(x, op: str, name: str) -> np.ndarray:
    """A NumPy view of a DLPack-exporting object that lives in CPU memory (no copy)."""
    if getattr(x, "requires_grad", False) is True:
        raise TypeError(f"{op}: argument '{name}' is a tensor that requires grad, which torch "
                        "does not share through DLPack; pass it as tensor.detach() (fastnn.ops "
                        "records no torch autograd graph)")
    device = getattr(x, "__dlpack_device__", None)
    if device is not None:
        try:
            kind, index = device()
            kind, index = int(kind), int(index)
        except Exception as e:
            raise TypeError(f"{op}: argument '{name}' ({_described(x)}) has a __dlpack__ but "
                            f"its __dlpack_device__() failed: {e}") from e
        if kind != _DLPACK_CPU:
            where = _DLPACK_DEVICES.get(kind, "an unknown device")
            raise TypeError(
                f"{op}: argument '{name}' ({_described(x)}) is on device {where} (DLPack "
                f"device type {kind}, index {index}), but fastnn.ops reads CPU memory only "
                "and never copies between devices: move it to the CPU first (e.g. "
                "tensor.cpu(), cupy.asnumpy(a), jax.device_get(a))")
    if _np_from_dlpack is None:  # pragma: no cover - NumPy < 1.23
        return np.asarray(x)
    try:
        return _np_from_dlpack(x)
    except Exception as e:  # BufferError, or RuntimeError/TypeError for an unknown dtype
        raise TypeError(f"{op}: argument '{name}' ({_described(x)}) cannot be viewed by NumPy "
                        f"through DLPack ({type(e).__name__}: {e}); convert it first to a CPU "
                        "array of a NumPy dtype (e.g. tensor.float())") from e


def from_any(x, op: str, name: str) -> np.ndarray:
    """Any array-like as a NumPy array, viewing its memory (no copy) where NumPy can.

    A NumPy array is returned as is. An object with ``__dlpack__`` (a PyTorch CPU tensor,
    a JAX array, ...) is viewed with ``numpy.from_dlpack`` once ``__dlpack_device__`` says
    it is in CPU memory; another device, or a torch tensor that requires grad, raises a
    TypeError naming the argument. Anything else (buffer-protocol objects such as
    memoryview or array.array, lists, scalars) goes through ``numpy.asarray``. dtype and
    layout are kept: converting them is the caller's explicit step (see as_f32).
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and not isinstance(x, type):
        return _from_dlpack(x, op, name)
    try:
        return np.asarray(x)
    except Exception as e:  # pragma: no cover - numpy's own message is kept
        raise TypeError(f"{op}: argument '{name}' must be array-like, got {type(x).__name__}") from e


def as_f32(x, op: str, name: str) -> np.ndarray:
    """Explicit, documented input conversion: C-contiguous float32 (no copy if already).

    Objects from other frameworks are first viewed as NumPy arrays (see from_any), so a
    float32 C-contiguous CPU tensor is used in place as well.
    """
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    arr = from_any(x, op, name)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{op}: argument '{name}' must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_labels(y, op: str, name: str, num_classes: int) -> np.ndarray:
    """Integer class labels as C-contiguous int32, checked to lie in [0, num_classes)."""
    arr = from_any(y, op, name)
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
    """Return `out` if given (checked later by the kernel binding), else a new float32 array.

    An array that is written is never converted, so it must be a NumPy array; the error
    for a tensor of another framework says how to pass a view of its memory instead.
    """
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if not isinstance(out, np.ndarray):
        hint = ""
        if hasattr(out, "__dlpack__"):
            hint = (f"; to write into this {type(out).__name__} in place, pass "
                    f"{name}=numpy.from_dlpack(t), a view of its memory (t must be a "
                    "writable, C-contiguous float32 CPU tensor)")
        raise TypeError(f"{op}: argument '{name}' must be a numpy.ndarray, got "
                        f"{type(out).__name__}: it is written in place, never converted{hint}")
    return out
