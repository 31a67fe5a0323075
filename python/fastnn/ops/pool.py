"""Pooling over NHWC images: max (with saved positions), average, global average."""
from __future__ import annotations

import numpy as np

from .. import _core
from ._util import as_f32, from_any, new_out

PADDINGS = {"valid": _core.Padding.valid, "same": _core.Padding.same}


def _pair(v, op: str, name: str) -> tuple[int, int]:
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: argument '{name}' must be an int or a pair of ints, got {v!r}")
    if isinstance(v, (int, np.integer)):
        t = (int(v), int(v))
    else:
        try:
            t = tuple(v)
        except TypeError:
            t = ()
        if len(t) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                  for s in t):
            raise TypeError(f"{op}: argument '{name}' must be an int or a pair of ints, got {v!r}")
        t = (int(t[0]), int(t[1]))
    if t[0] < 1 or t[1] < 1:
        raise ValueError(f"{op}: argument '{name}' must be positive, got {v!r}")
    return t


def pool_options(op: str, pool_size, strides, padding):
    """Normalise Keras-style pooling options: ((KH, KW), (SH, SW), padding name).
    strides=None means the pool size; padding is 'valid' or 'same' (any case)."""
    pool = _pair(pool_size, op, "pool_size")
    step = pool if strides is None else _pair(strides, op, "strides")
    if not isinstance(padding, str) or padding.lower() not in PADDINGS:
        raise ValueError(f"{op}: argument 'padding' must be 'valid' or 'same', got {padding!r}")
    return pool, step, padding.lower()


def pool_output_hw(op: str, hw, pool, step, padding: str) -> tuple[int, int]:
    """(OH, OW) for an (H, W) input; ValueError naming `op` if the window does not fit."""
    return tuple(_core.pool2d_output_size(tuple(int(s) for s in hw), pool, step,
                                          PADDINGS[padding], op))


def _images(x, op: str) -> np.ndarray:
    x = as_f32(x, op, "x")
    if x.ndim != 4:
        raise ValueError(f"{op}: argument 'x' must be 4-D (N, H, W, C), got shape {x.shape}")
    return x


def _x_shape(x_shape, op: str) -> tuple:
    try:
        t = tuple(int(s) for s in x_shape)
    except TypeError:
        raise TypeError(f"{op}: argument 'x_shape' must be a tuple (N, H, W, C), got {x_shape!r}") from None
    if len(t) != 4 or min(t) < 1:
        raise ValueError(f"{op}: argument 'x_shape' must be 4 positive sizes (N, H, W, C), got {x_shape!r}")
    return t


def _grad_out(dx, shape, op: str):
    """(dx, accumulate): a new array the kernel overwrites, or the caller's array (exactly
    x_shape) that it adds into."""
    if dx is None:
        return np.empty(shape, np.float32), False
    if not isinstance(dx, np.ndarray):
        raise TypeError(f"{op}: argument 'dx' must be a numpy.ndarray, got {type(dx).__name__}")
    if dx.shape != shape:
        raise ValueError(f"{op}: argument 'dx' must have shape x_shape = {shape}, got {dx.shape}")
    return dx, True


def max_pool2d(x, pool_size=2, strides=None, padding="valid", out=None):
    """Window max of NHWC images: returns (y, indices).

    x: (N, H, W, C). pool_size/strides: int or (rows, cols); strides default to pool_size.
    padding: 'valid' or 'same' (Keras rules; padding never wins the max).
    y: (N, OH, OW, C) float32 (written into `out` if given). indices: (N, OH, OW, C) int32,
    the position h*W + w of each max within its image, for max_pool2d_backward.
    """
    op = "max_pool2d"
    x = _images(x, op)
    pool, step, pad = pool_options(op, pool_size, strides, padding)
    oh, ow = pool_output_hw(op, x.shape[1:3], pool, step, pad)
    shape = (x.shape[0], oh, ow, x.shape[3])
    out = new_out(shape, out, op)
    idx = np.empty(shape, np.int32)
    _core.max_pool2d_forward(out, idx, x, pool, step, PADDINGS[pad])
    return out, idx


def max_pool2d_backward(dy, indices, x_shape, dx=None):
    """Gradient of max_pool2d: dx (x_shape) += dy routed to the saved positions.

    dy and indices: (N, OH, OW, C), indices from max_pool2d. dx, if given, is added into
    (float32, C-contiguous, shape x_shape); otherwise a new array is returned.
    """
    op = "max_pool2d_backward"
    shape = _x_shape(x_shape, op)
    dy = as_f32(dy, op, "dy")
    idx = from_any(indices, op, "indices")
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{op}: argument 'indices' must hold integers (from max_pool2d), got dtype {idx.dtype}")
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    dx, acc = _grad_out(dx, shape, op)
    _core.max_pool2d_backward(dx, dy, idx, acc)
    return dx


def avg_pool2d(x, pool_size=2, strides=None, padding="valid", out=None):
    """Window mean of NHWC images: y (N, OH, OW, C).

    Options as max_pool2d; with padding='same' each window averages its real elements only.
    """
    op = "avg_pool2d"
    x = _images(x, op)
    pool, step, pad = pool_options(op, pool_size, strides, padding)
    oh, ow = pool_output_hw(op, x.shape[1:3], pool, step, pad)
    out = new_out((x.shape[0], oh, ow, x.shape[3]), out, op)
    _core.avg_pool2d_forward(out, x, pool, step, PADDINGS[pad])
    return out


def avg_pool2d_backward(dy, x_shape, pool_size=2, strides=None, padding="valid", dx=None):
    """Gradient of avg_pool2d: dx (x_shape) += each dy spread over its window's real elements.

    The pooling options must be those of the forward call. dx as in max_pool2d_backward.
    """
    op = "avg_pool2d_backward"
    shape = _x_shape(x_shape, op)
    pool, step, pad = pool_options(op, pool_size, strides, padding)
    dy = as_f32(dy, op, "dy")
    dx, acc = _grad_out(dx, shape, op)
    _core.avg_pool2d_backward(dx, dy, pool, step, PADDINGS[pad], acc)
    return dx


def global_avg_pool2d(x, out=None):
    """Mean over H and W of NHWC images: y (N, C)."""
    op = "global_avg_pool2d"
    x = _images(x, op)
    out = new_out((x.shape[0], x.shape[3]), out, op)
    _core.global_avg_pool2d_forward(out, x)
    return out


def global_avg_pool2d_backward(dy, x_shape, dx=None):
    """Gradient of global_avg_pool2d: dx (x_shape) += dy (N, C) / (H*W)."""
    op = "global_avg_pool2d_backward"
    shape = _x_shape(x_shape, op)
    dy = as_f32(dy, op, "dy")
    dx, acc = _grad_out(dx, shape, op)
    _core.global_avg_pool2d_backward(dx, dy, acc)
    return dx
