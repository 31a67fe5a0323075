"""Differentiable fastnn.ops functions for traced call()s.

Each function here works on NumPy arrays (it computes the result, as NumPy would) and on
symbolic tensors (inside a model's call(), or on fastnn.Input tensors), where it records
an :class:`Op` node whose ``backward`` gives the gradient of every input. A user's layer
written with these functions needs no backward of its own.

An Op keeps what its backward needs on itself (one instance per node). Its backward
returns one gradient per input (None where ``need`` says it is not wanted), each an array
of that input's shape that the caller may overwrite.
"""
from __future__ import annotations

import builtins

import numpy as np

from . import _core
from .graph import KerasTensor, Node, any_symbolic, as_tensor

_f32 = np.float32


def _arr(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != _f32:
        a = a.astype(_f32)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


class Op:
    """One differentiable function: shape inference, forward, backward."""

    name = "op"
    keeps_mask = False  # elementwise ops keep the (N, T) padding mask of their first input

    def get_config(self) -> dict:
        return {}

    def shape(self, *shapes):
        return shapes[0]

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, dy, need):
        raise NotImplementedError


def _apply(op: Op, *args):
    """Run op on arrays, or record it on symbolic tensors."""
    if any_symbolic(args):
        ts = [as_tensor(a, op.name) for a in args]
        node = Node(op, ts, "op")
        (out,) = node.make_outputs([op.shape(*[t.shape for t in ts])])
        return out
    return op.forward(*[_arr(a) for a in args])


