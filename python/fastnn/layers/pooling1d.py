"""GlobalAveragePooling1D (Keras name): the mean over the time axis, padding-mask aware."""
from __future__ import annotations

import numpy as np

from .base import Layer, register


@register
class GlobalAveragePooling1D(Layer):
    """(N, T, C) -> (N, C): the mean over the T steps of each sample.

    With a padding mask (from an Embedding(mask_zero=True) earlier in the model, or given
    to forward), the mean runs over the real steps only; a sample with no real step gives
    zeros (never NaN) and passes no gradient back. keepdims=True keeps (N, 1, C).
    """

    def __init__(self, data_format: str = "channels_last", keepdims: bool = False, **kw):
        super().__init__(**kw)
        if data_format != "channels_last":
            raise ValueError(f"GlobalAveragePooling1D: only data_format='channels_last' "
                             f"(N, T, C) is supported, got {data_format!r}")
        self.data_format = data_format
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: expects (T, C) per sample, got {tuple(input_shape)}")
        return (1, input_shape[1]) if self.keepdims else (input_shape[1],)

    def compute_mask(self, x, mask):
        return None  # the time axis is gone

    def creates_mask(self) -> bool:
        return False

    def _weights(self, mask, n, t, training):
        """(N, T) float32 weights: 1/T, or mask/count (0 for a row with no real step)."""
        w = self.buffer("w", (n, t)) if training else np.empty((n, t), np.float32)
        if mask is None:
            w.fill(1.0 / t)
            return w
        m = np.asarray(mask)
        if m.shape != (n, t):
            raise ValueError(f"{self.name}: mask must have shape (N, T) = {(n, t)}, got {m.shape}")
        np.not_equal(m, 0, out=w, casting="unsafe")
        count = w.sum(axis=1, keepdims=True)
        np.divide(w, np.maximum(count, 1.0), out=w)
        return w

    def forward(self, x, training=False, mask=None):
        n, t, c = x.shape
        w = self._weights(mask, n, t, training)
        y = np.matmul(w[:, None, :], x)  # (N, 1, C): Σ_t w[n,t] x[n,t,:]
        if training:
            self._w, self._shape = w, x.shape
        return y if self.keepdims else y.reshape(n, c)

    def backward(self, dy):
        if not self.need_input_grad:
            return None
        n, t, c = self._shape
        dx = self.buffer("dx", self._shape)
        np.multiply(self._w[:, :, None], dy.reshape(n, 1, c), out=dx)
        return dx

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format,
                "keepdims": self.keepdims}


GlobalAvgPool1D = GlobalAveragePooling1D
