"""Recurrent layers over whole sequences: LSTM, GRU and SimpleRNN, forward and backward
through time, on NumPy arrays.

Shapes: x (N, T, C); weights in Keras's layout — LSTM W (C, 4U), R (U, 4U), b (4U,) with
gates i, f, g, o; GRU W (C, 3U), R (U, 3U), gates z, r, h, b (2, 3U) when reset_after
(input and recurrent bias, the cuDNN/PyTorch form) else (3U,); SimpleRNN W (C, U),
R (U, U), b (U,). Optional: h0 (and c0) (N, U) initial states (None: zeros); mask (N, T),
nonzero = a real step (states carry over padded steps); rmask (N, U) a recurrent-dropout
multiplier applied to h_prev in the recurrent product; reverse=True runs t = T-1..0
(outputs stay at their own index t, so the final state is y[:, 0]).

The forward functions return what the backward needs; the backward functions return
fresh gradient arrays. ``fastnn.reference`` holds NumPy twins with the same signatures.
To load PyTorch weights see :func:`fastnn.reference.lstm_from_torch` and friends.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ._util import as_f32, from_any

__all__ = ["lstm", "lstm_backward", "gru", "gru_backward", "simple_rnn", "simple_rnn_backward",
           "as_mask"]


def as_mask(mask, n: int, t: int, op: str):
    """A padding mask (N, T) as C-contiguous uint8 (nonzero = real step); None stays None."""
    if mask is None:
        return None
    m = from_any(mask, op, "mask")
    if m.shape != (n, t):
        raise ValueError(f"{op}: argument 'mask' must have shape (N, T) = {(n, t)}, got {m.shape}")
    if m.dtype == np.uint8 and m.flags.c_contiguous:
        return m
    return np.not_equal(m, 0).view(np.uint8)


def _opt(a, op, name):
    return None if a is None else as_f32(a, op, name)


def _common(op, x, W, R, b, h0, mask, rmask):
    x = as_f32(x, op, "x")
    if x.ndim != 3:
        raise ValueError(f"{op}: argument 'x' must be (N, T, C), got shape {x.shape}")
    n, t = x.shape[:2]
    return (x, as_f32(W, op, "W"), as_f32(R, op, "R"), _opt(b, op, "b"), _opt(h0, op, "h0"),
            as_mask(mask, n, t, op), _opt(rmask, op, "rmask"))


def _units(R, op):
    if R.ndim != 2:
        raise ValueError(f"{op}: argument 'R' must be 2-D (U, G*U), got shape {R.shape}")
    return R.shape[0]


def lstm(x, W, R, b=None, h0=None, c0=None, mask=None, rmask=None, reverse=False):
    """LSTM over x (N, T, C): returns (y, c, gates) — hidden states y (N, T, U), cell
    states c (N, T, U), and gates (N, T, 4U) = i, f, g, o after their nonlinearities."""
    op = "lstm"
    x, W, R, b, h0, mask, rmask = _common(op, x, W, R, b, h0, mask, rmask)
    n, t, _ = x.shape
    u = _units(R, op)
    y = np.empty((n, t, u), np.float32)
    c = np.empty((n, t, u), np.float32)
    gates = np.empty((n, t, 4 * u), np.float32)
    _core.lstm_forward(y, c, gates, x, h0, _opt(c0, op, "c0"), mask, rmask, W, R, b,
                       bool(reverse))
    return y, c, gates


def lstm_backward(dy, dhT, dcT, x, W, R, y, c, gates, h0=None, c0=None, mask=None,
                  rmask=None, reverse=False):
    """Gradients (dx, dW, dR, db, dh0, dc0) of a loss whose gradients are dy (N, T, U) for
    y and dhT, dcT (N, U) for the final states (each may be None: zero)."""
    op = "lstm_backward"
    x, W, R, _, h0, mask, rmask = _common(op, x, W, R, None, h0, mask, rmask)
    n, t, cin = x.shape
    u = _units(R, op)
    dx = np.zeros_like(x)
    dW, dR = np.zeros((cin, 4 * u), np.float32), np.zeros((u, 4 * u), np.float32)
    db = np.zeros(4 * u, np.float32)
    dh0, dc0 = np.zeros((n, u), np.float32), np.zeros((n, u), np.float32)
    _core.lstm_backward(dx, dW, dR, db, dh0, dc0, _opt(dy, op, "dy"), _opt(dhT, op, "dhT"),
                        _opt(dcT, op, "dcT"), as_f32(y, op, "y"), as_f32(c, op, "c"),
                        as_f32(gates, op, "gates"), x, h0, _opt(c0, op, "c0"), mask, rmask, W,
                        R, bool(reverse))
    return dx, dW, dR, db, dh0, dc0


def gru(x, W, R, b=None, h0=None, mask=None, rmask=None, reverse=False, reset_after=True):
    """GRU over x (N, T, C): returns (y, gates, hn) — y (N, T, U), gates (N, T, 3U) = z, r,
    hh after their nonlinearities, hn (N, T, U) the recurrent candidate term the backward
    needs (hp·R_h + b[1]_h when reset_after, else r ⊙ hp)."""
    op = "gru"
    x, W, R, b, h0, mask, rmask = _common(op, x, W, R, b, h0, mask, rmask)
    n, t, _ = x.shape
    u = _units(R, op)
    y = np.empty((n, t, u), np.float32)
    gates = np.empty((n, t, 3 * u), np.float32)
    hn = np.empty((n, t, u), np.float32)
    _core.gru_forward(y, gates, hn, x, h0, mask, rmask, W, R, b, bool(reverse), bool(reset_after))
    return y, gates, hn


def gru_backward(dy, dhT, x, W, R, y, gates, hn, h0=None, mask=None, rmask=None,
                 reverse=False, reset_after=True):
    """Gradients (dx, dW, dR, db, dh0); db has b's shape ((2, 3U) when reset_after)."""
    op = "gru_backward"
    x, W, R, _, h0, mask, rmask = _common(op, x, W, R, None, h0, mask, rmask)
    n, t, cin = x.shape
    u = _units(R, op)
    dx = np.zeros_like(x)
    dW, dR = np.zeros((cin, 3 * u), np.float32), np.zeros((u, 3 * u), np.float32)
    db = np.zeros((2, 3 * u) if reset_after else (3 * u,), np.float32)
    dh0 = np.zeros((n, u), np.float32)
    _core.gru_backward(dx, dW, dR, db, dh0, _opt(dy, op, "dy"), _opt(dhT, op, "dhT"),
                       as_f32(y, op, "y"), as_f32(gates, op, "gates"), as_f32(hn, op, "hn"), x,
                       h0, mask, rmask, W, R, bool(reverse), bool(reset_after))
    return dx, dW, dR, db, dh0


