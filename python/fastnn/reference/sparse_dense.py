"""NumPy twin of fastnn.ops.sparse_dense (any float dtype): each column a sum over its
nonzeros, in order."""
from __future__ import annotations

import numpy as np

from .activation import _forward, _kind, _store


def sparse_dense(x, w, b=None, activation="linear", out=None):
    """activation(x @ w + b) with w a fastnn.ops.CSC (indptr, indices, values, shape)."""
    kind = _kind(activation)
    x = np.asarray(x)
    ic, oc = w.shape
    x2 = x.reshape(-1, ic)
    pre = np.zeros((x2.shape[0], oc), np.result_type(x2.dtype, w.values.dtype))
    for o in range(oc):
        lo, hi = int(w.indptr[o]), int(w.indptr[o + 1])
        if hi > lo:
            pre[:, o] = x2[:, w.indices[lo:hi]] @ w.values[lo:hi].astype(pre.dtype)
    if b is not None:
        pre = pre + b
    return _store(_forward(pre.reshape(x.shape[:-1] + (oc,)), kind), out)
