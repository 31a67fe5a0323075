"""NumPy twins of the int8 LSTM and GRU kernels (fastnn._core.qlstm_forward /
qgru_forward; the contract is in cpp/include/fastnn/qrecurrent.h).

Weights are (qweight int8 (K, N), scale float32 (N,)) pairs (or QWeights); products go
through fastnn.reference.qdense, so every int32 accumulation and every dequantized
product is the C++ one bit for bit for the same float input. The gates run in float32
NumPy (the C++ kernels use vectorised exp/tanh, a few ulp apart), so a free-running twin
drifts from the kernel by rounding; ``h_replay`` (and ``hn_replay``) make each step read
its h_prev (and r ⊙ h_prev) from the kernel's own outputs, which makes ``xa`` and ``ra``
(the input projections and the recurrent products of every step) equal bit for bit.

x_scale / h_scale None mean dynamic quantization: x over the whole (N, T, C) input, h_prev
per step over its whole (N, U) tensor.
"""
from __future__ import annotations

import numpy as np

from .activation import sigmoid
from .quant import _weight, qdense

_F = np.float32


def _cols(qw, j0, j1):
    q, s = _weight(qw)
    return np.ascontiguousarray(q[:, j0:j1]), np.ascontiguousarray(s[j0:j1])


def _prev(y, init, t, reverse, N, U, s):
    """h_prev of step t (processing index s): y of the step before, init, or zeros."""
    if s == 0:
        return np.zeros((N, U), _F) if init is None else np.asarray(init, _F)
    return y[:, t + 1 if reverse else t - 1]


def _keep(mask, t, N):
    if mask is None:
        return np.ones((N, 1), bool)
    return (np.asarray(mask)[:, t] != 0)[:, None]


def qlstm(x, W, R, b=None, h0=None, c0=None, mask=None, reverse=False, x_scale=None,
          x_zero_point=0, h_scale=None, h_zero_point=0, h_replay=None):
    """-> (y (N, T, U), c (N, T, U), xa (N, T, 4U), ra (N, T, 4U))."""
    x = np.asarray(x, _F)
    N, T, C = x.shape
    U = _weight(R)[0].shape[0]
    G = 4 * U
    xa = qdense(x.reshape(N * T, C), W, b, x_scale=x_scale,
                x_zero_point=x_zero_point).reshape(N, T, G)
    y = np.zeros((N, T, U), _F)
    c = np.zeros((N, T, U), _F)
    ra = np.zeros((N, T, G), _F)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for s, t in enumerate(steps):
        hp = _prev(y if h_replay is None else np.asarray(h_replay, _F), h0, t, reverse, N, U, s)
        cp = _prev(c, c0, t, reverse, N, U, s)
        rec = qdense(hp, R, None, x_scale=h_scale, x_zero_point=h_zero_point)
        ra[:, t] = rec
        a = xa[:, t] + rec
        i, f = sigmoid(a[:, :U]), sigmoid(a[:, U:2 * U])
        g, o = np.tanh(a[:, 2 * U:3 * U]), sigmoid(a[:, 3 * U:])
        cn = (f * cp + i * g).astype(_F)
        h = (o * np.tanh(cn)).astype(_F)
        keep = _keep(mask, t, N)
        y[:, t] = np.where(keep, h, hp)
        c[:, t] = np.where(keep, cn, cp)
    return y, c, xa, ra


def qgru(x, W, R, b=None, h0=None, mask=None, reverse=False, reset_after=True, x_scale=None,
         x_zero_point=0, h_scale=None, h_zero_point=0, h_replay=None, hn_replay=None):
    """-> (y (N, T, U), xa (N, T, 3U), ra (N, T, 3U), hn (N, T, U); hn is r ⊙ h_prev in the
    original form, zeros for reset_after). b: (2, 3U) for reset_after (input and
    recurrent bias), (3U,) otherwise, or None."""
    x = np.asarray(x, _F)
    N, T, C = x.shape
    U = _weight(R)[0].shape[0]
    G = 3 * U
    bx = br = None
    if b is not None:
        b = np.asarray(b, _F)
        bx, br = (b[0], b[1]) if reset_after else (b, None)
    xa = qdense(x.reshape(N * T, C), W, bx, x_scale=x_scale,
                x_zero_point=x_zero_point).reshape(N, T, G)
    y = np.zeros((N, T, U), _F)
    ra = np.zeros((N, T, G), _F)
    hn = np.zeros((N, T, U), _F)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    hq = dict(x_scale=h_scale, x_zero_point=h_zero_point)
    for s, t in enumerate(steps):
        hp = _prev(y if h_replay is None else np.asarray(h_replay, _F), h0, t, reverse, N, U, s)
        xt = xa[:, t]
        if reset_after:
            rec = qdense(hp, R, br, **hq)
            z = sigmoid(xt[:, :U] + rec[:, :U])
            r = sigmoid(xt[:, U:2 * U] + rec[:, U:2 * U])
            hh = np.tanh(xt[:, 2 * U:] + r * rec[:, 2 * U:])
        else:
            rz = qdense(hp, _cols(R, 0, 2 * U), None, **hq)
            hn_t = (sigmoid(xt[:, U:2 * U] + rz[:, U:]) * hp).astype(_F)
            hn[:, t] = hn_t
            if hn_replay is not None:
                hn_t = np.asarray(hn_replay, _F)[:, t]
            rh = qdense(hn_t, _cols(R, 2 * U, 3 * U), None, **hq)
            rec = np.concatenate([rz, rh], axis=1)
            z = sigmoid(xt[:, :U] + rz[:, :U])
            hh = np.tanh(xt[:, 2 * U:] + rh)
        ra[:, t] = rec
        h = (z * hp + (1 - z) * hh).astype(_F)
        y[:, t] = np.where(_keep(mask, t, N), h, hp)
    return y, xa, ra, hn
