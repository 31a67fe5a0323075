"""BatchNormalization (Keras names and defaults) over the last (channel) axis."""
from __future__ import annotations

import numpy as np

from .. import _core, distribute, initializers
from .base import Layer, register
from .core import _init_name


@register
class BatchNormalization(Layer):
    """Normalises each channel (last axis) with the batch's statistics while training and
    with running statistics otherwise: y = gamma * (x - mean) / sqrt(var + epsilon) + beta.

    While training, moving_mean/moving_variance become momentum * moving + (1 - momentum) *
    batch (biased batch variance, as Keras). They are not trainable parameters: they are
    layer state (see ``state()``), saved and loaded with the model. As in Keras, a layer
    with trainable=False always uses the moving statistics, and does not update them.

    synchronized=True (Keras's argument; PyTorch's SyncBatchNorm): under data-parallel
    training (fastnn.distribute, one shard per process) each process normalises its shard
    with the statistics of the whole global batch, gathered from every process in each
    forward pass, and the backward pass uses the global sums as well, so a step computes
    what one process computes on the whole batch. Without a distribution it is the usual
    layer.
    """

    def __init__(self, axis=-1, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", synchronized: bool = False, **kw):
        super().__init__(**kw)
        self.synchronized = bool(synchronized)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization: axis must be an int, got {axis!r}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum!r}")
        if not (np.isfinite(float(epsilon)) and float(epsilon) >= 0.0):
            raise ValueError(f"BatchNormalization: epsilon must be a finite number >= 0, got {epsilon!r}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        for init in (beta_initializer, gamma_initializer, moving_mean_initializer,
                     moving_variance_initializer):
            initializers.get(init)

    def build(self, input_shape):
        rank = len(input_shape) + 1  # with the batch axis, as Keras counts `axis`
        axis = self.axis + rank if self.axis < 0 else self.axis
        if axis != rank - 1:
            raise ValueError(f"{self.name}: only the last axis (channels last) is supported: got "
                             f"axis={self.axis} for inputs of rank {rank} (batch included)")
        c = input_shape[-1]
        if self.scale:
            self.add_weight("gamma", (c,), self.gamma_initializer)
        if self.center:
            self.add_weight("beta", (c,), self.beta_initializer)
        self.moving_mean = np.zeros(c, np.float32)
        self.moving_variance = np.ones(c, np.float32)
        return tuple(input_shape)

    def initialize(self, rng):
        super().initialize(rng)
        c = self.moving_mean.shape
        self.moving_mean[...] = initializers.get(self.moving_mean_initializer)(c, rng)
        self.moving_variance[...] = initializers.get(self.moving_variance_initializer)(c, rng)

    def state(self) -> dict:
        return {**super().state(), "moving_mean": self.moving_mean,
                "moving_variance": self.moving_variance}

    def forward(self, x, training=False):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        gamma = self.gamma if self.scale else None
        beta = self.beta if self.center else None
        if not training:
            y = np.empty(x2.shape, np.float32)
            _core.batch_norm_forward_infer(y, None, None, x2, gamma, beta, self.moving_mean,
                                           self.moving_variance, self.epsilon)
            return y.reshape(x.shape)
        y = self.buffer("y", x2.shape)
        mean = self.buffer("mean", (c,))
        invstd = self.buffer("invstd", (c,))
        batch_stats = bool(self.trainable)
        shard_stats = self.__dict__.get("_shard_stats")
        sync = None
        if batch_stats and self.synchronized and shard_stats is not None:
            sync = distribute.distribution()
            if sync is not None and sync.size == 1:
                sync = None
        self._sync = sync
        if sync is not None:
            # the global batch's statistics: every rank's sums, added in rank order
            var = self.buffer("global_var", (c,))
            sync.global_moments(mean, var, x2)
            _core.batch_norm_forward_infer(y, None, invstd, x2, gamma, beta, mean, var,
                                           self.epsilon)
            shard_stats.append((x2.shape[0], mean.copy(), invstd.copy()))
            self._x, self._mean, self._invstd, self._batch_stats, self._shape = (
                x2, mean, invstd, False, x.shape)
            return y.reshape(x.shape)
        if batch_stats and shard_stats is not None:
            # a shard of a data-parallel step: the moving statistics are updated once per
            # step from every shard's (fastnn.distribute), not here
            mm = self.buffer("shard_moving_mean", (c,), zero=True)
            mv = self.buffer("shard_moving_variance", (c,), zero=True)
            _core.batch_norm_forward_train(y, mean, invstd, mm, mv, x2, gamma, beta,
                                           self.momentum, self.epsilon)
            shard_stats.append((x2.shape[0], mean.copy(), invstd.copy()))
        elif batch_stats:
            _core.batch_norm_forward_train(y, mean, invstd, self.moving_mean, self.moving_variance,
                                           x2, gamma, beta, self.momentum, self.epsilon)
        else:
            _core.batch_norm_forward_infer(y, mean, invstd, x2, gamma, beta, self.moving_mean,
                                           self.moving_variance, self.epsilon)
        self._x, self._mean, self._invstd, self._batch_stats, self._shape = (
            x2, mean, invstd, batch_stats, x.shape)
        return y.reshape(x.shape)

    def backward(self, dy):
        x = self._x
        dx = self.buffer("dx", x.shape) if self.need_input_grad else None
        learn = self.trainable
        dgamma = self.dgamma if (learn and self.scale) else None
        dbeta = self.dbeta if (learn and self.center) else None
        dy2 = dy.reshape(x.shape)
        _core.batch_norm_backward(dx, dgamma, dbeta, dy2, self._mean, self._invstd,
                                  x, self.gamma if self.scale else None, self._batch_stats,
                                  False)  # overwrites dx: no zeroing pass
        sync = self._sync
        if sync is not None and dx is not None:
            # dx = gamma·invstd·(dy − Σdy/B − x̂·Σ(dy·x̂)/B), sums over the global batch: the
            # kernel gave the first term (statistics taken as constants), add the others
            xhat = (x - self._mean) * self._invstd
            s1, s2, n = sync.global_sums(dy2, xhat)
            g = self._invstd * (self.gamma if self.scale else np.float32(1.0))
            dx -= (g * (s1 / n)).astype(np.float32)
            dx -= xhat * (g * (s2 / n)).astype(np.float32)
        return None if dx is None else dx.reshape(self._shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "synchronized": self.synchronized,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": _init_name(self.beta_initializer),
                "gamma_initializer": _init_name(self.gamma_initializer),
                "moving_mean_initializer": _init_name(self.moving_mean_initializer),
                "moving_variance_initializer": _init_name(self.moving_variance_initializer)}
