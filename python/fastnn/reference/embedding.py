"""NumPy twins of fastnn.ops.embedding and embedding_backward (any float dtype)."""
import numpy as np


def embedding(ids, w, pos=None, out=None):
    """y (..., T, C) = w[ids] (+ pos[:T] per position): rows of the table w (V, C).

    ids: integer array (..., T) with values in [0, V). pos: (T, C) or None.
    """
    ids = np.asarray(ids)
    y = w[ids]
    if pos is not None:
        y = y + pos
    if out is not None:
        out[...] = y
        y = out
    return y


def embedding_backward(dy, ids, num_embeddings=None, *, dw=None, dpos=None, need_dw=True,
                       need_dpos=False):
    """(dw, dpos): dw (V, C) += dy rows scattered by ids (repeated ids add up);
    dpos (T, C) += dy summed over every axis but the last two. V = num_embeddings or
    dw.shape[0]."""
    ids = np.asarray(ids)
    c = dy.shape[-1]
    if need_dw:
        v = dw.shape[0] if dw is not None else int(num_embeddings)
        g = np.zeros((v, c), dy.dtype)
        np.add.at(g, ids.reshape(-1), dy.reshape(-1, c))
        dw = g if dw is None else _add(dw, g)
    else:
        dw = None
    if need_dpos:
        gp = dy.reshape((-1,) + dy.shape[-2:]).sum(axis=0)
        dpos = gp if dpos is None else _add(dpos, gp)
    else:
        dpos = None
    return dw, dpos


def _add(a, b):
    a += b
    return a