# --- shapes ----------------------------------------------------------------------------
def broadcast_shapes(a, b, where: str):
    """NumPy broadcasting with None (the batch axis) matching None or 1 only."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError(f"{where}: shapes {tuple(a)} and {tuple(b)} cannot be broadcast together")
    return tuple(reversed(out))


def unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sum g over the axes that broadcasting added or stretched, back to `shape`."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    return np.ascontiguousarray(g.sum(axis=axes, dtype=_f32).reshape(shape))


def _norm_axis(axis, ndim, where):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{where}: axis {a} is out of range for rank {ndim}")
        out.append(int(a) % ndim)
    return tuple(sorted(out))


# --- elementwise -----------------------------------------------------------------------
def _base(a: np.ndarray) -> np.ndarray:
    return a if a.base is None else a.base


class _Binary(Op):
    keeps_mask = True

    def shape(self, a, b):
        return broadcast_shapes(a, b, self.name)

    def forward(self, a, b):
        y = self._f(a, b)
        self._a, self._b, self._y = a, b, y
        return y

    def backward(self, dy, need):
        da, db = self._grads(dy, need)
        da, db = (da if need[0] else None), (db if need[1] else None)
        if da is not None and da.shape != self._a.shape:
            da = unbroadcast(da, self._a.shape)
        if db is not None and db.shape != self._b.shape:
            db = unbroadcast(db, self._b.shape)
        # the graph takes ownership of each gradient: never hand out one buffer twice
        if da is not None and db is not None and _base(da) is _base(db):
            db = db.copy()
        return da, db


class Add(_Binary):
    name = "add"
    _f = staticmethod(np.add)

    def _grads(self, dy, need):
        return dy, dy


class Subtract(_Binary):
    name = "subtract"
    _f = staticmethod(np.subtract)

    def _grads(self, dy, need):
        return dy, (np.negative(dy) if need[1] else None)


class Multiply(_Binary):
    name = "multiply"
    _f = staticmethod(np.multiply)

    def _grads(self, dy, need):
        return (dy * self._b if need[0] else None), (dy * self._a if need[1] else None)


class Divide(_Binary):
    name = "divide"
    _f = staticmethod(np.divide)

    def _grads(self, dy, need):
        da = dy / self._b if need[0] else None
        db = -dy * self._y / self._b if need[1] else None
        return da, db


class _Extreme(_Binary):
    def _grads(self, dy, need):
        pick = self._pick(self._a, self._b)  # where a wins (ties: a)
        return (dy * pick if need[0] else None), (dy * ~pick if need[1] else None)


class Maximum(_Extreme):
    name = "maximum"
    _f = staticmethod(np.maximum)
    _pick = staticmethod(np.greater_equal)


class Minimum(_Extreme):
    name = "minimum"
    _f = staticmethod(np.minimum)
    _pick = staticmethod(np.less_equal)


class _Unary(Op):
    keeps_mask = True

    def forward(self, x):
        y = self._f(x)
        self._x, self._y = x, y
        return y

    def backward(self, dy, need):
        return (self._g(dy, self._x, self._y),)


def _unary(name, f, g, keeps_mask=True):
    cls = type(name.title().replace("_", ""), (_Unary,),
               {"name": name, "_f": staticmethod(f), "_g": staticmethod(g), "keeps_mask": keeps_mask})
    return cls


Identity = _unary("identity", lambda x: x, lambda dy, x, y: dy)
Negative = _unary("negative", np.negative, lambda dy, x, y: np.negative(dy))
Square = _unary("square", np.square, lambda dy, x, y: dy * (2 * x))
Sqrt = _unary("sqrt", np.sqrt, lambda dy, x, y: dy * (0.5 / y))
Exp = _unary("exp", np.exp, lambda dy, x, y: dy * y)
Log = _unary("log", np.log, lambda dy, x, y: dy / x)
Abs = _unary("abs", np.abs, lambda dy, x, y: dy * np.sign(x))


class LogicalNot(Op):
    """1 where x is 0, else 0 (Keras' logical_not on fastnn's float32 tensors): turns a
    mask with 1 = masked out (torch's key_padding_mask) into one with 1 = attend. A mask
    has no gradient: its input gets zeros."""
    name = "logical_not"

    def forward(self, x):
        return np.equal(x, 0).astype(_f32)

    def backward(self, dy, need):
        return (np.zeros(dy.shape, _f32) if need[0] else None,)


class Power(_Unary):
    name = "power"

    def __init__(self, p):
        self.p = float(p)

    def get_config(self):
        return {"p": self.p}

    def _f(self, x):
        return np.power(x, _f32(self.p))

    def _g(self, dy, x, y):
        return dy * (_f32(self.p) * np.power(x, _f32(self.p - 1)))


class Clip(_Unary):
    name = "clip"

    def __init__(self, lo, hi):
        self.lo, self.hi = float(lo), float(hi)

    def get_config(self):
        return {"lo": self.lo, "hi": self.hi}

    def _f(self, x):
        return np.clip(x, _f32(self.lo), _f32(self.hi))

    def _g(self, dy, x, y):
        return dy * ((x > self.lo) & (x < self.hi))


class Activation(_Unary):
    """relu / sigmoid / tanh / gelu on the fused activation kernels."""

    def __init__(self, kind: str):
        self.kind, self.name = kind, kind
        self._act = getattr(_core.Act, kind)

    def get_config(self):
        return {"kind": self.kind}

    def _f(self, x):
        y = np.empty(x.shape, _f32)
        _core.act_forward(y, x, self._act)
        return y

    def _g(self, dy, x, y):
        dx = np.zeros(dy.shape, _f32)
        _core.act_backward(dx, np.ascontiguousarray(dy), x if self.kind == "gelu" else None, y,
                           self._act)
        return dx


class Softmax(_Unary):
    name = "softmax"
    keeps_mask = True

    def __init__(self, axis=-1):
        self.axis = int(axis)

    def get_config(self):
        return {"axis": self.axis}

    def shape(self, s):
        _norm_axis(self.axis, len(s), self.name)
        return s

    def _f(self, x):
        xm = np.moveaxis(x, self.axis, -1) if self.axis not in (-1, x.ndim - 1) else x
        y = np.empty(xm.shape, _f32)
        _core.softmax_forward(y, np.ascontiguousarray(xm))
        return y if xm is x else np.ascontiguousarray(np.moveaxis(y, -1, self.axis))

    def _g(self, dy, x, y):
        last = self.axis in (-1, x.ndim - 1)
        dym = dy if last else np.moveaxis(dy, self.axis, -1)
        ym = y if last else np.moveaxis(y, self.axis, -1)
        dx = np.zeros(dym.shape, _f32)
        _core.softmax_backward(dx, np.ascontiguousarray(dym), np.ascontiguousarray(ym))
        return dx if last else np.ascontiguousarray(np.moveaxis(dx, -1, self.axis))


# --- reductions and shapes -------------------------------------------------------------
class _Reduce(Op):
    def __init__(self, axis=None, keepdims=False):
        self.axis = None if axis is None else (int(axis) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis))
        self.keepdims = bool(keepdims)

    def get_config(self):
        return {"axis": list(self.axis) if isinstance(self.axis, tuple) else self.axis,
                "keepdims": self.keepdims}

    def shape(self, s):
        axes = _norm_axis(self.axis, len(s), self.name)
        axes = tuple(range(len(s))) if axes is None else axes
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(s))
        return tuple(d for i, d in enumerate(s) if i not in axes)

    def forward(self, x):
        self._shape = x.shape
        self._axes = _norm_axis(self.axis, x.ndim, self.name)
        y = self._f(x, axis=self._axes, keepdims=self.keepdims, dtype=_f32)
        return np.asarray(y, _f32)

    def backward(self, dy, need):
        axes = tuple(range(len(self._shape))) if self._axes is None else self._axes
        g = dy if self.keepdims else np.expand_dims(dy, axes)
        g = np.broadcast_to(g, self._shape)
        if self._f is np.mean:
            count = int(np.prod([self._shape[a] for a in axes]))
            return (np.multiply(g, _f32(1.0 / count), dtype=_f32),)
        return (np.array(g, _f32),)


class Mean(_Reduce):
    name = "mean"
    _f = staticmethod(np.mean)


class Sum(_Reduce):
    name = "sum"
    _f = staticmethod(np.sum)


class Reshape(Op):
    name = "reshape"

    def __init__(self, new_shape):
        self.new_shape = tuple(-1 if s is None else int(s) for s in new_shape)

    def get_config(self):
        return {"new_shape": list(self.new_shape)}

    def shape(self, s):
        known = [d for d in s if d is not None]
        if len(known) == len(s):
            return np.empty(s, np.bool_).reshape(self.new_shape).shape
        # batched: the first entry of new_shape must stand for the batch axis
        if self.new_shape[0] != -1 or -1 in self.new_shape[1:]:
            raise ValueError(f"reshape: a batched tensor {s} needs new_shape (-1 or None, ...) "
                             f"with every other size given, got {self.new_shape}")
        if int(np.prod(s[1:])) != int(np.prod(self.new_shape[1:])):
            raise ValueError(f"reshape: cannot reshape {s} to {self.new_shape}")
        return (None,) + self.new_shape[1:]

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(self.new_shape)

    def backward(self, dy, need):
        return (dy.reshape(self._shape),)


class Transpose(Op):
    name = "transpose"

    def __init__(self, axes=None):
        self.axes = None if axes is None else tuple(int(a) for a in axes)

    def get_config(self):
        return {"axes": None if self.axes is None else list(self.axes)}

    def _perm(self, ndim):
        return tuple(reversed(range(ndim))) if self.axes is None else tuple(a % ndim for a in self.axes)

    def shape(self, s):
        p = self._perm(len(s))
        if sorted(p) != list(range(len(s))):
            raise ValueError(f"transpose: axes {self.axes} are not a permutation of rank {len(s)}")
        if s and s[0] is None and p[0] != 0:
            raise ValueError("transpose: the batch axis must stay first")
        return tuple(s[i] for i in p)

    def forward(self, x):
        return np.ascontiguousarray(np.transpose(x, self._perm(x.ndim)))

    def backward(self, dy, need):
        inv = np.argsort(self._perm(dy.ndim))
        return (np.ascontiguousarray(np.transpose(dy, inv)),)


class ExpandDims(Reshape):
    name = "expand_dims"

    def __init__(self, axis):
        self.axis = int(axis)

    def get_config(self):
        return {"axis": self.axis}

    def shape(self, s):
        a = self.axis % (len(s) + 1)
        if s and s[0] is None and a == 0:
            raise ValueError("expand_dims: cannot insert an axis before the batch axis")
        return s[:a] + (1,) + s[a:]

    def forward(self, x):
        self._shape = x.shape
        return np.expand_dims(x, self.axis)


class Concatenate(Op):
    name = "concatenate"
    keeps_mask = True

    def __init__(self, axis=-1):
        self.axis = int(axis)

    def get_config(self):
        return {"axis": self.axis}

    def shape(self, *shapes):
        r = len(shapes[0])
        a = self.axis % r if -r <= self.axis < r else None
        if a is None or any(len(s) != r for s in shapes):
            raise ValueError(f"concatenate: axis {self.axis} and ranks of {list(shapes)} do not fit")
        for s in shapes[1:]:
            if any(x != y for i, (x, y) in enumerate(zip(s, shapes[0])) if i != a):
                raise ValueError(f"concatenate: shapes {list(shapes)} differ outside axis {self.axis}")
        if shapes[0][a] is None:
            raise ValueError("concatenate: cannot join along the batch axis")
        return shapes[0][:a] + (builtins.sum(s[a] for s in shapes),) + shapes[0][a + 1:]

    def forward(self, *xs):
        self._sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis)

    def backward(self, dy, need):
        cuts = np.cumsum(self._sizes)[:-1]
        return [np.ascontiguousarray(g) if n else None
                for g, n in zip(np.split(dy, cuts, axis=self.axis), need)]


# --- kernels ---------------------------------------------------------------------------
class MatMul(Op):
    """a (..., K) @ b (K, M) on fastnn's GEMM; other ranks through numpy.matmul."""
    name = "matmul"

    def shape(self, a, b):
        if len(a) < 1 or len(b) < 2 or a[-1] != b[-2]:
            raise ValueError(f"matmul: shapes {a} and {b} do not fit (a[-1] must equal b[-2])")
        if len(b) == 2:
            return a[:-1] + (b[1],)
        return broadcast_shapes(a[:-2], b[:-2], "matmul") + (a[-2], b[-1])

    def forward(self, a, b):
        self._a, self._b = a, b
        if b.ndim == 2 and a.ndim >= 1:
            a2 = a.reshape(-1, a.shape[-1])
            return _core.matmul_plain(a2, b, False, False, None, False).reshape(a.shape[:-1] + (b.shape[1],))
        return np.matmul(a, b)

    def backward(self, dy, need):
        a, b = self._a, self._b
        if b.ndim == 2:
            dy2 = np.ascontiguousarray(dy).reshape(-1, b.shape[1])
            da = _core.matmul_plain(dy2, b, False, True, None, False).reshape(a.shape) if need[0] else None
            db = _core.matmul_plain(a.reshape(-1, a.shape[-1]), dy2, True, False, None, False) if need[1] else None
            return da, db
        da = unbroadcast(np.matmul(dy, np.swapaxes(b, -1, -2)), a.shape) if need[0] else None
        db = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), dy), b.shape) if need[1] else None
        return da, db


