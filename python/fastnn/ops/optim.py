"""Fused, in-place optimizer steps (SGD, Adam/AdamW, AdaGrad) on flat float32 buffers.

Every function updates ``params`` and its optimizer state in place, in one pass over the
elements, with PyTorch's formulas (torch.optim.SGD, Adam, AdamW and Adagrad with default
options). The arrays that are written (params and the state) are never converted: they
must be writeable, C-contiguous float32 arrays, all of the same shape (any shape; a
model's single flat parameter buffer is the intended use). ``grads`` is only read, and
converted once to C-contiguous float32 if it is not already, unless ``zero_grads=True``
asks the step to set it to 0 after use (ready for the next backward pass to add into);
then it is written, so it must be a writeable C-contiguous float32 array too. No two
arrays may share memory. Results are bitwise identical for any number of threads.
"""
from __future__ import annotations

import operator

from .. import _core
from ._util import as_f32


def _scalar(x, op: str, name: str) -> float:
    if isinstance(x, (bool, str, bytes)):
        raise TypeError(f"{op}: argument '{name}' must be a real number, got {type(x).__name__}")
    try:
        return float(x)
    except (TypeError, ValueError):
        raise TypeError(
            f"{op}: argument '{name}' must be a real number, got {type(x).__name__}") from None


def _grads(grads, zero_grads, op):
    return grads if zero_grads else as_f32(grads, op, "grads")


def sgd_step(params, grads, velocity=None, lr: float = 0.01, momentum: float = 0.0,
             nesterov: bool = False, weight_decay: float = 0.0,
             zero_grads: bool = False) -> None:
    """One SGD step, in place: torch.optim.SGD (dampening 0).

    With g' = grads + weight_decay·params (L2 weight decay):

    - momentum == 0: ``params -= lr·g'`` (``velocity`` may be None; it is not touched);
    - momentum > 0:  ``velocity = momentum·velocity + g'``, then
      ``params -= lr·velocity``, or with ``nesterov=True``
      ``params -= lr·(g' + momentum·velocity)``.

    Start ``velocity`` at zeros: the first step then sets it to g', as PyTorch does.

    Args:
        params: float32 array (any shape), updated in place.
        grads: gradient, same shape (converted to float32 if needed).
        velocity: float32 array like params, updated in place; required when momentum > 0.
        lr: learning rate, >= 0.
        momentum: in [0, 1).
        nesterov: Nesterov momentum (needs momentum > 0).
        weight_decay: L2 coefficient, >= 0.
        zero_grads: set grads to 0 after the step.

    Raises:
        TypeError / ValueError naming the argument for a wrong dtype, shape, layout,
        read-only or overlapping buffer, or a hyper-parameter out of range.
    """
    op = "sgd_step"
    _core.sgd_step(params, velocity, _grads(grads, zero_grads, op), _scalar(lr, op, "lr"),
                   _scalar(momentum, op, "momentum"), bool(nesterov),
                   _scalar(weight_decay, op, "weight_decay"), bool(zero_grads))


def adam_step(params, grads, m, v, step: int, lr: float = 1e-3, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-7, weight_decay: float = 0.0,
              decoupled: bool = False, zero_grads: bool = False) -> None:
    """One Adam (or AdamW) step, in place: torch.optim.Adam / torch.optim.AdamW.

    With g' = grads + weight_decay·params when ``decoupled=False`` (Adam, L2 decay), or
    g' = grads and ``params *= 1 − lr·weight_decay`` first when ``decoupled=True`` (AdamW)::

        m = beta1·m + (1 − beta1)·g'
        v = beta2·v + (1 − beta2)·g'²
        m_hat = m / (1 − beta1**step),   v_hat = v / (1 − beta2**step)
        params -= lr · m_hat / (sqrt(v_hat) + eps)

    eps is added after the bias correction, as in PyTorch (Keras/TF add it before; the
    default eps=1e-7 is Keras's). The bias-correction scalars are computed once per call.

    Args:
        params: float32 array (any shape), updated in place.
        grads: gradient, same shape (converted to float32 if needed).
        m, v: first and second moment estimates, float32 arrays like params (start at
            zeros), updated in place.
        step: 1-based number of this step (1 on the first call), >= 1.
        lr: learning rate, >= 0.
        beta1, beta2: moment decay rates, each in [0, 1).
        eps: > 0.
        weight_decay: >= 0; L2 through the gradient, or decoupled (AdamW).
        decoupled: AdamW's decoupled weight decay.
        zero_grads: set grads to 0 after the step.

    Raises:
        TypeError / ValueError naming the argument for a wrong dtype, shape, layout,
        read-only or overlapping buffer, or a hyper-parameter out of range.
    """
    op = "adam_step"
    grads = _grads(grads, zero_grads, op)
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"{op}: argument 'step' must be an int, got {type(step).__name__}") from None
    _core.adam_step(params, m, v, grads, _scalar(lr, op, "lr"), _scalar(beta1, op, "beta1"),
                    _scalar(beta2, op, "beta2"), _scalar(eps, op, "eps"),
                    _scalar(weight_decay, op, "weight_decay"), bool(decoupled), step,
                    bool(zero_grads))


def adagrad_step(params, grads, accum, lr: float = 0.01, eps: float = 1e-7,
                 weight_decay: float = 0.0, zero_grads: bool = False) -> None:
    """One AdaGrad step, in place: torch.optim.Adagrad (no lr decay).

    With g' = grads + weight_decay·params::

        accum += g'²
        params -= lr · g' / (sqrt(accum) + eps)

    Args:
        params: float32 array (any shape), updated in place.
        grads: gradient, same shape (converted to float32 if needed).
        accum: float32 array like params (zeros, or Keras's 0.1, at the start), updated
            in place.
        lr: learning rate, >= 0.
        eps: > 0.
        weight_decay: L2 coefficient, >= 0.
        zero_grads: set grads to 0 after the step.

    Raises:
        TypeError / ValueError naming the argument for a wrong dtype, shape, layout,
        read-only or overlapping buffer, or a hyper-parameter out of range.
    """
    op = "adagrad_step"
    _core.adagrad_step(params, accum, _grads(grads, zero_grads, op), _scalar(lr, op, "lr"),
                       _scalar(eps, op, "eps"), _scalar(weight_decay, op, "weight_decay"),
                       bool(zero_grads))
