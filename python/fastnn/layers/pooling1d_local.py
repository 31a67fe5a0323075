"""MaxPooling1D and AveragePooling1D (Keras names) over sequences (N, T, C).

They run the 2-D pooling kernels on the (N, 1, T, C) view of x with (1, pool_size)
windows moved by (1, strides): reshapes, no copies.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops.pool import PADDINGS, pool_options, pool_output_hw
from .base import Layer, register
from .conv1d import check_channels_last, check_sequence_batch, sequence_shape, single_int


class _Pooling1D(Layer):
    """Shared options of MaxPooling1D and AveragePooling1D."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kw):
        super().__init__(**kw)
        op = type(self).__name__
        check_channels_last(data_format, op)
        p = single_int(pool_size, op, "pool_size")
        s = p if strides is None else single_int(strides, op, "strides")
        self._pool_2d, self._strides_2d, self.padding = pool_options(op, (1, p), (1, s), padding)
        self._pad = PADDINGS[self.padding]
        self.pool_size, self.strides = (p,), (s,)

    def build(self, input_shape):
        T, C = sequence_shape(self, input_shape)
        (p,) = self.pool_size
        if self.padding == "valid" and T < p:
            raise ValueError(f"{self.name}: pool_size {p} is larger than the input's T = {T}; "
                             f"use padding='same' or longer inputs")
        _, out_t = pool_output_hw(self.name, (1, T), self._pool_2d, self._strides_2d,
                                  self.padding)
        return (out_t, C)

    def _views(self, x):
        """x as (N, 1, T, C) and the output shape (N, 1, T_out, C) of that view."""
        check_sequence_batch(self, x)
        n, t, c = x.shape
        return x.reshape(n, 1, t, c), (n, 1) + self.output_shape

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "strides": list(self.strides), "padding": self.padding,
                "data_format": "channels_last"}


@register
class MaxPooling1D(_Pooling1D):
    """Max over windows of pool_size steps moved by strides (default pool_size); 'valid'
    (T_out = floor((T - pool_size) / strides) + 1) or 'same' (T_out = ceil(T / strides);
    padded steps never win). Keeps the position of each max for backward."""

    def forward(self, x, training=False):
        x4, shape = self._views(x)
        if training and self.need_input_grad:
            y = self.buffer("y", shape)
            idx = self.buffer("idx", shape, np.int32)
            self._idx, self._x_shape = idx, x4.shape
        else:
            y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
            idx = None
        _core.max_pool2d_forward(y, idx, x4, self._pool_2d, self._strides_2d, self._pad)
        return y.reshape((x.shape[0],) + self.output_shape)

    def backward(self, dy):
        if not self.need_input_grad:
            return None
        dx = self.buffer("dx", self._x_shape)
        dy4 = dy.reshape(self._idx.shape)
        _core.max_pool2d_backward(dx, dy4, self._idx, False)  # overwrites dx: no zeroing pass
        n, _, t, c = self._x_shape
        return dx.reshape(n, t, c)


@register
class AveragePooling1D(_Pooling1D):
    """Mean over windows of pool_size steps moved by strides (default pool_size); with
    'same' padding each window averages its real steps only (as Keras does)."""

    def forward(self, x, training=False):
        x4, shape = self._views(x)
        y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
        _core.avg_pool2d_forward(y, x4, self._pool_2d, self._strides_2d, self._pad)
        if training:
            self._x_shape, self._y_shape = x4.shape, shape
        return y.reshape((x.shape[0],) + self.output_shape)

    def backward(self, dy):
        if not self.need_input_grad:
            return None
        dx = self.buffer("dx", self._x_shape)
        dy4 = dy.reshape(self._y_shape)
        _core.avg_pool2d_backward(dx, dy4, self._pool_2d, self._strides_2d, self._pad, False)
        n, _, t, c = self._x_shape
        return dx.reshape(n, t, c)


# Keras's short aliases.
MaxPool1D = MaxPooling1D
AvgPool1D = AveragePooling1D