class Dense(Op):
    """activation(x @ w + b) with the fused dense kernels."""
    name = "dense"

    def __init__(self, activation="linear", has_bias=True):
        from .ops.activation import act_kind
        self.activation = activation or "linear"
        self.has_bias = bool(has_bias)
        self._act = act_kind(self.activation, "dense")

    def get_config(self):
        return {"activation": self.activation, "has_bias": self.has_bias}

    def shape(self, x, w, b=None):
        if len(w) != 2 or x[-1] != w[0] or (b is not None and tuple(b) != (w[1],)):
            raise ValueError(f"dense: x {x}, w {w} and b {b} do not fit (x[-1] == w[0], b == (w[1],))")
        return x[:-1] + (w[1],)

    def forward(self, x, w, b=None):
        oc = w.shape[1]
        x2 = x.reshape(-1, x.shape[-1])
        y = np.empty((x2.shape[0], oc), _f32)
        z = np.empty_like(y) if self.activation == "gelu" else None
        _core.dense_forward(y, z, x2, w, b, self._act)
        self._x2, self._w, self._y, self._z, self._shape = x2, w, y, z, x.shape
        return y.reshape(x.shape[:-1] + (oc,))

    def backward(self, dy, need):
        w = self._w
        dx = np.zeros(self._x2.shape, _f32) if need[0] else None
        dw = np.zeros(w.shape, _f32) if need[1] else None
        db = np.zeros(w.shape[1], _f32) if self.has_bias and need[2] else None
        dy2 = np.array(dy, _f32).reshape(-1, w.shape[1])  # the kernel uses it as scratch
        _core.dense_backward(dx, dw, db, None if self._act == _core.Act.linear else dy2, dy2,
                             self._x2, w, self._y, self._z, self._act)
        return (None if dx is None else dx.reshape(self._shape)), dw, db


