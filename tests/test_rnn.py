"""Recurrent kernels (LSTM, GRU both forms, SimpleRNN): C++ against the NumPy twins
(forward and backward, masks, recurrent dropout, reverse, initial states), the plain C++
twins, every GEMM ISA, bitwise equality for 1 and 2 threads, bad input."""
import math

import numpy as np
import pytest

import fastnn as fn
from fastnn import _core, ops
from fastnn import reference as ref

EPS = float(np.finfo(np.float32).eps)
CELLS = ["lstm", "gru", "gru_original", "rnn_tanh", "rnn_relu"]
G = {"lstm": 4, "gru": 3, "gru_original": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _problem(cell, n, t, c, u, rng, extras):
    """Inputs of one cell with weights at the usual 1/sqrt(fan-in) scale."""
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    g = G[cell]
    p = {"x": f32(n, t, c), "W": f32(c, g * u) / np.float32(math.sqrt(c)),
         "R": f32(u, g * u) / np.float32(math.sqrt(u))}
    p["b"] = f32(2, 3 * u) * 0.5 if cell == "gru" else f32(g * u) * 0.5
    if extras:
        p["h0"] = f32(n, u)
        if cell == "lstm":
            p["c0"] = f32(n, u)
        m = (rng.random((n, t)) < 0.7).astype(np.uint8)
        m[0, :] = 0 if n > 1 else m[0, :]  # a fully padded sample
        p["mask"] = m
        p["rmask"] = ((rng.random((n, u)) < 0.8) / np.float32(0.8)).astype(np.float32)
    return p


def _run(lib, cell, p, reverse, dy, dhT, dcT):
    """(outputs, gradients) of one cell through `lib` (fastnn.ops or fastnn.reference)."""
    x, W, R, b = p["x"], p["W"], p["R"], p["b"]
    kw = {k: p.get(k) for k in ("h0", "mask", "rmask")}
    if cell == "lstm":
        outs = lib.lstm(x, W, R, b, c0=p.get("c0"), reverse=reverse, **kw)
        grads = lib.lstm_backward(dy, dhT, dcT, x, W, R, *outs, c0=p.get("c0"), reverse=reverse, **kw)
    elif cell.startswith("gru"):
        ra = cell == "gru"
        outs = lib.gru(x, W, R, b, reverse=reverse, reset_after=ra, **kw)
        grads = lib.gru_backward(dy, dhT, x, W, R, *outs, reverse=reverse, reset_after=ra, **kw)
    else:
        act = cell[4:]
        outs = (lib.simple_rnn(x, W, R, b, reverse=reverse, activation=act, **kw),)
        grads = lib.simple_rnn_backward(dy, dhT, x, W, R, outs[0], reverse=reverse,
                                        activation=act, **kw)
    return outs, grads


def _as64(p):
    return {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in p.items()}


SHAPES = [(1, 1, 1, 1), (1, 5, 3, 7), (3, 6, 5, 1), (2, 40, 4, 64), (5, 9, 7, 257),
          (1, 300, 2, 7), (7, 13, 16, 33)]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("n,t,c,u", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("extras", [False, True])
def test_kernels_match_the_twins(cell, n, t, c, u, reverse, extras, rng):
    p = _problem(cell, n, t, c, u, rng, extras)
    dy = rng.standard_normal((n, t, u)).astype(np.float32)
    dhT = rng.standard_normal((n, u)).astype(np.float32)
    dcT = rng.standard_normal((n, u)).astype(np.float32) if cell == "lstm" else None
    got_o, got_g = _run(ops, cell, p, reverse, dy, dhT, dcT)
    want_o, want_g = _run(ref, cell, _as64(p), reverse, dy.astype(np.float64),
                          dhT.astype(np.float64), None if dcT is None else dcT.astype(np.float64))
    # Each step sums over C + U terms; errors carried through the recurrence stay of the
    # same order (the gates saturate), growing with the steps a gradient travels.
    k = c + G[cell] * u
    tol = 8 * EPS * math.sqrt(k) * math.sqrt(t)
    for name, a, w in zip(("y", "c/gates", "gates/hn"), got_o, want_o):
        np.testing.assert_allclose(a, w, rtol=tol, atol=tol, err_msg=name)
    names = ["dx", "dW", "dR", "db", "dh0", "dc0"]
    for name, a, w in zip(names, got_g, want_g):
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(a, w, rtol=tol * 4, atol=tol * 4 * scale * math.sqrt(n * t),
                                   err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_plain_twin_matches(cell, rng):
    """fastnn._core's plain C++ twins (naive=True) agree with the tuned kernels."""
    n, t, c, u = 4, 11, 6, 9
    p = _problem(cell, n, t, c, u, rng, True)
    outs = _core_forward(cell, p, naive=False)
    plain = _core_forward(cell, p, naive=True)
    for a, b in zip(outs, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    g = _core_backward(cell, p, outs, naive=False)
    gp = _core_backward(cell, p, outs, naive=True)
    for a, b in zip(g, gp):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


def _core_forward(cell, p, naive):
    x, W, R, b = p["x"], p["W"], p["R"], p["b"]
    n, t, _ = x.shape
    u = R.shape[0]
    y = np.empty((n, t, u), np.float32)
    m = p.get("mask")
    if cell == "lstm":
        c, gt = np.empty_like(y), np.empty((n, t, 4 * u), np.float32)
        _core.lstm_forward(y, c, gt, x, p.get("h0"), p.get("c0"), m, p.get("rmask"), W, R, b,
                           False, naive=naive)
        return y, c, gt
    if cell.startswith("gru"):
        gt, hn = np.empty((n, t, 3 * u), np.float32), np.empty_like(y)
        _core.gru_forward(y, gt, hn, x, p.get("h0"), m, p.get("rmask"), W, R, b, False,
                          cell == "gru", naive=naive)
        return y, gt, hn
    act = _core.Act.relu if cell == "rnn_relu" else _core.Act.tanh
    _core.simple_rnn_forward(y, x, p.get("h0"), m, p.get("rmask"), W, R, b, False, act,
                             naive=naive)
    return (y,)


def _core_backward(cell, p, outs, naive):
    x, W, R = p["x"], p["W"], p["R"]
    n, t, c = x.shape
    u = R.shape[0]
    dy = np.linspace(-1, 1, n * t * u, dtype=np.float32).reshape(n, t, u)
    dx, dW, dR = np.zeros_like(x), np.zeros_like(W), np.zeros_like(R)
    db, dh0 = np.zeros_like(p["b"]), np.zeros((n, u), np.float32)
    m, rm = p.get("mask"), p.get("rmask")
    if cell == "lstm":
        dc0 = np.zeros_like(dh0)
        _core.lstm_backward(dx, dW, dR, db, dh0, dc0, dy, None, None, *outs, x, p["h0"],
                            p["c0"], m, rm, W, R, False, naive=naive)
        return dx, dW, dR, db, dh0, dc0
    if cell.startswith("gru"):
        _core.gru_backward(dx, dW, dR, db, dh0, dy, None, *outs, x, p["h0"], m, rm, W, R, False,
                           cell == "gru", naive=naive)
    else:
        act = _core.Act.relu if cell == "rnn_relu" else _core.Act.tanh
        _core.simple_rnn_backward(dx, dW, dR, db, dh0, dy, None, outs[0], x, p["h0"], m, rm, W,
                                  R, False, act, naive=naive)
    return dx, dW, dR, db, dh0


@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_equal_for_one_and_two_threads(cell, num_threads, rng):
    p = _problem(cell, 32, 20, 16, 24, rng, True)
    results = []
    for threads in (1, 2):
        num_threads(threads)
        outs = _core_forward(cell, p, naive=False)
        results.append(list(outs) + list(_core_backward(cell, p, outs, naive=False)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_every_gemm_isa(rng):
    """The recurrent products run on the GEMM: each ISA this CPU has gives the twin's values."""
    p = _problem("lstm", 5, 12, 8, 20, rng, True)
    want = ref.lstm(*(p[k].astype(np.float64) for k in ("x", "W", "R", "b")), h0=p["h0"],
                    c0=p["c0"], mask=p["mask"], rmask=p["rmask"])[0]
    before = _core.gemm_isa()
    try:
        for isa in _core.supported_isas():
            _core.set_gemm_isa(isa)
            y = ops.lstm(p["x"], p["W"], p["R"], p["b"], p["h0"], p["c0"], p["mask"], p["rmask"])[0]
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6, err_msg=isa)
    finally:
        _core.set_gemm_isa(before)


def test_final_state_and_reverse_layout(rng):
    p = _problem("gru", 3, 8, 4, 5, rng, False)
    y, _, _ = ops.gru(p["x"], p["W"], p["R"], p["b"], reverse=True)
    yf, _, _ = ops.gru(p["x"][:, ::-1], p["W"], p["R"], p["b"])
    np.testing.assert_allclose(y, yf[:, ::-1], rtol=1e-6, atol=1e-7)  # outputs stay at index t


# --- bad input -----------------------------------------------------------------------------
def test_bad_input_names_the_argument(rng):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    W = np.zeros((3, 16), np.float32)
    R = np.zeros((4, 16), np.float32)
    with pytest.raises(ValueError, match=r"'x' must be \(N, T, C\)"):
        ops.lstm(x[0], W, R)
    with pytest.raises(ValueError, match=r"'W'.*\(C, 4U\)"):
        ops.lstm(x, np.zeros((4, 16), np.float32), R)
    with pytest.raises(ValueError, match=r"'R'.*\(U, 4U\)"):
        ops.lstm(x, W, np.zeros((4, 12), np.float32))
    with pytest.raises(ValueError, match=r"'mask' must have shape \(N, T\)"):
        ops.lstm(x, W, R, mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"'h0'.*\(N, U\)"):
        ops.lstm(x, W, R, h0=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"'b'.*\(2, 3U\)"):
        ops.gru(x, np.zeros((3, 12), np.float32), np.zeros((4, 12), np.float32),
                np.zeros(12, np.float32))
    with pytest.raises(ValueError, match="activation"):
        ops.simple_rnn(x, np.zeros((3, 4), np.float32), np.zeros((4, 4), np.float32),
                       activation="sigmoid")
    with pytest.raises(TypeError, match="'x'"):
        ops.gru(np.array([["a"]]), W, R)


def test_outputs_are_never_copied(rng):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    W, R = np.zeros((3, 4), np.float32), np.zeros((4, 4), np.float32)
    y = np.empty((2, 5, 8), np.float32)[:, :, :4]  # not contiguous
    with pytest.raises((TypeError, ValueError), match="'y'"):
        _core.simple_rnn_forward(y, x, None, None, None, W, R, None)
    y = np.empty((2, 5, 4), np.float64)
    with pytest.raises(TypeError, match="'y'"):
        _core.simple_rnn_forward(y, x, None, None, None, W, R, None)
    y = np.empty((2, 5, 4), np.float32)
    with pytest.raises(ValueError, match="'work'"):
        _core.simple_rnn_backward(None, None, None, None, None, y, None, y, x, None, None, None,
                                  W, R, work=np.empty(3, np.float32))
    same = np.empty((2, 5, 4), np.float32)
    with pytest.raises(ValueError, match="share memory"):  # y and c the same array
        _core.lstm_forward(same, same, np.empty((2, 5, 16), np.float32), x, None, None, None,
                           None, np.zeros((3, 16), np.float32), np.zeros((4, 16), np.float32), None)
