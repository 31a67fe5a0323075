"""fastnn.reference's recurrent twins (LSTM, GRU, SimpleRNN) checked in float64: every
backward output against central finite differences, the mask / reverse / rmask semantics
against their definitions, and values and gradients against PyTorch when it is installed."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import reference as ref
from gradcheck import num_grad

# "gru" is reset_after=True (Keras default, PyTorch's form), "gru_reset_before" the original.
CELLS = ("lstm", "gru", "gru_reset_before", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "gru_reset_before": 3, "rnn_tanh": 1, "rnn_relu": 1}


def check(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=""):
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=err_msg)


def params(cell, C, U, rng, scale=0.6):
    k = GATES[cell]
    W = rng.normal(scale=scale, size=(C, k * U))
    R = rng.normal(scale=scale, size=(U, k * U))
    b = rng.normal(scale=0.5, size=(2, 3 * U) if cell == "gru" else k * U)
    return W, R, b


def make_mask(N, T, rng):
    """Row 0 padded in the middle, row 1 fully padded, further rows random."""
    m = (rng.uniform(size=(N, T)) > 0.3).astype(np.float64)
    m[0] = 1.0
    m[0, T // 2] = 0.0
    if N > 1:
        m[1] = 0.0
    return m


def make_rmask(N, U, rng):
    rm = rng.uniform(0.3, 1.7, size=(N, U))
    rm[0, 0] = 0.0  # a dropped unit
    return rm


def final(a, reverse):
    return a[:, 0] if reverse else a[:, -1]


def forward(cell, x, W, R, b, h0=None, c0=None, **opt):
    """-> (y, c (LSTM) or None, saved: what backward takes after y)."""
    if cell == "lstm":
        y, c, gates = ref.lstm(x, W, R, b, h0=h0, c0=c0, **opt)
        return y, c, (c, gates)
    if cell.startswith("gru"):
        y, gates, hn = ref.gru(x, W, R, b, h0=h0, reset_after=cell == "gru", **opt)
        return y, None, (gates, hn)
    return ref.simple_rnn(x, W, R, b, h0=h0, activation=cell[4:], **opt), None, ()


def backward(cell, dy, dhT, dcT, x, W, R, y, saved, h0=None, c0=None, **opt):
    """-> the gradients, named like the forward's inputs."""
    if cell == "lstm":
        g = ref.lstm_backward(dy, dhT, dcT, x, W, R, y, *saved, h0=h0, c0=c0, **opt)
        return dict(zip(("x", "W", "R", "b", "h0", "c0"), g))
    if cell.startswith("gru"):
        g = ref.gru_backward(dy, dhT, x, W, R, y, *saved, h0=h0, reset_after=cell == "gru",
                             **opt)
    else:
        g = ref.simple_rnn_backward(dy, dhT, x, W, R, y, h0=h0, activation=cell[4:], **opt)
    return dict(zip(("x", "W", "R", "b", "h0"), g))


def rnn_preactivations(x, W, R, b, y, h0, mask, rmask, reverse):
    """SimpleRNN's pre-activations at the real steps, rebuilt from y."""
    rm = 1 if rmask is None else rmask
    out = []
    for t in range(x.shape[1]):
        p = t + 1 if reverse else t - 1
        h_prev = y[:, p] if 0 <= p < x.shape[1] else h0
        a = x[:, t] @ W + (h_prev * rm) @ R + b
        out.append(a[np.ones(len(a), bool) if mask is None else mask[:, t] != 0])
    return np.concatenate([a.ravel() for a in out])


# ---- gradients against central finite differences ---------------------------------

