"""NumPy twins of fastnn.ops' recurrent kernels: LSTM, GRU and SimpleRNN (any float dtype).

Keras layouts: x (N, T, C), kernel W (C, kU), recurrent kernel R (U, kU), the gates side
by side along the last axis (LSTM i, f, g, o; GRU z, r, h). One time step at a time.

Options shared by all three:
  h0, c0   (N, U) initial states; None means zeros.
  mask     (N, T), nonzero = real step. A masked step carries the states unchanged:
           y[n, t] (and c[n, t]) is the state before the step, and the saved gates
           (and GRU's hn) are 0 there. Backward passes dh and dc straight through it
           (dy[n, t] is still added) and adds nothing to dx or the weight gradients.
  rmask    (N, U) recurrent dropout multiplier, constant over time: the recurrent
           product uses h_prev * rmask; everything else uses the unmasked h_prev.
  reverse  steps run t = T-1 .. 0; outputs stay at index t, so the final state is
           y[:, 0] (y[:, T-1] when not reversed).

Backward takes dy (N, T, U) or None and the gradients of the final states (N, U) or None
(None = zeros) and returns fresh arrays. db is always returned: the gradient a bias
receives, also when the forward ran with b=None (callers without a bias ignore it).
"""
from __future__ import annotations

import numpy as np

from .activation import sigmoid

RNN_ACTIVATIONS = ("tanh", "relu")


# ---- helpers ----------------------------------------------------------------------

def _order(T, reverse):
    """The time steps in processing order."""
    return range(T - 1, -1, -1) if reverse else range(T)


def _keep(mask, t, n):
    """(N, 1) bool: True where step t is a real step."""
    if mask is None:
        return np.ones((n, 1), dtype=bool)
    return (np.asarray(mask)[:, t] != 0)[:, None]


def _fresh(a, shape, dtype):
    """A fresh (N, U)-like array: zeros for None, else a copy of a in dtype."""
    return np.zeros(shape, dtype) if a is None else np.array(a, dtype=dtype)


def _rmask(rmask):
    return 1 if rmask is None else np.asarray(rmask)


def _before(seq, init, t, reverse):
    """The state before step t: the output of the step processed just before, or init."""
    p = t + 1 if reverse else t - 1
    return seq[:, p] if 0 <= p < seq.shape[1] else init


def _check_activation(activation):
    if activation not in RNN_ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected 'tanh' or 'relu'")


# ---- LSTM -------------------------------------------------------------------------

def lstm(x, W, R, b, h0=None, c0=None, mask=None, rmask=None, reverse=False):
    """-> (y (N, T, U), c (N, T, U), gates (N, T, 4U) = [i, f, g, o] after activation)."""
    x, W, R = np.asarray(x), np.asarray(W), np.asarray(R)
    N, T, _ = x.shape
    U = R.shape[0]
    dt = np.result_type(x, W, R)
    rm = _rmask(rmask)
    h, cs = _fresh(h0, (N, U), dt), _fresh(c0, (N, U), dt)
    y = np.zeros((N, T, U), dt)
    c = np.zeros((N, T, U), dt)
    gates = np.zeros((N, T, 4 * U), dt)
    for t in _order(T, reverse):
        a = x[:, t] @ W + (h * rm) @ R
        if b is not None:
            a = a + b
        ai, af, ag, ao = np.split(a, 4, axis=1)
        i, f, g, o = sigmoid(ai), sigmoid(af), np.tanh(ag), sigmoid(ao)
        c_new = f * cs + i * g
        h_new = o * np.tanh(c_new)
        keep = _keep(mask, t, N)
        h, cs = np.where(keep, h_new, h), np.where(keep, c_new, cs)
        y[:, t], c[:, t] = h, cs
        gates[:, t] = np.where(keep, np.concatenate([i, f, g, o], axis=1), 0)
    return y, c, gates


def lstm_backward(dy, dhT, dcT, x, W, R, y, c, gates, h0=None, c0=None, mask=None,
                  rmask=None, reverse=False):
    """-> (dx (N, T, C), dW (C, 4U), dR (U, 4U), db (4U,), dh0 (N, U), dc0 (N, U))."""
    x, W, R, y, c, gates = map(np.asarray, (x, W, R, y, c, gates))
    N, T, C = x.shape
    U = R.shape[0]
    dt = np.result_type(x, W, R)
    rm = _rmask(rmask)
    h0, c0 = _fresh(h0, (N, U), dt), _fresh(c0, (N, U), dt)
    dy = _fresh(dy, (N, T, U), dt)
    dh, dc = _fresh(dhT, (N, U), dt), _fresh(dcT, (N, U), dt)
    dx = np.zeros((N, T, C), dt)
    dW, dR, db = np.zeros((C, 4 * U), dt), np.zeros((U, 4 * U), dt), np.zeros(4 * U, dt)
    for t in reversed(_order(T, reverse)):
        keep = _keep(mask, t, N)
        dh = dh + dy[:, t]
        h_prev, c_prev = _before(y, h0, t, reverse), _before(c, c0, t, reverse)
        i, f, g, o = np.split(gates[:, t], 4, axis=1)
        tc = np.tanh(c[:, t])
        dct = dc + dh * o * (1 - tc * tc)  # total gradient of c_t
        da = np.concatenate([dct * g * i * (1 - i),
                             dct * c_prev * f * (1 - f),
                             dct * i * (1 - g * g),
                             dh * tc * o * (1 - o)], axis=1)
        da = np.where(keep, da, 0)
        dx[:, t] = da @ W.T
        dW += x[:, t].T @ da
        dR += (h_prev * rm).T @ da
        db += da.sum(axis=0)
        dh = np.where(keep, (da @ R.T) * rm, dh)
        dc = np.where(keep, dct * f, dc)
    return dx, dW, dR, db, dh, dc


