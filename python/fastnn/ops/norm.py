"""Batch normalisation over the last (channel) axis."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..reference.norm import BatchNormSaved
from ._util import as_f32


def _opt_f32(a, op: str, name: str):
    return None if a is None else as_f32(a, op, name)


def _same_shape_out(a, shape, op: str, name: str):
    """A caller's array that is written through a 2-D view: it must be an ndarray of
    exactly `shape` and C-contiguous (so the view is no copy); dtype is checked later."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{op}: argument '{name}' must be a numpy.ndarray, got {type(a).__name__}")
    if a.shape != shape:
        raise ValueError(f"{op}: argument '{name}' must have shape {shape}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: argument '{name}' must be C-contiguous (use numpy.ascontiguousarray)")
    return a


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.99,
               epsilon=1e-3, out=None):
    """Batch normalisation of x (..., C) per channel: returns (y, saved).

    y = gamma * (x - mean) / sqrt(var + epsilon) + beta. training=True: mean and var are
    the batch's over every axis but the last (biased variance, computed in float64), and
    running_mean/running_var (float32 (C,) arrays, or None) are updated in place to
    momentum * running + (1 - momentum) * batch, as Keras does. training=False: the
    running statistics are used. gamma/beta: (C,) or None (scale 1, offset 0).
    saved: BatchNormSaved(mean, invstd, training) for batch_norm_backward.
    """
    op = "batch_norm"
    x = as_f32(x, op, "x")
    if x.ndim < 2:
        raise ValueError(f"{op}: argument 'x' must have at least 2 dimensions (N, ..., C), got shape {x.shape}")
    c = x.shape[-1]
    gamma = _opt_f32(gamma, op, "gamma")
    beta = _opt_f32(beta, op, "beta")
    out = np.empty(x.shape, np.float32) if out is None else _same_shape_out(out, x.shape, op, "out")
    mean = np.empty(c, np.float32)
    invstd = np.empty(c, np.float32)
    x2, y2 = x.reshape(-1, c), out.reshape(-1, c)
    if training:
        # The running statistics are written: they are never converted (see fastnn.ops).
        _core.batch_norm_forward_train(y2, mean, invstd, running_mean, running_var, x2, gamma,
                                       beta, float(momentum), float(epsilon))
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{op}: training=False needs 'running_mean' and 'running_var'")
        _core.batch_norm_forward_infer(y2, mean, invstd, x2, gamma, beta,
                                       as_f32(running_mean, op, "running_mean"),
                                       as_f32(running_var, op, "running_var"), float(epsilon))
    return out, BatchNormSaved(mean, invstd, bool(training))


def batch_norm_backward(dy, x, gamma, saved, dx=None, dgamma=None, dbeta=None):
    """Gradients of batch_norm: returns (dx, dgamma, dbeta).

    dy, x: (..., C) as in the forward call; gamma as given to it; saved: its second result.
    Each of dx (x's shape), dgamma and dbeta ((C,)) is added into if given (float32,
    C-contiguous), else returned as a new array.
    """
    op = "batch_norm_backward"
    x = as_f32(x, op, "x")
    dy = as_f32(dy, op, "dy")
    if x.ndim < 2:
        raise ValueError(f"{op}: argument 'x' must have at least 2 dimensions (N, ..., C), got shape {x.shape}")
    if dy.shape != x.shape:
        raise ValueError(f"{op}: argument 'dy' must have the shape of 'x' {x.shape}, got {dy.shape}")
    if not isinstance(saved, tuple) or len(saved) != 3:
        raise TypeError(f"{op}: argument 'saved' must be the (mean, invstd, training) returned by "
                        f"batch_norm, got {type(saved).__name__}")
    mean, invstd, training = saved
    c = x.shape[-1]
    acc = dx is not None
    dx = _same_shape_out(dx, x.shape, op, "dx") if acc else np.empty(x.shape, np.float32)
    dgamma = np.zeros(c, np.float32) if dgamma is None else dgamma
    dbeta = np.zeros(c, np.float32) if dbeta is None else dbeta
    _core.batch_norm_backward(dx.reshape(-1, c), dgamma, dbeta, dy.reshape(-1, c),
                              as_f32(mean, op, "saved.mean"), as_f32(invstd, op, "saved.invstd"),
                              x.reshape(-1, c), _opt_f32(gamma, op, "gamma"), bool(training), acc)
    return dx, dgamma, dbeta
