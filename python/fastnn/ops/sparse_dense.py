"""Dense layer forward with a sparse (pruned) kernel: y = activation(x @ w + b) where w
(IC, OC) is given by output column (CSC) and only its nonzeros are read.

``dense_to_csc(w)`` converts a dense kernel; ``sparse_dense(x, w_csc, b, activation)``
runs the kernel (fastnn._core.sparse_dense_forward). For inference only: there is no
backward. See docs/compression.md for when it is faster than ``dense``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _core
from ._util import as_f32
from .activation import act_kind
from .dense import bias_and_out


class CSC(NamedTuple):
    """A (IC, OC) matrix by column: the nonzeros of column o are
    ``values[indptr[o]:indptr[o+1]]`` at rows ``indices[indptr[o]:indptr[o+1]]``
    (ascending). indptr, indices: int32; values: float32."""
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    shape: tuple

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    def to_dense(self) -> np.ndarray:
        ic, oc = self.shape
        w = np.zeros((ic, oc), np.float32)
        cols = np.repeat(np.arange(oc), np.diff(self.indptr))
        w[self.indices, cols] = self.values
        return w


def dense_to_csc(w) -> CSC:
    """The nonzeros of a dense kernel w (IC, OC) as a CSC (exact copies of the values)."""
    op = "dense_to_csc"
    w = as_f32(w, op, "w")
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"{op}: argument 'w' must be a non-empty 2-D (IC, OC) array, got shape {w.shape}")
    if w.shape[0] >= 2**31:
        raise ValueError(f"{op}: argument 'w' has {w.shape[0]} rows; int32 indices hold fewer than 2**31")
    if not np.isfinite(w).all():
        raise ValueError(f"{op}: argument 'w' contains NaN or infinite values")
    wt = w.T  # column o of w is row o of wt: nonzero() walks it column by column
    cols, rows = np.nonzero(wt)
    indptr = np.zeros(w.shape[1] + 1, np.int32)
    np.cumsum(np.bincount(cols, minlength=w.shape[1]), out=indptr[1:])
    return CSC(indptr, rows.astype(np.int32), np.ascontiguousarray(wt[cols, rows], np.float32),
               tuple(w.shape))


def _check_csc(w, op):
    if not isinstance(w, CSC):
        raise TypeError(f"{op}: argument 'w' must be a fastnn.ops.CSC (from dense_to_csc), "
                        f"got {type(w).__name__}")


def sparse_dense(x, w: CSC, b=None, activation="linear", out=None) -> np.ndarray:
    """Return activation(x @ w + b) with w a CSC (IC, OC) from dense_to_csc.

    x: (N, IC) or (..., IC). b: (OC,) or None. activation: "linear" (None), "relu",
    "sigmoid", "tanh" or "gelu". out: optional float32 C-contiguous (..., OC) array that
    receives the result. The kernel checks indptr and that every index lies in [0, IC).
    """
    op = "sparse_dense"
    _check_csc(w, op)
    act = act_kind(activation, op)
    x = as_f32(x, op, "x")
    ic, oc = w.shape
    if x.ndim < 2 or x.shape[-1] != ic:
        raise ValueError(f"{op}: argument 'x' must be (N, IC) or (..., IC) with IC = {ic}, "
                         f"got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{op}: argument 'x' is empty (shape {x.shape})")
    b, out = bias_and_out(b, out, x.shape, oc, op)
    x2 = x.reshape(-1, ic)
    n = x2.shape[0]
    xt = np.empty(scratch_size(n, ic), np.float32) if n >= _core.SPARSE_DENSE_BATCH_VEC else None
    _core.sparse_dense_forward(out.reshape(-1, oc), xt, x2, w.indptr, w.indices, w.values, b, act)
    return out


def scratch_size(n: int, ic: int) -> int:
    """Floats of xt scratch that sparse_dense_forward needs for a batch of n (with 15 to
    spare: the kernel starts at the buffer's first 64-byte boundary)."""
    return (n + 15) // 16 * 16 * ic + 15
