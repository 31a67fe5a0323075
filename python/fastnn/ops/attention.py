"""Fused multi-head attention core (flash-style: online softmax, memory O(T))."""
from __future__ import annotations

import operator

import numpy as np

from .. import _core
from ..graph import any_symbolic
from ._util import as_f32, from_any


def _heads_arg(num_heads, op: str) -> int:
    if isinstance(num_heads, (bool, np.bool_)):
        raise TypeError(f"{op}: argument 'num_heads' must be an int, got bool")
    try:
        return operator.index(num_heads)
    except TypeError:
        raise TypeError(f"{op}: argument 'num_heads' must be an int, got "
                        f"{type(num_heads).__name__}") from None


def _scale_arg(scale, op: str):
    if scale is None:
        return None
    try:
        return float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument 'scale' must be a number or None, got "
                        f"{type(scale).__name__}") from None


def _mask_arg(mask, op: str):
    """Key-padding mask (N, Tk), bool or integer (nonzero = attend) → C-contiguous uint8."""
    if mask is None:
        return None
    m = from_any(mask, op, "mask")
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m).view(np.uint8)  # same bytes, 0/1
    if m.dtype == np.uint8:
        return np.ascontiguousarray(m)
    if m.dtype.kind in "iu":
        return (m != 0).view(np.uint8)
    raise TypeError(f"{op}: argument 'mask' must be a bool or integer array of shape (N, Tk) "
                    f"(nonzero = attend), got dtype {m.dtype}")


def _inputs(op, q, k, v, num_heads):
    """q, k, v as float32 (N, T, C) arrays (views of 4-D ones), the head count, and the
    shapes of q, k, v as given (3-D or 4-D)."""
    q, k, v = as_f32(q, op, "q"), as_f32(k, op, "k"), as_f32(v, op, "v")
    num_heads = _heads_arg(num_heads, op)
    if q.ndim not in (3, 4):
        raise ValueError(f"{op}: argument 'q' must be 3-D (N, Tq, C) or 4-D (N, Tq, NH, D), "
                         f"got shape {q.shape}")
    for name, x in (("k", k), ("v", v)):
        if x.ndim != q.ndim:
            raise ValueError(f"{op}: argument '{name}' must have the rank of q ({q.ndim}-D), "
                             f"got shape {x.shape}")
    if q.ndim == 4:
        n, tq, nh, d = q.shape
        if num_heads not in (1, nh):
            raise ValueError(f"{op}: argument 'num_heads' ({num_heads}) does not match the "
                             f"heads axis of q {q.shape} (N, Tq, NH, D)")
        for name, x in (("k", k), ("v", v)):
            if x.shape[2:] != (nh, d):
                raise ValueError(f"{op}: argument '{name}' must have shape (N, Tk, NH, D) = "
                                 f"(?, ?, {nh}, {d}) like q, got {x.shape}")
        num_heads = nh
    shapes = (q.shape, k.shape, v.shape)
    return _flat(q), _flat(k), _flat(v), num_heads, shapes


def _buffer(arr, shape, op: str, name: str, zero: bool) -> np.ndarray:
    """A float32 array of `shape` to write: new (zeros if `zero`) or the caller's, checked."""
    if arr is None:
        return np.zeros(shape, np.float32) if zero else np.empty(shape, np.float32)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{op}: argument '{name}' must be a numpy.ndarray, got "
                        f"{type(arr).__name__}")
    expect = f"a C-contiguous float32 array of shape {tuple(shape)}"
    got = f"{arr.dtype} array of shape {arr.shape}"
    if arr.dtype != np.float32:
        raise TypeError(f"{op}: argument '{name}' must be {expect}, got {got}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{op}: argument '{name}' must be {expect}, got {got}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{op}: argument '{name}' must be {expect}, got a strided {got}")
    return arr


def _flat(x):
    """(N, T, NH, D) → a (N, T, C) view of the same memory; 3-D as is."""
    return x.reshape(x.shape[0], x.shape[1], -1) if x.ndim == 4 else x


