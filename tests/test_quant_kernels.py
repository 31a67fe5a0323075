"""fastnn's int8 kernels (fastnn.ops.quant, _core.qgemm_s32 / qdense / qconv2d) against
their NumPy twins (fastnn.reference.quant) on every int8 ISA this CPU can run: exact int32
products over edge and saturating shapes, the epilogue bit for bit (linear/relu) or to a
few ulp (sigmoid/tanh/gelu), bitwise-identical results for 1 and 2 threads, quantizers
bit for bit, error against the float ops, bad input."""
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import _core, ops
from fastnn import reference as R

QISAS = list(_core.qgemm_supported_isas())

# Micro-tiles: amx 32×32 (tiles of 16 rows × 64 K values), avx512vnni 6×64 (K groups of
# 4), avx2 6×16 (K pairs), generic 1×16; K blocks of 2048 / 1024 / 512 / 4096, row blocks
# of 64 / 96 (64 generic).
EDGE_SHAPES = [  # (M, N, K)
    (1, 1, 1), (1, 17, 3), (5, 1, 7), (6, 16, 4), (7, 65, 5), (13, 31, 63), (31, 129, 17),
    (97, 47, 513), (37, 70, 1031), (3, 1100, 9), (1100, 3, 33), (256, 10, 128), (1, 128, 784),
]


@pytest.fixture(params=QISAS)
def qisa(request):
    before = _core.qgemm_isa()
    _core.set_qgemm_isa(request.param)
    yield request.param
    _core.set_qgemm_isa(before)


@pytest.fixture
def restore_threads():
    n = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(n)


def packed(b):
    p = np.empty(_core.qgemm_packed_size(*b.shape), np.uint8)
    _core.qgemm_pack_b(p, b)
    return p


def ref_s32(a, b):
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


# ---- int32 products ------------------------------------------------------------------

@pytest.mark.parametrize("M,N,K", EDGE_SHAPES)
def test_qgemm_exact(qisa, M, N, K):
    rng = np.random.default_rng(M * 7 + N * 13 + K)
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    c = np.empty((M, N), np.int32)
    _core.qgemm_s32(c, a, packed(b))
    np.testing.assert_array_equal(c, ref_s32(a, b))
    assert _core.qgemm_packed_info(packed(b))[0] == qisa


@pytest.mark.parametrize("aval,bval", [(255, -128), (255, 127), (255, -127), (0, -128),
                                       (255, "mix")])
def test_qgemm_saturating_values(qisa, aval, bval):
    # 255·(-128) summed over K = 4099: far past int16 (vpmaddubsw would saturate).
    M, N, K = 13, 37, 4099
    a = np.full((M, K), aval, np.uint8)
    if bval == "mix":
        b = np.where(np.arange(K * N).reshape(K, N) % 3 == 0, -128, 127).astype(np.int8)
    else:
        b = np.full((K, N), bval, np.int8)
    c = ops.qgemm_s32(a, b)
    np.testing.assert_array_equal(c, ref_s32(a, b))
    np.testing.assert_array_equal(c, R.qgemm_s32(a, b))


def test_qgemm_large_and_plain_twin(qisa):
    rng = np.random.default_rng(5)
    M, N, K = 300, 1030, 1100
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    c = ops.qgemm_s32(a, b)
    np.testing.assert_array_equal(c, ref_s32(a, b))
    small = np.empty((7, N), np.int32)
    _core.plain.qgemm_s32(small, a[:7], b)
    np.testing.assert_array_equal(small, c[:7])


@pytest.mark.parametrize("M,N,K", [(1, 1024, 1024), (256, 128, 784), (31, 1030, 300),
                                   (1024, 64, 128)])
def test_threads_bitwise_equal(qisa, restore_threads, M, N, K):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((M, K)).astype(np.float32)
    qw = ops.pack_qweight(rng.standard_normal((K, N)).astype(np.float32))
    bias = rng.standard_normal(N).astype(np.float32)
    outs = []
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        outs.append((ops.qdense(x, qw, bias, "gelu"), ops.qgemm_s32(ops.quantize_u8_dynamic(x)[0], qw),
                     ops.quantize_u8_dynamic(np.tile(x, (1, 64)))))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    np.testing.assert_array_equal(outs[0][2][0], outs[1][2][0])
    assert outs[0][2][1:] == outs[1][2][1:]


