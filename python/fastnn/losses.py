"""Losses (Keras names). Each is callable on NumPy arrays, ``loss(y_true, y_pred)`` -> mean,
and runs one fused kernel per training step inside ``Model.fit``.

A softmax output layer followed by a categorical cross-entropy (or a sigmoid followed by
a binary cross-entropy) trains through the fused, stable kernel on the logits: the
model asks the last layer for logits and the loss applies softmax/sigmoid itself.
"""
from __future__ import annotations

import numpy as np

from . import _core
from .ops._util import as_f32, as_labels

_EPS = 1e-7  # Keras' probability clipping for cross-entropies on probabilities


class Loss:
    """Base class. ``fusable`` names the output activation this loss can absorb."""

    name = "loss"
    fusable: str | None = None

    def __init__(self, from_logits: bool = False, name: str | None = None):
        self.from_logits = bool(from_logits)
        if name is not None:
            self.name = name

    def prepare_targets(self, y, out_shape: tuple, op: str = "fit") -> np.ndarray:
        """Validate and convert all targets once, before training starts."""
        y = as_f32(y, op, "y")
        if y.shape[1:] != tuple(out_shape) and not (y.shape[1:] == () and tuple(out_shape) == (1,)):
            raise ValueError(f"{op}: argument 'y' must have shape (N, {', '.join(map(str, out_shape))}) to "
                             f"match the model's output, got {y.shape}")
        return y.reshape((y.shape[0],) + tuple(out_shape))

    def call(self, y_true, y_pred):
        """A custom loss defines this (Keras' spelling) with fastnn.ops functions: the
        loss per sample (or per element) from symbolic y_true and y_pred. Its gradient is
        derived; the loss of a batch is the mean over every value it returns."""
        raise TypeError(f"{type(self).__name__} defines neither call() nor forward_backward()")

    def forward_backward(self, dpred, probs, pred, target, logits: bool) -> float:
        """Sum of per-sample losses for a batch; adds d(mean loss)/d(pred) into dpred
        (when not None) and writes probabilities into probs (when not None and logits)."""
        if type(self).call is Loss.call:
            raise TypeError(f"{type(self).__name__} defines neither call() nor forward_backward()")
        from .graph import KerasTensor, Node, Plan
        from .layers.core import InputLayer
        key = (pred.shape[1:], target.shape[1:])
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get(key)
        if plan is None:
            ins = []
            for nm, s in (("y_true", target.shape[1:]), ("y_pred", pred.shape[1:])):
                node = Node(InputLayer(shape=s, name=f"{self.name}/{nm}"), [], "input")
                ins.append(node.make_outputs([(None,) + tuple(s)])[0])
            out = self.call(ins[0], ins[1])
            if not isinstance(out, KerasTensor) or out.node is None or out.node.kind == "input":
                raise TypeError(f"{self.name}: call() must return a tensor computed with "
                                "fastnn.ops from y_true and y_pred")
            plan = plans[key] = Plan(ins, [out], self.name, grad_inputs=(1,))
        (values,) = plan.forward([target, pred], dpred is not None)
        values = np.asarray(values, np.float32)
        total = float(values.sum(dtype=np.float64))
        if dpred is not None:
            d = np.full(values.shape, 1.0 / values.size, np.float32)
            dpred += plan.backward([d], want_inputs=True)[1].reshape(dpred.shape)
        return total * pred.shape[0] / max(values.size, 1)

    def __call__(self, y_true, y_pred):
        """Mean loss over the batch, for predictions as the model outputs them (inside a
        GradientTape, a LossValue that knows its gradient)."""
        from .tape import loss_value
        return loss_value(self, y_true, y_pred)

    def get_config(self) -> dict:
        if type(self).call is not Loss.call:  # a custom loss: override to save arguments
            return {"class": _class_name(self)}
        return {"class": _class_name(self), "from_logits": self.from_logits}


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class labels (N,) against (N, C) outputs."""

    name = "sparse_categorical_crossentropy"
    fusable = "softmax"

    def prepare_targets(self, y, out_shape, op="fit"):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{op}: argument 'y' must be integer labels of shape (N,), got shape {y.shape}")
        return as_labels(y, op, "y", out_shape[-1])

    def forward_backward(self, dpred, probs, pred, target, logits):
        if logits:
            return _core.softmax_xent(dpred, probs, pred, target, 1.0 / pred.shape[0])
        onehot = np.zeros(pred.shape, np.float32)
        onehot[np.arange(pred.shape[0]), target] = 1.0
        return _core.xent_probs(dpred, pred, onehot, 1.0 / pred.shape[0])


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or soft) targets (N, C)."""

    name = "categorical_crossentropy"
    fusable = "softmax"

    def forward_backward(self, dpred, probs, pred, target, logits):
        if logits:
            return _core.softmax_xent_dense(dpred, probs, pred, target, 1.0 / pred.shape[0])
        return _core.xent_probs(dpred, pred, target, 1.0 / pred.shape[0])


class BinaryCrossentropy(Loss):
    """Binary cross-entropy with targets in [0, 1], per output unit, averaged."""

    name = "binary_crossentropy"
    fusable = "sigmoid"

    def forward_backward(self, dpred, probs, pred, target, logits):
        scale = 1.0 / pred.size
        if logits:
            if probs is not None:
                probs[...] = 1.0 / (1.0 + np.exp(-pred))
            return _core.bce_logits(dpred, pred, target, scale) / (pred.size // pred.shape[0])
        p = np.clip(pred, _EPS, 1.0 - _EPS)
        per = -(target * np.log(p) + (1.0 - target) * np.log1p(-p))
        if dpred is not None:
            inside = (pred > _EPS) & (pred < 1.0 - _EPS)
            dpred += (scale * inside * (p - target) / (p * (1.0 - p))).astype(np.float32)
        return float(per.sum(dtype=np.float64)) / (pred.size // pred.shape[0])


class MeanSquaredError(Loss):
    """Mean of squared errors over the output units, averaged over the batch."""

    name = "mean_squared_error"

    def forward_backward(self, dpred, probs, pred, target, logits):
        per_sample = pred.size // pred.shape[0]
        return _core.mse(dpred, pred, target, 1.0 / pred.size) / per_sample


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
}


def get(loss) -> Loss:
    """Resolve a loss name or object."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _BY_NAME:
        return _BY_NAME[loss]()
    raise ValueError(f"unknown loss {loss!r}; expected a fastnn.losses.Loss or one of {sorted(_BY_NAME)}")


def _class_name(loss) -> str:
    return getattr(type(loss), "_registered_name", type(loss).__name__)


def from_config(cfg: dict) -> Loss:
    classes = {c.__name__: c for c in (SparseCategoricalCrossentropy, CategoricalCrossentropy,
                                         BinaryCrossentropy, MeanSquaredError)}
    cls = classes.get(cfg["class"])
    if cls is None:  # a custom loss registered with fastnn.saving.register_keras_serializable
        from .layers.base import layer_class
        cls = layer_class(cfg["class"])
    kw = {k: v for k, v in cfg.items() if k != "class"}
    return cls(**kw) if cls not in classes.values() else cls(from_logits=kw.get("from_logits", False))
