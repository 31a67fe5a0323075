"""Attention core: the NumPy twin against finite differences and brute force (float64),
the C++ kernels against the twin (float32) with and without key-padding and causal masks,
fully masked rows, thread independence, accumulation, layouts and bad input."""
import numpy as np
import pytest

import fastnn
from fastnn import _core, ops
from fastnn import reference as ref

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def restore_threads():
    n = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(n)


def make(seed, N, Tq, Tk, NH, D, mask_kind=None):
    """float32 q (N,Tq,C), k, v (N,Tk,C), dout like q, and a key-padding mask (N,Tk)."""
    rng = np.random.default_rng(seed)
    C = NH * D
    q = rng.standard_normal((N, Tq, C)).astype(np.float32)
    k = rng.standard_normal((N, Tk, C)).astype(np.float32)
    v = rng.standard_normal((N, Tk, C)).astype(np.float32)
    do = rng.standard_normal((N, Tq, C)).astype(np.float32)
    mask = None
    if mask_kind == "random":  # scattered holes, every sequence keeps a key
        mask = rng.random((N, Tk)) < 0.7
        mask[:, rng.integers(0, Tk)] = True
    elif mask_kind == "padding":  # right padding, lengths from Tk down to 1
        lengths = np.maximum(1, Tk - (np.arange(N) * Tk) // max(N, 2))
        mask = np.arange(Tk)[None, :] < lengths[:, None]
    elif mask_kind == "holes":  # padding plus fully masked sequences and a masked key 0
        mask = rng.random((N, Tk)) < 0.6
        mask[:, 0] = False
        mask[0] = False
    return q, k, v, do, mask


def f64(*xs):
    return [None if x is None else x.astype(np.float64) for x in xs]


def tol(K, scale=1.0, c=8.0):
    """Absolute tolerance for sums of K O(1) float32 terms."""
    return c * EPS32 * np.sqrt(K) * max(1.0, scale)


# ------------------------------------------------------------------ NumPy twin (float64)

@pytest.mark.parametrize("mask_kind", [None, "random", "holes"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Tq,Tk", [(3, 4), (4, 2)])
def test_reference_gradients_match_central_differences(mask_kind, causal, Tq, Tk):
    N, NH, D = 3, 2, 3
    q, k, v, _, mask = (x if x is None or x.dtype == bool else x.astype(np.float64)
                        for x in make(1, N, Tq, Tk, NH, D, mask_kind))
    w = np.random.default_rng(2).standard_normal(q.shape)  # loss = Σ w ⊙ o

    def loss(q_, k_, v_):
        return float((ref.attention(q_, k_, v_, mask, causal, None, NH)[0] * w).sum())

    o, lse = ref.attention(q, k, v, mask, causal, None, NH)
    grads = ref.attention_backward(w, q, k, v, o, lse, mask, causal, None, NH)
    h = 1e-6
    for which, g in enumerate(grads):
        args = [q, k, v]
        x = args[which]
        num = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h
            up = loss(*args)
            x[i] = old - h
            down = loss(*args)
            x[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8, err_msg="qkv"[which])


def test_reference_matches_brute_force_softmax():
    N, Tq, Tk, NH, D = 2, 5, 4, 2, 3
    q, k, v, _, mask = f64(*make(3, N, Tq, Tk, NH, D))[:4] + [None]
    mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    o, lse = ref.attention(q, k, v, mask, causal=True, scale=0.7, num_heads=NH)
    for n in range(N):
        for h in range(NH):
            hs = slice(h * D, (h + 1) * D)
            for i in range(Tq):
                js = [j for j in range(Tk) if mask[n, j] and j <= i]
                if not js:
                    assert np.all(o[n, i, hs] == 0) and lse[n, h, i] == np.inf
                    continue
                s = np.array([0.7 * q[n, i, hs] @ k[n, j, hs] for j in js])
                p = np.exp(s - s.max())
                p /= p.sum()
                np.testing.assert_allclose(o[n, i, hs], p @ v[n, js, hs], rtol=1e-12)
                np.testing.assert_allclose(lse[n, h, i], np.log(np.exp(s).sum()), rtol=1e-12)


# ------------------------------------------------------------------ C++ vs the twin (float32)

# (N, Tq, Tk, NH, D, mask, causal): T from 1 to 300, not multiples of the tiles (32/64
# queries, 64 keys, 8 lanes), Tq ≠ Tk, D in {1, 8, 16, 32, 64} plus odd sizes and one above
# the tiled limit (naive path), 1, 2 and 8 heads, the model shapes.
CASES = [
    (1, 1, 1, 1, 1, None, False),
    (1, 1, 1, 1, 1, None, True),
    (2, 1, 7, 1, 8, "random", False),
    (3, 7, 1, 2, 1, None, True),
    (2, 5, 9, 2, 3, "padding", True),
    (2, 17, 33, 2, 16, "random", False),
    (3, 33, 17, 1, 8, "padding", True),
    (2, 31, 65, 8, 1, None, True),
    (4, 80, 80, 2, 32, "padding", False),
    (2, 80, 80, 8, 8, "padding", True),
    (2, 80, 80, 8, 16, None, False),
    (2, 65, 130, 8, 16, "random", True),
    (2, 300, 300, 1, 64, "padding", True),
    (1, 300, 257, 2, 32, "random", False),
    (2, 129, 63, 8, 64, None, False),
    (2, 100, 200, 2, 12, "random", True),
    (2, 40, 41, 1, 40, "padding", False),
    (1, 30, 20, 2, 130, "random", True),  # D > 128: the naive twin
]


def case_id(c):
    N, Tq, Tk, NH, D, mk, causal = c
    return f"N{N}-Tq{Tq}-Tk{Tk}-NH{NH}-D{D}-{mk or 'nomask'}{'-causal' if causal else ''}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_and_backward_match_reference(case):
    N, Tq, Tk, NH, D, mask_kind, causal = case
    q, k, v, do, mask = make(4, N, Tq, Tk, NH, D, mask_kind)
    o, lse = ops.attention(q, k, v, mask=mask, causal=causal, num_heads=NH)
    q64, k64, v64, do64 = f64(q, k, v, do)
    o64, lse64 = ref.attention(q64, k64, v64, mask, causal, None, NH)
    assert o.dtype == np.float32 and o.shape == q.shape and lse.shape == (N, NH, Tq)
    np.testing.assert_allclose(o, o64, rtol=0, atol=tol(Tk * D))
    np.testing.assert_array_equal(np.isinf(lse), np.isinf(lse64))
    np.testing.assert_allclose(lse[np.isfinite(lse)], lse64[np.isfinite(lse64)], rtol=0,
                               atol=tol(Tk * D, np.abs(lse64[np.isfinite(lse64)]).max(initial=1)))

    dq, dk, dv = ops.attention_backward(do, q, k, v, o, lse, mask=mask, causal=causal,
                                        num_heads=NH)
    g64 = ref.attention_backward(do64, q64, k64, v64, o64, lse64, mask, causal, None, NH)
    for name, g, r in zip(("dq", "dk", "dv"), (dq, dk, dv), g64):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, r, rtol=0, atol=tol(max(Tq, Tk) * D, np.abs(r).max()),
                                   err_msg=name)


@pytest.mark.parametrize("case", [CASES[i] for i in (4, 7, 9, 11, 15)], ids=case_id)
def test_tiled_kernels_match_naive_twins(case):
    N, Tq, Tk, NH, D, mask_kind, causal = case
    q, k, v, do, mask = make(5, N, Tq, Tk, NH, D, mask_kind)
    m8 = None if mask is None else mask.astype(np.uint8)
    outs = []
    for fwd, bwd in ((_core.attention_forward, _core.attention_backward),
                     (_core.attention_forward_naive, _core.attention_backward_naive)):
        o = np.empty_like(q)
        lse = np.empty((N, NH, Tq), np.float32)
        fwd(o, lse, q, k, v, m8, NH, causal, 0.3)
        grads = [np.zeros_like(x) for x in (q, k, v)]
        bwd(*grads, do, o, lse, q, k, v, m8, NH, causal, 0.3)
        outs.append([o, lse] + grads)
    for name, a, b in zip(("o", "lse", "dq", "dk", "dv"), *outs):
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=name)  # lse = +inf
        a, b = a[np.isfinite(b)], b[np.isfinite(b)]
        np.testing.assert_allclose(a, b, rtol=0, err_msg=name,
                                   atol=tol(max(Tq, Tk) * D, np.abs(b).max(initial=1)))


def test_scale_and_model_shape_against_reference():
    q, k, v, do, mask = make(6, 32, 80, 80, 2, 32, "padding")
    o, lse = ops.attention(q, k, v, mask=mask, scale=0.5, num_heads=2)
    o64, lse64 = ref.attention(*f64(q, k, v), mask, False, 0.5, 2)
    np.testing.assert_allclose(o, o64, rtol=0, atol=tol(80 * 32))
    np.testing.assert_allclose(lse, lse64, rtol=0, atol=tol(80 * 32, np.abs(lse64).max()))


# ------------------------------------------------------------------ masked rows and padding

def test_fully_masked_rows_give_zeros_and_zero_gradients():
    N, Tq, Tk, NH, D = 4, 37, 70, 2, 16
    q, k, v, do, mask = make(7, N, Tq, Tk, NH, D, "holes")  # sequence 0: all padding
    for causal in (False, True):
        o, lse = ops.attention(q, k, v, mask=mask, causal=causal, num_heads=NH)
        dq, dk, dv = ops.attention_backward(do, q, k, v, o, lse, mask=mask, causal=causal,
                                            num_heads=NH)
        for x in (o, lse, dq, dk, dv):
            assert not np.isnan(x).any()
        assert np.all(o[0] == 0) and np.all(lse[0] == np.inf)
        assert np.all(dq[0] == 0) and np.all(dk[0] == 0) and np.all(dv[0] == 0)
        # masked keys get no gradient
        assert np.all(dk[~mask] == 0) and np.all(dv[~mask] == 0)
        if causal:  # key 0 is masked everywhere: query 0 sees nothing
            assert np.all(o[:, 0] == 0) and np.all(lse[:, :, 0] == np.inf)
            assert np.all(dq[:, 0] == 0)
        o64, lse64 = ref.attention(*f64(q, k, v), mask, causal, None, NH)
        np.testing.assert_allclose(o, o64, rtol=0, atol=tol(Tk * D))
        g64 = ref.attention_backward(*f64(do, q, k, v), o64, lse64, mask, causal, None, NH)
        for g, r in zip((dq, dk, dv), g64):
            np.testing.assert_allclose(g, r, rtol=0, atol=tol(Tk * D, np.abs(r).max()))


def test_all_padding_batch():
    q, k, v, do, _ = make(8, 3, 9, 11, 2, 8)
    mask = np.zeros((3, 11), dtype=np.int64)
    o, lse = ops.attention(q, k, v, mask=mask, num_heads=2)
    assert np.all(o == 0) and np.all(lse == np.inf)
    grads = ops.attention_backward(do, q, k, v, o, lse, mask=mask, num_heads=2)
    for g in grads:
        assert np.all(g == 0)


def test_mask_dtypes_are_equivalent():
    q, k, v, _, mask = make(9, 2, 10, 12, 2, 8, "random")
    base = ops.attention(q, k, v, mask=mask, num_heads=2)[0]
    for m in (mask.astype(np.uint8), mask.astype(np.int32) * 5, mask.astype(np.int64),
              mask.tolist()):
        np.testing.assert_array_equal(ops.attention(q, k, v, mask=m, num_heads=2)[0], base)


# ------------------------------------------------------------------ determinism, buffers, layouts

@pytest.mark.parametrize("causal", [False, True])
def test_one_and_two_threads_are_bitwise_identical(restore_threads, causal):
    q, k, v, do, mask = make(10, 5, 97, 131, 4, 16, "random")
    results = []
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        o, lse = ops.attention(q, k, v, mask=mask, causal=causal, num_heads=4)
        grads = ops.attention_backward(do, q, k, v, o, lse, mask=mask, causal=causal,
                                       num_heads=4)
        results.append((o, lse) + grads)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_backward_accumulates_and_skips_missing_gradients():
    N, Tq, Tk, NH, D = 2, 20, 30, 2, 8
    q, k, v, do, mask = make(11, N, Tq, Tk, NH, D, "random")
    o, lse = ops.attention(q, k, v, mask=mask, num_heads=NH)
    fresh = ops.attention_backward(do, q, k, v, o, lse, mask=mask, num_heads=NH)
    start = [np.full(x.shape, 1.5, np.float32) for x in (q, k, v)]
    acc = ops.attention_backward(do, q, k, v, o, lse, mask=mask, num_heads=NH,
                                 dq=start[0].copy(), dk=start[1].copy(), dv=start[2].copy())
    for a, f, s in zip(acc, fresh, start):
        np.testing.assert_allclose(a, f + s, rtol=0, atol=tol(Tk * D, np.abs(f).max()))
    # None = not needed: the others are computed exactly as before
    m8 = mask.astype(np.uint8)
    for missing in range(3):
        grads = [np.zeros_like(x) for x in (q, k, v)]
        grads[missing] = None
        _core.attention_backward(*grads, do, o, lse, q, k, v, m8, NH, False, None)
        for i in range(3):
            if i != missing:
                np.testing.assert_array_equal(grads[i], fresh[i])


def test_out_4d_layout_and_conversion():
    N, Tq, Tk, NH, D = 2, 9, 13, 4, 8
    q, k, v, do, mask = make(12, N, Tq, Tk, NH, D, "padding")
    o, lse = ops.attention(q, k, v, mask=mask, num_heads=NH, causal=True)
    # the same arrays viewed (N, T, NH, D): identical results, shaped like the input
    q4, k4, v4, do4 = (x.reshape(x.shape[0], x.shape[1], NH, D) for x in (q, k, v, do))
    out = np.empty_like(q4)
    o4, lse4 = ops.attention(q4, k4, v4, mask=mask, causal=True, out=out)
    assert o4 is out and o4.shape == (N, Tq, NH, D)
    np.testing.assert_array_equal(o4.reshape(o.shape), o)
    np.testing.assert_array_equal(lse4, lse)
    g4 = ops.attention_backward(do4, q4, k4, v4, o4, lse4, mask=mask, causal=True)
    g3 = ops.attention_backward(do, q, k, v, o, lse, mask=mask, causal=True, num_heads=NH)
    for a, b in zip(g4, g3):
        assert a.shape == (N, a.shape[1], NH, D)
        np.testing.assert_array_equal(a.reshape(b.shape), b)
    # float64 inputs are converted once to float32
    o64in, _ = ops.attention(q.astype(np.float64), k, v.astype(np.float64), mask=mask,
                             num_heads=NH, causal=True)
    np.testing.assert_array_equal(o64in, o)
    # out= in the 3-D layout, and _core writing lse=None
    out3 = np.empty_like(q)
    assert ops.attention(q, k, v, mask=mask, num_heads=NH, causal=True, out=out3)[0] is out3
    o_nolse = np.empty_like(q)
    _core.attention_forward(o_nolse, None, q, k, v, mask.astype(np.uint8), NH, True, None)
    np.testing.assert_array_equal(o_nolse, o)


def test_cross_attention_matches_torch():
    torch = pytest.importorskip("torch")
    N, Tq, Tk, NH, D = 3, 21, 70, 2, 16
    q, k, v, do, mask = make(13, N, Tq, Tk, NH, D, "padding")
    visible = torch.tensor(mask)[:, None, None, :] & torch.ones(Tq, Tk, dtype=torch.bool).tril()
    o, lse = ops.attention(q, k, v, mask=mask, causal=True, num_heads=NH)
    dq, dk, dv = ops.attention_backward(do, q, k, v, o, lse, mask=mask, causal=True,
                                        num_heads=NH)
    tq, tk, tv = (torch.tensor(x).view(N, -1, NH, D).transpose(1, 2).requires_grad_()
                  for x in (q, k, v))
    to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=visible)
    to.backward(torch.tensor(do).view(N, Tq, NH, D).transpose(1, 2))
    pairs = [(o, to), (dq, tq.grad), (dk, tk.grad), (dv, tv.grad)]
    for ours, theirs in pairs:
        theirs = theirs.detach().transpose(1, 2).reshape(ours.shape).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=tol(Tk * D, np.abs(theirs).max()))