# ---- GRU --------------------------------------------------------------------------

def gru(x, W, R, b, h0=None, mask=None, rmask=None, reverse=False, reset_after=True):
    """-> (y (N, T, U), gates (N, T, 3U) = [z, r, hh] after activation, hn (N, T, U)).

    hn is ra_h = hp_eff @ R[:, 2U:] + b[1][2U:] for reset_after=True, r * hp_eff for
    reset_after=False. b is required: (2, 3U) [input bias, recurrent bias] for
    reset_after=True, (3U,) (added to x @ W) for reset_after=False."""
    x, W, R, b = np.asarray(x), np.asarray(W), np.asarray(R), np.asarray(b)
    N, T, _ = x.shape
    U = R.shape[0]
    dt = np.result_type(x, W, R)
    rm = _rmask(rmask)
    h = _fresh(h0, (N, U), dt)
    y = np.zeros((N, T, U), dt)
    gates = np.zeros((N, T, 3 * U), dt)
    hn = np.zeros((N, T, U), dt)
    for t in _order(T, reverse):
        hp = h * rm
        if reset_after:
            xz, xr, xh = np.split(x[:, t] @ W + b[0], 3, axis=1)
            rz, rr, rh = np.split(hp @ R + b[1], 3, axis=1)
            z, r = sigmoid(xz + rz), sigmoid(xr + rr)
            n = rh
            hh = np.tanh(xh + r * n)
        else:
            xz, xr, xh = np.split(x[:, t] @ W + b, 3, axis=1)
            rz, rr = np.split(hp @ R[:, :2 * U], 2, axis=1)
            z, r = sigmoid(xz + rz), sigmoid(xr + rr)
            n = r * hp
            hh = np.tanh(xh + n @ R[:, 2 * U:])
        h_new = z * h + (1 - z) * hh
        keep = _keep(mask, t, N)
        h = np.where(keep, h_new, h)
        y[:, t] = h
        gates[:, t] = np.where(keep, np.concatenate([z, r, hh], axis=1), 0)
        hn[:, t] = np.where(keep, n, 0)
    return y, gates, hn


def gru_backward(dy, dhT, x, W, R, y, gates, hn, h0=None, mask=None, rmask=None,
                 reverse=False, reset_after=True):
    """-> (dx (N, T, C), dW (C, 3U), dR (U, 3U), db ((2, 3U) or (3U,)), dh0 (N, U))."""
    x, W, R, y, gates, hn = map(np.asarray, (x, W, R, y, gates, hn))
    N, T, C = x.shape
    U = R.shape[0]
    dt = np.result_type(x, W, R)
    rm = _rmask(rmask)
    h0 = _fresh(h0, (N, U), dt)
    dy = _fresh(dy, (N, T, U), dt)
    dh = _fresh(dhT, (N, U), dt)
    dx = np.zeros((N, T, C), dt)
    dW, dR = np.zeros((C, 3 * U), dt), np.zeros((U, 3 * U), dt)
    db = np.zeros((2, 3 * U) if reset_after else 3 * U, dt)
    for t in reversed(_order(T, reverse)):
        keep = _keep(mask, t, N)
        dh = dh + dy[:, t]
        h_prev = _before(y, h0, t, reverse)
        hp = h_prev * rm
        z, r, hh = np.split(gates[:, t], 3, axis=1)
        n = hn[:, t]
        dah = dh * (1 - z) * (1 - hh * hh)  # gradient of the candidate's pre-activation
        daz = dh * (h_prev - hh) * z * (1 - z)
        if reset_after:
            dar = dah * n * r * (1 - r)
            dxa = np.where(keep, np.concatenate([daz, dar, dah], axis=1), 0)
            dra = np.where(keep, np.concatenate([daz, dar, dah * r], axis=1), 0)
            dR += hp.T @ dra
            db[0] += dxa.sum(axis=0)
            db[1] += dra.sum(axis=0)
            dhp = dra @ R.T
        else:
            dn = dah @ R[:, 2 * U:].T  # gradient of n = r * hp
            dar = dn * hp * r * (1 - r)
            dxa = np.where(keep, np.concatenate([daz, dar, dah], axis=1), 0)
            dR[:, :2 * U] += hp.T @ dxa[:, :2 * U]
            dR[:, 2 * U:] += n.T @ dxa[:, 2 * U:]
            db += dxa.sum(axis=0)
            dhp = dxa[:, :2 * U] @ R[:, :2 * U].T + dn * r
        dx[:, t] = dxa @ W.T
        dW += x[:, t].T @ dxa
        dh = np.where(keep, dh * z + dhp * rm, dh)
    return dx, dW, dR, db, dh


