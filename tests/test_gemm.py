"""fastnn's GEMM (_core.gemm, fastnn.ops.matmul) against float64 NumPy, on every ISA this
CPU can run: all transpose combinations, accumulate, edge and real model shapes, exact
small-integer products, bitwise-identical results for 1 and 2 threads, bad input."""
import numpy as np
import pytest

import fastnn
from fastnn import _core, ops, reference

EPS32 = np.finfo(np.float32).eps
ISAS = list(_core.supported_isas())

# Tile and block sizes of the kernels (avx2: 6×16, avx512: 8×32, generic: 4×8; mc = 128
# or 144, kc ≤ 256, nc = 4096). Shapes cross each of them, or sit just below.
EDGE_SHAPES = [  # (M, N, K)
    (1, 1, 1),
    (1, 37, 5),
    (29, 1, 11),
    (6, 16, 256),
    (7, 17, 257),
    (5, 15, 3),
    (13, 31, 64),
    (37, 53, 97),
    (97, 33, 513),
    (145, 47, 300),
    (289, 67, 41),
    (38, 270, 45),
    (3, 4099, 7),
]
MLP_SHAPES = [  # (batch, in, out) of the MNIST MLPs 784→128→10 and 784→128→64→10
    (b, k, n) for b in (1, 32, 256) for (k, n) in ((784, 128), (128, 10), (128, 64), (64, 10))
]
TRANS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture
def restore_threads():
    n = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(n)


def operands(rng, M, N, K, ta, tb, integers=False):
    def draw(shape):
        if integers:
            return rng.integers(-4, 5, size=shape).astype(np.float32)
        return rng.standard_normal(shape, dtype=np.float32)

    a = draw((K, M) if ta else (M, K))
    b = draw((N, K) if tb else (K, N))
    return a, b


def op(x, t):
    return x.T if t else x


def check_close(got, a, b, ta, tb, K, c0=None):
    """|got - exact| <= 2·eps32·sqrt(K)·(|c0| + |op(a)|·|op(b)|), exact in float64."""
    a64, b64 = op(a, ta).astype(np.float64), op(b, tb).astype(np.float64)
    want = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    if c0 is not None:
        want = want + c0
        scale = scale + np.abs(c0)
    tol = 2.0 * EPS32 * np.sqrt(K) * scale + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= tol), f"max error {err.max():.3g}, max allowed there {tol[err.argmax() // got.shape[1], err.argmax() % got.shape[1]]:.3g}"


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", EDGE_SHAPES)
def test_gemm_matches_float64(isa, M, N, K, ta, tb):
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    a, b = operands(rng, M, N, K, ta, tb)
    out = np.full((M, N), np.nan, np.float32)
    _core.gemm(out, a, b, ta, tb)
    check_close(out, a, b, ta, tb, K)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 17, 257), (97, 33, 513), (145, 47, 300)])
def test_gemm_accumulate(isa, M, N, K, ta, tb):
    rng = np.random.default_rng(K)
    a, b = operands(rng, M, N, K, ta, tb)
    c0 = rng.standard_normal((M, N), dtype=np.float32)
    out = c0.copy()
    res = ops.matmul(a, b, ta, tb, out=out, accumulate=True)
    assert res is out
    check_close(out, a, b, ta, tb, K, c0=c0.astype(np.float64))


@pytest.mark.parametrize("M,N,K", [(5, 19, 2000), (70, 40, 1100)])
def test_gemm_long_k(isa, M, N, K):
    rng = np.random.default_rng(1)
    for ta, tb in TRANS:
        a, b = operands(rng, M, N, K, ta, tb)
        check_close(ops.matmul(a, b, ta, tb), a, b, ta, tb, K)


