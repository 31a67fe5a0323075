"""Embedding lookup (token table, optional position table) and its backward.

``ids`` (..., T) are integer token ids; ``w`` (V, C) the table; the result (..., T, C)
holds row ``ids[..., t]`` of w, plus row t of ``pos`` (T, C) when a position table is
given (token + position embedding in one pass). The backward adds each dy row into the
table row of its id — repeated ids add up, in a fixed order, so the result is the same
for any thread count — and sums dy over the batch into the position table.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ._util import as_f32, from_any
from .activation import check_out

__all__ = ["embedding", "embedding_backward", "as_ids"]

_I32 = np.iinfo(np.int32)


def as_ids(ids, op: str, name: str = "ids") -> np.ndarray:
    """Token ids as a C-contiguous int32 array (explicit, documented conversion).

    Integer arrays of any width are range-checked before the cast (no silent wrap-around);
    float arrays are accepted only when every value is a whole number (a model's input
    arrives as float32, exact for ids below 2**24). Bool and other dtypes are refused.
    The [0, V) range is checked by the kernel binding.
    """
    if isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.flags.c_contiguous:
        return ids
    a = from_any(ids, op, name)
    if a.dtype.kind in "iu":
        if a.size and (a.min() < _I32.min or a.max() > _I32.max):
            raise ValueError(f"{op}: argument '{name}' holds ids outside the int32 range")
    elif a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and (a == np.trunc(a)).all()):
            raise ValueError(f"{op}: argument '{name}' must hold whole-number token ids, got "
                             f"non-integer or non-finite values")
        if a.size and (a.min() < _I32.min or a.max() > _I32.max):
            raise ValueError(f"{op}: argument '{name}' holds ids outside the int32 range")
    else:
        raise TypeError(f"{op}: argument '{name}' must be an integer array of token ids, got "
                        f"dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int32)


def _ids2(ids: np.ndarray, op: str) -> np.ndarray:
    """(..., T) ids as a (N, T) view (a 1-D (T,) array is one sequence)."""
    if ids.ndim == 0:
        raise ValueError(f"{op}: argument 'ids' must be (N, T) or (..., T), got a scalar")
    return ids.reshape(-1, ids.shape[-1]) if ids.ndim != 2 else ids


def embedding(ids, w, pos=None, out=None) -> np.ndarray:
    """Return ``w[ids]`` (+ ``pos`` per position): shape ids.shape + (C,).

    Args:
        ids: token ids (..., T), each in [0, V); converted to int32 (see :func:`as_ids`).
        w: the table (V, C). pos: optional position table (T, C) added to row t of
            every sequence. Inputs of another dtype or layout are converted once to
            C-contiguous float32.
        out: optional C-contiguous float32 array of shape ids.shape + (C,).

    Raises:
        TypeError / ValueError naming the argument: an id outside [0, V), shapes that do not
        match, a bad dtype or out.
    """
    op = "embedding"
    ids = as_ids(ids, op)
    w = as_f32(w, op, "w")
    if w.ndim != 2:
        raise ValueError(f"{op}: argument 'w' must be 2-D (V, C), got shape {w.shape}")
    if pos is not None:
        pos = as_f32(pos, op, "pos")
    shape = ids.shape + (w.shape[1],)
    out = check_out(out, shape, op) if out is not None else np.empty(shape, np.float32)
    ids2 = _ids2(ids, op)
    _core.embedding_forward(out.reshape(ids2.shape + (w.shape[1],)), ids2, w, pos)
    return out


def embedding_backward(dy, ids, num_embeddings=None, *, dw=None, dpos=None, need_dw=True,
                       need_dpos=False):
    """Gradients of :func:`embedding`: return ``(dw, dpos)``.

    dw (V, C) += each dy row added into the row of its id (V = num_embeddings, or dw's
    rows when dw is given); dpos (T, C) += dy summed over the batch axes. need_dw /
    need_dpos choose what is computed (the other is returned as None); a given dw / dpos
    (C-contiguous float32) is added into, a missing one is returned as a new array.
    """
    op = "embedding_backward"
    ids = as_ids(ids, op)
    dy = as_f32(dy, op, "dy")
    if dy.shape[:-1] != ids.shape or dy.ndim < 2:
        raise ValueError(f"{op}: argument 'dy' must have shape ids.shape + (C,) = "
                         f"{ids.shape + ('C',)}, got {dy.shape}")
    c, t = dy.shape[-1], ids.shape[-1]
    if need_dw:
        if dw is None:
            if num_embeddings is None:
                raise ValueError(f"{op}: give num_embeddings (V) or dw (V, C)")
            dw = np.zeros((int(num_embeddings), c), np.float32)
        elif num_embeddings is not None and dw.shape[:1] != (int(num_embeddings),):
            raise ValueError(f"{op}: argument 'dw' must have {num_embeddings} rows, got "
                             f"shape {dw.shape}")
    elif dw is not None:
        raise ValueError(f"{op}: argument 'dw' was given but need_dw=False")
    if need_dpos:
        dpos = np.zeros((t, c), np.float32) if dpos is None else check_out(dpos, (t, c), op,
                                                                          "dpos")
    elif dpos is not None:
        raise ValueError(f"{op}: argument 'dpos' was given but need_dpos=False")
    ids2 = _ids2(ids, op)
    _core.embedding_backward(dw, dpos, dy.reshape(ids2.shape + (c,)), ids2)
    return dw, dpos