class Conv2D(Op):
    name = "conv2d"

    def __init__(self, strides=1, padding="valid", dilation=1, groups=1, activation="linear",
                 has_bias=True):
        self.cfg = {"strides": strides, "padding": padding, "dilation": dilation,
                    "groups": groups, "activation": activation or "linear"}
        self.has_bias = bool(has_bias)

    def get_config(self):
        return {**self.cfg, "has_bias": self.has_bias}

    def shape(self, x, w, b=None):
        from .ops.conv2d import conv2d_geometry
        if len(x) != 4 or len(w) != 4:
            raise ValueError(f"conv2d: x must be (N, H, W, C) and w (KH, KW, C, OC), got {x} and {w}")
        geo = conv2d_geometry(x[1:3], w, self.cfg["strides"], self.cfg["padding"],
                              self.cfg["dilation"], "conv2d")
        return (x[0], geo.out_h, geo.out_w, w[3])

    def forward(self, x, w, b=None):
        from .ops.conv2d import conv2d
        z = None
        if self.cfg["activation"] == "gelu":
            z = np.empty(self.shape(x.shape, w.shape), _f32)
        y = conv2d(x, w, b, z=z, **self.cfg)
        self._saved = (x, w, y, z)
        return y

    def backward(self, dy, need):
        from .ops.conv2d import conv2d_backward
        x, w, y, z = self._saved
        dx, dw, db = conv2d_backward(dy, x, w, y, z, has_bias=self.has_bias and need[2],
                                     need_dx=need[0], need_dw=need[1], **self.cfg)
        return dx, dw, db