CASES = [  # T, N, U, C, masked, rmasked, gradients given ("dy", "state", "both"), h0/c0 given
    (1, 1, 1, 1, False, False, "both", True),
    (2, 1, 1, 4, False, False, "dy", False),
    (2, 3, 3, 4, True, True, "dy", True),
    (5, 3, 3, 4, True, True, "both", False),
    (5, 3, 1, 4, True, False, "state", True),
    (5, 1, 3, 1, True, True, "state", False),
    (5, 3, 3, 1, False, True, "both", True),
]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,N,U,C,masked,rmasked,given,init", CASES)
def test_gradients(cell, reverse, T, N, U, C, masked, rmasked, given, init, rng):
    lstm = cell == "lstm"
    opt = dict(mask=make_mask(N, T, rng) if masked else None,
               rmask=make_rmask(N, U, rng) if rmasked else None, reverse=reverse)
    for _ in range(20):  # relu: redraw until no pre-activation is within reach of the FD step
        x = rng.normal(size=(N, T, C))
        W, R, b = params(cell, C, U, rng)
        h0 = rng.normal(scale=0.8, size=(N, U)) if init else np.zeros((N, U))
        c0 = rng.normal(scale=0.8, size=(N, U)) if init else np.zeros((N, U))
        y, c, saved = forward(cell, x, W, R, b, h0 if init else None, c0 if init else None,
                              **opt)
        if cell != "rnn_relu" or np.min(np.abs(rnn_preactivations(
                x, W, R, b, y, h0, opt["mask"], opt["rmask"], reverse))) > 1e-4:
            break
    else:
        pytest.fail("no draw kept relu's pre-activations away from 0")
    np.testing.assert_array_equal(y, forward(cell, x, W, R, b, h0, c0, **opt)[0])

    r = rng.normal(size=(N, T, U)) if given != "state" else None
    s = rng.normal(size=(N, U)) if given != "dy" else None
    q = rng.normal(size=(N, U)) if given != "dy" and lstm else None

    def loss():
        y, c, _ = forward(cell, x, W, R, b, h0, c0, **opt)
        total = 0.0
        if r is not None:
            total += (y * r).sum()
        if s is not None:
            total += (final(y, reverse) * s).sum()
        if q is not None:
            total += (final(c, reverse) * q).sum()
        return float(total)

    g = backward(cell, r, s, q, x, W, R, y, saved, h0 if init else None,
                 c0 if init else None, **opt)
    wrt = dict(x=x, W=W, R=R, b=b, h0=h0, **(dict(c0=c0) if lstm else {}))
    assert set(g) == set(wrt)
    for name, arr in wrt.items():
        assert g[name].shape == arr.shape and g[name].dtype == np.float64, name
        check(g[name], num_grad(loss, arr), err_msg=name)


# ---- semantics ----------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_masked_steps_carry_state(cell, reverse, rng):
    N, T, C, U = 4, 6, 3, 5
    lstm = cell == "lstm"
    x = rng.normal(size=(N, T, C))
    W, R, b = params(cell, C, U, rng)
    h0, c0 = rng.normal(size=(N, U)), rng.normal(size=(N, U))
    mask = make_mask(N, T, rng)
    mask[3] = [1, 0, 0, 1, 0, 1]
    y, c, saved = forward(cell, x, W, R, b, h0, c0, mask=mask, reverse=reverse)
    for other in (mask != 0, 3.5 * mask):  # any nonzero value is a real step
        np.testing.assert_array_equal(
            y, forward(cell, x, W, R, b, h0, c0, mask=other, reverse=reverse)[0])
    gates = saved[-1] if lstm else saved[0] if saved else None
    for n in range(N):
        for t in range(T):
            if mask[n, t]:
                continue
            p = t + 1 if reverse else t - 1
            before = y[n, p] if 0 <= p < T else h0[n]
            np.testing.assert_array_equal(y[n, t], before)
            if lstm:
                np.testing.assert_array_equal(c[n, t], c[n, p] if 0 <= p < T else c0[n])
            if gates is not None:
                assert np.all(gates[n, t] == 0)
            if cell.startswith("gru"):
                assert np.all(saved[1][n, t] == 0)  # hn
    # A fully padded row returns h0 (and c0) everywhere.
    np.testing.assert_array_equal(y[1], np.broadcast_to(h0[1], (T, U)))
    if lstm:
        np.testing.assert_array_equal(c[1], np.broadcast_to(c0[1], (T, U)))
    # A padded row equals the same row with its padded steps removed.
    for n in (0, 3):
        real = np.flatnonzero(mask[n])
        yc, cc, _ = forward(cell, x[n:n + 1, real], W, R, b, h0[n:n + 1], c0[n:n + 1],
                            reverse=reverse)
        np.testing.assert_allclose(y[n, real], yc[0], rtol=1e-12, atol=1e-14)
        if lstm:
            np.testing.assert_allclose(c[n, real], cc[0], rtol=1e-12, atol=1e-14)
    # Backward: nothing reaches x at padded steps; a padded row passes dh, dc straight through.
    dy, dhT, dcT = (rng.normal(size=s) for s in ((N, T, U), (N, U), (N, U)))
    g = backward(cell, dy, dhT, dcT if lstm else None, x, W, R, y, saved, h0, c0,
                 mask=mask, reverse=reverse)
    assert np.all(g["x"][mask == 0] == 0) and np.any(g["x"][mask != 0] != 0)
    np.testing.assert_allclose(g["h0"][1], dhT[1] + dy[1].sum(axis=0), rtol=1e-13)
    if lstm:
        np.testing.assert_array_equal(g["c0"][1], dcT[1])