# ---- SimpleRNN --------------------------------------------------------------------

def simple_rnn(x, W, R, b, h0=None, mask=None, rmask=None, reverse=False, activation="tanh"):
    """-> y (N, T, U), y[:, t] = act(x[:, t] @ W + hp_eff @ R + b)."""
    _check_activation(activation)
    x, W, R = np.asarray(x), np.asarray(W), np.asarray(R)
    N, T, _ = x.shape
    U = R.shape[0]
    dt = np.result_type(x, W, R)
    rm = _rmask(rmask)
    h = _fresh(h0, (N, U), dt)
    y = np.zeros((N, T, U), dt)
    for t in _order(T, reverse):
        a = x[:, t] @ W + (h * rm) @ R
        if b is not None:
            a = a + b
        h_new = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
        h = np.where(_keep(mask, t, N), h_new, h)
        y[:, t] = h
    return y


def simple_rnn_backward(dy, dhT, x, W, R, y, h0=None, mask=None, rmask=None, reverse=False,
                        activation="tanh"):
    """-> (dx (N, T, C), dW (C, U), dR (U, U), db (U,), dh0 (N, U)); relu' is (y > 0)."""
    _check_activation(activation)
    x, W, R, y = map(np.asarray, (x, W, R, y))
    N, T, C = x.shape
    U = R.shape[0]
    dt = np.result_type(x, W, R)
    rm = _rmask(rmask)
    h0 = _fresh(h0, (N, U), dt)
    dy = _fresh(dy, (N, T, U), dt)
    dh = _fresh(dhT, (N, U), dt)
    dx = np.zeros((N, T, C), dt)
    dW, dR, db = np.zeros((C, U), dt), np.zeros((U, U), dt), np.zeros(U, dt)
    for t in reversed(_order(T, reverse)):
        keep = _keep(mask, t, N)
        dh = dh + dy[:, t]
        h_t = y[:, t]
        da = dh * ((1 - h_t * h_t) if activation == "tanh" else (h_t > 0))
        da = np.where(keep, da, 0)
        dx[:, t] = da @ W.T
        dW += x[:, t].T @ da
        dR += (_before(y, h0, t, reverse) * rm).T @ da
        db += da.sum(axis=0)
        dh = np.where(keep, (da @ R.T) * rm, dh)
    return dx, dW, dR, db, dh


# ---- PyTorch weights -> Keras layout ----------------------------------------------

def _bias_sum(bias_ih, bias_hh):
    if bias_ih is None and bias_hh is None:
        return None
    return sum(np.asarray(v) for v in (bias_ih, bias_hh) if v is not None)


def _zrn(a):
    """Rows in PyTorch's GRU order r, z, n -> Keras's z, r, h."""
    r, z, n = np.split(np.asarray(a), 3, axis=0)
    return np.concatenate([z, r, n], axis=0)


def lstm_from_torch(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """nn.LSTM's weight_ih_l0 (4U, C), weight_hh_l0 (4U, U), bias_ih_l0, bias_hh_l0 (4U,),
    same gate order i, f, g, o -> (W = weight_ih.T, R = weight_hh.T,
    b = bias_ih + bias_hh, or None without biases)."""
    return (np.ascontiguousarray(np.asarray(weight_ih).T),
            np.ascontiguousarray(np.asarray(weight_hh).T), _bias_sum(bias_ih, bias_hh))


def gru_from_torch(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """nn.GRU's weight_ih_l0 (3U, C), weight_hh_l0 (3U, U), bias_ih_l0, bias_hh_l0 (3U,),
    gate order r, z, n -> Keras reset_after=True (W (C, 3U), R (U, 3U), b (2, 3U)), gates
    reordered to z, r, h; b[0] = bias_ih, b[1] = bias_hh (zeros where absent)."""
    weight_ih, weight_hh = np.asarray(weight_ih), np.asarray(weight_hh)
    zeros = np.zeros(weight_hh.shape[0], weight_hh.dtype)
    b = np.stack([_zrn(zeros if bias_ih is None else bias_ih),
                  _zrn(zeros if bias_hh is None else bias_hh)])
    return (np.ascontiguousarray(_zrn(weight_ih).T), np.ascontiguousarray(_zrn(weight_hh).T), b)


def simple_rnn_from_torch(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """nn.RNN's weight_ih_l0 (U, C), weight_hh_l0 (U, U), bias_ih_l0, bias_hh_l0 (U,)
    -> (W = weight_ih.T, R = weight_hh.T, b = bias_ih + bias_hh, or None without biases)."""
    return lstm_from_torch(weight_ih, weight_hh, bias_ih, bias_hh)
