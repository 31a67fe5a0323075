"""Dense (fully connected) layer on fastnn's kernels: y = activation(x @ w + b).

``w`` is stored (in, out) as in Keras. ``x`` is (N, IC) or more generally (..., IC): the
leading axes are batch axes. One kernel call does the matrix product, the bias and the
activation; the backward call forms dz = dy * act'(.) once and derives dx, dw and db
from it.
"""
from __future__ import annotations

import numpy as np

from .. import _core, autodiff
from ..graph import any_symbolic
from ._util import as_f32
from .activation import _NEEDS_Y, act_kind, check_out


def _rows(a: np.ndarray, width: int) -> np.ndarray:
    """(..., width) C-contiguous array as a (rows, width) view (never a copy)."""
    return a if a.ndim == 2 else a.reshape(-1, width)


def _check_x_w(x, w, op):
    if w.ndim != 2:
        raise ValueError(f"{op}: argument 'w' must be 2-D (IC, OC), got shape {w.shape}")
    if x.ndim < 2:
        raise ValueError(f"{op}: argument 'x' must be (N, IC) or (..., IC), got shape {x.shape}")
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"{op}: argument 'x' has {x.shape[-1]} features (last axis) but 'w' "
                         f"of shape {w.shape} expects IC = {w.shape[0]}")


def bias_and_out(b, out, x_shape, oc: int, op: str):
    """(b as float32 (OC,) or None, the output (..., OC) for input rows of x_shape: out
    checked, or a new array) for the dense-like forwards; errors name op's argument."""
    if b is not None:
        b = as_f32(b, op, "b")
        if b.shape != (oc,):
            raise ValueError(f"{op}: argument 'b' must have shape (OC,) = ({oc},), got {b.shape}")
    shape = tuple(x_shape[:-1]) + (oc,)
    return b, check_out(out, shape, op) if out is not None else np.empty(shape, np.float32)


def dense(x, w, b=None, activation="linear", out=None, z=None) -> np.ndarray:
    """Return activation(x @ w + b).

    x: (N, IC) or (..., IC). w: (IC, OC). b: (OC,) or None (no bias). Inputs of another
    dtype or layout are converted once to C-contiguous float32.
    activation: "linear" (or None), "relu", "sigmoid", "tanh" or "gelu" (exact erf form).
    out: optional float32 C-contiguous array of shape (..., OC) that receives the result.
    z: optional float32 C-contiguous array of shape (..., OC) that receives the
    pre-activation x @ w + b, which dense_backward needs for gelu.
    """
    op = "dense"
    if any_symbolic((x, w, b)):
        if out is not None or z is not None:
            raise TypeError("dense: out= and z= are not taken on symbolic tensors")
        return autodiff.dense_op(x, w, b, activation)
    act = act_kind(activation, op)
    x = as_f32(x, op, "x")
    w = as_f32(w, op, "w")
    _check_x_w(x, w, op)
    ic, oc = w.shape
    b, out = bias_and_out(b, out, x.shape, oc, op)
    shape = out.shape
    z2 = None if z is None else _rows(check_out(z, shape, op, "z"), oc)
    _core.dense_forward(_rows(out, oc), z2, _rows(x, ic), w, b, act)
    return out


def dense_backward(dy, x, w, y=None, z=None, activation="linear", *, has_bias=True,
                   need_dx=True, need_dw=True, dx=None, dw=None, db=None):
    """Gradients of y = activation(x @ w + b): returns (dx, dw, db).

    With dz = dy * act'(.): dx = dz @ w.T, dw = x.T @ dz, db = dz.sum over batch axes.
    dy: (..., OC) upstream gradient; x: (..., IC) forward input; w: (IC, OC).
    y: the forward output, required for relu, sigmoid and tanh. z: the pre-activation
    (dense(..., z=z)), required for gelu. activation: as in dense().
    has_bias / need_dx / need_dw: False skips db / dx / dw (returned as None), e.g. need_dx=False
    for the first layer.
    dx, dw, db: optional float32 C-contiguous arrays of shapes (..., IC), (IC, OC), (OC,)
    that the gradients are ADDED into (as the kernels do), so gradients accumulate across
    calls; those not given are returned as fresh arrays. dy is never modified.
    """
    op = "dense_backward"
    act = act_kind(activation, op)
    dy = as_f32(dy, op, "dy")
    x = as_f32(x, op, "x")
    w = as_f32(w, op, "w")
    _check_x_w(x, w, op)
    ic, oc = w.shape
    if dy.shape != x.shape[:-1] + (oc,):
        raise ValueError(f"{op}: argument 'dy' must have shape {x.shape[:-1] + (oc,)} "
                         f"(x's batch axes, OC), got {dy.shape}")
    if act.name in _NEEDS_Y and y is None:
        raise ValueError(f"{op}: argument 'y' (the forward output) is required for "
                         f"activation {act.name!r}")
    if act.name == "gelu" and z is None:
        raise ValueError(f"{op}: argument 'z' (the pre-activation, from dense(..., z=z)) is "
                         "required for activation 'gelu'")

    def saved(a, name):
        if a is None:
            return None
        a = as_f32(a, op, name)
        if a.shape != dy.shape:
            raise ValueError(f"{op}: argument '{name}' must have the shape of 'dy', "
                             f"{dy.shape}, got {a.shape}")
        return _rows(a, oc)

    y, z = saved(y, "y"), saved(z, "z")

    def grad(buf, need, flag, shape, name):
        if not need:
            if buf is not None:
                raise ValueError(f"{op}: argument '{name}' was given but {flag}=False")
            return None
        if buf is None:
            return np.zeros(shape, np.float32)
        return check_out(buf, shape, op, name)

    dx = grad(dx, need_dx, "need_dx", x.shape, "dx")
    dw = grad(dw, need_dw, "need_dw", (ic, oc), "dw")
    db = grad(db, has_bias, "has_bias", (oc,), "db")
    dz = None if act == _core.Act.linear else np.empty((dy.size // oc, oc), np.float32)
    _core.dense_backward(None if dx is None else _rows(dx, ic), dw, db, dz, _rows(dy, oc),
                         _rows(x, ic), w, y, z, act)
    return dx, dw, db