@pytest.mark.parametrize("cell", CELLS)
def test_reverse_is_forward_on_flipped_time(cell, rng):
    N, T, C, U = 3, 5, 2, 4
    lstm = cell == "lstm"
    x = rng.normal(size=(N, T, C))
    W, R, b = params(cell, C, U, rng)
    h0, c0 = rng.normal(size=(N, U)), rng.normal(size=(N, U))
    mask, rmask = make_mask(N, T, rng), make_rmask(N, U, rng)
    y, c, saved = forward(cell, x, W, R, b, h0, c0, mask=mask, rmask=rmask, reverse=True)
    yf, cf, savedf = forward(cell, x[:, ::-1], W, R, b, h0, c0, mask=mask[:, ::-1],
                             rmask=rmask)
    np.testing.assert_allclose(y, yf[:, ::-1], rtol=1e-14, atol=1e-15)
    for a, af in zip(saved, savedf):
        np.testing.assert_allclose(a, af[:, ::-1], rtol=1e-14, atol=1e-15)
    dy, dhT, dcT = (rng.normal(size=s) for s in ((N, T, U), (N, U), (N, U)))
    dcT = dcT if lstm else None
    g = backward(cell, dy, dhT, dcT, x, W, R, y, saved, h0, c0, mask=mask, rmask=rmask,
                 reverse=True)
    gf = backward(cell, dy[:, ::-1], dhT, dcT, x[:, ::-1], W, R, yf, savedf, h0, c0,
                  mask=mask[:, ::-1], rmask=rmask)
    gf["x"] = gf["x"][:, ::-1]
    for name in g:
        np.testing.assert_allclose(g[name], gf[name], rtol=1e-13, atol=1e-14, err_msg=name)
    assert not np.allclose(y, forward(cell, x, W, R, b, h0, c0, mask=mask, rmask=rmask)[0])


def _sig(a):
    return 1 / (1 + np.exp(-a))


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_formulas(cell, rng):
    """T = 1 written out from the definitions; rmask scales only the recurrent product."""
    N, C, U = 3, 4, 2
    x = rng.normal(size=(N, 1, C))
    W, R, b = params(cell, C, U, rng)
    h, cp = rng.normal(size=(N, U)), rng.normal(size=(N, U))
    rm = make_rmask(N, U, rng)
    y, c, saved = forward(cell, x, W, R, b, h, cp, rmask=rm)
    xt, hp = x[:, 0], h * rm
    if cell == "lstm":
        a = xt @ W + hp @ R + b
        i, f, g, o = (a[:, k * U:(k + 1) * U] for k in range(4))
        c_new = _sig(f) * cp + _sig(i) * np.tanh(g)
        np.testing.assert_allclose(c[:, 0], c_new, rtol=1e-14, atol=1e-15)
        expect = _sig(o) * np.tanh(c_new)
    elif cell == "gru":
        xa, ra = xt @ W + b[0], hp @ R + b[1]
        z = _sig(xa[:, :U] + ra[:, :U])
        r = _sig(xa[:, U:2 * U] + ra[:, U:2 * U])
        expect = z * h + (1 - z) * np.tanh(xa[:, 2 * U:] + r * ra[:, 2 * U:])
    elif cell == "gru_reset_before":
        xa = xt @ W + b
        z = _sig(xa[:, :U] + hp @ R[:, :U])
        r = _sig(xa[:, U:2 * U] + hp @ R[:, U:2 * U])
        expect = z * h + (1 - z) * np.tanh(xa[:, 2 * U:] + (r * hp) @ R[:, 2 * U:])
    else:
        a = xt @ W + hp @ R + b
        expect = np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0)
    np.testing.assert_allclose(y[:, 0], expect, rtol=1e-14, atol=1e-15)
    # rmask of ones is the same as no rmask.
    np.testing.assert_array_equal(forward(cell, x, W, R, b, h, cp, rmask=np.ones((N, U)))[0],
                                  forward(cell, x, W, R, b, h, cp)[0])


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh", "rnn_relu"])
def test_no_bias_is_zero_bias(cell, rng):
    N, T, C, U = 2, 3, 3, 2
    x = rng.normal(size=(N, T, C))
    W, R, b = params(cell, C, U, rng)
    y0, _, saved0 = forward(cell, x, W, R, None)
    yz, _, _ = forward(cell, x, W, R, np.zeros_like(b))
    np.testing.assert_array_equal(y0, yz)
    g = backward(cell, np.ones_like(y0), None, None, x, W, R, y0, saved0)
    assert g["b"].shape == b.shape and np.any(g["b"] != 0)  # the gradient a bias would get


