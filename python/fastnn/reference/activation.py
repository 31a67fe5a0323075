"""NumPy twins of fastnn.ops' activation functions: same names, same arguments.

Written for any float dtype (the tests run them in float64 against central finite
differences). ``kind`` is one of "linear", "relu", "sigmoid", "tanh", "gelu" (None means
"linear"); gelu is the exact one, x * Phi(x), computed as x/2 * erfc(-x/sqrt(2)).
"""
from __future__ import annotations

import math

import numpy as np

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "gelu")

_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _kind(kind) -> str:
    if kind is None:
        return "linear"
    name = getattr(kind, "name", kind)  # also accepts fastnn._core.Act
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kind!r}; expected one of {', '.join(ACTIVATIONS)}")
    return name


def _phi_cdf(x):
    """Standard normal CDF, accurate in both tails."""
    return (0.5 * _erfc(-x * _SQRT1_2)).astype(x.dtype)


def _forward(x, kind):
    if kind == "linear":
        return x.copy()
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "sigmoid":
        e = np.exp(-np.abs(x))
        r = 1 / (1 + e)
        return np.where(x >= 0, r, e * r)
    if kind == "tanh":
        return np.tanh(x)
    return x * _phi_cdf(x)  # gelu


def _derivative(kind, x, y):
    """act'(.) from the forward output y (relu, sigmoid, tanh) or input x (gelu)."""
    if kind == "linear":
        return 1
    if kind == "relu":
        return (y > 0).astype(y.dtype)
    if kind == "sigmoid":
        return y * (1 - y)
    if kind == "tanh":
        return 1 - y * y
    return _phi_cdf(x) + x * (_INV_SQRT_2PI * np.exp(-0.5 * x * x))  # gelu


def _store(result, out):
    if out is None:
        return result
    out[...] = result
    return out


def activation(x, kind, out=None):
    x = np.asarray(x)
    return _store(_forward(x, _kind(kind)), out)


def activation_backward(dy, kind, x=None, y=None, dx=None):
    kind = _kind(kind)
    dy = np.asarray(dy)
    g = dy * _derivative(kind, None if x is None else np.asarray(x),
                         None if y is None else np.asarray(y))
    if dx is None:
        return np.array(g, dtype=dy.dtype)
    dx += g
    return dx


def relu(x, out=None):
    return activation(x, "relu", out)


def sigmoid(x, out=None):
    return activation(x, "sigmoid", out)


def tanh(x, out=None):
    return activation(x, "tanh", out)


def gelu(x, out=None):
    return activation(x, "gelu", out)


def softmax(x, out=None):
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return _store(e / e.sum(axis=-1, keepdims=True), out)


def softmax_backward(dy, y, dx=None):
    dy, y = np.asarray(dy), np.asarray(y)
    g = y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if dx is None:
        return g
    dx += g
    return dx
