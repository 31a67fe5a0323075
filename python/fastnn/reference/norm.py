"""NumPy twins of fastnn.ops.batch_norm and batch_norm_backward (any float dtype)."""
from typing import NamedTuple

import numpy as np


class BatchNormSaved(NamedTuple):
    """What batch_norm keeps for its backward pass: per-channel mean and 1/sqrt(var + eps)
    (the batch's in training mode, the running ones otherwise) and the mode."""
    mean: np.ndarray
    invstd: np.ndarray
    training: bool


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.99,
               epsilon=1e-3, out=None):
    """(y, saved): y = gamma * (x - mean) / sqrt(var + epsilon) + beta over the last axis.

    training: mean and var are the batch's (biased variance) over every axis but the last,
    and running_mean/running_var (if not None) become momentum * running +
    (1 - momentum) * batch, in place. Otherwise the running statistics are used.
    gamma/beta may be None (scale 1, offset 0).
    """
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    if training:
        mean = x2.mean(axis=0)
        var = x2.var(axis=0)
        if running_mean is not None:
            running_mean[...] = momentum * running_mean + (1 - momentum) * mean
        if running_var is not None:
            running_var[...] = momentum * running_var + (1 - momentum) * var
    else:
        mean = np.asarray(running_mean, x.dtype)
        var = np.asarray(running_var, x.dtype)
    invstd = 1 / np.sqrt(var + epsilon)
    y = (x2 - mean) * invstd
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    y = y.reshape(x.shape)
    if out is not None:
        out[...] = y
        y = out
    return y, BatchNormSaved(mean, invstd, bool(training))


def batch_norm_backward(dy, x, gamma, saved, dx=None, dgamma=None, dbeta=None):
    """(dx, dgamma, dbeta), each added into the array given (or new)."""
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    dy2 = dy.reshape(-1, c)
    mean, invstd, training = saved
    xhat = (x2 - mean) * invstd
    g = 1 if gamma is None else gamma
    d = dy2
    if training:
        d = dy2 - dy2.mean(axis=0) - xhat * (dy2 * xhat).mean(axis=0)
    gx = (g * invstd * d).reshape(x.shape)
    gg = (dy2 * xhat).sum(axis=0)
    gb = dy2.sum(axis=0)
    dx = gx if dx is None else _add(dx, gx)
    dgamma = gg if dgamma is None else _add(dgamma, gg)
    dbeta = gb if dbeta is None else _add(dbeta, gb)
    return dx, dgamma, dbeta


def _add(a, b):
    a += b
    return a