# ---- quantizers -----------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 300001])
def test_quantize_matches_twin(qisa, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    x[: n // 3] = np.round(x[: n // 3] * 4) / 4  # ties at the scale below: half to even
    q = ops.quantize_u8(x, 0.125, 100)
    np.testing.assert_array_equal(q, R.quantize_u8(x, 0.125, 100))
    q2, s, z = ops.quantize_u8_dynamic(x)
    q2r, sr, zr = R.quantize_u8_dynamic(x)
    assert (np.float32(s), z) == (np.float32(sr), zr)
    np.testing.assert_array_equal(q2, q2r)
    qp = np.empty(n, np.uint8)
    assert _core.plain.quantize_u8_dynamic(qp, x) == (s, z)
    np.testing.assert_array_equal(qp, q2)
    # Round trip within half a step (the range holds every x).
    err = np.abs(R.dequantize_u8(q2, s, z) - x)
    assert err.max() <= np.float32(s) / 2 * (1 + 1e-5)


def test_quantize_edges(qisa):
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5, 1.5, 2.5, -0.5], np.float32)
    np.testing.assert_array_equal(ops.quantize_u8(x, 1.0, 0), R.quantize_u8(x, 1.0, 0))
    np.testing.assert_array_equal(ops.quantize_u8(x, 1.0, 0)[:3], [0, 255, 0])
    np.testing.assert_array_equal(ops.quantize_u8(x[5:8], 1.0, 0), [0, 2, 2])  # half to even
    q, s, z = ops.quantize_u8_dynamic(np.zeros(5, np.float32))
    assert (s, z) == (1.0, 0) and not q.any()
    q, s, z = ops.quantize_u8_dynamic(np.full(7, 3.0, np.float32))  # range [0, 3]
    assert z == 0 and q.max() == 255
    q, s, z = ops.quantize_u8_dynamic(np.full(7, -3.0, np.float32))  # range [-3, 0]
    assert z == 255 and q.max() == 0
    with pytest.raises(ValueError, match="'x'.*NaN"):
        ops.quantize_u8_dynamic(x)


@pytest.mark.parametrize("scale", [0.1, 1.0 / 3.0, 7.3e-3, 2.0**-130])
def test_quantize_edges_vectorised(qisa, scale):
    """Edges spread over whole vectors (not only the tail): NaN, ±inf, huge, values near
    the clamp ends and half-integer quotients with an inexact 1/scale."""
    rng = np.random.default_rng(7)
    s32 = np.float32(scale)
    k = rng.integers(-1500, 1500, 4000).astype(np.float32)
    x = np.concatenate([
        (k + np.float32(0.5)) * s32,                   # near ties of x / scale
        k * s32,
        rng.uniform(-2000, 2000, 4000).astype(np.float32) * s32,
        np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38, -3e38], np.float32),
    ]).astype(np.float32)
    x = x[rng.permutation(x.size)]
    for zp in (0, 37, 255):
        np.testing.assert_array_equal(ops.quantize_u8(x, scale, zp), R.quantize_u8(x, scale, zp))
    fin = x[np.isfinite(x)]
    q, s, z = ops.quantize_u8_dynamic(fin)
    qr, sr, zr = R.quantize_u8_dynamic(fin)
    assert (np.float32(s), z) == (np.float32(sr), zr)
    np.testing.assert_array_equal(q, qr)
    for pos in (0, 17, 100, fin.size - 1):
        for bad in (np.nan, np.inf, -np.inf):
            y = fin.copy()
            y[pos] = bad
            with pytest.raises(ValueError, match="'x'.*NaN"):
                ops.quantize_u8_dynamic(y)


def test_weight_quantizer():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((50, 9)).astype(np.float32)
    w[:, 3] = 0
    q, s = R.quantize_weight(w)
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert q.min() >= -127 and s[3] == 1 and not q[:, 3].any()
    assert np.all(np.abs(q.astype(np.float32) * s - w) <= s / 2 * (1 + 1e-5))
    qw = ops.pack_qweight(w)
    np.testing.assert_array_equal(qw.qweight, q)
    np.testing.assert_array_equal(qw.colsum, q.astype(np.int32).sum(0))
    qw2 = ops.pack_qweight(q, s)
    np.testing.assert_array_equal(qw2.packed, qw.packed)


# ---- qdense / qconv2d -----------------------------------------------------------------

