"""Inverted dropout with a reproducible, thread-count-independent mask."""
from __future__ import annotations

import numpy as np

from .. import _core
from ._util import as_f32, from_any, new_out


def dropout(x, rate: float, seed: int, out=None, mask=None):
    """Inverted dropout: return ``(y, mask)`` with ``y = x·mask / (1 − rate)``.

    Each element is kept (mask 1) with probability 1 − rate, else zeroed (mask 0). The
    keep bit of flat element i is a pure function of ``(seed, i)`` (a splitmix64 hash of
    the counter), so the mask does not depend on the thread count, and
    ``fastnn.reference.dropout`` reproduces it exactly. Use a new seed for every step.
    ``rate == 0`` copies x and sets a mask of ones.

    Args:
        x: input array of any shape (converted to C-contiguous float32 if needed).
        rate: drop probability in [0, 1) (as float32).
        seed: int in [0, 2**64).
        out: optional float32 C-contiguous array shaped like x to write y into.
        mask: optional uint8 C-contiguous array shaped like x to write the mask into.

    Returns:
        (y, mask): float32 array like x, uint8 array like x (0/1).

    Raises:
        TypeError / ValueError naming the argument for a bad rate or seed, or an
        out/mask of the wrong dtype, shape or layout, read-only, or overlapping x.
    """
    x = as_f32(x, "dropout", "x")
    y = new_out(x.shape, out, "dropout")
    if mask is None:
        mask = np.empty(x.shape, dtype=np.uint8)
    elif not isinstance(mask, np.ndarray):
        raise TypeError(f"dropout: argument 'mask' must be a numpy.ndarray, got {type(mask).__name__}")
    _core.dropout_forward(y, mask, x, rate, seed)
    return y, mask


def dropout_backward(dy, mask, rate: float, dx=None) -> np.ndarray:
    """Gradient of :func:`dropout`: ``dx += dy·mask / (1 − rate)``; returns dx.

    Args:
        dy: gradient of the output, any shape (converted to float32 if needed).
        mask: the mask :func:`dropout` returned (uint8, or bool, shaped like dy); nonzero
            means kept.
        rate: the rate given to :func:`dropout`, in [0, 1).
        dx: optional float32 C-contiguous array shaped like dy to ADD the gradient into
            (backward kernels accumulate); when None a new array is returned.

    Raises:
        TypeError / ValueError naming the argument for a bad rate, a mask or dx of the
        wrong dtype, shape or layout, or a read-only dx.
    """
    dy = as_f32(dy, "dropout_backward", "dy")
    if mask is not None and not isinstance(mask, np.ndarray) and hasattr(mask, "__dlpack__"):
        mask = from_any(mask, "dropout_backward", "mask")
    if isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.flags.c_contiguous:
        mask = mask.view(np.uint8)  # same bytes, 0/1
    if dx is None:
        dx = np.zeros(dy.shape, dtype=np.float32)
    elif not isinstance(dx, np.ndarray):
        raise TypeError(f"dropout_backward: argument 'dx' must be a numpy.ndarray, got {type(dx).__name__}")
    _core.dropout_backward(dx, dy, mask, rate)
    return dx
