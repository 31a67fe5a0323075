"""Pooling layers over channels-last images (N, H, W, C), with Keras names and defaults."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops.pool import PADDINGS, pool_options, pool_output_hw
from .base import Layer, register


def _check_data_format(data_format, where: str):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"{where}: only data_format='channels_last' (NHWC) is supported, "
                         f"got {data_format!r}")


def _check_image_shape(layer: Layer, input_shape):
    if len(input_shape) != 3:
        raise ValueError(f"{layer.name}: expects images of shape (H, W, C) per sample, got "
                         f"input shape {tuple(input_shape)}")


class _Pooling2D(Layer):
    """Shared options of MaxPooling2D and AveragePooling2D."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(**kw)
        where = type(self).__name__
        _check_data_format(data_format, where)
        self.pool_size, self.strides, self.padding = pool_options(where, pool_size, strides, padding)
        self._pad = PADDINGS[self.padding]

    def build(self, input_shape):
        _check_image_shape(self, input_shape)
        oh, ow = pool_output_hw(self.name, input_shape[:2], self.pool_size, self.strides, self.padding)
        return (oh, ow, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "strides": list(self.strides), "padding": self.padding,
                "data_format": "channels_last"}


@register
class MaxPooling2D(_Pooling2D):
    """Max over pool_size windows moved by strides (default pool_size); 'valid' or 'same'
    padding (padded positions never win). Keeps the position of each max for backward."""

    def forward(self, x, training=False):
        shape = (x.shape[0],) + self.output_shape
        if training and self.need_input_grad:
            y = self.buffer("y", shape)
            idx = self.buffer("idx", shape, np.int32)
            self._idx, self._x_shape = idx, x.shape
        else:
            y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
            idx = None
        _core.max_pool2d_forward(y, idx, x, self.pool_size, self.strides, self._pad)
        return y

    def backward(self, dy):
        if not self.need_input_grad:
            return None
        dx = self.buffer("dx", self._x_shape)
        _core.max_pool2d_backward(dx, dy, self._idx, False)  # overwrites dx: no zeroing pass
        return dx


@register
class AveragePooling2D(_Pooling2D):
    """Mean over pool_size windows moved by strides (default pool_size); with 'same'
    padding each window averages its real elements only (as Keras does)."""

    def forward(self, x, training=False):
        shape = (x.shape[0],) + self.output_shape
        y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
        _core.avg_pool2d_forward(y, x, self.pool_size, self.strides, self._pad)
        if training:
            self._x_shape = x.shape
        return y

    def backward(self, dy):
        if not self.need_input_grad:
            return None
        dx = self.buffer("dx", self._x_shape)
        _core.avg_pool2d_backward(dx, dy, self.pool_size, self.strides, self._pad, False)
        return dx


@register
class GlobalAveragePooling2D(Layer):
    """Mean over H and W: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with keepdims=True."""

    def __init__(self, data_format=None, keepdims: bool = False, **kw):
        super().__init__(**kw)
        _check_data_format(data_format, type(self).__name__)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        _check_image_shape(self, input_shape)
        c = input_shape[2]
        return (1, 1, c) if self.keepdims else (c,)

    def forward(self, x, training=False):
        n, c = x.shape[0], x.shape[3]
        y = self.buffer("y", (n, c)) if training else np.empty((n, c), np.float32)
        _core.global_avg_pool2d_forward(y, x)
        if training:
            self._x_shape = x.shape
        return y.reshape((n,) + self.output_shape)

    def backward(self, dy):
        if not self.need_input_grad:
            return None
        dx = self.buffer("dx", self._x_shape)
        _core.global_avg_pool2d_backward(dx, dy.reshape(dy.shape[0], -1), False)
        return dx

    def get_config(self):
        return {**super().get_config(), "data_format": "channels_last", "keepdims": self.keepdims}


# Keras's short aliases.
MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D
GlobalAvgPool2D = GlobalAveragePooling2D
