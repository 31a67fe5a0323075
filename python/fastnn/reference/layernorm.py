"""NumPy twins of fastnn.ops.layer_norm and layer_norm_backward (any float dtype)."""
from typing import NamedTuple

import numpy as np


class LayerNormSaved(NamedTuple):
    """What layer_norm keeps for its backward pass: the mean and 1/sqrt(var + eps) of each
    row (shape x.shape[:-1])."""
    mean: np.ndarray
    rstd: np.ndarray


def layer_norm(x, gamma=None, beta=None, epsilon=1e-3, out=None):
    """(y, saved): y = gamma * (x - mean) / sqrt(var + epsilon) + beta, with the mean and
    biased variance of each row over the last axis. gamma/beta: (C,) or None."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(var + epsilon)
    y = (x - mean) * rstd
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    if out is not None:
        out[...] = y
        y = out
    return y, LayerNormSaved(mean[..., 0], rstd[..., 0])


def layer_norm_backward(dy, x, gamma, saved, dx=None, dgamma=None, dbeta=None):
    """(dx, dgamma, dbeta), each added into the array given (or new)."""
    mean, rstd = saved
    mean, rstd = np.asarray(mean)[..., None], np.asarray(rstd)[..., None]
    xhat = (x - mean) * rstd
    g = dy if gamma is None else dy * gamma
    gx = rstd * (g - g.mean(axis=-1, keepdims=True)
                 - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    c = x.shape[-1]
    gg = (dy * xhat).reshape(-1, c).sum(axis=0)
    gb = dy.reshape(-1, c).sum(axis=0)
    dx = gx if dx is None else _add(dx, gx)
    dgamma = gg if dgamma is None else _add(dgamma, gg)
    dbeta = gb if dbeta is None else _add(dbeta, gb)
    return dx, dgamma, dbeta


def _add(a, b):
    a += b
    return a
