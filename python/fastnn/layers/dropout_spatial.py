"""SpatialDropout1D / SpatialDropout2D: drop whole channels of each sample."""
from __future__ import annotations

import numpy as np

from .base import register
from .core import Dropout


class _SpatialDropout(Dropout):
    """Dropout's rate, seed stream and config; one keep/drop draw per (sample, channel)."""
    rank = 0

    def build(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise ValueError(f"{self.name}: expects {self.rank + 1}-D samples, got {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._scale = None
            return x
        rng = np.random.default_rng(self._next_seed())
        keep = rng.random((x.shape[0],) + (1,) * self.rank + (x.shape[-1],)) >= self.rate
        self._scale = (keep / (1.0 - self.rate)).astype(np.float32)
        return x * self._scale

    def backward(self, dy):
        return dy if self._scale is None else dy * self._scale


@register
class SpatialDropout1D(_SpatialDropout):
    """Dropout of whole channels of (T, C) sequences."""
    rank = 1


@register
class SpatialDropout2D(_SpatialDropout):
    """Dropout of whole channels of (H, W, C) images."""
    rank = 2