# ------------------------------------------------------------------ bad input

def test_bad_input_messages():
    q, k, v, do, mask = make(14, 2, 5, 6, 2, 4, "random")
    A = ops.attention
    with pytest.raises(ValueError, match=r"'q' must be 3-D \(N, Tq, C\) or 4-D"):
        A(q[0], k, v)
    with pytest.raises(ValueError, match="'k' must have the rank of q"):
        A(q, k[0], v)
    with pytest.raises(ValueError, match=r"'num_heads' must divide the channel count C = 8"):
        A(q, k, v, num_heads=3)
    with pytest.raises(ValueError, match="'num_heads' must be >= 1"):
        A(q, k, v, num_heads=0)
    with pytest.raises(TypeError, match="'num_heads' must be an int"):
        A(q, k, v, num_heads="2")
    with pytest.raises(ValueError, match=r"'k' must be .* shape \(N, Tk, C\) = \(2, \?, 8\)"):
        A(q, k[:1], v)
    with pytest.raises(ValueError, match=r"'k' must be .* = \(2, \?, 8\), got float32 array of shape \(2, 6, 6\)"):
        A(q, k[:, :, :6], v)
    with pytest.raises(ValueError, match=r"'v' must be .* shape \(N, Tk, C\) = \(2, 6, 8\)"):
        A(q, k, v[:, :5])
    with pytest.raises(ValueError, match=r"'mask' must be .*uint8 array of shape \(N, Tk\) = \(2, 6\)"):
        A(q, k, v, mask=mask[:, :5])
    with pytest.raises(TypeError, match="'mask' must be a bool or integer array"):
        A(q, k, v, mask=mask.astype(np.float32))
    with pytest.raises(TypeError, match="'q' must hold real numbers"):
        A(q.astype(np.complex64), k, v)
    with pytest.raises(TypeError, match=r"'out' must be a C-contiguous float32 array of shape \(2, 5, 8\)"):
        A(q, k, v, out=np.empty(q.shape, np.float64))
    with pytest.raises(ValueError, match=r"'out' must be .* \(2, 5, 8\), got float32 array of shape \(2, 5, 4\)"):
        A(q, k, v, out=np.empty((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="'out' must be .*got a strided"):
        A(q, k, v, out=np.empty((2, 5, 16), np.float32)[:, :, ::2])
    with pytest.raises(ValueError, match="'scale' must be a finite number"):
        A(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError, match=r"'num_heads' \(3\) does not match"):
        A(q.reshape(2, 5, 2, 4), k.reshape(2, 6, 2, 4), v.reshape(2, 6, 2, 4), num_heads=3)
    with pytest.raises(ValueError, match=r"'v' must have shape \(N, Tk, NH, D\)"):
        A(q.reshape(2, 5, 2, 4), k.reshape(2, 6, 2, 4), v.reshape(2, 6, 4, 2))

    o, lse = A(q, k, v, mask=mask, num_heads=2)
    B = ops.attention_backward
    with pytest.raises(ValueError, match=r"'lse' must be .* shape \(N, NH, Tq\) = \(2, 2, 5\)"):
        B(do, q, k, v, o, lse[:, :1], mask=mask, num_heads=2)
    with pytest.raises(ValueError, match="'do' must be shaped like q"):
        B(do[:, :4], q, k, v, o, lse, mask=mask, num_heads=2)
    ro = np.zeros_like(q)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="'dq' is read-only"):
        B(do, q, k, v, o, lse, mask=mask, num_heads=2, dq=ro)
    with pytest.raises(TypeError, match="'dk' must be a numpy.ndarray"):
        B(do, q, k, v, o, lse, mask=mask, num_heads=2, dk=[0.0])

    # the raw bindings never convert: uint8 mask, float32 C-contiguous, no aliasing
    out = np.empty_like(q)
    with pytest.raises(TypeError, match="'mask' must be a C-contiguous uint8 array"):
        _core.attention_forward(out, None, q, k, v, mask, 2)
    with pytest.raises(ValueError, match="'out' must not share memory with 'q'"):
        _core.attention_forward(q, None, q, k, v, None, 2)
    with pytest.raises(ValueError, match="'dk' must not share memory with 'dv'"):
        g = np.zeros_like(k)
        _core.attention_backward(None, g, g, do, o, lse, q, k, v, None, 2)
    with pytest.raises(ValueError, match="'q' must be C-contiguous"):
        _core.attention_forward(out, None, np.asfortranarray(q), k, v, None, 2)
    with pytest.raises(ValueError, match="'k' is empty"):
        _core.attention_forward(out, None, q, k[:, :0], v[:, :0], None, 2)
