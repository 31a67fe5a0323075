"""Weight initializers (Keras names): each maps (shape, rng) -> float32 array."""
from __future__ import annotations

import numpy as np


def _fans(shape):
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    # convolution kernels (KH, KW, ..., IC, OC): receptive field times channels
    rf = int(np.prod(shape[:-2]))
    return shape[-2] * rf, shape[-1] * rf


def glorot_uniform(shape, rng):
    fan_in, fan_out = _fans(shape)
    lim = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, size=shape).astype(np.float32)


def he_uniform(shape, rng):
    fan_in, _ = _fans(shape)
    lim = np.sqrt(6.0 / fan_in)
    return rng.uniform(-lim, lim, size=shape).astype(np.float32)


def he_normal(shape, rng):
    fan_in, _ = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def random_normal(shape, rng, stddev=0.05):
    return (rng.standard_normal(shape) * stddev).astype(np.float32)


def random_uniform(shape, rng, limit=0.05):
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def zeros(shape, rng):
    return np.zeros(shape, np.float32)


def ones(shape, rng):
    return np.ones(shape, np.float32)


def orthogonal(shape, rng, gain=1.0):
    """A random orthogonal matrix (Keras' default for recurrent kernels): the Q of the QR
    decomposition of a normal matrix, signs fixed by R's diagonal so that Q is uniformly
    distributed. Shape (..., cols) is treated as (prod(...), cols); rows or columns are
    orthonormal, whichever are fewer."""
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(np.float32)


_BY_NAME = {f.__name__: f for f in (glorot_uniform, he_uniform, he_normal, random_normal,
                                     random_uniform, zeros, ones, orthogonal)}


def get(init):
    """Resolve an initializer name or callable (shape, rng) -> array."""
    if callable(init):
        return init
    try:
        return _BY_NAME[init]
    except KeyError:
        raise ValueError(f"unknown initializer {init!r}; expected one of {sorted(_BY_NAME)}") from None