def _act(activation, op):
    acts = {"tanh": _core.Act.tanh, "relu": _core.Act.relu}
    if activation not in acts:
        raise ValueError(f"{op}: argument 'activation' must be 'tanh' or 'relu', got {activation!r}")
    return acts[activation]


def simple_rnn(x, W, R, b=None, h0=None, mask=None, rmask=None, reverse=False,
               activation="tanh"):
    """SimpleRNN over x (N, T, C): returns y (N, T, U), h_t = act(x_t·W + hp·R + b)."""
    op = "simple_rnn"
    x, W, R, b, h0, mask, rmask = _common(op, x, W, R, b, h0, mask, rmask)
    n, t, _ = x.shape
    y = np.empty((n, t, _units(R, op)), np.float32)
    _core.simple_rnn_forward(y, x, h0, mask, rmask, W, R, b, bool(reverse), _act(activation, op))
    return y


def simple_rnn_backward(dy, dhT, x, W, R, y, h0=None, mask=None, rmask=None, reverse=False,
                        activation="tanh"):
    """Gradients (dx, dW, dR, db, dh0) of simple_rnn."""
    op = "simple_rnn_backward"
    x, W, R, _, h0, mask, rmask = _common(op, x, W, R, None, h0, mask, rmask)
    n, t, cin = x.shape
    u = _units(R, op)
    dx = np.zeros_like(x)
    dW, dR = np.zeros((cin, u), np.float32), np.zeros((u, u), np.float32)
    db, dh0 = np.zeros(u, np.float32), np.zeros((n, u), np.float32)
    _core.simple_rnn_backward(dx, dW, dR, db, dh0, _opt(dy, op, "dy"), _opt(dhT, op, "dhT"),
                              as_f32(y, op, "y"), x, h0, mask, rmask, W, R, bool(reverse),
                              _act(activation, op))
    return dx, dW, dR, db, dh0
