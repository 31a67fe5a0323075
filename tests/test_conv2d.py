"""2-D convolution: the NumPy twin against central finite differences (float64), the C++
kernels (every path: direct, im2col, pointwise, depthwise, and the naive twins) against the
twin in float32, exact small-integer results, bitwise-identical results for 1 and 2
threads, the Conv2D layer, and bad input."""
import importlib
import json

import numpy as np
import pytest

import fastnn
from fastnn import _core, ops
from fastnn import reference as ref
from gradcheck import num_grad

L = fastnn.layers
ref_conv = importlib.import_module("fastnn.reference.conv2d")  # the module, for _act_grad
EPS32 = np.finfo(np.float32).eps
ACTS = ["linear", "relu", "sigmoid", "tanh", "gelu"]


def case(N, H, W, C, OC, kernel, strides=1, padding="valid", dilation=1, groups=1, algo=None):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return dict(N=N, H=H, W=W, C=C, OC=OC, kernel=(kh, kw), strides=strides, padding=padding,
                dilation=dilation, groups=groups, algo=algo)


# Shapes with the path each one must take. Channel counts are mostly not multiples of 8.
CASES = {
    "1x1": case(2, 5, 7, 10, 6, 1, algo="pointwise"),
    "1x1-groups2": case(2, 4, 3, 10, 6, 1, groups=2, algo="pointwise"),
    "1x1-stride2": case(2, 7, 6, 10, 6, 1, strides=2, algo="im2col"),
    "3x3-valid": case(3, 9, 10, 12, 20, 3, algo="im2col"),
    "5x5-same": case(2, 9, 8, 10, 13, 5, padding="same", algo="im2col"),
    "3x3-stride2-same": case(2, 11, 10, 9, 7, 3, strides=2, padding="same", algo="im2col"),
    "2x4-same-even": case(2, 7, 8, 6, 5, (2, 4), padding="same", algo="im2col"),
    "4x4-stride2-same-even": case(2, 8, 9, 6, 5, 4, strides=2, padding="same", algo="im2col"),
    "3x3-dilation2": case(2, 11, 12, 5, 6, 3, dilation=2, algo="im2col"),
    "3x2-dil(2,1)-stride(1,2)-same": case(2, 9, 10, 7, 5, (3, 2), strides=(1, 2),
                                          padding="same", dilation=(2, 1), algo="im2col"),
    "asymmetric-padding": case(2, 6, 7, 9, 11, 3, padding=((2, 0), (1, 2)), algo="im2col"),
    "groups2-same": case(2, 8, 9, 6, 10, 3, padding="same", groups=2, algo="im2col"),
    "groups3-stride2": case(2, 9, 9, 9, 6, 3, strides=2, padding=1, groups=3, algo="im2col"),
    "depthwise-same": case(2, 9, 8, 12, 12, 3, padding="same", groups=12, algo="depthwise"),
    "depthwise-x2-stride2": case(2, 9, 8, 6, 12, 3, strides=2, groups=6, algo="depthwise"),
    "depthwise-C20-same": case(2, 7, 9, 20, 20, 3, padding="same", groups=20, algo="depthwise"),
    "depthwise-5x5-dil2": case(1, 12, 11, 5, 5, 5, padding="same", dilation=2, groups=5,
                               algo="depthwise"),
    "batch1": case(1, 6, 5, 17, 9, 3, padding=1, algo="im2col"),
    "direct-C1": case(2, 9, 11, 1, 5, 3, algo="direct"),
    "direct-C1-OC40-same": case(2, 8, 13, 1, 40, 3, padding="same", algo="direct"),
    "direct-C3-5x5-same": case(2, 10, 9, 3, 20, 5, padding="same", algo="direct"),
    "direct-C2-stride2-dil2": case(3, 13, 12, 2, 17, 3, strides=2, padding=((1, 0), (2, 1)),
                                   dilation=2, algo="direct"),
    "direct-C4-1x1": case(2, 5, 6, 4, 9, 1, algo="direct"),
    # im2col shapes whose windows lie inside the image and OC % 16 == 0: the forward reads
    # the windows in place (implicit GEMM; channel blocks of 64, 32, then 16, short last
    # tiles).
    "implicit-OC48": case(3, 9, 11, 12, 48, 3, algo="im2col"),
    "implicit-OC112": case(2, 7, 8, 6, 112, 3, algo="im2col"),
    "implicit-OC16-stride2-dil(2,1)": case(2, 13, 12, 7, 16, 3, strides=2, dilation=(2, 1),
                                           algo="im2col"),
    "implicit-2x3-batch1": case(1, 6, 7, 5, 32, (2, 3), algo="im2col"),
}
# The MNIST CNN's conv layers (28x28x1→32, 13x13x32→64, 5x5x64→64), at small batches.
MNIST = {
    "mnist-conv1": case(16, 28, 28, 1, 32, 3, algo="direct"),
    "mnist-conv2": case(4, 13, 13, 32, 64, 3, algo="im2col"),
    "mnist-conv3": case(8, 5, 5, 64, 64, 3, algo="im2col"),
    # 968 output pixels: the implicit forward repacks the weights
    "mnist-conv2-batch8": case(8, 13, 13, 32, 64, 3, algo="im2col"),
}


def geo_kwargs(c):
    return dict(strides=c["strides"], padding=c["padding"], dilation=c["dilation"],
                groups=c["groups"])