def attention(q, k, v, mask=None, causal=False, scale=None, num_heads=1, out=None):
    """Multi-head attention core: return ``(o, lse)``.

    For each sequence n and head h, with s_ij = scale · q_i·k_j:
    ``o_i = Σ_j softmax_j(s_i) v_j`` and ``lse_i = log Σ_j exp(s_ij)`` (saved for
    :func:`attention_backward`). One fused, tiled pass with an online softmax: memory grows
    with T, never T².

    Args:
        q: queries (N, Tq, C) with C = num_heads·D — the output of a Dense projection,
            heads side by side — or (N, Tq, NH, D).
        k, v: keys and values (N, Tk, C) (or (N, Tk, NH, D)); Tk may differ from Tq.
        mask: optional key-padding mask (N, Tk), bool or integer, nonzero = attend,
            0 = masked; converted explicitly to uint8.
        causal: if True, key j is visible to query i only when j <= i (top-left aligned,
            as in Keras and PyTorch).
        scale: score scale; None means 1/sqrt(D).
        num_heads: NH for 3-D inputs (read from the shape for 4-D ones).
        out: optional C-contiguous float32 array shaped like q to write o into.
        Inputs of another dtype or layout are converted once to C-contiguous float32.

    Returns:
        (o, lse): o float32 shaped like q; lse float32 (N, NH, Tq). A query row with no
        visible key (all keys masked) gets o = 0 and lse = +inf, and zero gradients.

    Raises:
        TypeError / ValueError naming the argument: wrong rank, C not divisible by
        num_heads, N/T/C that do not match between q, k, v and mask, a bad dtype or out.
    """
    op = "attention"
    if any_symbolic((q, k, v)):
        raise TypeError("attention: returns (o, lse) for arrays; in a model's call() use "
                        "fastnn.ops.dot_product_attention(query, key, value)")
    q3, k3, v3, nh, (qshape, _, _) = _inputs(op, q, k, v, num_heads)
    mask = _mask_arg(mask, op)
    scale = _scale_arg(scale, op)
    out = _buffer(out, qshape, op, "out", zero=False)
    lse = np.empty((q3.shape[0], nh, q3.shape[1]), np.float32)
    _core.attention_forward(_flat(out), lse, q3, k3, v3, mask, nh, bool(causal), scale)
    return out, lse


def attention_backward(do, q, k, v, o, lse, mask=None, causal=False, scale=None, num_heads=1,
                       dq=None, dk=None, dv=None):
    """Gradients of :func:`attention`: return ``(dq, dk, dv)``.

    Probabilities are recomputed block by block from q, k and the saved lse
    (FlashAttention-2), so memory stays O(T). Backward kernels accumulate: given dq, dk or
    dv arrays (C-contiguous float32, shaped like q, k, v) receive ``+=``; missing ones are
    allocated as zeros.

    Args:
        do: gradient of the loss with respect to o, shaped like q.
        q, k, v, mask, causal, scale, num_heads: exactly as given to :func:`attention`.
        o, lse: what :func:`attention` returned.

    Raises:
        TypeError / ValueError naming the argument, as :func:`attention`.
    """
    op = "attention_backward"
    q3, k3, v3, nh, shapes = _inputs(op, q, k, v, num_heads)
    mask = _mask_arg(mask, op)
    scale = _scale_arg(scale, op)
    do, o, lse = as_f32(do, op, "do"), as_f32(o, op, "o"), as_f32(lse, op, "lse")
    for name, x in (("do", do), ("o", o)):
        if x.shape != shapes[0]:
            raise ValueError(f"{op}: argument '{name}' must be shaped like q {shapes[0]}, "
                             f"got {x.shape}")
    grads = [_buffer(g, shape, op, name, zero=True)
             for g, shape, name in zip((dq, dk, dv), shapes, ("dq", "dk", "dv"))]
    _core.attention_backward(*(_flat(g) for g in grads), _flat(do), _flat(o), lse, q3, k3, v3,
                             mask, nh, bool(causal), scale)
    return tuple(grads)
