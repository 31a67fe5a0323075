"""NumPy twins of fastnn.ops.dense and fastnn.ops.dense_backward (any float dtype)."""
from __future__ import annotations

import numpy as np

from .activation import _derivative, _forward, _kind, _store


def dense(x, w, b=None, activation="linear", out=None, z=None):
    kind = _kind(activation)
    pre = np.asarray(x) @ np.asarray(w)
    if b is not None:
        pre = pre + b
    if z is not None:
        z[...] = pre
    return _store(_forward(pre, kind), out)


def dense_backward(dy, x, w, y=None, z=None, activation="linear", *, has_bias=True,
                   need_dx=True, need_dw=True, dx=None, dw=None, db=None):
    kind = _kind(activation)
    dy, x, w = np.asarray(dy), np.asarray(x), np.asarray(w)
    g = dy * _derivative(kind, None if z is None else np.asarray(z),
                         None if y is None else np.asarray(y))
    g2 = g.reshape(-1, w.shape[1])
    x2 = x.reshape(-1, w.shape[0])

    def add(acc, value):
        if acc is None:
            return value
        acc += value
        return acc

    dx = add(dx, g @ w.T) if need_dx else None
    dw = add(dw, x2.T @ g2) if need_dw else None
    db = add(db, g2.sum(axis=0)) if has_bias or db is not None else None
    return dx, dw, db
