"""NumPy twins of fastnn.ops.attention and attention_backward.

They materialise the whole (N, NH, Tq, Tk) score matrix: the specification, not the way
to run it. Any float dtype (float64 for finite-difference checks).
"""
import numpy as np


def _heads(x, num_heads):
    """(N, T, C) or (N, T, NH, D) → a (N, NH, T, D) view."""
    if x.ndim == 4:
        return x.transpose(0, 2, 1, 3)
    n, t, c = x.shape
    return x.reshape(n, t, num_heads, c // num_heads).transpose(0, 2, 1, 3)


def _unheads(x, shape):
    """(N, NH, T, D) → the caller's layout `shape` ((N, T, C) or (N, T, NH, D))."""
    return x.transpose(0, 2, 1, 3).reshape(shape)


def _num_heads(q, num_heads):
    return q.shape[2] if q.ndim == 4 else num_heads


def _scores(q, k, mask, causal, scale, num_heads):
    """Scaled scores (N, NH, Tq, Tk), −∞ where masked, and the head views."""
    nh = _num_heads(q, num_heads)
    qh, kh = _heads(q, nh), _heads(k, nh)
    if scale is None:
        scale = 1.0 / np.sqrt(qh.shape[-1])
    s = (qh @ kh.swapaxes(-1, -2)) * scale
    tq, tk = s.shape[-2:]
    visible = np.ones((s.shape[0], 1, tq, tk), dtype=bool)
    if mask is not None:
        visible &= (np.asarray(mask) != 0)[:, None, None, :]
    if causal:
        visible &= np.tril(np.ones((tq, tk), dtype=bool))  # key j visible to query i iff j <= i
    return np.where(visible, s, -np.inf), scale, nh


def attention(q, k, v, mask=None, causal=False, scale=None, num_heads=1, out=None):
    """Return (o, lse): o like q, lse (N, NH, Tq); see fastnn.ops.attention."""
    s, _, nh = _scores(q, k, mask, causal, scale, num_heads)
    m = s.max(axis=-1, keepdims=True)
    seen = np.isfinite(m)  # False for a row with no visible key
    e = np.exp(s - np.where(seen, m, 0))
    l = e.sum(axis=-1, keepdims=True)
    p = e / np.where(seen, l, 1)
    o = _unheads(p @ _heads(v, nh), q.shape)
    lse = np.where(seen, m + np.log(np.where(seen, l, 1)), np.inf)[..., 0]
    if out is not None:
        out[...] = o
        o = out
    return o, lse


def attention_backward(do, q, k, v, o, lse, mask=None, causal=False, scale=None, num_heads=1,
                       dq=None, dk=None, dv=None):
    """Return (dq, dk, dv), added into the given arrays if any; see fastnn.ops."""
    s, scale, nh = _scores(q, k, mask, causal, scale, num_heads)
    p = np.exp(s - np.asarray(lse)[..., None])  # lse = +inf (no visible key) gives 0
    doh, oh = _heads(do, nh), _heads(o, nh)
    dp = doh @ _heads(v, nh).swapaxes(-1, -2)
    ds = p * (dp - (doh * oh).sum(axis=-1, keepdims=True)) * scale
    grads = (_unheads(ds @ _heads(k, nh), q.shape),
             _unheads(ds.swapaxes(-1, -2) @ _heads(q, nh), k.shape),
             _unheads(p.swapaxes(-1, -2) @ doh, v.shape))
    result = []
    for g, acc in zip(grads, (dq, dk, dv)):
        if acc is not None:
            acc += g
            g = acc
        result.append(g)
    return tuple(result)