def _ulp_close(y, yr, act):
    if act in ("linear", "relu"):
        np.testing.assert_array_equal(y, yr)
    else:
        np.testing.assert_allclose(y, yr, rtol=4e-6, atol=2e-6)


@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("M,K,N", [(1, 784, 128), (31, 128, 10), (256, 100, 67), (3, 5, 1),
                                   (203, 1101, 70)])  # several K and row blocks
def test_qdense_matches_twin(qisa, act, M, K, N):
    rng = np.random.default_rng(M + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((K, N)) * 0.1).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    qw = ops.pack_qweight(w)
    for kw in ({}, {"x_scale": 0.05, "x_zero_point": 120}):
        y = ops.qdense(x, qw, b, act, **kw)
        _ulp_close(y, R.qdense(x, qw, b, act, **kw), act)
    y = ops.qdense(x, qw, None, act)
    _ulp_close(y, R.qdense(x, qw, None, act), act)
    # The binding with an xq scratch given (checked, not written) gives the same bits.
    y2 = np.empty_like(y)
    _core.qdense_f32(y2, np.empty((M, K), np.uint8), x, qw.packed, qw.scale, None, None, 0,
                     getattr(_core.Act, act))
    np.testing.assert_array_equal(y2, y)
    # C++ plain twin, same arithmetic.
    q, s, z = ops.quantize_u8_dynamic(x)
    yp = np.empty((M, N), np.float32)
    _core.plain.qdense_forward(yp, q, qw.qweight, qw.scale, b, s, z, getattr(_core.Act, act))
    _ulp_close(ops.qdense(x, qw, b, act), yp, act)


def test_qdense_vs_float_dense():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 3, 256)).astype(np.float32)
    w = (rng.standard_normal((256, 96)) / 16).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    qw = ops.pack_qweight(w)
    y = ops.qdense(x, qw, b)
    assert y.shape == (64, 3, 96)
    yf = ops.dense(x, w, b)
    # Error bound: Σ_k |x|·|w| rounding of both operands, at most half a step each.
    _, s, _ = ops.quantize_u8_dynamic(x)
    bound = (s / 2 * np.abs(w).sum(0) + np.abs(x).sum(-1, keepdims=True) * qw.scale / 2
             + s * qw.scale / 4 * 256)
    assert np.all(np.abs(y - yf) <= bound)
    assert np.abs(y - yf).max() < 0.05 * np.abs(yf).max()
    out = np.empty_like(y)
    assert ops.qdense(x, qw, b, out=out) is out
    np.testing.assert_array_equal(out, y)


CONV_CASES = [  # x shape, kernel (KH, KW, OC), strides, padding, dilation
    ((2, 28, 28, 1), (3, 3, 32), 1, "valid", 1),
    ((2, 13, 13, 32), (3, 3, 64), 1, "same", 1),
    ((1, 9, 11, 5), (3, 2, 7), 2, "same", 1),
    ((3, 10, 10, 4), (3, 3, 6), (1, 2), ((1, 0), (2, 1)), 2),
    ((2, 6, 6, 17), (1, 1, 19), 1, "valid", 1),
    ((1, 5, 5, 3), (5, 5, 2), 1, "same", 1),
    # Windows inside the image, KW·C a multiple of 4: the VNNI kernel reads xq in place.
    ((2, 13, 13, 32), (3, 3, 64), 1, "valid", 1),
    ((1, 12, 15, 4), (3, 2, 70), (2, 3), "valid", 1),
    ((2, 9, 9, 8), (2, 3, 5), 1, "valid", (2, 1)),
    ((1, 7, 7, 64), (3, 3, 16), 1, "valid", 1),  # K = 576 > 512: through im2col
    # KW·C not a multiple of 4: kernel rows padded in a copy of B.
    ((2, 10, 11, 3), (3, 3, 8), (2, 1), "valid", (2, 1)),
    ((1, 8, 9, 5), (2, 3, 18), 1, "valid", 1),
]


@pytest.mark.parametrize("xs,ks", [((3, 28, 28, 1), (3, 3, 32)), ((2, 13, 13, 32), (3, 3, 64)),
                                   ((2, 9, 9, 3), (3, 3, 20))])
def test_qconv2d_threads_bitwise_equal(qisa, restore_threads, xs, ks):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(xs).astype(np.float32)
    qw = ops.pack_qweight(rng.standard_normal((ks[0], ks[1], xs[3], ks[2])).astype(np.float32))
    outs = []
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        outs.append(ops.qconv2d(x, qw, None, activation="relu"))
    np.testing.assert_array_equal(outs[0], outs[1])


