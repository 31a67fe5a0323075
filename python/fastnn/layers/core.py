"""Core layers: Input, Dense, Activation, Dropout, Flatten, Reshape."""
from __future__ import annotations

import numpy as np

from .. import _core
from .base import Layer, register
from .quantized import QuantKernels, observe

# Activations the dense/conv epilogues fuse; softmax runs as its own kernel after them.
_ACT = {None: _core.Act.linear, "linear": _core.Act.linear, "relu": _core.Act.relu,
        "sigmoid": _core.Act.sigmoid, "tanh": _core.Act.tanh, "gelu": _core.Act.gelu}
ACTIVATIONS = sorted(k for k in _ACT if k) + ["softmax"]


def check_activation(activation, where: str):
    if activation is None or activation == "softmax" or activation in _ACT:
        return activation or "linear"
    raise ValueError(f"{where}: unknown activation {activation!r}; expected one of {ACTIVATIONS}")


class Activated(Layer):
    """Shared handling of an output activation (fused kind + optional softmax).

    When a model pairs a final softmax (or sigmoid) with a cross-entropy loss, it sets
    ``emit_logits`` while it trains and evaluates: forward then stops before that
    activation and the loss runs the fused, stable kernel on the logits.
    """

    def __init__(self, activation=None, **kw):
        super().__init__(**kw)
        self.activation = check_activation(activation, type(self).__name__)
        self.emit_logits = False

    def _fused_act(self):
        if self.activation == "softmax" or self.emit_logits:
            return _core.Act.linear
        return _ACT[self.activation]

    def _finish(self, y: np.ndarray) -> np.ndarray:
        """Apply softmax after the fused part, unless the loss takes logits."""
        if self.activation == "softmax" and not self.emit_logits:
            _core.softmax_forward(y, y)
        return y

    def _activation_grad(self, dy: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Backward through a standalone softmax; the fused kinds are done by the kernel."""
        if self.activation == "softmax" and not self.emit_logits:
            dz = self.buffer("dz", dy.shape, zero=True)
            _core.softmax_backward(dz, dy, y)
            return dz
        return dy


@register
class Dense(QuantKernels, Activated):
    """y = activation(x @ kernel + bias) over the last axis; kernel is (in, units)."""

    quantizable_kernels = ("kernel",)
    fresh_inference_output = True
    overwrites_grads = True

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kw):
        super().__init__(activation, **kw)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense: units must be a positive int, got {units!r}")
        self.units = int(units)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_shape):
        self.add_kernel("kernel", (input_shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False):
        # (N, ..., in) runs as (N*..., in); a 2-D x (the common case) needs no reshape.
        flat = x.ndim == 2
        x2 = x if flat else x.reshape(-1, x.shape[-1])
        n = x2.shape[0]
        if self.quantization is not None:
            self.check_inference(training)
            y = np.empty((n, self.units), np.float32)
            self.qdense_into(y, x2, "kernel", self.bias if self.use_bias else None,
                             self._fused_act())
            y = self._finish(y)
            return y if flat else y.reshape(x.shape[:-1] + (self.units,))
        if not training:
            # Inference, written out: its Python shows at batch 1.
            observe(self, "kernel", x2)
            # fastnn.pruning's cached sparse kernel: None where the GEMM is faster
            sparse = self.__dict__.get("_sparse")
            y = sparse.forward(x2, self._fused_act()) if sparse is not None else None
            if y is None:
                y = np.empty((n, self.units), np.float32)
                _core.dense_forward(y, None, x2, self.kernel, self.bias if self.use_bias else None,
                                    self._fused_act())
            y = self._finish(y)
            return y if flat else y.reshape(x.shape[:-1] + (self.units,))
        act = self._fused_act()
        y = self.buffer("y", (n, self.units))
        z = self.buffer("z", (n, self.units)) if act == _core.Act.gelu else None
        b = self.bias if self.use_bias else None
        nk = 0
        if not self.need_input_grad and self.trainable:
            # The input is data: skip its all-zero columns (dense.h, dense_forward_sparse).
            k = x2.shape[1]
            self._cols = self.buffer("cols", (k,), np.int32)
            self._xc = self.buffer("xc", (n, k))
            nk = _core.dense_forward_sparse(y, z, self._cols, self._xc, x2, self.kernel, b,
                                            act)
        else:
            _core.dense_forward(y, z, x2, self.kernel, b, act)
        y = self._finish(y)
        self._x, self._y, self._z, self._act, self._lead = x2, y, z, act, x.shape[:-1]
        self._nk = nk
        return y if flat else y.reshape(x.shape[:-1] + (self.units,))

    def backward(self, dy):
        x, y = self._x, self._y
        dy2 = dy.reshape(y.shape)
        dz = self._activation_grad(dy2, y)
        dx = self.buffer("dx", x.shape) if self.need_input_grad else None  # overwritten
        if self.trainable:
            dw, db = self.dkernel, (self.dbias if self.use_bias else None)
            acc = not self.first_grad_write()
        else:
            dw = db = None
            acc = True
        # dz doubles as the kernel's scratch: dy belongs to this step only.
        if self._nk:
            _core.dense_backward_sparse(dw, db, dz, self.buffer("dwc", self.kernel.shape), dz,
                                        self._cols, self._nk, self._xc, y, self._z, self._act,
                                        acc)
            return None
        _core.dense_backward(dx, dw, db, dz, dz, x, self.kernel, y, self._z, self._act, acc,
                             False)
        return None if dx is None else dx.reshape(self._lead + (x.shape[1],))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer)}


def _init_name(init):
    if isinstance(init, str):
        return init
    raise ValueError(f"cannot save a model whose initializer is a callable ({init!r}); use a name")


@register
class Activation(Activated):
    """Applies an activation function elementwise (softmax: over the last axis)."""

    def __init__(self, activation, **kw):
        super().__init__(activation, **kw)

    def forward(self, x, training=False):
        act = self._fused_act()
        y = self.buffer("y", x.shape) if training else np.empty(x.shape, np.float32)
        if act == _core.Act.linear:
            y[...] = x
        else:
            _core.act_forward(y, x, act)
        y = self._finish(y)
        if training:
            self._x, self._y, self._act = x, y, act
        return y

    def backward(self, dy):
        dz = self._activation_grad(dy, self._y)
        if self._act == _core.Act.linear:
            return dz
        dx = self.buffer("dx", dy.shape, zero=True)
        x = self._x if self._act == _core.Act.gelu else None
        _core.act_backward(dx, dz, x, self._y, self._act)
        return dx

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@register
class Dropout(Layer):
    """Inverted dropout: zeroes a fraction `rate` of inputs while training, scales the rest."""

    def __init__(self, rate: float, seed: int | None = None, **kw):
        super().__init__(**kw)
        if not (0.0 <= float(rate) < 1.0):
            raise ValueError(f"{type(self).__name__}: rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self._calls = 0
        self._base_seed = None

    def _next_seed(self) -> int:
        """A fresh seed for every call's mask, reproducible from `seed`."""
        if self._base_seed is None:
            self._base_seed = self.seed if self.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self._calls += 1
        return (self._base_seed * 1_000_003 + self._calls - 1) % 2**64

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        y = self.buffer("y", x.shape)
        mask = self.buffer("mask", x.shape, np.uint8)
        _core.dropout_forward(y, mask, x, self.rate, self._next_seed())
        self._mask = mask
        return y

    def backward(self, dy):
        if self._mask is None:
            return dy
        dx = self.buffer("dx", dy.shape)
        _core.dropout_backward(dx, dy, self._mask, self.rate, False)
        return dx

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@register
class Flatten(Layer):
    """Flattens each sample to one axis: (N, d1, d2, ...) -> (N, d1*d2*...)."""

    def build(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._in_shape)


@register
class Reshape(Layer):
    """Reshapes each sample to `target_shape` (one entry may be -1)."""

    def __init__(self, target_shape, **kw):
        super().__init__(**kw)
        self.target_shape = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in self.target_shape) > 1 or any(s == 0 or s < -1 for s in self.target_shape):
            raise ValueError(f"Reshape: target_shape must hold positive sizes and at most one -1, got {target_shape!r}")

    def build(self, input_shape):
        n = int(np.prod(input_shape))
        known = int(np.prod([s for s in self.target_shape if s != -1]))
        if -1 in self.target_shape:
            if n % known:
                raise ValueError(f"{self.name}: cannot reshape {tuple(input_shape)} to {self.target_shape}")
            return tuple(n // known if s == -1 else s for s in self.target_shape)
        if known != n:
            raise ValueError(f"{self.name}: cannot reshape {tuple(input_shape)} ({n} values) to "
                             f"{self.target_shape} ({known} values)")
        return self.target_shape

    def forward(self, x, training=False):
        self._in_shape = x.shape
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward(self, dy):
        return dy.reshape(self._in_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


@register
class InputLayer(Layer):
    """Declares the shape of each sample (without the batch axis); passes data through."""

    def __init__(self, shape=None, input_shape=None, **kw):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input: shape is required, e.g. Input(shape=(28, 28))")
        super().__init__(input_shape=shape, **kw)

    def forward(self, x, training=False):
        return x

    def backward(self, dy):
        return dy

    def get_config(self):
        cfg = super().get_config()
        cfg["shape"] = cfg.pop("input_shape")
        return cfg


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None):
    """Keras' Input(shape=...): a symbolic tensor, the start of a Functional model or the
    first entry of a Sequential (shape excludes the batch axis)."""
    from ..models import Input as make_input
    return make_input(shape, batch_size=batch_size, name=name, dtype=dtype, batch_shape=batch_shape)