class LayerNorm(Op):
    name = "layer_normalization"
    keeps_mask = True

    def __init__(self, epsilon=1e-3, has_gamma=True, has_beta=True):
        self.epsilon = float(epsilon)
        self.has_gamma, self.has_beta = bool(has_gamma), bool(has_beta)

    def get_config(self):
        return {"epsilon": self.epsilon, "has_gamma": self.has_gamma, "has_beta": self.has_beta}

    def shape(self, x, *params):
        if any(tuple(p) != (x[-1],) for p in params):
            raise ValueError(f"layer_normalization: gamma/beta must be ({x[-1]},), got {list(params)}")
        return x

    def forward(self, x, *params):
        from .ops.layernorm import layer_norm
        it = iter(params)
        gamma = next(it) if self.has_gamma else None
        beta = next(it) if self.has_beta else None
        y, saved = layer_norm(x, gamma, beta, self.epsilon)
        self._saved = (x, gamma, saved)
        return y

    def backward(self, dy, need):
        from .ops.layernorm import layer_norm_backward
        x, gamma, saved = self._saved
        dx, dg, db = layer_norm_backward(np.ascontiguousarray(dy), x, gamma, saved)
        out = [dx if need[0] else None]
        if self.has_gamma:
            out.append(dg)
        if self.has_beta:
            out.append(db)
        return out


class DotProductAttention(Op):
    """softmax(scale q k^T [+ mask]) v per head on the fused flash-style kernels; q, k, v
    (N, T, NH, D) as Keras' ops.dot_product_attention."""
    name = "dot_product_attention"
    keeps_mask = True

    def __init__(self, scale=None, is_causal=False):
        self.scale = None if scale is None else float(scale)
        self.is_causal = bool(is_causal)

    def get_config(self):
        return {"scale": self.scale, "is_causal": self.is_causal}

    def shape(self, q, k, v):
        if len(q) != 4 or len(k) != 4 or tuple(k) != tuple(v) or q[2:] != k[2:]:
            raise ValueError(f"dot_product_attention: query {q}, key {k} and value {v} must be "
                             "(N, T, NH, D) with key and value alike")
        return q

    def forward(self, q, k, v):
        from .ops.attention import attention
        o, lse = attention(q, k, v, causal=self.is_causal, scale=self.scale)
        self._saved = (q, k, v, o, lse)
        return o

    def backward(self, dy, need):
        from .ops.attention import attention_backward
        q, k, v, o, lse = self._saved
        return attention_backward(np.ascontiguousarray(dy), q, k, v, o, lse,
                                  causal=self.is_causal, scale=self.scale)


# --- the functions (fastnn.ops re-exports these) -------------------------------------
def add(a, b):
    """a + b with broadcasting."""
    return _apply(Add(), a, b)