def _im2col_ref(x, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW, zp):
    N, H, W, C = x.shape
    xp = np.full((N, H + pt + KH * dh + sh * OH, W + pl + KW * dw + sw * OW, C), zp, np.uint8)
    xp[:, pt:pt + H, pl:pl + W] = x
    col = np.empty((N, OH, OW, KH, KW, C), np.uint8)
    for kh in range(KH):
        for kw in range(KW):
            col[:, :, :, kh, kw] = xp[:, kh * dh:kh * dh + sh * OH:sh, kw * dw:kw * dw + sw * OW:sw]
    return col.reshape(N * OH * OW, KH * KW * C)


@pytest.mark.parametrize("C", [1, 2, 3, 5, 8, 17])
@pytest.mark.parametrize("geo", [(3, 3, 1, 1, 0, 0, 1), (3, 3, 1, 1, 1, 1, 1), (2, 5, 2, 3, 0, 4, 1),
                                 (1, 7, 1, 1, 3, 3, 1), (3, 3, 2, 2, 1, 0, 2), (4, 1, 3, 1, 2, 0, 1)])
def test_qim2col_matches_numpy(restore_threads, C, geo):
    KH, KW, sh, sw, pt, pl, dil = geo
    rng = np.random.default_rng(C)
    x = rng.integers(0, 256, (3, 9, 8, C), dtype=np.uint8)
    OH = (9 + 2 * pt - dil * (KH - 1) - 1) // sh + 1
    OW = (8 + 2 * pl - dil * (KW - 1) - 1) // sw + 1
    ref = _im2col_ref(x, KH, KW, sh, sw, pt, pl, dil, dil, OH, OW, 77)
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        col = np.full(ref.shape, 1, np.uint8)
        _core.qim2col_u8(col, x, KH, KW, sh, sw, pt, pl, dil, dil, OH, OW, 77)
        np.testing.assert_array_equal(col, ref)


@pytest.mark.parametrize("xs,ks,st,pad,dil", CONV_CASES)
@pytest.mark.parametrize("act", ["linear", "relu", "tanh"])
def test_qconv2d_matches_twin(qisa, xs, ks, st, pad, dil, act):
    rng = np.random.default_rng(sum(xs) + sum(ks))
    x = (rng.standard_normal(xs) + 0.5).astype(np.float32)  # asymmetric: zero point ≠ 0
    w = (rng.standard_normal((ks[0], ks[1], xs[3], ks[2])) * 0.2).astype(np.float32)
    b = rng.standard_normal(ks[2]).astype(np.float32)
    qw = ops.pack_qweight(w)
    kw = dict(strides=st, padding=pad, dilation=dil, activation=act)
    y = ops.qconv2d(x, qw, b, **kw)
    _ulp_close(y, R.qconv2d(x, qw, b, **kw), act)
    q, s, z = ops.quantize_u8_dynamic(x)
    assert z != 0 or x.min() >= 0
    if act == "linear":
        yf = ops.conv2d(x, w, b, strides=st, padding=pad, dilation=dil)
        assert np.abs(y - yf).max() < 0.03 * np.abs(yf).max()
        geo = ops.conv2d_geometry(xs[1:3], w.shape, st, pad, dil)
        yp = np.empty(y.shape, np.float32)
        _core.plain.qconv2d_forward(yp, q, qw.qweight, qw.scale, b, s, z, geo.stride_h,
                                    geo.stride_w, geo.pad_top, geo.pad_left, geo.dil_h,
                                    geo.dil_w)
        np.testing.assert_array_equal(y, yp)


# ---- bad input ------------------------------------------------------------------------

