"""Conv1D (Keras name): a 1-D convolution over sequences (N, T, C) on Conv2D's kernels.

A sequence (N, T, C) is an image (N, 1, T, C) one row high, and a kernel
(K, C/groups, filters) a (1, K, C/groups, filters) one: the layer hands the 2-D kernels
those reshaped views (no copies). Causal padding is the kernels' own asymmetric padding
(dilation * (K - 1) columns on the left, none on the right), so no padded copy of x is made.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops.conv2d import conv2d_geometry
from .base import register
from .conv import Conv2D
from .quantized import observe

PADDINGS_1D = ("valid", "same", "causal")


def single_int(value, op: str, name: str) -> int:
    """An int >= 1, given as an int or a tuple/list of one int (Keras accepts both)."""
    v = value
    if isinstance(v, (tuple, list)) and len(v) == 1:
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{op}: argument '{name}' must be an int or a tuple of one int, "
                        f"got {value!r}")
    if v < 1:
        raise ValueError(f"{op}: argument '{name}' must be >= 1, got {value!r}")
    return int(v)


def check_channels_last(data_format, op: str) -> None:
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{op}: only data_format='channels_last' (N, T, C) is supported, "
                         f"got {data_format!r}")


def sequence_shape(layer, input_shape) -> tuple[int, int]:
    """(T, C) of a layer's per-sample input shape; ValueError naming the layer otherwise."""
    if len(input_shape) != 2:
        hint = ""
        if len(input_shape) == 1:
            hint = (f"; for one feature per step add a channel axis first, e.g. "
                    f"Reshape(({input_shape[0]}, 1)) before this layer")
        raise ValueError(f"{layer.name}: {type(layer).__name__} expects inputs (N, T, C), got "
                         f"samples of shape {tuple(input_shape)}{hint}")
    return int(input_shape[0]), int(input_shape[1])


def check_sequence_batch(layer, x) -> None:
    """x must be (N,) + the built input shape (T, C)."""
    if x.ndim != 3 or x.shape[1:] != layer.input_shape:
        want = ", ".join(map(str, layer.input_shape))
        raise ValueError(f"{layer.name}: expected input (N, {want}), got shape {x.shape}")


@register
class Conv1D(Conv2D):
    """y = activation(conv1d(x, kernel) + bias) over sequences x (N, T, C).

    kernel is (kernel_size, C/groups, filters) as in Keras; kernel_size, strides and
    dilation_rate take an int or a tuple of one int. padding:

    - "valid": no padding, T_out = floor((T - dilation_rate*(kernel_size-1) - 1)/strides) + 1;
    - "same": T_out = ceil(T / strides), the odd step of padding on the right (as Keras);
    - "causal": dilation_rate*(kernel_size-1) zeros on the left only, so output step t
      sees no input step after t*strides; T_out = ceil(T / strides).

    groups splits the channels into independent groups (groups == C: depthwise). Unlike
    Keras, strides > 1 may be combined with dilation_rate > 1 (as in Conv2D). Runs on
    Conv2D's kernels through (N, 1, T, C) views; see the module docstring.
    """

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 groups: int = 1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 data_format=None, **kw):
        op = type(self).__name__
        check_channels_last(data_format, op)
        for name, v in (("filters", filters), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
        if filters % groups:
            raise ValueError(f"{op}: filters ({filters}) must be divisible by groups ({groups})")
        k = single_int(kernel_size, op, "kernel_size")
        s = single_int(strides, op, "strides")
        d = single_int(dilation_rate, op, "dilation_rate")
        if not isinstance(padding, str) or padding.lower() not in PADDINGS_1D:
            raise ValueError(f"{op}: padding must be 'valid', 'same' or 'causal', got {padding!r}")
        mode = padding.lower()
        # The 2-D geometry of the (N, 1, T, C) view.
        self._padding_2d = ((0, 0), (d * (k - 1), 0)) if mode == "causal" else mode
        super().__init__(filters, (1, k), (1, s), self._padding_2d, (1, d), groups,
                         activation, use_bias, kernel_initializer, bias_initializer, **kw)
        # Keras's 1-D attributes (Conv2D stored the (1, n) pairs of the view).
        self.kernel_size, self.strides, self.dilation_rate = (k,), (s,), (d,)
        self.padding = mode

    def build(self, input_shape):
        T, C = sequence_shape(self, input_shape)
        if C % self.groups:
            raise ValueError(f"{self.name}: input channels C = {C} are not divisible by "
                             f"groups = {self.groups}")
        (k,), (s,), (d,) = self.kernel_size, self.strides, self.dilation_rate
        span = d * (k - 1) + 1
        if self.padding == "valid" and T < span:
            raise ValueError(f"{self.name}: the kernel (kernel_size {k}, dilation_rate {d}) "
                             f"spans {span} steps, more than the input's T = {T}; use "
                             f"padding='same' or 'causal', or longer inputs")
        self._geo = conv2d_geometry((1, T), (1, k), (1, s), self._padding_2d, (1, d),
                                    op=self.name)
        self._pos = self._geo.core_pos(self.groups)
        self.add_kernel("kernel", (k, C // self.groups, self.filters), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)
        return (self._geo.out_w, self.filters)

    def _kernel_2d(self, w):
        """The (1, K, C/groups, filters) view of a kernel-shaped array (no copy)."""
        return None if w is None else w.reshape((1,) + w.shape)

    def forward(self, x, training=False):
        check_sequence_batch(self, x)
        n, t, c = x.shape
        x4 = x.reshape(n, 1, t, c)
        shape = (n, 1) + self.output_shape
        act = self._fused_act()
        if self.quantization is not None:
            self.check_inference(training)
            y = np.empty(shape, np.float32)
            self.qconv2d_into(y, x4, self._geo, self.bias if self.use_bias else None, act)
            return self._finish(y).reshape((n,) + self.output_shape)
        if not training:
            observe(self, "kernel", x4)
        y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
        z = None
        if training and act == _core.Act.gelu:
            z = self.buffer("z", shape)
        _core.conv2d_forward(y, z, x4, self._kernel_2d(self.kernel),
                             self.bias if self.use_bias else None, *self._pos, act)
        y = self._finish(y)
        if training:
            self._x, self._y, self._z, self._act = x4, y, z, act
        return y.reshape((n,) + self.output_shape)

    def backward(self, dy):
        x, y = self._x, self._y
        dz = self._activation_grad(dy.reshape(y.shape), y)
        dx = self.buffer("dx", x.shape, zero=True) if self.need_input_grad else None
        if self.trainable:
            dw = self._kernel_2d(self.dkernel)
            db = self.dbias if self.use_bias else None
        else:
            dw = db = None
        # dz doubles as the kernel's scratch: dy belongs to this step only.
        _core.conv2d_backward(dx, dw, db, dz, dz, x, self._kernel_2d(self.kernel), y, self._z,
                              *self._pos, self._act)
        return None if dx is None else dx.reshape(x.shape[0], x.shape[2], x.shape[3])

    def get_config(self):
        # Conv2D's config, from the 1-D attributes: kernel_size [k], strides [s], ...
        return {**super().get_config(), "data_format": "channels_last"}


Convolution1D = Conv1D  # Keras's alias
