"""Central finite differences: for the NumPy twins in float64, and for whole models."""
from __future__ import annotations

import numpy as np


def num_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f() / d x by central differences: x (float64) is changed in place, one element
    at a time, and restored; f takes no arguments and reads x."""
    g = np.empty_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


def _mse_model(model):
    model.compile(optimizer="sgd", loss="mse")
    model._resolve_outputs()
    model._configure_output()
    return model


def _loss(model, xs, ys):
    with model._emitting_logits():
        total, _ = model._eval_batch(xs, ys)
    return float(total)


def check_model_grads(model, xs, ys, n_checks=40, h=2e-3, seed=0):
    """A model's flat gradient (MSE loss) vs central differences of its loss, on random
    entries: the model runs in float32, the quotient is formed in float64 from losses summed
    in float64, with a step and tolerance that fit float32 rounding."""
    _mse_model(model)
    xs = model._prepare_x(xs, "test")
    ys = model._prepare_y(ys, "test", len(xs[0]))
    with model._emitting_logits():
        model._loss_and_grads(xs, ys)
    g = model._grads[:model._n_trainable].copy()
    n = len(xs[0])
    rng = np.random.default_rng(seed)
    idx = rng.choice(model._n_trainable, size=min(n_checks, model._n_trainable), replace=False)
    p = model._params
    for i in idx:
        old = p[i]
        p[i] = old + h
        lp = _loss(model, xs, ys)
        p[i] = old - h
        lm = _loss(model, xs, ys)
        p[i] = old
        num = (lp - lm) / (2 * h) / n
        assert abs(num - g[i]) <= 3e-3 * max(1.0, abs(num)) + 2e-2 * abs(num), (i, num, g[i])
    return g
