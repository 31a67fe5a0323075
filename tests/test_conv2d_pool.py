"""Conv2D + MaxPooling2D in one kernel (inference): equal bit for bit to the two kernels in
turn and to the plain twin, on every convolution path, and used by model plans."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import _core
from fastnn.ops.conv2d import conv2d_geometry

L = fn.layers
ACTS = {"linear": _core.Act.linear, "relu": _core.Act.relu, "gelu": _core.Act.gelu}

# (x shape, kernel (KH, KW, C/groups, OC), conv options, pool (size, strides, padding),
# the conv path): batch 1 and batches that make uneven chunks of images.
CASES = [
    ((5, 28, 28, 1), (3, 3, 1, 32), {}, ((2, 2), (2, 2), "valid"), "direct"),
    ((1, 28, 28, 1), (3, 3, 1, 32), {}, ((2, 2), (2, 2), "valid"), "direct"),
    ((33, 13, 13, 32), (3, 3, 32, 64), {}, ((2, 2), (2, 2), "valid"), "im2col"),  # implicit
    ((2, 13, 13, 32), (3, 3, 32, 64), {}, ((2, 2), (2, 2), "valid"), "im2col"),
    ((7, 10, 9, 6), (3, 3, 6, 20), {"padding": "same"}, ((3, 3), (2, 2), "same"), "im2col"),
    ((6, 9, 9, 8), (1, 1, 8, 24), {}, ((2, 3), (1, 2), "valid"), "pointwise"),
    ((9, 9, 8, 16), (3, 3, 1, 16), {"groups": 16}, ((2, 2), (2, 2), "same"), "depthwise"),
    ((4, 12, 11, 3), (5, 3, 3, 17), {"strides": 2, "padding": "same"},
     ((2, 2), (1, 1), "valid"), "direct"),
    # Odd outputs under a valid pool: the last row and column are not computed.
    ((3, 7, 7, 5), (3, 3, 5, 16), {"padding": "same"}, ((2, 2), (2, 2), "valid"), "im2col"),
    ((2, 9, 9, 2), (3, 3, 2, 8), {}, ((2, 2), (2, 2), "valid"), "direct"),
    # The direct path pools 2x2 windows in registers (relu): zero-padded rows, channel
    # tails (20 = 16 + 4, 40 = 32 + 8), strides, odd widths.
    ((3, 15, 14, 3), (3, 3, 3, 20), {"padding": "same"}, ((2, 2), (2, 2), "valid"), "direct"),
    ((2, 17, 17, 1), (3, 3, 1, 40), {"strides": 2}, ((2, 2), (2, 2), "valid"), "direct"),
    ((2, 12, 13, 2), (2, 4, 2, 5), {}, ((2, 2), (2, 2), "same"), "direct"),
    ((2, 9, 10, 8), (1, 1, 8, 16), {}, ((2, 2), (2, 2), "valid"), "pointwise"),
]
IDS = [f"{c[-1]}-{c[0][0]}x{c[0][1]}x{c[0][2]}x{c[0][3]}-oc{c[1][3]}" for c in CASES]


@pytest.fixture
def threads():
    n = fn.get_num_threads()
    yield
    fn.set_num_threads(n)


def _run(case, act, nthreads, seed=0):
    xs, ws, opts, (pool, pstrides, ppad), algo = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = (rng.standard_normal(ws) * 0.3).astype(np.float32)
    b = rng.standard_normal(ws[3]).astype(np.float32)
    groups = opts.get("groups", 1)
    geo = conv2d_geometry(xs[1:3], ws, opts.get("strides", 1), opts.get("padding", "valid"))
    args = geo.core_pos(groups) + (ACTS[act],)
    assert _core.conv2d_algorithm(x, w, geo.out_h, geo.out_w, *geo.core_pos(groups)) == algo
    fn.set_num_threads(nthreads)
    conv = np.empty((xs[0], geo.out_h, geo.out_w, ws[3]), np.float32)
    _core.conv2d_forward(conv, None, x, w, b, *args)
    ph, pw = _core.pool2d_output_size((geo.out_h, geo.out_w), pool, pstrides,
                                      getattr(_core.Padding, ppad))
    want = np.empty((xs[0], ph, pw, ws[3]), np.float32)
    _core.max_pool2d_forward(want, None, conv, pool, pstrides, getattr(_core.Padding, ppad))
    got = {}
    for naive in (False, True):
        y = np.full(want.shape, np.nan, np.float32)
        _core.conv2d_max_pool2d_forward(y, x, w, b, *args, geo.out_h, geo.out_w, pool, pstrides,
                                        getattr(_core.Padding, ppad), naive=naive)
        got[naive] = y
    return want, got[False], got[True]


@pytest.fixture
def restore_isa():
    isa = _core.gemm_isa()
    yield isa
    _core.set_gemm_isa(isa)


@pytest.mark.parametrize("act", ["relu", "gelu", "linear"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fused_equals_conv_then_pool_bitwise(case, act, threads, restore_isa):
    # The direct path's tiles (and its pooled ones) depend on the ISA.
    for isa in _core.supported_isas() if case[-1] == "direct" else ():
        _core.set_gemm_isa(isa)
        want, fused, _ = _run(case, act, 1)
        np.testing.assert_array_equal(fused, want, err_msg=isa)
    _core.set_gemm_isa(restore_isa)
    for nthreads in (1, 2):
        want, fused, naive = _run(case, act, nthreads)
        np.testing.assert_array_equal(fused, want)
        # The plain twin sums in its own order: equal up to float32 rounding of the sums.
        k = case[1][0] * case[1][1] * case[1][2]
        np.testing.assert_allclose(naive, want, rtol=0, atol=8 * k * np.finfo(np.float32).eps
                                   * (1 + np.abs(want).max()))


def test_bad_arguments_are_named():
    x = np.zeros((2, 8, 8, 3), np.float32)
    w = np.zeros((3, 3, 3, 4), np.float32)
    y = np.zeros((2, 3, 3, 4), np.float32)
    args = (1, 1, 0, 0, 1, 1, 1, _core.Act.relu)
    valid = _core.Padding.valid
    _core.conv2d_max_pool2d_forward(y, x, w, None, *args, 6, 6, (2, 2), (2, 2), valid)
    with pytest.raises(ValueError, match="'y'"):
        _core.conv2d_max_pool2d_forward(np.zeros((2, 2, 2, 4), np.float32), x, w, None, *args,
                                        6, 6, (2, 2), (2, 2), valid)
    with pytest.raises(ValueError, match="OH/OW"):
        _core.conv2d_max_pool2d_forward(y, x, w, None, *args, 9, 6, (2, 2), (2, 2), valid)
    with pytest.raises(ValueError, match="pool_size"):
        _core.conv2d_max_pool2d_forward(y, x, w, None, *args, 6, 6, (7, 7), (2, 2), valid)
    buf = np.zeros(2 * 8 * 8 * 3, np.float32)
    with pytest.raises(ValueError, match="'y' must not share memory with 'x'"):  # y inside x
        _core.conv2d_max_pool2d_forward(buf[:72].reshape(2, 3, 3, 4), buf.reshape(2, 8, 8, 3), w,
                                        None, *args, 6, 6, (2, 2), (2, 2), valid)


def _cnn(seed=0):
    return fn.Sequential([
        L.Conv2D(8, 3, activation="relu", input_shape=(12, 12, 1)), L.MaxPooling2D(2),
        L.Conv2D(16, 3, activation="gelu"), L.MaxPooling2D(2, strides=1, padding="same"),
        L.Flatten(), L.Dense(3, activation="softmax")], seed=seed)


def _layer_by_layer(model, x):
    for layer in model.layers:
        x = layer.forward(x, False)
    return x


def test_model_predict_fuses_and_equals_the_layers(threads):
    model = _cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).random((19, 12, 12, 1)).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 3, 19)
    for nthreads in (1, 2):
        fn.set_num_threads(nthreads)
        np.testing.assert_array_equal(model.predict(x, verbose=0), _layer_by_layer(model, x))
    fused = [st for st, _ in model._plan_infer.direct_infer if not hasattr(st, "training")]
    assert len(fused) == 2  # both Conv2D -> MaxPooling2D pairs
    # Training runs the layers one by one (the pool keeps its positions for backward).
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), _layer_by_layer(model, x))


def test_no_fusion_when_the_conv_output_is_read_elsewhere():
    inp = fn.Input((10, 10, 2))
    c = L.Conv2D(4, 3, activation="relu")(inp)
    p = L.Flatten()(L.MaxPooling2D(2)(c))
    model = fn.Model(inp, [p, L.Flatten()(c)])
    model.build()
    assert all(hasattr(st, "training") for st, _ in model._plan_infer.direct_infer)
    x = np.random.default_rng(0).random((3, 10, 10, 2)).astype(np.float32)
    a, b = model.predict(x, verbose=0)
    conv = model.layers[1].forward(x, False)
    np.testing.assert_array_equal(b, conv.reshape(3, -1))
    np.testing.assert_array_equal(a, model.layers[2].forward(conv, False).reshape(3, -1))


def test_quantized_conv_still_pools():
    model = _cnn()
    model.build()
    x = np.random.default_rng(1).random((5, 12, 12, 1)).astype(np.float32)
    q = fn.quantization.quantize(model)
    np.testing.assert_array_equal(q.predict(x, verbose=0), _layer_by_layer(q, x))
