"""Convolution layers: Conv2D (channels-last images, as in Keras)."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops.conv2d import _explicit_padding, _pair, conv2d_geometry
from .base import register
from .core import Activated, _init_name
from .pooling import MaxPooling2D
from .quantized import QuantKernels, observe


def _padding_config(padding):
    """Padding as given, checked for type, in a JSON-friendly form."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"Conv2D: padding must be 'valid', 'same', an int, a pair (ph, pw) or "
                             f"((top, bottom), (left, right)), got {padding!r}")
        return padding.lower()
    (t, b), (l, r) = _explicit_padding(padding, "Conv2D")
    return [[t, b], [l, r]]


@register
class Conv2D(QuantKernels, Activated):
    """y = activation(conv(x, kernel) + bias) over images x (N, H, W, C).

    kernel is (KH, KW, C/groups, filters) as in Keras. strides, dilation_rate and
    kernel_size take an int or a pair (h, w). padding: "valid", "same" (as Keras), an int,
    a pair (ph, pw) or ((top, bottom), (left, right)). groups splits the channels into
    independent groups (groups == C: depthwise).
    """

    quantizable_kernels = ("kernel",)
    fresh_inference_output = True

    def __init__(self, filters: int, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 groups: int = 1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kw):
        super().__init__(activation, **kw)
        for name, v in (("filters", filters), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Conv2D: {name} must be a positive int, got {v!r}")
        if filters % groups:
            raise ValueError(f"Conv2D: filters ({filters}) must be divisible by groups ({groups})")
        self.filters = int(filters)
        self.groups = int(groups)
        self.kernel_size = _pair(kernel_size, "Conv2D", "kernel_size", 1)
        self.strides = _pair(strides, "Conv2D", "strides", 1)
        self.dilation_rate = _pair(dilation_rate, "Conv2D", "dilation_rate", 1)
        self.padding = _padding_config(padding)
        self.use_bias = use_bias
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_shape):
        if len(input_shape) != 3:
            hint = ""
            if len(input_shape) == 2:
                hint = (f"; for single-channel images add a channel axis first, e.g. "
                        f"Reshape(({input_shape[0]}, {input_shape[1]}, 1)) before this layer")
            raise ValueError(f"{self.name}: Conv2D expects inputs (N, H, W, C), got samples of "
                             f"shape {tuple(input_shape)}{hint}")
        H, W, C = input_shape
        if C % self.groups:
            raise ValueError(f"{self.name}: input channels C = {C} are not divisible by "
                             f"groups = {self.groups}")
        padding = self.padding if isinstance(self.padding, str) else tuple(map(tuple, self.padding))
        self._geo = conv2d_geometry((H, W), self.kernel_size, self.strides, padding,
                                    self.dilation_rate, op=self.name)
        self._pos = self._geo.core_pos(self.groups)  # the kernels' geometry arguments
        KH, KW = self.kernel_size
        self.add_kernel("kernel", (KH, KW, C // self.groups, self.filters), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)
        return (self._geo.out_h, self._geo.out_w, self.filters)

    def can_quantize(self) -> bool:
        return self.groups == 1

    def _bad_input(self, x):
        want = ", ".join(map(str, self.input_shape))
        raise ValueError(f"{self.name}: expected input (N, {want}), got shape {x.shape}")

    def forward(self, x, training=False):
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            self._bad_input(x)
        shape = (x.shape[0],) + self.output_shape
        act = self._fused_act()
        if self.quantization is not None:
            self.check_inference(training)
            y = np.empty(shape, np.float32)
            self.qconv2d_into(y, x, self._geo, self.bias if self.use_bias else None, act)
            return self._finish(y)
        if not training:
            observe(self, "kernel", x)
            y = np.empty(shape, np.float32)
            _core.conv2d_forward(y, None, x, self.kernel, self.bias if self.use_bias else None,
                                 *self._pos, act)
            return self._finish(y)
        y = self.buffer("y", shape)
        z = self.buffer("z", shape) if act == _core.Act.gelu else None
        _core.conv2d_forward(y, z, x, self.kernel, self.bias if self.use_bias else None,
                             *self._pos, act)
        y = self._finish(y)
        self._x, self._y, self._z, self._act = x, y, z, act
        return y

    def fuse_inference(self, nxt):
        """Conv2D -> MaxPooling2D: one kernel that pools each chunk of images while its
        convolution output is still in cache (see forward_max_pooled)."""
        if (type(self).forward is not Conv2D.forward
                or type(nxt).forward is not MaxPooling2D.forward or self.activation == "softmax"):
            return None
        return self.forward_max_pooled, nxt

    def forward_max_pooled(self, x, pool):
        """Inference: pool.forward(self.forward(x)) for a MaxPooling2D `pool` built on this
        layer's output, equal bit for bit, without the whole convolution output in memory."""
        if self.quantization is not None:
            return pool.forward(self.forward(x))
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            self._bad_input(x)
        observe(self, "kernel", x)
        y = np.empty((x.shape[0],) + pool.output_shape, np.float32)
        _core.conv2d_max_pool2d_forward(y, x, self.kernel, self.bias if self.use_bias else None,
                                        *self._pos, self._fused_act(), self._geo.out_h,
                                        self._geo.out_w, pool.pool_size, pool.strides, pool._pad)
        return y

    def backward(self, dy):
        x, y = self._x, self._y
        dz = self._activation_grad(dy.reshape(y.shape), y)
        dx = self.buffer("dx", x.shape, zero=True) if self.need_input_grad else None
        if self.trainable:
            dw, db = self.dkernel, (self.dbias if self.use_bias else None)
        else:
            dw = db = None
        # dz doubles as the kernel's scratch: dy belongs to this step only.
        _core.conv2d_backward(dx, dw, db, dz, dz, x, self.kernel, y, self._z, *self._pos,
                              self._act)
        return dx

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": self.padding, "dilation_rate": list(self.dilation_rate),
                "groups": self.groups, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer)}