def subtract(a, b):
    return _apply(Subtract(), a, b)


def multiply(a, b):
    return _apply(Multiply(), a, b)


def divide(a, b):
    return _apply(Divide(), a, b)


def maximum(a, b):
    return _apply(Maximum(), a, b)


def minimum(a, b):
    return _apply(Minimum(), a, b)


def negative(x):
    return _apply(Negative(), x)


def identity(x):
    return _apply(Identity(), x)


def square(x):
    return _apply(Square(), x)


def sqrt(x):
    return _apply(Sqrt(), x)


def exp(x):
    return _apply(Exp(), x)


def log(x):
    return _apply(Log(), x)


def abs(x):  # noqa: A001 - Keras' name
    return _apply(Abs(), x)


def logical_not(x):
    """1.0 where x == 0, else 0.0 (no gradient)."""
    return _apply(LogicalNot(), x)


def power(x, p):
    if not isinstance(p, (int, float, np.number)):
        raise TypeError(f"power: the exponent must be a number, got {type(p).__name__}")
    return _apply(Power(p), x)


def clip(x, x_min, x_max):
    return _apply(Clip(x_min, x_max), x)


def mean(x, axis=None, keepdims=False):
    return _apply(Mean(axis, keepdims), x)


def sum(x, axis=None, keepdims=False):  # noqa: A001 - Keras' name
    return _apply(Sum(axis, keepdims), x)


def reshape(x, new_shape):
    return _apply(Reshape(new_shape), x)


def transpose(x, axes=None):
    return _apply(Transpose(axes), x)


def expand_dims(x, axis):
    return _apply(ExpandDims(axis), x)


def concatenate(xs, axis=-1):
    if not isinstance(xs, (list, tuple)) or not xs:
        raise ValueError("concatenate: expects a non-empty list of tensors")
    return _apply(Concatenate(axis), *xs)


def activation_op(x, kind: str):
    return _apply(Activation(kind), x)


def softmax_op(x, axis=-1):
    return _apply(Softmax(axis), x)


def matmul_op(a, b):
    return _apply(MatMul(), a, b)


def dense_op(x, w, b=None, activation="linear"):
    args = (x, w) if b is None else (x, w, b)
    return _apply(Dense(activation, b is not None), *args)


def conv2d_op(x, w, b=None, **cfg):
    args = (x, w) if b is None else (x, w, b)
    return _apply(Conv2D(has_bias=b is not None, **cfg), *args)


def layer_normalization(x, gamma=None, beta=None, epsilon=1e-3):
    """Layer normalisation over the last axis: gamma * (x - mean) / sqrt(var + eps) + beta."""
    params = tuple(p for p in (gamma, beta) if p is not None)
    return _apply(LayerNorm(epsilon, gamma is not None, beta is not None), x, *params)


def dot_product_attention(query, key, value, scale=None, is_causal=False):
    """Attention of (N, T, NH, D) queries over keys/values (Keras' spelling)."""
    return _apply(DotProductAttention(scale, is_causal), query, key, value)


def shape(x):
    """The shape of x; the batch axis of a symbolic tensor is None."""
    if isinstance(x, KerasTensor):
        return x.shape
    return tuple(np.shape(x))


def arange(start, stop=None, step=1, dtype=None):
    """Evenly spaced values, as numpy.arange (a constant inside a traced call())."""
    return np.arange(start, stop, step, dtype=dtype)


def cast(x, dtype):
    if np.dtype(dtype) != np.float32:
        raise ValueError(f"cast: only float32 tensors are supported, got {dtype!r}")
    return x if isinstance(x, KerasTensor) else _arr(x)


OPS = {c.name: c for c in (Add, Subtract, Multiply, Divide, Maximum, Minimum, Identity, Negative,
                           Square, Sqrt, Exp, Log, Abs, LogicalNot, Power, Clip, Softmax, Mean,
                           Sum, Reshape, Transpose, ExpandDims, Concatenate, MatMul, Dense,
                           Conv2D, LayerNorm, DotProductAttention)}


def op_from_config(name: str, config: dict) -> Op:
    """Rebuild an op recorded in a saved model."""
    if name in ("relu", "sigmoid", "tanh", "gelu"):
        return Activation(name)
    try:
        cls = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r} in a saved model") from None
    return cls(**config)
