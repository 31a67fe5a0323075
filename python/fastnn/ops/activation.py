"""Activation functions on fastnn's kernels: relu, sigmoid, tanh, gelu, softmax.

All take NumPy arrays of any shape (softmax works over the last axis) and return float32
arrays. Inputs are converted once to C-contiguous float32; an ``out=`` array is written
in place and must already be float32, C-contiguous and of the result's shape. The
backward functions ADD into ``dx`` when it is given (so gradients from several branches
accumulate), and otherwise return a fresh array.
"""
from __future__ import annotations

import numpy as np

from .. import _core, autodiff
from ..graph import any_symbolic
from ._util import as_f32, new_out

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "gelu")

# Activations whose derivative is computed from the forward output y; gelu's needs x.
_NEEDS_Y = ("relu", "sigmoid", "tanh")


def act_kind(kind, op: str):
    """The fastnn._core.Act for an activation name ("relu", ...; None means "linear")."""
    if kind is None:
        return _core.Act.linear
    if isinstance(kind, _core.Act):
        return kind
    if isinstance(kind, str) and kind in ACTIVATIONS:
        return getattr(_core.Act, kind)
    raise ValueError(f"{op}: unknown activation {kind!r}; expected one of "
                     + ", ".join(repr(a) for a in ACTIVATIONS))


def check_out(out, shape, op: str, name: str = "out") -> np.ndarray:
    """Return `out` unchanged if it can receive a float32 result of `shape`, else raise.

    It is never converted: a result must not land in a temporary copy.
    """
    out = new_out(shape, out, op, name)
    shape = tuple(shape)
    if out.dtype != np.float32:
        raise TypeError(f"{op}: argument '{name}' must be a float32 array, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{op}: argument '{name}' must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: argument '{name}' must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{op}: argument '{name}' is read-only but is written")
    return out


def _forward(x, act, out, op):
    x = as_f32(x, op, "x")
    out = check_out(out, x.shape, op) if out is not None else np.empty(x.shape, np.float32)
    _core.act_forward(out, x, act)
    return out


def activation(x, kind, out=None) -> np.ndarray:
    """Apply an elementwise activation: ``kind`` in "linear", "relu", "sigmoid", "tanh",
    "gelu" (None means "linear").

    x: array of any shape, converted to float32. out: optional float32 array of x's shape
    to write (it may be x itself). Returns the result (out if given).
    gelu is the exact x * Phi(x) = x/2 * erfc(-x/sqrt(2)); sigmoid is stable for large |x|.
    """
    return _forward(x, act_kind(kind, "activation"), out, "activation")


def activation_backward(dy, kind, x=None, y=None, dx=None) -> np.ndarray:
    """Gradient of an elementwise activation: dx += dy * act'(.).

    dy: upstream gradient, any shape. relu, sigmoid and tanh need y, the forward output;
    gelu needs x, the forward input; linear needs neither. dx: optional float32 array of
    dy's shape to ADD into; without it a fresh array holding dy * act'(.) is returned.
    """
    op = "activation_backward"
    act = act_kind(kind, op)
    dy = as_f32(dy, op, "dy")
    x = None if x is None else as_f32(x, op, "x")
    y = None if y is None else as_f32(y, op, "y")
    if act.name in _NEEDS_Y and y is None:
        raise ValueError(f"{op}: argument 'y' (the forward output) is required for "
                         f"activation {act.name!r}")
    if act.name == "gelu" and x is None:
        raise ValueError(f"{op}: argument 'x' (the forward input) is required for "
                         "activation 'gelu'")
    dx = check_out(dx, dy.shape, op, "dx") if dx is not None else np.zeros(dy.shape, np.float32)
    _core.act_backward(dx, dy, x, y, act)
    return dx


def relu(x, out=None) -> np.ndarray:
    """max(x, 0), elementwise (float32; optional out= of x's shape)."""
    if any_symbolic((x,)):
        return autodiff.activation_op(x, "relu")
    return _forward(x, _core.Act.relu, out, "relu")


def sigmoid(x, out=None) -> np.ndarray:
    """1 / (1 + exp(-x)), elementwise, without overflow for large |x|."""
    if any_symbolic((x,)):
        return autodiff.activation_op(x, "sigmoid")
    return _forward(x, _core.Act.sigmoid, out, "sigmoid")


def tanh(x, out=None) -> np.ndarray:
    """tanh(x), elementwise (float32; optional out= of x's shape)."""
    if any_symbolic((x,)):
        return autodiff.activation_op(x, "tanh")
    return _forward(x, _core.Act.tanh, out, "tanh")


def gelu(x, out=None) -> np.ndarray:
    """Exact GELU, x * Phi(x) = x/2 * erfc(-x/sqrt(2)), elementwise (not the tanh form)."""
    if any_symbolic((x,)):
        return autodiff.activation_op(x, "gelu")
    return _forward(x, _core.Act.gelu, out, "gelu")


def softmax(x, out=None, axis=-1) -> np.ndarray:
    """Softmax over the last axis: exp(x - max) / sum(exp(x - max)).

    x: array of rank >= 1, converted to float32. out: optional float32 array of x's shape
    (it may be x itself). Rows of -inf except one entry give exact zeros.
    """
    op = "softmax"
    if any_symbolic((x,)):
        return autodiff.softmax_op(x, axis)
    if axis not in (-1, getattr(x, "ndim", 0) - 1):
        return autodiff.softmax_op(x, axis)
    x = as_f32(x, op, "x")
    if x.ndim < 1:
        raise ValueError(f"{op}: argument 'x' must have at least 1 dimension, got a scalar")
    out = check_out(out, x.shape, op) if out is not None else np.empty(x.shape, np.float32)
    _core.softmax_forward(out, x)
    return out


def softmax_backward(dy, y, dx=None) -> np.ndarray:
    """Gradient of softmax over the last axis: dx += y * (dy - sum(dy * y, -1)).

    y: the softmax output; dy: the upstream gradient, same shape. dx: optional float32
    array to ADD into; without it a fresh array is returned.
    """
    op = "softmax_backward"
    dy = as_f32(dy, op, "dy")
    y = as_f32(y, op, "y")
    if dy.ndim < 1:
        raise ValueError(f"{op}: argument 'dy' must have at least 1 dimension, got a scalar")
    dx = check_out(dx, dy.shape, op, "dx") if dx is not None else np.zeros(dy.shape, np.float32)
    _core.softmax_backward(dx, dy, y)
    return dx