def test_bad_input():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    qw = ops.pack_qweight(w)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="'x' has 7 features.*K = 8"):
        ops.qdense(x[:, :7], qw)
    with pytest.raises(TypeError, match="'qw' must be a QWeight"):
        ops.qdense(x, w)
    with pytest.raises(ValueError, match="'x_scale'.*> 0"):
        ops.qdense(x, qw, x_scale=0.0)
    with pytest.raises(ValueError, match="'x_scale'"):
        ops.qdense(x, qw, x_scale=float("nan"))
    with pytest.raises(ValueError, match="'x_scale'"):
        ops.qdense(x, qw, x_scale=-1.0)
    with pytest.raises(ValueError, match="'x_zero_point'.*\\[0, 255\\]"):
        ops.qdense(x, qw, x_scale=0.1, x_zero_point=256)
    with pytest.raises(ValueError, match="'x_zero_point' is given without 'x_scale'"):
        ops.qdense(x, qw, x_zero_point=3)
    with pytest.raises(ValueError, match="'b' must have shape"):
        ops.qdense(x, qw, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.qdense(x, qw, out=np.empty((4, 3), np.float32).T)
    with pytest.raises(TypeError, match="'out' must be a float32"):
        ops.qdense(x, qw, out=np.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match="'x'.*NaN"):
        ops.qdense(np.full((3, 8), np.nan, np.float32), qw)
    with pytest.raises(ValueError, match="activation"):
        ops.qdense(x, qw, activation="swish")
    with pytest.raises(ValueError, match="'qw' must hold a 4-D"):
        ops.qconv2d(np.zeros((1, 4, 4, 8), np.float32), qw)
    qc = ops.pack_qweight(np.ones((3, 3, 2, 4), np.float32))
    with pytest.raises(ValueError, match="C = 3 channels"):
        ops.qconv2d(np.zeros((1, 5, 5, 3), np.float32), qc)
    with pytest.raises(ValueError, match="'qw' must hold a 2-D"):
        ops.qdense(x, qc)
    with pytest.raises(TypeError, match="'a_u8' must be a uint8"):
        ops.qgemm_s32(x, qw)
    with pytest.raises(ValueError, match="'a_u8' has K = 7"):
        ops.qgemm_s32(np.zeros((2, 7), np.uint8), qw)
    with pytest.raises(TypeError, match="'qw_or_b_int8'"):
        ops.qgemm_s32(np.zeros((2, 8), np.uint8), np.zeros((8, 4), np.int16))
    with pytest.raises(ValueError, match="'scale'.*required"):
        ops.pack_qweight(np.zeros((8, 4), np.int8))
    with pytest.raises(ValueError, match="'scale' must hold finite"):
        ops.pack_qweight(np.zeros((8, 4), np.int8), np.array([1, 0, 1, 1], np.float32))
    with pytest.raises(ValueError, match="'scale'"):
        ops.quantize_u8(x, -0.5)
    with pytest.raises(ValueError, match="'zero_point'"):
        ops.quantize_u8(x, 0.5, -1)
    # The bindings check on their own too.
    y = np.empty((3, 4), np.float32)
    with pytest.raises(ValueError, match="'packed'"):
        _core.qdense_f32(y, np.empty((3, 8), np.uint8), x, qw.packed[:-1], qw.scale, None,
                         None, 0)
    with pytest.raises(TypeError, match="'xq'.*uint8"):
        _core.qdense_f32(y, np.empty((3, 8), np.int8), x, qw.packed, qw.scale, None, None, 0)
    with pytest.raises(ValueError, match="'x_scale'"):
        _core.qdense_forward(y, np.empty((3, 8), np.uint8), qw.packed, qw.scale, None,
                             float("inf"), 0)
    with pytest.raises(TypeError, match="'b'.*int8"):
        _core.qgemm_pack_b(np.empty(10, np.uint8), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="'isa'"):
        _core.qgemm_packed_size(4, 4, "sse9")
    with pytest.raises(ValueError, match="set_qgemm_isa"):
        _core.set_qgemm_isa("sse9")


def test_default_pack_leaves_amx_for_short_k():
    # Unforced, a weight whose K padding to AMX's 64 would grow the products by more than a
    # quarter (a first conv's K = 9) is packed for VNNI; others for the CPU's best ISA.
    # (A fresh process: set_qgemm_isa, called by the tests above, forces every pack.)
    code = ("import numpy as np\nfrom fastnn import _core\n"
            "def isa(k):\n"
            "    b = np.ones((k, 8), np.int8)\n"
            "    p = np.empty(_core.qgemm_packed_size(k, 8), np.uint8)\n"
            "    _core.qgemm_pack_b(p, b)\n"
            "    return _core.qgemm_packed_info(p)[0]\n"
            "print(_core.qgemm_isa(), isa(9), isa(100), isa(288), isa(784))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    best, k9, k100, k288, k784 = out
    if best == "amx":
        assert (k9, k100, k288, k784) == ("avx512vnni", "avx512vnni", "amx", "amx")
    else:
        assert {k9, k100, k288, k784} == {best}