@pytest.mark.parametrize("cell", CELLS)
def test_float32_and_fresh_outputs(cell, rng):
    N, T, C, U = 2, 4, 3, 3
    lstm = cell == "lstm"
    x = rng.normal(size=(N, T, C))
    W, R, b = params(cell, C, U, rng)
    h0, c0 = rng.normal(size=(N, U)), rng.normal(size=(N, U))
    dy, dhT, dcT = (rng.normal(size=s) for s in ((N, T, U), (N, U), (N, U)))
    dcT = dcT if lstm else None
    args64 = (x, W, R, b, h0, c0)
    args32 = tuple(a.astype(np.float32) for a in args64)
    y64, _, s64 = forward(cell, *args64)
    y32, _, s32 = forward(cell, *args32)
    assert y32.dtype == np.float32 and all(a.dtype == np.float32 for a in s32)
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    g64 = backward(cell, dy, dhT, dcT, x, W, R, y64, s64, h0, c0)
    f32 = (lambda a: None if a is None else a.astype(np.float32))
    g32 = backward(cell, f32(dy), f32(dhT), f32(dcT), *args32[:3], y32, s32, *args32[4:])
    for name in g64:
        assert g32[name].dtype == np.float32, name
        np.testing.assert_allclose(g32[name], g64[name], rtol=1e-4, atol=1e-4, err_msg=name)
    # All steps padded: dh0 (dc0) equal dhT (dcT) yet are new arrays; no input is changed.
    mask = np.zeros((N, T), np.uint8)
    y, _, saved = forward(cell, x, W, R, b, h0, c0, mask=mask)
    before = [a.copy() for a in (dhT, x, y, *saved)]
    g = backward(cell, None, dhT, dcT, x, W, R, y, saved, h0, c0, mask=mask)
    np.testing.assert_array_equal(g["h0"], dhT)
    assert not np.shares_memory(g["h0"], dhT) and not np.shares_memory(g["h0"], h0)
    if lstm:
        np.testing.assert_array_equal(g["c0"], dcT)
        assert not np.shares_memory(g["c0"], dcT)
    for a, b_ in zip(before, (dhT, x, y, *saved)):
        np.testing.assert_array_equal(a, b_)
    assert np.all(g["x"] == 0) and np.all(g["W"] == 0) and np.all(g["R"] == 0)


def test_rejects_unknown_activation():
    x, W, R = np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1))
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        ref.simple_rnn(x, W, R, None, activation="sigmoid")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        ref.simple_rnn_backward(None, None, x, W, R, x, activation="gelu")


def _rzn(a):
    """Keras GRU rows z, r, h -> PyTorch's r, z, n (the inverse of the import's reorder)."""
    z, r, n = np.split(a, 3, axis=0)
    return np.concatenate([r, z, n])