@pytest.mark.parametrize("batch,fan_in,fan_out", MLP_SHAPES)
def test_gemm_mlp_shapes(isa, batch, fan_in, fan_out):
    """Dense forward y = x·w, weight gradient dw = xᵀ·dz, input gradient dx = dz·wᵀ."""
    rng = np.random.default_rng(batch + fan_in + fan_out)
    x = rng.standard_normal((batch, fan_in), dtype=np.float32)
    w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
    dz = rng.standard_normal((batch, fan_out), dtype=np.float32)
    check_close(ops.matmul(x, w), x, w, False, False, fan_in)
    check_close(ops.matmul(x, dz, transpose_a=True), x, dz, True, False, batch)
    check_close(ops.matmul(dz, w, transpose_b=True), dz, w, False, True, fan_out)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 17, 257), (145, 47, 300), (32, 784, 128),
                                   (300, 260, 520)])
def test_gemm_small_integers_exact(isa, M, N, K, ta, tb):
    """Integers in [-4, 4]: every partial sum is exact in float32, so any order is exact."""
    rng = np.random.default_rng(3)
    a, b = operands(rng, M, N, K, ta, tb, integers=True)
    want = op(a, ta).astype(np.int64) @ op(b, tb).astype(np.int64)
    out = np.empty((M, N), np.float32)
    _core.gemm(out, a, b, ta, tb)
    np.testing.assert_array_equal(out, want.astype(np.float32))
    naive = np.empty((M, N), np.float32)
    _core.gemm_naive(naive, a, b, ta, tb)
    np.testing.assert_array_equal(naive, out)
    _core.gemm(out, a, b, ta, tb, accumulate=True)
    np.testing.assert_array_equal(out, 2 * want.astype(np.float32))


@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_naive_twin(ta, tb):
    rng = np.random.default_rng(4)
    M, N, K = 9, 14, 33
    a, b = operands(rng, M, N, K, ta, tb)
    out = rng.standard_normal((M, N), dtype=np.float32)
    c0 = out.astype(np.float64)
    _core.gemm_naive(out, a, b, ta, tb, accumulate=True)
    check_close(out, a, b, ta, tb, K, c0=c0)


@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,N,K", [(256, 128, 784), (784, 128, 256), (32, 784, 128),
                                   (97, 203, 301), (203, 97, 530), (600, 9, 400)])
def test_gemm_threads_bitwise_identical(isa, restore_threads, M, N, K, ta, tb):
    rng = np.random.default_rng(5)
    a, b = operands(rng, M, N, K, ta, tb)
    c0 = rng.standard_normal((M, N), dtype=np.float32)
    results = []
    for n in (1, 2, 1, 3):
        fastnn.set_num_threads(n)
        out = c0.copy()
        _core.gemm(out, a, b, ta, tb, accumulate=True)
        results.append(out)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def check_runs_transposed(M, N, K, ta, tb):
    """A product that runs transposed (T = op(B)ᵀ·op(A)ᵀ, then C = Tᵀ) gives the loop
    nest's sums on a plain copy of the transposed operand, bit for bit; with accumulate,
    C is added to the whole sum (within tolerance), the same on any thread count."""
    rng = np.random.default_rng(M + N + K)
    a, b = operands(rng, M, N, K, ta, tb)
    plain_a = np.ascontiguousarray(a.T) if ta else a
    plain_b = np.ascontiguousarray(b.T) if tb else b
    c0 = rng.standard_normal((M, N), dtype=np.float32)
    for n in (1, 2):
        fastnn.set_num_threads(n)
        got = np.full((M, N), np.nan, np.float32)
        _core.gemm(got, a, b, ta, tb)
        want = np.empty((M, N), np.float32)
        _core.gemm(want, plain_a, plain_b, False, False)
        assert np.array_equal(got, want)
        acc = c0.copy()
        _core.gemm(acc, a, b, ta, tb, accumulate=True)
        check_close(acc, a, b, ta, tb, K, c0=c0.astype(np.float64))
        if n == 1:
            acc1 = acc
        else:
            assert np.array_equal(acc, acc1)


@pytest.mark.parametrize("M,N,K", [(1, 300, 256), (7, 40, 300), (33, 257, 520), (64, 64, 1000),
                                   (256, 300, 256)])
def test_gemm_skinny_a_times_b_transposed(isa, restore_threads, M, N, K):
    # A·Bᵀ with few rows and K >= 256: Bᵀ's rows are read in place.
    check_runs_transposed(M, N, K, False, True)


