"""Matrix multiply on fastnn's GEMM."""
from __future__ import annotations

import numpy as np

from .. import _core, autodiff
from ..graph import any_symbolic
from ._util import as_f32, new_out


def matmul(a, b, transpose_a: bool = False, transpose_b: bool = False, out=None,
           accumulate: bool = False) -> np.ndarray:
    """Return op(a) @ op(b) for 2-D float32 arrays, op = transpose when asked.

    a: (M, K), or (K, M) with transpose_a. b: (K, N), or (N, K) with transpose_b.
    out: optional (M, N) float32 C-contiguous array to write (or add into, with
    accumulate=True). Inputs of another dtype/layout are converted once to float32.
    """
    c = _core.matmul_plain(a, b, transpose_a, transpose_b, out, accumulate)
    if c is not None:  # plain float32 operands: no conversion, no Python-side checks
        return c
    if any_symbolic((a, b)):
        if transpose_a or transpose_b or out is not None or accumulate:
            raise TypeError("matmul: on symbolic tensors only matmul(a, b) is supported "
                            "(use fastnn.ops.transpose)")
        return autodiff.matmul_op(a, b)
    a = as_f32(a, "matmul", "a")
    b = as_f32(b, "matmul", "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul: arguments 'a' and 'b' must be 2-D, got shapes {a.shape} and {b.shape}")
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    if accumulate and out is None:
        raise ValueError("matmul: accumulate=True needs an 'out' array to add into")
    out = new_out((m, n), out, "matmul")
    _core.gemm(out, a, b, transpose_a, transpose_b, accumulate)
    return out
