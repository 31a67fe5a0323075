"""SpatialDropout1D / SpatialDropout2D: drop whole channels of each sample."""
from __future__ import annotations

import numpy as np

from .base import Layer, register


class _SpatialDropout(Layer):
    rank = 0

    def __init__(self, rate: float, seed: int | None = None, **kw):
        super().__init__(**kw)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"{type(self).__name__}: rate must be in [0, 1), got {rate!r}")
        self.rate, self.seed = float(rate), seed
        self._base_seed, self._calls = None, 0

    def build(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise ValueError(f"{self.name}: expects {self.rank + 1}-D samples, got {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._scale = None
            return x
        if self._base_seed is None:
            self._base_seed = self.seed if self.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        rng = np.random.default_rng((self._base_seed * 1_000_003 + self._calls) % 2**64)
        self._calls += 1
        keep = rng.random((x.shape[0],) + (1,) * self.rank + (x.shape[-1],)) >= self.rate
        self._scale = (keep / (1.0 - self.rate)).astype(np.float32)
        return x * self._scale

    def backward(self, dy):
        return dy if self._scale is None else dy * self._scale

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@register
class SpatialDropout1D(_SpatialDropout):
    """Dropout of whole channels of (T, C) sequences."""
    rank = 1


@register
class SpatialDropout2D(_SpatialDropout):
    """Dropout of whole channels of (H, W, C) images."""
    rank = 2