@pytest.mark.parametrize("M,N,K", [(32, 10, 32), (64, 10, 256), (784, 10, 32), (100, 16, 500),
                                   (33, 1, 7), (128, 3, 1000)])
def test_gemm_narrow_a_transposed_times_b(isa, restore_threads, M, N, K):
    # Aᵀ·B into at most 16 columns (the weight gradient xᵀ·dz of a small output layer).
    check_runs_transposed(M, N, K, True, False)


def out_at_line_offset(M, N, offset):
    """A C-contiguous (M, N) float32 view whose first element sits `offset` floats past a
    64-byte boundary (the thread split depends on how C's rows meet cache lines)."""
    buf = np.empty(M * N + 32, np.float32)
    start = (-(buf.ctypes.data // 4) + offset) % 16
    return buf[start:start + M * N].reshape(M, N)


@pytest.mark.parametrize("offset", [0, 5])
@pytest.mark.parametrize("M,N,K,ta,tb", [(32, 128, 784, False, False), (784, 128, 32, True, False),
                                         (32, 784, 128, False, True), (64, 64, 128, False, False),
                                         (50, 203, 77, True, True)])
def test_gemm_threads_bitwise_identical_any_alignment(isa, restore_threads, M, N, K, ta, tb,
                                                      offset):
    rng = np.random.default_rng(8)
    a, b = operands(rng, M, N, K, ta, tb)
    results = []
    for n in (1, 2):
        fastnn.set_num_threads(n)
        out = out_at_line_offset(M, N, offset)
        _core.gemm(out, a, b, ta, tb)
        results.append(out.copy())
    assert np.array_equal(results[0], results[1])
    check_close(results[1], a, b, ta, tb, K)


@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_element_independent_of_tile_position(isa, ta, tb):
    """Each element gets the same operations wherever its tile falls: computing fewer rows
    (or columns) gives bitwise the same values for those that remain."""
    rng = np.random.default_rng(6)
    M, N, K = 150, 70, 600
    a, b = operands(rng, M, N, K, ta, tb)
    full = ops.matmul(a, b, ta, tb)
    a_sub = np.ascontiguousarray(a[:, 5:] if ta else a[5:])
    b_sub = np.ascontiguousarray(b[3:] if tb else b[:, 3:])
    assert np.array_equal(ops.matmul(a_sub, b, ta, tb), full[5:])
    assert np.array_equal(ops.matmul(a, b_sub, ta, tb), full[:, 3:])


@pytest.mark.parametrize("N", [128, 130, 300, 1000])
def test_gemm_single_row_is_a_row_of_the_batch(isa, N):
    """A one-row product (its own wide tiles) gives bitwise the values of that row in a
    product of many rows, and the float64 values within tolerance."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((9, 784)).astype(np.float32)
    b = rng.standard_normal((784, N)).astype(np.float32)
    full = ops.matmul(a, b)
    for i in (0, 4, 8):
        row = ops.matmul(a[i:i + 1], b)
        assert np.array_equal(row, full[i:i + 1])
    np.testing.assert_allclose(full, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)


def test_matmul_converts_inputs_explicitly():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    b = np.arange(20, dtype=np.int32).reshape(5, 4)[:, ::1].T  # (4, 5), not C-contiguous
    np.testing.assert_array_equal(ops.matmul(a, b), (a @ b).astype(np.float32))


def test_matmul_reference_agrees():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((8, 5))
    b = rng.standard_normal((6, 5))
    np.testing.assert_allclose(reference.matmul(a, b, transpose_b=True), a @ b.T)


# ---- bad input --------------------------------------------------------------------------

def f32(*shape):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: _core.gemm(f32(2, 3), np.ones((2, 4)), f32(4, 3)), TypeError,
     r"gemm: argument 'a' must be a C-contiguous float32 array of shape \(M, K\)"),
    (lambda: _core.gemm(f32(2, 3), f32(2, 4), np.ones((4, 3), np.int32)), TypeError,
     r"argument 'b' .*float32"),
    (lambda: _core.gemm(np.ones((2, 3)), f32(2, 4), f32(4, 3)), TypeError,
     r"argument 'out' .*float32"),
    (lambda: _core.gemm(f32(2, 3), [[1.0]], f32(4, 3)), TypeError, r"argument 'a' .*got list"),
    (lambda: _core.gemm(f32(2, 3), f32(8), f32(4, 3)), ValueError, r"argument 'a' .*shape \(8,\)"),
    (lambda: _core.gemm(f32(2, 3), f32(2, 4), f32(5, 3)), ValueError,
     r"argument 'b' must be .*\(K, N\) = \(4, \?\), got float32 array of shape \(5, 3\)"),
    (lambda: _core.gemm(f32(2, 3), f32(2, 4), f32(3, 5), False, True), ValueError,
     r"argument 'b' must be .*\(N, K\) = \(\?, 4\)"),
    (lambda: _core.gemm(f32(2, 3), f32(4, 2), f32(4, 3)), ValueError, r"argument 'b' .*\(2, \?\)"),
    (lambda: _core.gemm(f32(3, 3), f32(2, 4), f32(4, 3)), ValueError,
     r"argument 'out' must be .*\(M, N\) = \(2, 3\), got float32 array of shape \(3, 3\)"),
    (lambda: _core.gemm(f32(2, 3), f32(2, 8)[:, ::2], f32(4, 3)), ValueError,
     r"argument 'a' must be C-contiguous"),
    (lambda: _core.gemm(f32(3, 2).T, f32(2, 4), f32(4, 3)), ValueError,
     r"argument 'out' must be C-contiguous"),
    (lambda: _core.gemm(f32(2, 0), f32(2, 4), f32(4, 0)), ValueError, r"argument 'b' is empty"),
    (lambda: _core.gemm_naive(f32(2, 3), f32(2, 4), f32(5, 3)), ValueError,
     r"gemm_naive: argument 'b'"),
    (lambda: ops.matmul(f32(2, 3, 4), f32(4, 3)), ValueError, r"'a' and 'b' must be 2-D"),
    (lambda: ops.matmul(f32(2, 4), f32(5, 3)), ValueError, r"argument 'b' .*\(4, \?\)"),
    (lambda: ops.matmul(f32(2, 4), f32(4, 3), out=np.ones((2, 3))), TypeError,
     r"argument 'out' .*float32"),
    (lambda: ops.matmul(f32(2, 4), f32(4, 3), out=f32(3, 2)), ValueError,
     r"argument 'out' .*\(2, 3\)"),
    (lambda: ops.matmul(f32(2, 4), f32(4, 3), out=f32(2, 6)[:, ::2]), ValueError,
     r"argument 'out' must be C-contiguous"),
    (lambda: ops.matmul(f32(2, 4), f32(4, 3), out=[[0.0] * 3] * 2), TypeError,
     r"argument 'out' must be a numpy.ndarray"),
    (lambda: ops.matmul(f32(2, 4), f32(4, 3), accumulate=True), ValueError,
     r"accumulate=True needs an 'out'"),
    (lambda: ops.matmul(np.array([["x"]]), f32(1, 1)), TypeError, r"argument 'a' must hold real"),
])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_read_only_out_raises():
    out = f32(2, 3)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"gemm: argument 'out' is read-only"):
        _core.gemm(out, f32(2, 4), f32(4, 3))


def test_out_overlapping_an_input_raises():
    buf = f32(4, 4)
    with pytest.raises(ValueError, match=r"argument 'out' must not share memory with 'a'"):
        _core.gemm(buf, buf, f32(4, 4))
    with pytest.raises(ValueError, match=r"argument 'out' must not share memory with 'b'"):
        ops.matmul(f32(4, 4), buf[1:3].reshape(4, 2), out=buf[:2].reshape(4, 2))
    x = f32(4, 4)
    with pytest.raises(ValueError, match=r"must not share memory with 'a'"):
        ops.matmul(x, f32(4, 4), out=x)


def test_set_gemm_isa_rejects_unknown():
    with pytest.raises(ValueError, match=r"set_gemm_isa: argument 'name' .*'sse9'"):
        _core.set_gemm_isa("sse9")
