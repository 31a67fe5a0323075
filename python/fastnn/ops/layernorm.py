"""Layer normalisation over the last axis (per row statistics)."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..graph import any_symbolic
from ..reference.layernorm import LayerNormSaved
from ._util import as_f32
from .norm import _opt_f32, _same_shape_out

__all__ = ["LayerNormSaved", "layer_norm", "layer_norm_backward"]


def layer_norm(x, gamma=None, beta=None, epsilon=1e-3, out=None):
    """Layer normalisation of x (..., C) over its last axis: returns (y, saved).

    y = gamma * (x - mean) / sqrt(var + epsilon) + beta, with the mean and biased variance
    of each row of C values (as Keras LayerNormalization; epsilon defaults to its 1e-3).
    gamma/beta: (C,) or None (scale 1, offset 0). out: optional C-contiguous float32
    array shaped like x (it may be x itself). saved: LayerNormSaved(mean, rstd), each of
    shape x.shape[:-1], for layer_norm_backward.
    """
    op = "layer_norm"
    if any_symbolic((x, gamma, beta)):
        raise TypeError("layer_norm: returns (y, saved) for arrays; in a model's call() use "
                        "fastnn.ops.layer_normalization(x, gamma, beta, epsilon)")
    x = as_f32(x, op, "x")
    if x.ndim < 1:
        raise ValueError(f"{op}: argument 'x' must have at least 1 dimension (..., C), got a scalar")
    c = x.shape[-1]
    out = np.empty(x.shape, np.float32) if out is None else _same_shape_out(out, x.shape, op, "out")
    rows = x.shape[:-1]
    mean = np.empty(rows, np.float32)
    rstd = np.empty(rows, np.float32)
    _core.layer_norm_forward(out.reshape(-1, c), mean.reshape(-1), rstd.reshape(-1),
                             x.reshape(-1, c), _opt_f32(gamma, op, "gamma"),
                             _opt_f32(beta, op, "beta"), float(epsilon))
    return out, LayerNormSaved(mean, rstd)


def layer_norm_backward(dy, x, gamma, saved, dx=None, dgamma=None, dbeta=None):
    """Gradients of layer_norm: returns (dx, dgamma, dbeta).

    dy, x: (..., C) as in the forward call; gamma as given to it; saved: its second
    result. Each of dx (x's shape), dgamma and dbeta ((C,)) is added into if given
    (float32, C-contiguous), else returned as a new array.
    """
    op = "layer_norm_backward"
    x = as_f32(x, op, "x")
    dy = as_f32(dy, op, "dy")
    if dy.shape != x.shape:
        raise ValueError(f"{op}: argument 'dy' must have the shape of 'x' {x.shape}, got {dy.shape}")
    if not isinstance(saved, tuple) or len(saved) != 2:
        raise TypeError(f"{op}: argument 'saved' must be the (mean, rstd) returned by "
                        f"layer_norm, got {type(saved).__name__}")
    mean, rstd = (as_f32(a, op, f"saved.{n}") for a, n in zip(saved, ("mean", "rstd")))
    if mean.shape != x.shape[:-1] or rstd.shape != x.shape[:-1]:
        raise ValueError(f"{op}: argument 'saved' must hold mean and rstd of shape "
                         f"{x.shape[:-1]} (x's rows), got {mean.shape} and {rstd.shape}")
    c = x.shape[-1]
    dx = np.zeros(x.shape, np.float32) if dx is None else _same_shape_out(dx, x.shape, op, "dx")
    dgamma = np.zeros(c, np.float32) if dgamma is None else dgamma
    dbeta = np.zeros(c, np.float32) if dbeta is None else dbeta
    _core.layer_norm_backward(dx.reshape(-1, c), dgamma, dbeta, dy.reshape(-1, c),
                              mean.reshape(-1), rstd.reshape(-1), x.reshape(-1, c),
                              _opt_f32(gamma, op, "gamma"))
    return dx, dgamma, dbeta
