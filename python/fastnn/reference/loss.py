"""NumPy twins of fastnn.ops' loss functions (any float dtype).

Each returns (loss, gradient of the loss with respect to its first argument), the loss
as a Python float; reduction "mean" divides both by the number of rows (softmax and
categorical cross-entropy) or elements (binary cross-entropy, squared error), "sum" does
not.
"""
from __future__ import annotations

import numpy as np

PROB_EPS = 1e-7  # probabilities are clipped to at least this in categorical_cross_entropy


def _divisor(reduction, count):
    if reduction == "mean":
        return count
    if reduction == "sum":
        return 1
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _targets(labels, shape, dtype):
    """(N,) integer labels become one-hot rows; (N, C) targets are used as given."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        t = np.zeros(shape, dtype=dtype)
        t[np.arange(shape[0]), labels.astype(np.int64)] = 1
        return t
    return labels.astype(dtype, copy=False)


def softmax_cross_entropy(logits, labels, reduction="mean"):
    x = np.asarray(logits)
    t = _targets(labels, x.shape, x.dtype)
    m = x.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    terms = np.where(t != 0, t * (lse - np.where(t != 0, x, 0)), 0)
    p = np.exp(x - lse)
    grad = p * t.sum(axis=-1, keepdims=True) - t
    d = _divisor(reduction, x.shape[0])
    return float(terms.sum()) / d, grad / d


def categorical_cross_entropy(probs, targets, reduction="mean"):
    p = np.asarray(probs)
    t = _targets(targets, p.shape, p.dtype)
    pc = np.maximum(p, PROB_EPS)
    loss = -np.where(t != 0, t * np.log(pc), 0).sum()
    grad = -t / pc
    d = _divisor(reduction, p.shape[0])
    return float(loss) / d, grad / d


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    x = np.asarray(logits)
    t = np.asarray(targets, dtype=x.dtype)
    e = np.exp(-np.abs(x))
    loss = np.maximum(x, 0) - x * t + np.log1p(e)
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    d = _divisor(reduction, x.size)
    return float(loss.sum()) / d, (sig - t) / d


def mean_squared_error(pred, target, reduction="mean"):
    p = np.asarray(pred)
    diff = p - np.asarray(target, dtype=p.dtype)
    d = _divisor(reduction, p.size)
    return float((diff * diff).sum()) / d, 2 * diff / d
