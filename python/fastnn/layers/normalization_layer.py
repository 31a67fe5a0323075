"""LayerNormalization (Keras name and defaults): per-sample normalisation over the last axis."""
from __future__ import annotations

import numpy as np

from .. import _core
from .base import Layer, register


@register
class LayerNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta, with the mean and (biased)
    variance of each sample's last axis, e.g. of each time step of (N, T, C).

    Args:
        axis: -1 only (the last axis), the Keras default.
        epsilon: added to the variance; 1e-3 as in Keras.
        center / scale: learn beta / gamma (C,).
    """

    supports_masking = True

    def __init__(self, axis=-1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 beta_initializer="zeros", gamma_initializer="ones", **kw):
        super().__init__(**kw)
        if axis not in (-1, [-1], (-1,)):
            raise ValueError(f"LayerNormalization: only axis=-1 (the last axis) is supported, "
                             f"got {axis!r}")
        if not (np.isfinite(epsilon) and epsilon >= 0):
            raise ValueError(f"LayerNormalization: epsilon must be a finite number >= 0, got {epsilon!r}")
        self.axis = -1
        self.epsilon = float(epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer, self.gamma_initializer = beta_initializer, gamma_initializer

    def build(self, input_shape):
        c = input_shape[-1]
        if self.scale:
            self.add_weight("gamma", (c,), self.gamma_initializer)
        if self.center:
            self.add_weight("beta", (c,), self.beta_initializer)
        return tuple(input_shape)

    def forward(self, x, training=False):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        m = x2.shape[0]
        gamma = self.gamma if self.scale else None
        beta = self.beta if self.center else None
        if training:
            y = self.buffer("y", x.shape)
            mean, rstd = self.buffer("mean", (m,)), self.buffer("rstd", (m,))
            _core.layer_norm_forward(y.reshape(-1, c), mean, rstd, x2, gamma, beta, self.epsilon)
            self._x2, self._mean, self._rstd, self._shape = x2, mean, rstd, x.shape
            return y
        y = np.empty(x.shape, np.float32)
        _core.layer_norm_forward(y.reshape(-1, c), None, None, x2, gamma, beta, self.epsilon)
        return y

    def backward(self, dy):
        x2 = self._x2
        dx = self.buffer("dx", self._shape) if self.need_input_grad else None  # overwritten
        dg = self.dgamma if self.trainable and self.scale else None
        db = self.dbeta if self.trainable and self.center else None
        if dx is None and dg is None and db is None:
            return None
        _core.layer_norm_backward(None if dx is None else dx.reshape(x2.shape), dg, db,
                                  dy.reshape(x2.shape), self._mean, self._rstd, x2,
                                  self.gamma if self.scale else None, accumulate_dx=False)
        return dx

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": self.beta_initializer,
                "gamma_initializer": self.gamma_initializer}