def draw(rng, c, dtype=np.float32, integers=False):
    kh, kw = c["kernel"]
    shapes = [(c["N"], c["H"], c["W"], c["C"]), (kh, kw, c["C"] // c["groups"], c["OC"]),
              (c["OC"],)]
    if integers:
        return [rng.integers(-3, 4, size=s).astype(dtype) for s in shapes]
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def core_args(c, x_shape, w_shape):
    geo = ops.conv2d_geometry(x_shape[1:3], w_shape, c["strides"], c["padding"], c["dilation"])
    return geo, geo.core_args(c["groups"])


def assert_close(got, want, scale, K, what, extra=0.0, c=4.0):
    """|got − want| ≤ c·eps32·√K·scale + extra elementwise, scale = the same sum over
    |terms|, extra = what errors in the inputs of the sum (dz) can contribute."""
    tol = c * EPS32 * np.sqrt(K) * scale + extra + 1e-30
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    assert np.all(err <= tol), (f"{what}: error {err[worst]:.3g} > tolerance {tol[worst]:.3g} "
                                f"at {worst} (got {got[worst]!r}, want {want[worst]!r})")


# ---------------------------------------------------------------------------------------
# The twin against central finite differences (float64)

FD_CASES = {
    "3x3-valid": case(2, 5, 6, 3, 4, 3),
    "2x4-stride2-same": case(2, 6, 7, 4, 3, (2, 4), strides=2, padding="same"),
    "dilation2-pad1": case(1, 7, 6, 2, 3, 3, dilation=2, padding=1),
    "groups2": case(2, 5, 5, 4, 6, 3, padding="same", groups=2),
    "depthwise-x2": case(1, 6, 5, 3, 6, 3, strides=(2, 1), groups=3),
}


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name", list(FD_CASES))
def test_reference_gradients_match_finite_differences(name, act):
    c = FD_CASES[name]
    rng = np.random.default_rng(list(FD_CASES).index(name))
    x, w, b = draw(rng, c, np.float64)
    kw = geo_kwargs(c)
    y = ref.conv2d(x, w, b, activation=act, **kw)
    r = rng.standard_normal(y.shape)  # loss = Σ r ⊙ y

    def loss():
        return float(np.sum(r * ref.conv2d(x, w, b, activation=act, **kw)))

    z = np.empty_like(y)
    y = ref.conv2d(x, w, b, activation=act, z=z, **kw)
    dx, dw, db = ref.conv2d_backward(r, x, w, y, z, activation=act, **kw)
    for got, a, what in ((dx, x, "dx"), (dw, w, "dw"), (db, b, "db")):
        np.testing.assert_allclose(got, num_grad(loss, a), rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name} {act} {what}")


def test_reference_accumulates_into_given_gradients():
    c = FD_CASES["groups2"]
    rng = np.random.default_rng(5)
    x, w, b = draw(rng, c, np.float64)
    y = ref.conv2d(x, w, b, **geo_kwargs(c))
    dy = rng.standard_normal(y.shape)
    fresh = ref.conv2d_backward(dy, x, w, **geo_kwargs(c))
    acc = [np.ones_like(a) for a in fresh]
    out = ref.conv2d_backward(dy, x, w, dx=acc[0], dw=acc[1], db=acc[2], **geo_kwargs(c))
    for o, a, f in zip(out, acc, fresh):
        assert o is a
        np.testing.assert_allclose(o, f + 1)


# ---------------------------------------------------------------------------------------
# Padding geometry as Keras/TensorFlow computes it

@pytest.mark.parametrize("size,k,s,d,want", [
    (5, 2, 1, 1, (0, 1, 5)),   # even kernel: the extra pixel at the bottom
    (4, 4, 1, 1, (1, 2, 4)),
    (6, 3, 2, 1, (0, 1, 3)),
    (7, 3, 2, 1, (1, 1, 4)),
    (8, 4, 2, 1, (1, 1, 4)),
    (9, 4, 2, 1, (1, 2, 5)),
    (6, 1, 3, 1, (0, 0, 2)),
    (7, 3, 1, 2, (2, 2, 7)),   # dilated 3-tap kernel spans 5
    (5, 3, 3, 1, (0, 1, 2)),
])
def test_same_padding_matches_keras(size, k, s, d, want):
    g = ops.conv2d_geometry((size, size + 1), (k, k), s, "same", d)
    assert (g.pad_top, g.pad_bottom, g.out_h) == want
    assert g.out_h == -(-size // s) and g.out_w == -(-(size + 1) // s)


def test_valid_and_explicit_padding_output_sizes():
    g = ops.conv2d_geometry((28, 28), (3, 3))
    assert (g.out_h, g.out_w) == (26, 26)
    g = ops.conv2d_geometry((10, 9), (3, 3), strides=2)
    assert (g.out_h, g.out_w) == (4, 4)
    g = ops.conv2d_geometry((10, 9), (3, 3), padding=((2, 0), (1, 2)))
    assert (g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) == (2, 0, 1, 2)
    assert (g.out_h, g.out_w) == (10, 10)
    g = ops.conv2d_geometry((10, 9), (3, 5), padding=(1, 2))
    assert (g.pad_top, g.pad_bottom, g.pad_left, g.pad_right) == (1, 1, 2, 2)


# ---------------------------------------------------------------------------------------
# C++ kernels against the twin (float32 inputs, float64 reference)

def check_against_twin(c, act, use_bias, seed, naive=False, need_dx=True):
    rng = np.random.default_rng(seed)
    x, w, b = draw(rng, c)
    b = b if use_bias else None
    kw = geo_kwargs(c)
    geo, cargs = core_args(c, x.shape, w.shape)
    assert _core.conv2d_algorithm(x, w, geo.out_h, geo.out_w, **cargs) == c["algo"]
    x64, w64, b64 = (None if a is None else a.astype(np.float64) for a in (x, w, b))
    kh, kwid = c["kernel"]
    K = kh * kwid * x.shape[3] // c["groups"]
    shape = (c["N"], geo.out_h, geo.out_w, c["OC"])
    y, z = np.empty(shape, np.float32), np.empty(shape, np.float32)
    fwd = (_core.plain if naive else _core).conv2d_forward
    fwd(y, z, x, w, b, act=getattr(_core.Act, act), **cargs)
    z_want = ref.conv2d(x64, w64, b64, **kw)
    z_scale = ref.conv2d(np.abs(x64), np.abs(w64), None if b is None else np.abs(b64), **kw)
    assert_close(z, z_want, z_scale, K, "z (pre-activation)")
    # y = act(z) up to one rounding of the activation
    y_want = ref.conv2d(x64, w64, b64, activation=act, **kw)
    assert_close(y, y_want, z_scale + np.abs(y_want), K, f"y ({act})")

    # Backward, from the kernel's own y and z (so relu's mask is the same).
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros(c["OC"], np.float32)
    dx = dx if need_dx else None
    dz = np.empty_like(dy)
    bwd = (_core.plain if naive else _core).conv2d_backward
    bwd(dx, dw, db, dz, dy, x, w, y, z, act=getattr(_core.Act, act), **cargs)
    y64, z64 = y.astype(np.float64), z.astype(np.float64)
    want = ref.conv2d_backward(dy.astype(np.float64), x64, w64, y64, z64, activation=act, **kw)
    # Scales: the same sums over absolute values of dz; plus what the float32 rounding of
    # dz = dy·act'(.) contributes (1 − y², for one, cancels for tanh near ±1).
    dy64 = np.abs(dy.astype(np.float64))
    g = np.abs(ref_conv._act_grad(dy.astype(np.float64), y64, z64, act))
    g_err = 4 * EPS32 * dy64 * (0.0 if act in ("linear", "relu") else 1 + y64 * y64 + np.abs(z64))
    sx, sw, sb = ref.conv2d_backward(g, np.abs(x64), np.abs(w64), **kw)
    ex, ew, eb = ref.conv2d_backward(g_err, np.abs(x64), np.abs(w64), **kw)
    OCg = c["OC"] // c["groups"]
    if need_dx:
        assert_close(dx, want[0], sx, kh * kwid * OCg, "dx", ex)
    assert_close(dw, want[1], sw, dy.size // c["OC"], "dw", ew)
    assert_close(db, want[2], sb, dy.size // c["OC"], "db", eb)


@pytest.mark.parametrize("name", list(CASES))
def test_kernels_match_twin(name):
    i = list(CASES).index(name)
    check_against_twin(CASES[name], ACTS[i % len(ACTS)], use_bias=i % 3 != 2, seed=i)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("name", ["3x3-stride2-same", "direct-C3-5x5-same",
                                  "depthwise-x2-stride2", "depthwise-C20-same", "1x1",
                                  "implicit-OC48", "implicit-OC16-stride2-dil(2,1)"])
def test_kernels_match_twin_every_activation(name, act):
    check_against_twin(CASES[name], act, use_bias=True, seed=100 + ACTS.index(act))


@pytest.mark.parametrize("name", list(MNIST))
def test_kernels_match_twin_mnist_shapes(name):
    check_against_twin(MNIST[name], "relu", use_bias=True, seed=7)


@pytest.mark.parametrize("name", ["3x3-stride2-same", "groups3-stride2", "depthwise-x2-stride2",
                                  "direct-C2-stride2-dil2", "1x1-groups2"])
def test_naive_twins_match_reference(name):
    check_against_twin(CASES[name], "tanh", use_bias=True, seed=11, naive=True)


@pytest.mark.parametrize("c", [
    # 64·11·11 pixels × K = 3·3·32: a 7.8 MB im2col matrix in tiles of 7 whole images.
    case(64, 13, 13, 32, 8, 3, algo="im2col"),
    # One image's im2col matrix (66·67 pixels × K = 72, 1.2 MB) exceeds a tile: bands of
    # one image, whose backward-data gathers meet at the band edges.
    case(3, 66, 67, 8, 5, 3, padding="same", algo="im2col"),
], ids=["whole-image-tiles", "bands"])
def test_im2col_tiling(c):
    check_against_twin(c, "relu", use_bias=True, seed=3)


# ---------------------------------------------------------------------------------------
# The first layer of an image model: the direct path without dx. With linear or relu and
# OC a multiple of 8, the backward forms dz in registers in its dw tiles (which also take
# db's sums); else dz goes through a row buffer. Windows inside the image are read in
# place, the others from zero-padded copies; a 3-float window row (KW·C == 3, dil_w == 1)
# takes the tiles of runs, other kernels tiles of listed taps. Tiles are 32, 16 or 8
# channels wide with AVX-512, 8 otherwise.

FIRST = {
    "C1-OC32-mnist": case(3, 28, 28, 1, 32, 3, algo="direct"),  # every window in place
    "C1-OC8": case(2, 9, 11, 1, 8, 3, algo="direct"),
    "C1-OC24-same": case(2, 10, 9, 1, 24, 3, padding="same", algo="direct"),
    "C1-OC40-stride2": case(2, 13, 12, 1, 40, 3, strides=2, algo="direct"),
    # top/bottom padding only: border rows padded, the others in place
    "C1-OC48-pad-rows": case(2, 12, 11, 1, 48, 3, padding=((1, 1), (0, 0)), algo="direct"),
    "C1-OC56-dil(2,1)-stride(1,2)": case(2, 14, 13, 1, 56, 3, strides=(1, 2),
                                          dilation=(2, 1), padding=((2, 0), (0, 0)),
                                          algo="direct"),
    "C1-OC16-batch1-odd": case(1, 7, 5, 1, 16, 3, algo="direct"),
    "C1-OC5": case(2, 9, 8, 1, 5, 3, algo="direct"),  # not a multiple of 8: dz buffered
    "C1-OC1-batch1": case(1, 6, 7, 1, 1, 3, algo="direct"),
    "C1-OC20-same-5x5": case(2, 12, 11, 1, 20, 5, padding="same", algo="direct"),
    "C1-OC32-5x5": case(2, 12, 11, 1, 32, 5, algo="direct"),  # 25 taps: 9 + 9 + 3 + 3 + 1
    "C1-OC64-dil_w2": case(2, 9, 12, 1, 64, 3, dilation=(1, 2), algo="direct"),
    "C3-OC32": case(2, 9, 10, 3, 32, 3, algo="direct"),
    "C3-OC16-3x1": case(2, 9, 9, 3, 16, (3, 1), algo="direct"),  # KW·C == 3: runs
    "C2-OC24-2x4-same": case(3, 8, 9, 2, 24, (2, 4), padding="same", algo="direct"),
}


@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "gelu"])
@pytest.mark.parametrize("name", list(FIRST))
def test_first_layer_matches_twin(name, act):
    i = list(FIRST).index(name)
    check_against_twin(FIRST[name], act, use_bias=i % 4 != 3, seed=200 + i, need_dx=False)


@pytest.fixture
def restore_isa():
    isa = _core.gemm_isa()
    yield
    _core.set_gemm_isa(isa)


@pytest.mark.parametrize("name", list(FIRST))
@pytest.mark.parametrize("act", ["linear", "relu", "tanh"])
def test_first_layer_bitwise_identical_for_threads_tiles_and_need_dx(
        name, act, restore_threads, restore_isa):
    # The same dw and db, bit for bit, on 1 and 2 threads, with every ISA's register tiles
    # (gemm_isa picks them) and whether or not dx is computed (dz formed in the dw tiles, or
    # in a buffer for dx to gather from). The forward's y likewise, for threads and tiles.
    c = FIRST[name]
    rng = np.random.default_rng(30)
    x, w, b = draw(rng, c)
    kw = geo_kwargs(c)
    y0 = dy = None
    results = []
    for isa in _core.supported_isas():
        _core.set_gemm_isa(isa)
        for n in (1, 2):
            fastnn.set_num_threads(n)
            y = ops.conv2d(x, w, b, activation=act, **kw)
            if dy is None:
                y0, dy = y, rng.standard_normal(y.shape).astype(np.float32)
            np.testing.assert_array_equal(y, y0, err_msg=f"y, {isa}, {n} threads")
            part = ops.conv2d_backward(dy, x, w, y0, activation=act, need_dx=False, **kw)
            results.append((f"{isa}, {n} threads, no dx", part[1:]))
    results.append(("with dx", ops.conv2d_backward(dy, x, w, y0, activation=act, **kw)[1:]))
    for what, (dw, db) in results[1:]:
        np.testing.assert_array_equal(dw, results[0][1][0], err_msg=f"dw: {what}")
        np.testing.assert_array_equal(db, results[0][1][1], err_msg=f"db: {what}")


@pytest.mark.parametrize("name", ["C1-OC32-mnist", "C1-OC48-pad-rows", "C1-OC40-stride2",
                                  "C3-OC16-3x1", "C1-OC5"])
def test_first_layer_small_integers_are_exact(name):
    check_small_integers_exact(FIRST[name], seed=22, need_dx=False)


IMPLICIT = {name: CASES[name] for name in CASES if name.startswith("implicit")}
IMPLICIT["implicit-packed-weights"] = MNIST["mnist-conv2-batch8"]
IMPLICIT["implicit-packed-OC112"] = case(3, 16, 15, 16, 112, 3, algo="im2col")  # 546 pixels


@pytest.mark.parametrize("act", ["linear", "relu", "tanh"])
@pytest.mark.parametrize("name", list(IMPLICIT))
def test_implicit_forward_bitwise_identical_for_every_isa_tile(name, act, restore_isa):
    # AVX-512 builds wide tiles (6 pixels x 64 channels, 8 x 32), AVX2 narrow ones (6 x 16): each
    # output is the same sum in the same order, so y and z agree bit for bit, and match
    # the twin within the float32 tolerance.
    c = IMPLICIT[name]
    x, w, b = draw(np.random.default_rng(31), c)
    kw = geo_kwargs(c)
    outs = {}
    for isa in _core.supported_isas():
        _core.set_gemm_isa(isa)
        outs[isa] = ops.conv2d(x, w, b, activation=act, **kw)
    first = next(iter(outs.values()))
    for isa, y in outs.items():
        np.testing.assert_array_equal(y, first, err_msg=isa)
    check_against_twin(c, act, use_bias=True, seed=31)


# ---------------------------------------------------------------------------------------
# Exact small-integer results

@pytest.mark.parametrize("name", ["1x1-groups2", "3x3-stride2-same", "groups3-stride2",
                                  "depthwise-x2-stride2", "direct-C1-OC40-same",
                                  "direct-C2-stride2-dil2", "4x4-stride2-same-even",
                                  "implicit-OC48"])
def test_small_integers_are_exact(name):
    check_small_integers_exact(CASES[name], seed=21)


def check_small_integers_exact(c, seed, need_dx=True):
    """Small-integer inputs make every sum exact in float32: forward and gradients (dx
    only when need_dx) must equal the float64 twin bit for bit."""
    rng = np.random.default_rng(seed)
    x, w, b = draw(rng, c, integers=True)
    kw = geo_kwargs(c)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    y = ops.conv2d(x, w, b, activation="relu", **kw)
    np.testing.assert_array_equal(y, ref.conv2d(x64, w64, b64, activation="relu", **kw))
    dy = rng.integers(-3, 4, size=y.shape).astype(np.float32)
    got = ops.conv2d_backward(dy, x, w, y, activation="relu", need_dx=need_dx, **kw)
    want = ref.conv2d_backward(dy.astype(np.float64), x64, w64, y.astype(np.float64),
                               activation="relu", **kw)
    for g, wnt, what in list(zip(got, want, ("dx", "dw", "db")))[0 if need_dx else 1:]:
        np.testing.assert_array_equal(g, wnt, err_msg=what)


# ---------------------------------------------------------------------------------------
# Determinism: 1 and 2 threads give the same bits

@pytest.fixture
def restore_threads():
    n = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(n)


THREAD_CASES = {
    "im2col": case(6, 12, 11, 10, 12, 3, strides=(1, 2), padding="same", algo="im2col"),
    "im2col-groups": case(4, 10, 10, 8, 6, 3, padding=1, groups=2, algo="im2col"),
    "im2col-bands": case(3, 66, 67, 8, 5, 3, padding="same", algo="im2col"),
    "pointwise": case(4, 9, 10, 12, 7, 1, algo="pointwise"),
    "implicit": case(6, 13, 13, 16, 48, 3, algo="im2col"),
    "direct": case(8, 14, 13, 1, 24, 3, padding="same", algo="direct"),
    "depthwise": case(4, 11, 12, 16, 16, 3, strides=2, padding="same", groups=16,
                      algo="depthwise"),
}


@pytest.mark.parametrize("name", list(THREAD_CASES))
def test_one_and_two_threads_bitwise_identical(name, restore_threads):
    c = THREAD_CASES[name]
    rng = np.random.default_rng(9)
    x, w, b = draw(rng, c)
    kw = geo_kwargs(c)
    results = []
    for n in (1, 2):
        fastnn.set_num_threads(n)
        z = np.empty((c["N"],) + ops.conv2d(x[:1], w, **kw).shape[1:], np.float32)
        y = ops.conv2d(x, w, b, activation="gelu", z=z, **kw)
        dy = np.random.default_rng(10).standard_normal(y.shape).astype(np.float32)
        grads = ops.conv2d_backward(dy, x, w, y, z, activation="gelu", **kw)
        results.append((y, z) + grads)
    for a, b_, what in zip(*results, ("y", "z", "dx", "dw", "db")):
        np.testing.assert_array_equal(a, b_, err_msg=what)


@pytest.mark.parametrize("name", list(THREAD_CASES))
@pytest.mark.parametrize("act", ["linear", "relu", "gelu"])
def test_weight_gradients_do_not_depend_on_need_dx(name, act):
    # The first layer asks for no dx; its dw and db must be those of the full backward.
    c = THREAD_CASES[name]
    rng = np.random.default_rng(14)
    x, w, b = draw(rng, c)
    kw = geo_kwargs(c)
    z = np.empty((c["N"],) + ops.conv2d(x[:1], w, **kw).shape[1:], np.float32)
    y = ops.conv2d(x, w, b, activation=act, z=z, **kw)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    full = ops.conv2d_backward(dy, x, w, y, z, activation=act, **kw)
    part = ops.conv2d_backward(dy, x, w, y, z, activation=act, need_dx=False, **kw)
    assert part[0] is None
    np.testing.assert_array_equal(part[1], full[1])
    np.testing.assert_array_equal(part[2], full[2])


# ---------------------------------------------------------------------------------------
# ops wrappers: out=, accumulation, need_* flags

def test_ops_out_and_accumulation():
    c = CASES["3x3-stride2-same"]
    rng = np.random.default_rng(4)
    x, w, b = draw(rng, c)
    kw = geo_kwargs(c)
    y = ops.conv2d(x, w, b, **kw)
    out = np.empty_like(y)
    assert ops.conv2d(x, w, b, out=out, **kw) is out
    np.testing.assert_array_equal(out, y)
    # float64 input is converted once; the result is the same
    np.testing.assert_array_equal(ops.conv2d(x.astype(np.float64), w, b, **kw), y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = ops.conv2d_backward(dy, x, w, **kw)
    acc = [np.full_like(a, 2.0) for a in (dx, dw, db)]
    got = ops.conv2d_backward(dy, x, w, dx=acc[0], dw=acc[1], db=acc[2], **kw)
    for g, a, f in zip(got, acc, (dx, dw, db)):
        assert g is a
        np.testing.assert_allclose(g, f + 2.0, rtol=1e-6, atol=1e-5)
    dx2, dw2, db2 = ops.conv2d_backward(dy, x, w, need_dx=False, has_bias=False, **kw)
    assert dx2 is None and db2 is None
    np.testing.assert_array_equal(dw2, dw)
    dy_before = dy.copy()
    ops.conv2d_backward(dy, x, w, y, activation="relu", **kw)
    np.testing.assert_array_equal(dy, dy_before)  # dy is never modified


def test_core_backward_dz_may_alias_dy():
    c = CASES["3x3-valid"]
    rng = np.random.default_rng(6)
    x, w, b = draw(rng, c)
    geo, cargs = core_args(c, x.shape, w.shape)
    y = ops.conv2d(x, w, b, activation="relu", **geo_kwargs(c))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = ops.conv2d_backward(dy, x, w, y, activation="relu", **geo_kwargs(c))
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    _core.conv2d_backward(dx, dw, db, dy, dy, x, w, y, None, act=_core.Act.relu, **cargs)
    for g, wnt in zip((dx, dw, db), want):
        np.testing.assert_array_equal(g, wnt)
    np.testing.assert_array_equal(dy, (dy != 0) * dy)  # dy now holds dz


# ---------------------------------------------------------------------------------------
# The Conv2D layer

def test_layer_matches_ops_and_backward():
    rng = np.random.default_rng(12)
    layer = L.Conv2D(6, (3, 2), strides=(2, 1), padding="same", activation="tanh")
    x = rng.standard_normal((3, 9, 8, 4)).astype(np.float32)
    y0 = layer(x)  # builds and initialises
    assert layer.output_shape == (5, 8, 6) and y0.shape == (3, 5, 8, 6)
    assert layer.kernel.shape == (3, 2, 4, 6) and layer.bias.shape == (6,)
    kw = dict(strides=(2, 1), padding="same")
    np.testing.assert_array_equal(y0, ops.conv2d(x, layer.kernel, layer.bias, activation="tanh", **kw))
    y = layer.forward(x, training=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want = ops.conv2d_backward(dy, x, layer.kernel, y.copy(), activation="tanh", **kw)
    layer.dkernel[...] = 1.0  # backward adds into the gradient buffers
    layer.dbias[...] = 0.0
    dx = layer.backward(dy.copy())
    np.testing.assert_array_equal(dx, want[0])
    np.testing.assert_allclose(layer.dkernel, want[1] + 1.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(layer.dbias, want[2])


def test_layer_softmax_over_channels():
    rng = np.random.default_rng(15)
    layer = L.Conv2D(5, 3, padding="same", activation="softmax")
    x = rng.standard_normal((2, 6, 7, 3)).astype(np.float32)
    y = layer(x)
    logits = ops.conv2d(x, layer.kernel, layer.bias, padding="same").astype(np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_layer_groups_dilation_no_bias_first_layer():
    rng = np.random.default_rng(13)
    layer = L.Conv2D(4, 3, dilation_rate=2, groups=2, use_bias=False, padding=2)
    x = rng.standard_normal((2, 7, 7, 6)).astype(np.float32)
    layer(x)
    assert layer.param_count == 3 * 3 * 3 * 4
    layer.need_input_grad = False
    y = layer.forward(x, training=True)
    assert y.shape == (2, 7, 7, 4)
    layer.dkernel[...] = 0.0
    assert layer.backward(np.ones_like(y)) is None
    want = ops.conv2d_backward(np.ones_like(y), x, layer.kernel, dilation=2, groups=2, padding=2,
                               need_dx=False, has_bias=False)[1]
    np.testing.assert_array_equal(layer.dkernel, want)


def test_layer_config_round_trip():
    layer = L.Conv2D(8, (3, 5), strides=2, padding=((1, 0), (2, 2)), dilation_rate=(1, 2),
                     groups=2, activation="relu", use_bias=False, kernel_initializer="he_normal",
                     input_shape=(12, 14, 4))
    cfg = layer.get_config()
    clone = L.Conv2D.from_config(json.loads(json.dumps(cfg)))
    assert clone.get_config() == cfg
    assert clone._build((12, 14, 4)) == layer._build((12, 14, 4)) == (6, 5, 8)


def test_model_with_conv_layers_predicts_and_round_trips(tmp_path):
    model = fastnn.Sequential([L.Reshape((10, 9, 1), input_shape=(10, 9)),
                               L.Conv2D(5, 3, activation="relu"),
                               L.Conv2D(3, 2, strides=2, padding="same")], seed=3)
    x = np.random.default_rng(0).standard_normal((4, 10, 9)).astype(np.float32)
    y = model.predict(x)
    assert y.shape == (4, 4, 4, 3)
    k1, b1 = model.layers[1].kernel, model.layers[1].bias
    h = ops.conv2d(x[..., None], k1, b1, activation="relu")
    np.testing.assert_array_equal(y, ops.conv2d(h, model.layers[2].kernel, model.layers[2].bias,
                                                strides=2, padding="same"))
    model.save(tmp_path / "m.fastnn")
    np.testing.assert_array_equal(fastnn.load_model(tmp_path / "m.fastnn").predict(x), y)


def _need_kernels(*names):
    missing = [f for f in names if not hasattr(_core, f)]
    if missing:
        pytest.skip(f"needs the {', '.join(missing)} kernel(s), not in this build")


def test_cnn_gradient_matches_finite_differences():
    _need_kernels("softmax_xent", "dense_forward")
    rng = np.random.default_rng(1)
    model = fastnn.Sequential([L.Conv2D(3, 3, padding="same", activation="tanh", input_shape=(5, 6, 2)),
                               L.Conv2D(2, 2, strides=2, activation="gelu"),
                               L.Flatten(), L.Dense(3, activation="softmax")], seed=0)
    model.build()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((4, 5, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 4)

    def loss64():
        h = x.astype(np.float64)
        for layer in model.layers[:2]:
            h = ref.conv2d(h, layer.kernel.astype(np.float64), layer.bias.astype(np.float64),
                           strides=layer.strides, padding=layer.padding if isinstance(layer.padding, str)
                           else tuple(map(tuple, layer.padding)), activation=layer.activation)
        d = model.layers[3]
        logits = h.reshape(len(h), -1) @ d.kernel.astype(np.float64) + d.bias
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -logp[np.arange(len(y)), y].mean()

    model._configure_output()
    with model._emitting_logits():
        labels = model.loss.prepare_targets(y, model.output_shape)
        loss_sum, _ = model._loss_and_grads(x, labels)
    grads = model._grads.copy()
    assert loss_sum / len(x) == pytest.approx(loss64(), rel=1e-5)
    params, base = model._params, model._params.copy()
    num = np.empty(len(base))
    for i in range(len(base)):
        vals = []
        for sign in (1, -1):
            params[:] = base
            params[i] = base[i] + sign * 1e-3
            vals.append(loss64())
        num[i] = (vals[0] - vals[1]) / 2e-3
    params[:] = base
    np.testing.assert_allclose(grads, num, rtol=2e-2, atol=2e-3)


def test_small_cnn_learns_a_separable_task():
    _need_kernels("adam_step", "softmax_xent", "dense_forward")
    rng = np.random.default_rng(2)
    n = 256
    x = rng.standard_normal((n, 8, 8)).astype(np.float32) * 0.3
    y = rng.integers(0, 2, n)
    x[y == 1, 2:6, 3:5] += 1.0  # class 1: a bright vertical bar
    model = fastnn.Sequential([L.Reshape((8, 8, 1), input_shape=(8, 8)),
                               L.Conv2D(4, 3, activation="relu"), L.Flatten(),
                               L.Dense(2, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    assert model.evaluate(x, y, return_dict=True, verbose=0)["accuracy"] > 0.95


# ---------------------------------------------------------------------------------------
# Bad input

def test_layer_rejects_images_without_channel_axis():
    layer = L.Conv2D(4, 3)
    with pytest.raises(ValueError, match=r"expects inputs \(N, H, W, C\).*Reshape\(\(28, 28, 1\)\)"):
        layer(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"Reshape\(\(28, 28, 1\)\)"):
        fastnn.Sequential([L.Conv2D(4, 3, input_shape=(28, 28))]).build()


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(filters=0, kernel_size=3), ValueError, "filters must be a positive int"),
    (dict(filters=6, kernel_size=3, groups=4), ValueError, r"filters \(6\) must be divisible by groups \(4\)"),
    (dict(filters=4, kernel_size=0), ValueError, "'kernel_size' must be >= 1"),
    (dict(filters=4, kernel_size=3, strides=0), ValueError, "'strides' must be >= 1"),
    (dict(filters=4, kernel_size=3, dilation_rate=(1, -1)), ValueError, "'dilation_rate' must be >= 1"),
    (dict(filters=4, kernel_size=3, padding="full"), ValueError, "padding must be 'valid', 'same'"),
    (dict(filters=4, kernel_size=3, strides=1.5), TypeError, "'strides' must be an int or a pair"),
    (dict(filters=4, kernel_size=3, activation="swish"), ValueError, "unknown activation"),
])
def test_layer_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        L.Conv2D(**kwargs)


def test_layer_rejects_bad_shapes_at_build():
    with pytest.raises(ValueError, match=r"C = 5 are not divisible by groups = 2"):
        L.Conv2D(4, 3, groups=2)._build((8, 8, 5))
    with pytest.raises(ValueError, match="larger than the padded input"):
        L.Conv2D(4, 5)._build((4, 8, 1))


X = np.zeros((2, 8, 8, 4), np.float32)
Wt = np.zeros((3, 3, 4, 6), np.float32)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((X[0], Wt), {}, ValueError, r"'x' must be 4-D \(N, H, W, C\), got shape \(8, 8, 4\).*x\[\.\.\., None\]"),
    ((X, Wt[0]), {}, ValueError, r"'w' must be 4-D \(KH, KW, C/groups, OC\)"),
    ((X, np.zeros((3, 3, 3, 6), np.float32)), {}, ValueError, r"'w' of shape \(3, 3, 3, 6\) expects 3 input channels .* 'x' has C = 4"),
    ((X, np.zeros((3, 3, 2, 6), np.float32)), dict(groups=3), ValueError, r"'x' has C = 4 channels, not divisible by groups = 3"),
    ((X, np.zeros((3, 3, 2, 5), np.float32)), dict(groups=2), ValueError, r"'w' has OC = 5 output channels, not divisible by groups = 2"),
    ((X, np.zeros((9, 3, 4, 6), np.float32)), {}, ValueError, r"kernel \(9, 3\) .* larger than the padded input \(8, 8\)"),
    ((X, Wt), dict(dilation=4), ValueError, r"spans \(9, 9\) pixels, larger than the padded input"),
    ((X, Wt), dict(padding=3), ValueError, "must be smaller than the \\(dilated\\) kernel"),
    ((X, Wt), dict(strides=0), ValueError, r"'strides' must be >= 1, got 0"),
    ((X, Wt), dict(strides=(1, -2)), ValueError, r"'strides' must be >= 1"),
    ((X, Wt), dict(dilation=0), ValueError, r"'dilation' must be >= 1, got 0"),
    ((X, Wt), dict(groups=0), ValueError, r"'groups' must be a positive int"),
    ((X, Wt), dict(padding="full"), ValueError, r"'padding' must be 'valid', 'same'"),
    ((X, Wt), dict(padding=(1, 2, 3)), TypeError, r"'padding' must be"),
    ((X, Wt), dict(padding=-1), ValueError, r"'padding' must be"),
    ((X, Wt), dict(b=np.zeros(5, np.float32)), ValueError, r"'b' must have shape \(OC,\) = \(6,\)"),
    ((X, Wt), dict(activation="softmax"), ValueError, "unknown activation 'softmax'"),
    ((X, Wt), dict(out=np.zeros((2, 6, 6, 6), np.float64)), TypeError, "'out' must be a float32 array"),
    ((X, Wt), dict(out=np.zeros((2, 6, 6, 5), np.float32)), ValueError, r"'out' must have shape \(2, 6, 6, 6\)"),
    ((X, Wt), dict(out=np.zeros((2, 6, 6, 12), np.float32)[..., ::2]), ValueError, "'out' must be C-contiguous"),
    ((X.astype(str), Wt), {}, TypeError, "'x' must hold real numbers"),
])
def test_ops_conv2d_rejects_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ops.conv2d(*args, **kwargs)


def test_ops_backward_rejects_bad_input():
    dy = np.zeros((2, 6, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"'dy' must have the output's shape .* \(2, 6, 6, 6\), got \(2, 6, 6, 5\)"):
        ops.conv2d_backward(dy[..., :5], X, Wt)
    with pytest.raises(ValueError, match="'y' \\(the forward output\\) is required for activation 'relu'"):
        ops.conv2d_backward(dy, X, Wt, activation="relu")
    with pytest.raises(ValueError, match="'z' \\(the pre-activation.*required for activation 'gelu'"):
        ops.conv2d_backward(dy, X, Wt, dy, activation="gelu")
    with pytest.raises(ValueError, match="'dx' was given but need_dx=False"):
        ops.conv2d_backward(dy, X, Wt, need_dx=False, dx=np.zeros_like(X))
    with pytest.raises(ValueError, match=r"'dw' must have shape \(3, 3, 4, 6\)"):
        ops.conv2d_backward(dy, X, Wt, dw=np.zeros((3, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="'db' is read-only"):
        db = np.zeros(6, np.float32)
        db.flags.writeable = False
        ops.conv2d_backward(dy, X, Wt, db=db)


def test_core_rejects_bad_input():
    x, w = X, Wt
    y = np.zeros((2, 6, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward: argument 'y' has output size \(OH, OW\) = \(5, 6\).*OH in \[6, 8\]"):
        _core.conv2d_forward(np.zeros((2, 5, 6, 6), np.float32), None, x, w, None)
    with pytest.raises(ValueError, match=r"conv2d_forward: argument 'stride_h' must be >= 1, got 0"):
        _core.conv2d_forward(y, None, x, w, None, stride_h=0)
    with pytest.raises(ValueError, match=r"argument 'dil_w' must be >= 1"):
        _core.conv2d_forward(y, None, x, w, None, dil_w=-1)
    with pytest.raises(ValueError, match=r"argument 'pad_top' must be smaller than the effective kernel height"):
        _core.conv2d_forward(np.zeros((2, 7, 6, 6), np.float32), None, x, w, None, pad_top=3)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        _core.conv2d_forward(y, None, x, w, None, act=1)  # an int is not an Act
    with pytest.raises(ValueError, match=r"argument 'w' must have shape \(KH, KW, C/groups, OC\) with C/groups=2"):
        _core.conv2d_forward(y, None, x, w, None, groups=2)
    with pytest.raises(TypeError, match=r"argument 'x' must be a C-contiguous float32 array of shape \(N, H, W, C\)"):
        _core.conv2d_forward(y, None, x.astype(np.float64), w, None)
    base = np.zeros(x.size + y.size, np.float32)
    with pytest.raises(ValueError, match=r"argument 'y' must not share memory with 'x'"):
        _core.conv2d_forward(base[x.size - 8:x.size - 8 + y.size].reshape(y.shape), None,
                             base[:x.size].reshape(x.shape), w, None)
    dy = np.zeros_like(y)
    with pytest.raises(ValueError, match=r"conv2d_backward: argument 'dz' \(N, OH, OW, OC\) scratch is required for activation relu"):
        _core.conv2d_backward(None, None, None, None, dy, x, w, y, None, act=_core.Act.relu)
    with pytest.raises(ValueError, match=r"argument 'z' is required for activation gelu"):
        _core.conv2d_backward(None, None, None, dy, dy, x, w, y, None, act=_core.Act.gelu)
    with pytest.raises(ValueError, match=r"argument 'y' is required for activation tanh"):
        _core.conv2d_backward(None, None, None, dy, dy, x, w, None, None, act=_core.Act.tanh)
    with pytest.raises(ValueError, match=r"argument 'dx' must not share memory with 'dy'"):
        _core.conv2d_backward(base[:x.size].reshape(x.shape), None, None, None,
                              base[x.size - 8:x.size - 8 + y.size].reshape(y.shape), x, w, None,
                              None)
    with pytest.raises(ValueError, match=r"argument 'dw' must not share memory with 'w'"):
        _core.conv2d_backward(None, w, None, None, dy, x, w, None, None)
