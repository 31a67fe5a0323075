"""Loss functions on fastnn's fused kernels. Each returns ``(loss, grad)``.

``loss`` is a Python float; ``grad`` is a fresh float32 array, the gradient of ``loss``
with respect to the first argument (logits, probabilities or predictions). With
reduction="mean" both are divided by the number of rows (softmax / categorical
cross-entropy) or of elements (binary cross-entropy, squared error); with "sum" they are
not. Inputs are converted once to C-contiguous float32 (integer labels to int32).
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ._util import as_f32, as_labels, from_any

REDUCTIONS = ("mean", "sum")


def _divisor(reduction, count: int, op: str) -> int:
    if reduction == "mean":
        return count
    if reduction == "sum":
        return 1
    raise ValueError(f"{op}: argument 'reduction' must be 'mean' or 'sum', got {reduction!r}")


def _logits_2d(a, op: str, name: str) -> np.ndarray:
    a = as_f32(a, op, name)
    if a.ndim != 2:
        raise ValueError(f"{op}: argument '{name}' must be 2-D (N, C), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{op}: argument '{name}' is empty (shape {a.shape})")
    return a


def _class_targets(labels, shape, op: str):
    """(N,) class labels -> ("labels", int32 array); (N, C) targets -> ("dense", float32)."""
    n, c = shape
    arr = from_any(labels, op, "labels")
    if arr.ndim == 1:
        if arr.shape[0] != n:
            raise ValueError(f"{op}: argument 'labels' must have shape (N,) = ({n},) to match "
                             f"(N, C) = {shape}, got {arr.shape}")
        return "labels", as_labels(arr, op, "labels", c)
    if arr.ndim == 2:
        if arr.shape != tuple(shape):
            raise ValueError(f"{op}: argument 'labels' given as targets must have shape "
                             f"(N, C) = {tuple(shape)}, got {arr.shape}")
        return "dense", as_f32(arr, op, "labels")
    raise ValueError(f"{op}: argument 'labels' must be (N,) class indices or (N, C) targets, "
                     f"got shape {arr.shape}")


def _same_shape(pred, target, op: str, pname: str, tname: str):
    pred = as_f32(pred, op, pname)
    target = as_f32(target, op, tname)
    if target.shape != pred.shape:
        raise ValueError(f"{op}: argument '{tname}' must have the shape of '{pname}', "
                         f"{pred.shape}, got {target.shape}")
    if pred.size == 0:
        raise ValueError(f"{op}: argument '{pname}' is empty (shape {pred.shape})")
    return pred, target


def softmax_cross_entropy(logits, labels, reduction="mean"):
    """Softmax + cross-entropy in one stable pass (log-sum-exp): returns (loss, dlogits).

    logits: (N, C) unnormalised scores. labels: (N,) integer classes in [0, C), or (N, C)
    target distributions (one-hot or smoothed rows). The per-row loss is
    sum_c t_c * (logsumexp(logits) - logits_c); dlogits = softmax * sum_c t_c - t
    (softmax - onehot for class labels), divided by N for reduction="mean".
    Finite for any finite logits (e.g. +-1e4).
    """
    op = "softmax_cross_entropy"
    logits = _logits_2d(logits, op, "logits")
    kind, t = _class_targets(labels, logits.shape, op)
    d = _divisor(reduction, logits.shape[0], op)
    grad = np.zeros(logits.shape, np.float32)
    if kind == "labels":
        total = _core.softmax_xent(grad, None, logits, t, 1.0 / d)
    else:
        total = _core.softmax_xent_dense(grad, None, logits, t, 1.0 / d)
    return total / d, grad


def categorical_cross_entropy(probs, targets, reduction="mean"):
    """Cross-entropy of probabilities (e.g. a softmax output): returns (loss, dprobs).

    probs: (N, C); targets: (N,) integer classes or (N, C) target rows. The loss is
    -sum t * log(max(p, 1e-7)) per row and dprobs = -t / max(p, 1e-7), divided by N for
    reduction="mean". Prefer softmax_cross_entropy on logits: it is exact and stable.
    """
    op = "categorical_cross_entropy"
    probs = _logits_2d(probs, op, "probs")
    kind, t = _class_targets(targets, probs.shape, op)
    if kind == "labels":
        onehot = np.zeros(probs.shape, np.float32)
        onehot[np.arange(probs.shape[0]), t] = 1.0
        t = onehot
    d = _divisor(reduction, probs.shape[0], op)
    grad = np.zeros(probs.shape, np.float32)
    total = _core.xent_probs(grad, probs, t, 1.0 / d)
    return total / d, grad


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Sigmoid + binary cross-entropy, elementwise and stable: returns (loss, dlogits).

    logits and targets (in [0, 1]) have the same, any, shape. The elementwise loss is
    max(x, 0) - x*t + log(1 + exp(-|x|)) and dlogits = sigmoid(x) - t, divided by the
    number of elements for reduction="mean".
    """
    op = "binary_cross_entropy_with_logits"
    logits, targets = _same_shape(logits, targets, op, "logits", "targets")
    d = _divisor(reduction, logits.size, op)
    grad = np.zeros(logits.shape, np.float32)
    total = _core.bce_logits(grad, logits, targets, 1.0 / d)
    return total / d, grad


def mean_squared_error(pred, target, reduction="mean"):
    """Squared error: returns (loss, dpred) with loss = sum (pred - target)**2 and
    dpred = 2 * (pred - target), divided by the number of elements for reduction="mean".

    pred and target have the same, any, shape.
    """
    op = "mean_squared_error"
    pred, target = _same_shape(pred, target, op, "pred", "target")
    d = _divisor(reduction, pred.size, op)
    grad = np.zeros(pred.shape, np.float32)
    total = _core.mse(grad, pred, target, 1.0 / d)
    return total / d, grad