def test_from_torch_layouts(rng):
    U, C = 2, 3
    w_ih, w_hh = rng.normal(size=(3 * U, C)), rng.normal(size=(3 * U, U))
    b_ih, b_hh = rng.normal(size=3 * U), rng.normal(size=3 * U)
    W, R, b = ref.gru_from_torch(w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_array_equal(W[:, :U], w_ih[U:2 * U].T)  # z is torch's second block
    np.testing.assert_array_equal(W[:, U:2 * U], w_ih[:U].T)  # r its first
    np.testing.assert_array_equal(R[:, 2 * U:], w_hh[2 * U:].T)
    np.testing.assert_array_equal(_rzn(W.T), w_ih)
    assert b.shape == (2, 3 * U)
    np.testing.assert_array_equal(_rzn(b[0]), b_ih)
    np.testing.assert_array_equal(_rzn(b[1]), b_hh)
    assert W.flags.c_contiguous and R.flags.c_contiguous
    assert np.all(ref.gru_from_torch(w_ih, w_hh)[2] == 0)
    W, R, b = ref.lstm_from_torch(w_ih[:2 * U], w_hh[:2 * U], b_ih[:2 * U], b_hh[:2 * U])
    np.testing.assert_array_equal(W, w_ih[:2 * U].T)
    np.testing.assert_array_equal(b, b_ih[:2 * U] + b_hh[:2 * U])
    assert ref.simple_rnn_from_torch(w_ih[:U], w_hh[:U, :U])[2] is None


# ---- against PyTorch ------------------------------------------------------------------

TORCH = {"lstm": ("LSTM", ref.lstm_from_torch), "gru": ("GRU", ref.gru_from_torch),
         "rnn_tanh": ("RNN", ref.simple_rnn_from_torch),
         "rnn_relu": ("RNN", ref.simple_rnn_from_torch)}


@pytest.mark.parametrize("N,T,C,U", [(1, 1, 1, 1), (3, 7, 4, 5)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", list(TORCH))
def test_against_torch(cell, reverse, N, T, C, U, rng):
    """reverse=True is compared with the backward direction of a bidirectional layer."""
    torch = pytest.importorskip("torch")
    lstm = cell == "lstm"
    name, from_torch = TORCH[cell]
    kw = {"nonlinearity": cell[4:]} if name == "RNN" else {}
    net = getattr(torch.nn, name)(C, U, batch_first=True, bidirectional=reverse, **kw).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(rng.normal(scale=0.6, size=tuple(p.shape))))
    d = 1 if reverse else 0
    suffix = "_l0_reverse" if reverse else "_l0"
    tw = [getattr(net, w + suffix) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    W, R, b = from_torch(*(p.detach().numpy() for p in tw))

    x = rng.normal(size=(N, T, C))
    h0, c0 = rng.normal(size=(d + 1, N, U)), rng.normal(size=(d + 1, N, U))
    dy, dhT, dcT = (rng.normal(size=s) for s in ((N, T, U), (N, U), (N, U)))
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if lstm:
        out, (hn, cn) = net(xt, (h0t, c0t))
    else:
        out, hn = net(xt, h0t)
    yt = out[..., d * U:(d + 1) * U]
    loss = (yt * torch.from_numpy(dy)).sum() + (hn[d] * torch.from_numpy(dhT)).sum()
    if lstm:
        loss = loss + (cn[d] * torch.from_numpy(dcT)).sum()
    loss.backward()

    close = dict(rtol=1e-10, atol=1e-12)
    y, c, saved = forward(cell, x, W, R, b, h0[d], c0[d], reverse=reverse)
    np.testing.assert_allclose(y, yt.detach().numpy(), **close)
    np.testing.assert_allclose(final(y, reverse), hn[d].detach().numpy(), **close)
    if lstm:
        np.testing.assert_allclose(final(c, reverse), cn[d].detach().numpy(), **close)

    g = backward(cell, dy, dhT, dcT if lstm else None, x, W, R, y, saved, h0[d], c0[d],
                 reverse=reverse)
    np.testing.assert_allclose(g["x"], xt.grad.numpy(), **close)
    np.testing.assert_allclose(g["h0"], h0t.grad[d].numpy(), **close)
    if lstm:
        np.testing.assert_allclose(g["c0"], c0t.grad[d].numpy(), **close)
    if cell == "gru":
        back = [_rzn(g["W"].T), _rzn(g["R"].T), _rzn(g["b"][0]), _rzn(g["b"][1])]
    else:  # b = bias_ih + bias_hh: both receive db
        back = [g["W"].T, g["R"].T, g["b"], g["b"]]
    for p, ours in zip(tw, back):
        np.testing.assert_allclose(ours, p.grad.numpy(), **close)
