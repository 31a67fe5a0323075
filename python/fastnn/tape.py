"""GradientTape: Keras' (TensorFlow's) spelling of a custom training step.

    with fn.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = loss_fn(y, y_pred)            # or model.compute_loss(y=y, y_pred=y_pred)
    grads = tape.gradient(loss, model.trainable_weights)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))

The tape records coarse calls, not every operation: a model's forward (``model(x,
training=True)``, through its graph's plan) and each loss evaluated on its outputs,
with the loss's gradient for those outputs (the losses' fused kernels give both at
once). A loss is a :class:`LossValue`: a number that also knows its gradient; sums and
scalings of losses stay LossValues. ``gradient`` runs the model's backward once with the
summed output gradients and returns the gradient arrays of the requested weights (views
into the model's flat gradient buffer; apply_gradients zeroes them).
"""
from __future__ import annotations

import numpy as np

_TAPES: list["GradientTape"] = []


class LossValue:
    """A scalar loss recorded on a tape: its value and, per model output it came from,
    the gradient d(value)/d(output) with a coefficient."""

    __slots__ = ("value", "terms")

    def __init__(self, value: float, terms):
        self.value, self.terms = float(value), terms  # terms: [(pred, dpred, coef)]

    def _combine(self, other, sign):
        if isinstance(other, LossValue):
            return LossValue(self.value + sign * other.value,
                             self.terms + [(p, d, sign * c) for p, d, c in other.terms])
        if isinstance(other, (int, float, np.number)):
            return LossValue(self.value + sign * float(other), self.terms)
        return NotImplemented

    def __add__(self, o): return self._combine(o, 1.0)
    def __radd__(self, o): return self._combine(o, 1.0)
    def __sub__(self, o): return self._combine(o, -1.0)
    def __rsub__(self, o): return (-self)._combine(o, 1.0)
    def __neg__(self): return self * -1.0

    def __mul__(self, k):
        if not isinstance(k, (int, float, np.number)):
            return NotImplemented
        return LossValue(self.value * float(k), [(p, d, c * float(k)) for p, d, c in self.terms])

    __rmul__ = __mul__

    def __truediv__(self, k):
        if not isinstance(k, (int, float, np.number)):
            return NotImplemented
        return self * (1.0 / float(k))

    def __float__(self):
        return self.value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype or np.float32)

    def numpy(self):
        return np.float32(self.value)

    def item(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)

    def __repr__(self):
        return f"<LossValue {self.value:.6g}>"


def _tape():
    return _TAPES[-1] if _TAPES else None


def record_model_call(model, outs) -> None:
    tape = _tape()
    if tape is not None:
        tape._calls.append((model, list(outs)))


def loss_value(loss, y_true, y_pred):
    """The mean loss of y_pred; a LossValue with its gradient when a tape records."""
    from .ops._util import as_f32
    pred = as_f32(y_pred, loss.name, "y_pred")
    target = loss.prepare_targets(y_true, pred.shape[1:], loss.name)
    if target.shape[0] != pred.shape[0]:
        raise ValueError(f"{loss.name}: 'y_true' has {target.shape[0]} samples, 'y_pred' {pred.shape[0]}")
    tape = _tape()
    if tape is None:
        return loss.forward_backward(None, None, pred, target, loss.from_logits) / pred.shape[0]
    d = np.zeros(pred.shape, np.float32)
    total = loss.forward_backward(d, None, pred, target, loss.from_logits)
    return LossValue(total / pred.shape[0], [(y_pred, d, 1.0)])


class GradientTape:
    """Records model calls and losses inside its ``with`` block (see the module doc)."""

    def __init__(self, persistent: bool = False):
        self.persistent = persistent
        self._calls = []

    def __enter__(self):
        self._calls = []
        _TAPES.append(self)
        return self

    def __exit__(self, *exc):
        _TAPES.remove(self)
        return False

    def gradient(self, target, sources):
        """Gradients of `target` (a recorded loss) for each Variable in `sources` (None
        for a variable the loss does not depend on)."""
        if not isinstance(target, LossValue):
            raise TypeError("gradient: the target must be a loss computed inside this tape "
                            "(a loss object, model.compute_loss, or sums and multiples of them), "
                            f"got {type(target).__name__}")
        by_model = {}
        for pred, d, coef in target.terms:
            hit = None
            for model, outs in self._calls:
                for k, o in enumerate(outs):
                    if o is pred or (isinstance(pred, np.ndarray) and pred.base is o):
                        hit = (model, k)
            if hit is None:
                raise ValueError("gradient: a loss was computed on an array that no "
                                 "model(x, training=True) call inside this tape returned")
            model, k = hit
            douts = by_model.setdefault(id(model), (model, {}))[1]
            if k in douts:
                douts[k] = douts[k] + np.float32(coef) * d
            else:
                douts[k] = d * np.float32(coef) if coef != 1.0 else d.copy()
        for _, (model, douts) in by_model.items():
            n_calls = sum(1 for m, _ in self._calls if m is model)
            if n_calls > 1:
                raise ValueError(f"gradient: {model.name} was called {n_calls} times with "
                                 "training=True inside this tape; its layers keep one call's "
                                 "activations, so differentiate one call per tape")
            model._backward([douts.get(k) for k in range(len(model.outputs))])
        single = not isinstance(sources, (list, tuple))
        srcs = [sources] if single else list(sources)
        grads = [v.grad if v.grad is not None and any(
                     v.grad.base is m._grads for m, _ in by_model.values()) else None
                 for v in srcs]
        if not self.persistent:
            self._calls = []
        return grads[0] if single else grads
