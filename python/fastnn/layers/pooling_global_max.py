"""GlobalMaxPooling1D ((T, C) -> (C,)) and GlobalMaxPooling2D ((H, W, C) -> (C,))."""
from __future__ import annotations

import numpy as np

from .base import Layer, register


class _GlobalMax(Layer):
    rank = 0

    def __init__(self, keepdims: bool = False, **kw):
        super().__init__(**kw)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise ValueError(f"{self.name}: expects {self.rank + 1}-D samples, got {tuple(input_shape)}")
        return (1,) * self.rank + (input_shape[-1],) if self.keepdims else (input_shape[-1],)

    def forward(self, x, training=False):
        n, c = x.shape[0], x.shape[-1]
        flat = x.reshape(n, -1, c)
        self._arg = flat.argmax(axis=1)  # the first maximum of each (sample, channel)
        self._shape = x.shape
        y = np.take_along_axis(flat, self._arg[:, None, :], axis=1)[:, 0, :]
        return y.reshape((n,) + self.output_shape)

    def backward(self, dy):
        n, c = self._shape[0], self._shape[-1]
        dx = np.zeros((n, int(np.prod(self._shape[1:-1])), c), np.float32)
        np.put_along_axis(dx, self._arg[:, None, :], dy.reshape(n, 1, c), axis=1)
        return dx.reshape(self._shape)

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


@register
class GlobalMaxPooling1D(_GlobalMax):
    """Maximum over time of each channel."""
    rank = 1


@register
class GlobalMaxPooling2D(_GlobalMax):
    """Maximum over the image of each channel."""
    rank = 2


GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
