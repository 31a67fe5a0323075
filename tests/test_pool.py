"""Pooling: NumPy twins by finite differences, C++ kernels vs twins, threads, layers, bad input."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import _core, ops
from fastnn import reference as ref
from gradcheck import num_grad

H = 1e-4  # finite-difference step

L = fn.layers
EPS32 = np.finfo(np.float32).eps

# (x shape, pool_size, strides, padding): batch 1, odd H/W, channels not multiples of 8,
# pool 2 and 3 (and non-square), strides 1/2/3 (and mixed), both paddings.
CASES = [
    ((1, 5, 5, 3), 2, None, "valid"),
    ((2, 7, 9, 5), 2, None, "valid"),
    ((2, 7, 9, 5), 2, None, "same"),
    ((1, 7, 6, 13), 3, 1, "valid"),
    ((3, 7, 6, 13), 3, 1, "same"),
    ((2, 9, 11, 4), 3, 2, "valid"),
    ((2, 9, 11, 4), 3, 2, "same"),
    ((1, 10, 8, 17), 2, 3, "valid"),
    ((2, 10, 8, 17), 3, 3, "same"),
    ((2, 8, 5, 3), (3, 2), (1, 3), "same"),
    ((2, 6, 7, 9), (2, 3), (2, 1), "valid"),
    ((1, 3, 3, 1), 3, None, "valid"),  # one window covering the whole image
    ((2, 2, 2, 40), 3, 1, "same"),  # pool larger than the input, padded
]
IDS = [f"{s}-p{p}-s{st}-{pad}" for s, p, st, pad in CASES]

# The MNIST CNN: conv 3x3 -> 26x26x32 -> pool -> 13x13; conv 3x3 -> 11x11x64 -> pool -> 5x5.
MNIST = [((8, 26, 26, 32), (13, 13)), ((8, 11, 11, 64), (5, 5))]


@pytest.fixture
def threads():
    """Restore the thread count after a test that changes it."""
    n = fn.get_num_threads()
    yield
    fn.set_num_threads(n)


def distinct(shape, rng, dtype=np.float64):
    """Values at least 0.5 apart (a shuffled ramp plus small noise): no ties in any
    window, and a finite-difference step of 1e-4 never changes which element wins."""
    n = int(np.prod(shape))
    v = rng.permutation(n) - n / 2 + rng.uniform(-0.2, 0.2, n)
    return v.reshape(shape).astype(dtype)




# ---- the twins, by central finite differences in float64 ---------------------------------

FD_CASES = [((2, 5, 4, 3), 2, None, "valid"), ((1, 5, 4, 2), 3, 2, "same"),
            ((2, 4, 5, 2), (2, 3), 1, "same"), ((1, 6, 5, 3), 3, 1, "valid")]


@pytest.mark.parametrize("shape,pool,strides,padding", FD_CASES)
def test_reference_avg_pool_gradient(shape, pool, strides, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    y = ref.avg_pool2d(x, pool, strides, padding)
    r = rng.standard_normal(y.shape)
    g = ref.avg_pool2d_backward(r, shape, pool, strides, padding)
    num = num_grad(lambda: np.sum(ref.avg_pool2d(x, pool, strides, padding) * r), x, H)
    np.testing.assert_allclose(g, num, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("shape,pool,strides,padding", FD_CASES)
def test_reference_max_pool_gradient_away_from_ties(shape, pool, strides, padding):
    rng = np.random.default_rng(1)
    x = distinct(shape, rng)
    y, idx = ref.max_pool2d(x, pool, strides, padding)
    r = rng.standard_normal(y.shape)
    g = ref.max_pool2d_backward(r, idx, shape)
    num = num_grad(lambda: np.sum(ref.max_pool2d(x, pool, strides, padding)[0] * r), x, H)
    np.testing.assert_allclose(g, num, rtol=1e-7, atol=1e-9)


def test_reference_global_avg_pool_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 4))
    r = rng.standard_normal((2, 4))
    g = ref.global_avg_pool2d_backward(r, x.shape)
    num = num_grad(lambda: np.sum(ref.global_avg_pool2d(x) * r), x, H)
    np.testing.assert_allclose(g, num, rtol=1e-7, atol=1e-9)


def test_reference_geometry_matches_keras_rules():
    # valid: floor((H - K) / S) + 1; same: ceil(H / S), the odd padding row at the bottom.
    assert ref.pool.pool2d_geometry(26, 26, 2, None, "valid") == (13, 13, 0, 0)
    assert ref.pool.pool2d_geometry(11, 11, 2, None, "valid") == (5, 5, 0, 0)
    assert ref.pool.pool2d_geometry(7, 9, 3, 2, "same") == (4, 5, 1, 1)
    assert ref.pool.pool2d_geometry(5, 5, 2, 2, "same") == (3, 3, 0, 0)
    assert ref.pool.pool2d_geometry(6, 6, 3, 1, "same") == (6, 6, 1, 1)


# ---- C++ kernels vs the twins, float32 ---------------------------------------------------

@pytest.mark.parametrize("shape,pool,strides,padding", CASES, ids=IDS)
def test_max_pool_matches_reference_exactly(shape, pool, strides, padding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    y, idx = ops.max_pool2d(x, pool, strides, padding)
    yr, ir = ref.max_pool2d(x, pool, strides, padding)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(idx, ir)
    assert idx.dtype == np.int32
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx0 = rng.standard_normal(shape).astype(np.float32)
    dx = ops.max_pool2d_backward(dy, idx, shape, dx=dx0.copy())
    # Same float32 additions in the same (output) order: bitwise equal.
    np.testing.assert_array_equal(dx, ref.max_pool2d_backward(dy, ir, shape, dx=dx0.copy()))


@pytest.mark.parametrize("shape,pool,strides,padding", CASES, ids=IDS)
def test_avg_pool_matches_reference(shape, pool, strides, padding):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    y = ops.avg_pool2d(x, pool, strides, padding)
    k = np.prod(pool) if np.ndim(pool) else pool * pool
    tol = 4 * EPS32 * np.sqrt(k)
    np.testing.assert_allclose(y, ref.avg_pool2d(x.astype(np.float64), pool, strides, padding),
                               rtol=tol, atol=tol)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx0 = rng.standard_normal(shape).astype(np.float32)
    dx = ops.avg_pool2d_backward(dy, shape, pool, strides, padding, dx=dx0.copy())
    want = ref.avg_pool2d_backward(dy.astype(np.float64), shape, pool, strides, padding,
                                   dx=dx0.astype(np.float64))
    np.testing.assert_allclose(dx, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 5, 7), (4, 13, 13, 32), (2, 5, 5, 100)])
def test_global_avg_pool_matches_reference(shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    y = ops.global_avg_pool2d(x)
    k = shape[1] * shape[2]
    tol = 4 * EPS32 * np.sqrt(k)
    np.testing.assert_allclose(y, ref.global_avg_pool2d(x.astype(np.float64)), rtol=tol, atol=tol)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ops.global_avg_pool2d_backward(dy, shape)
    np.testing.assert_allclose(dx, ref.global_avg_pool2d_backward(dy.astype(np.float64), shape),
                               rtol=4 * EPS32, atol=4 * EPS32)


@pytest.mark.parametrize("shape,out_hw", MNIST)
def test_mnist_cnn_shapes(shape, out_hw):
    rng = np.random.default_rng(6)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)  # post-ReLU: many ties at 0
    y, idx = ops.max_pool2d(x)
    assert y.shape == (shape[0],) + out_hw + (shape[3],)
    yr, ir = ref.max_pool2d(x)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(idx, ir)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(ops.max_pool2d_backward(dy, idx, shape),
                                  ref.max_pool2d_backward(dy, ir, shape))
    a = ops.avg_pool2d(x)
    np.testing.assert_allclose(a, ref.avg_pool2d(x.astype(np.float64)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ops.avg_pool2d_backward(dy, shape),
                               ref.avg_pool2d_backward(dy.astype(np.float64), shape),
                               rtol=1e-6, atol=1e-7)


def test_small_integers_are_exact():
    # Sums of a few small integers are exact in float32; windows of 4 divide exactly.
    rng = np.random.default_rng(7)
    x = rng.integers(-8, 9, (3, 6, 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(ops.avg_pool2d(x), ref.avg_pool2d(x.astype(np.float64)))
    dy = rng.integers(-8, 9, (3, 3, 4, 5)).astype(np.float32) * 4
    np.testing.assert_array_equal(ops.avg_pool2d_backward(dy, x.shape),
                                  ref.avg_pool2d_backward(dy.astype(np.float64), x.shape))


def test_same_padding_averages_real_elements_only():
    x = np.ones((1, 5, 5, 3), np.float32)
    np.testing.assert_array_equal(ops.avg_pool2d(x, 3, 2, "same"), np.ones((1, 3, 3, 3)))
    # Corner window of a 2x2 'same' pool over 3x3: only x[2,2] is real.
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    y = ops.avg_pool2d(x, 2, 2, "same")
    np.testing.assert_array_equal(y[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])


def test_max_pool_ties_pick_the_first_and_padding_never_wins():
    x = np.full((1, 4, 4, 2), -5.0, np.float32)
    y, idx = ops.max_pool2d(x, 3, 1, "same")
    np.testing.assert_array_equal(y, -5.0)
    _, ir = ref.max_pool2d(x, 3, 1, "same")
    np.testing.assert_array_equal(idx, ir)
    assert idx[0, 0, 0, 0] == 0 and idx[0, 3, 3, 0] == 2 * 4 + 2  # top-left real element


@pytest.mark.parametrize("shape,pool,strides,padding",
                         CASES + [((2, 9, 7, 72), 2, None, "valid"), ((1, 6, 6, 48), 3, 2, "same")],
                         ids=IDS + ["72ch", "48ch"])
def test_max_pool_without_positions_matches_reference(shape, pool, strides, padding):
    # Inference (the layer's forward when not training) asks for no positions: its own
    # loops, 32, 16 and 8 channels at a time, then one at a time.
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::37] = np.nan  # NaN wins wherever it is
    yr, _ = ref.max_pool2d(x, pool, strides, padding)
    y = np.full(yr.shape, 7.0, np.float32)
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    _core.max_pool2d_forward(y, None, x, pair(pool), pair(strides or pool),
                             getattr(_core.Padding, padding))
    np.testing.assert_array_equal(y, yr)  # NaNs in the same places


def test_max_pool_propagates_nan_like_the_reference():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    x[0, 1, 1, 0] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[1, 5, 5, 2] = np.nan
    y, idx = ops.max_pool2d(x, 3, 2, "same")
    yr, ir = ref.max_pool2d(x, 3, 2, "same")
    np.testing.assert_array_equal(y, yr)  # NaNs in the same places
    np.testing.assert_array_equal(idx, ir)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1


@pytest.mark.parametrize("shape,pool,strides,padding", CASES[1::3], ids=IDS[1::3])
def test_naive_twins_agree(shape, pool, strides, padding):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    y, idx = ops.max_pool2d(x, pool, strides, padding)
    p, s, pad = ops.pool.pool_options("t", pool, strides, padding)
    pd = ops.pool.PADDINGS[pad]
    y2, i2 = np.empty_like(y), np.empty_like(idx)
    _core.max_pool2d_forward(y2, i2, x, p, s, pd, naive=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(idx, i2)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = np.zeros(shape, np.float32)
    _core.max_pool2d_backward(dx, dy, idx, naive=True)
    np.testing.assert_array_equal(dx, ops.max_pool2d_backward(dy, idx, shape))
    a = np.empty_like(y)
    _core.avg_pool2d_forward(a, x, p, s, pd, naive=True)
    np.testing.assert_allclose(a, ops.avg_pool2d(x, pool, strides, padding), rtol=1e-6, atol=1e-6)
    dx = np.zeros(shape, np.float32)
    _core.avg_pool2d_backward(dx, dy, p, s, pd, naive=True)
    np.testing.assert_allclose(dx, ops.avg_pool2d_backward(dy, shape, pool, strides, padding),
                               rtol=1e-6, atol=1e-6)
    g = np.empty((shape[0], shape[3]), np.float32)
    _core.global_avg_pool2d_forward(g, x, naive=True)
    np.testing.assert_allclose(g, ops.global_avg_pool2d(x), rtol=1e-6, atol=1e-6)


def test_backward_adds_into_dx():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    y, idx = ops.max_pool2d(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    once = ops.max_pool2d_backward(dy, idx, x.shape)
    dx = once.copy()
    assert ops.max_pool2d_backward(dy, idx, x.shape, dx=dx) is dx
    np.testing.assert_array_equal(dx, 2 * once)
    g = ops.avg_pool2d_backward(dy, x.shape)
    np.testing.assert_array_equal(ops.avg_pool2d_backward(dy, x.shape, dx=g.copy()), 2 * g)


@pytest.mark.parametrize("naive", [False, True])
def test_accumulate_false_overwrites_dx(naive):
    # What a layer does: no zeroing pass; the kernel writes every element of dx, including
    # those no window reaches (stride 3 > pool 2 skips rows and columns).
    rng = np.random.default_rng(19)
    shape = (2, 8, 7, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    for pool, strides, padding in [(2, 3, "valid"), (3, 1, "same"), (2, None, "valid")]:
        p, s, pad = ops.pool.pool_options("t", pool, strides, padding)
        pd = ops.pool.PADDINGS[pad]
        y, idx = ops.max_pool2d(x, pool, strides, padding)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = np.full(shape, np.nan, np.float32)
        _core.max_pool2d_backward(dx, dy, idx, False, naive=naive)
        np.testing.assert_array_equal(dx, ref.max_pool2d_backward(dy, idx, shape))
        dx = np.full(shape, np.nan, np.float32)
        _core.avg_pool2d_backward(dx, dy, p, s, pd, False, naive=naive)
        np.testing.assert_allclose(dx, ref.avg_pool2d_backward(dy.astype(np.float64), shape, pool,
                                                                strides, padding), rtol=1e-6, atol=1e-6)
    dx = np.full(shape, np.nan, np.float32)
    g = rng.standard_normal((2, 5)).astype(np.float32)
    _core.global_avg_pool2d_backward(dx, g, False, naive=naive)
    np.testing.assert_allclose(dx, ref.global_avg_pool2d_backward(g, shape), rtol=1e-6)


def test_out_argument_is_written():
    x = np.random.default_rng(11).standard_normal((2, 4, 4, 3)).astype(np.float32)
    out = np.empty((2, 2, 2, 3), np.float32)
    y, _ = ops.max_pool2d(x, out=out)
    assert y is out
    assert ops.avg_pool2d(x, out=out) is out
    g = np.empty((2, 3), np.float32)
    assert ops.global_avg_pool2d(x, out=g) is g


# ---- determinism -------------------------------------------------------------------------

@pytest.mark.parametrize("shape,pool,strides,padding", [
    ((16, 26, 26, 32), 2, None, "valid"),
    ((1, 40, 40, 48), 3, 1, "same"),   # batch 1: channel split in the max-pool backward
    ((3, 33, 31, 24), 3, 2, "same")])
def test_one_and_two_threads_are_bitwise_identical(shape, pool, strides, padding, threads):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(shape).astype(np.float32)
    res = []
    for t in (1, 2):
        fn.set_num_threads(t)
        y, idx = ops.max_pool2d(x, pool, strides, padding)
        dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        a = ops.avg_pool2d(x, pool, strides, padding)
        res.append([y, idx, ops.max_pool2d_backward(dy, idx, shape), a,
                    ops.avg_pool2d_backward(dy, shape, pool, strides, padding),
                    ops.global_avg_pool2d(x),
                    ops.global_avg_pool2d_backward(y[:, 0, 0, :], shape)])
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


# ---- bad input ---------------------------------------------------------------------------

def test_bad_options_are_named():
    x = np.zeros((1, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'x' must be 4-D"):
        ops.max_pool2d(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"avg_pool2d: argument 'x' must be 4-D"):
        ops.avg_pool2d(np.zeros((1, 1, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'pool_size' \(5, 5\) is larger than the input \(4, 4\)"):
        ops.max_pool2d(x, 5)
    with pytest.raises(ValueError, match=r"avg_pool2d: argument 'pool_size' \(2, 5\) is larger"):
        ops.avg_pool2d(x, (2, 5))
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'strides' must be positive, got 0"):
        ops.max_pool2d(x, 2, 0)
    with pytest.raises(ValueError, match=r"avg_pool2d: argument 'strides' must be positive"):
        ops.avg_pool2d(x, 2, (1, 0))
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'pool_size' must be positive"):
        ops.max_pool2d(x, 0)
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'padding' must be 'valid' or 'same', got 'full'"):
        ops.max_pool2d(x, padding="full")
    with pytest.raises(TypeError, match=r"argument 'pool_size' must be an int or a pair"):
        ops.max_pool2d(x, (2, 2, 2))
    with pytest.raises(TypeError, match=r"argument 'strides' must be an int or a pair"):
        ops.avg_pool2d(x, 2, 1.5)
    # 'same' pads: a pool larger than the input is fine.
    assert ops.max_pool2d(x, 5, 1, "same")[0].shape == (1, 4, 4, 2)


def test_core_checks_options_too():
    x = np.zeros((1, 4, 4, 2), np.float32)
    y = np.empty((1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'strides' must hold positive steps"):
        _core.max_pool2d_forward(y, None, x, (2, 2), (0, 2), _core.Padding.valid)
    with pytest.raises(ValueError, match=r"avg_pool2d: argument 'pool_size' must hold positive sizes"):
        _core.avg_pool2d_forward(y, x, (0, 2), (2, 2), _core.Padding.valid)
    with pytest.raises(ValueError, match=r"argument 'pool_size' \(5, 5\) is larger than the input"):
        _core.avg_pool2d_backward(np.zeros_like(x), y, (5, 5), (1, 1), _core.Padding.valid)
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'out' must be a C-contiguous float32 array of shape \(N, OH, OW, C\) = \(1, 2, 2, 2\)"):
        _core.max_pool2d_forward(np.empty((1, 3, 3, 2), np.float32), None, x, (2, 2), (2, 2),
                                 _core.Padding.valid)


def test_bad_arrays_are_named():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    y, idx = ops.max_pool2d(x)
    with pytest.raises(TypeError, match=r"max_pool2d: argument 'out' must be a C-contiguous float32"):
        ops.max_pool2d(x, out=np.empty((2, 2, 2, 3), np.float64))
    with pytest.raises(ValueError, match=r"avg_pool2d: argument 'out' must be a C-contiguous float32 array of shape \(N, OH, OW, C\)"):
        ops.avg_pool2d(x, out=np.empty((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"argument 'out' must be C-contiguous"):
        ops.avg_pool2d(x, out=np.empty((2, 2, 3, 2), np.float32).transpose(0, 1, 3, 2))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: argument 'dx' must have shape x_shape"):
        ops.max_pool2d_backward(y, idx, x.shape, dx=np.zeros((2, 4, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d_backward: argument 'indices' must be .* shape \(N, OH, OW, C\) like dy"):
        ops.max_pool2d_backward(y, idx[:, :1].copy(), x.shape)
    with pytest.raises(TypeError, match=r"max_pool2d_backward: argument 'indices' must hold integers"):
        ops.max_pool2d_backward(y, idx.astype(np.float32), x.shape)
    bad = idx.copy()
    bad[1, 0, 0, 2] = 16
    with pytest.raises(ValueError, match=r"argument 'indices' holds 1 positions outside \[0, H\*W\) = \[0, 16\)"):
        ops.max_pool2d_backward(y, bad, x.shape)
    bad[1, 0, 0, 2] = -1
    with pytest.raises(ValueError, match=r"outside \[0, H\*W\)"):
        ops.max_pool2d_backward(y, bad, x.shape)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: argument 'dy' must be .* shape \(N, OH, OW, C\) = \(2, 2, 2, 3\)"):
        ops.avg_pool2d_backward(np.zeros((2, 3, 3, 3), np.float32), x.shape)
    with pytest.raises(ValueError, match=r"global_avg_pool2d_backward: argument 'x_shape' must be 4 positive sizes"):
        ops.global_avg_pool2d_backward(np.zeros((2, 3), np.float32), (2, 3))
    with pytest.raises(ValueError, match=r"global_avg_pool2d_backward: argument 'dy' must be .* shape \(N, C\) = \(2, 3\)"):
        ops.global_avg_pool2d_backward(np.zeros((2, 4), np.float32), x.shape)
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'x' is empty"):
        ops.max_pool2d(np.zeros((0, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d: argument 'out' must not share memory with 'x'"):
        flat = np.zeros(96, np.float32)
        _core.max_pool2d_forward(flat[72:].reshape(2, 2, 2, 3), None, flat.reshape(2, 4, 4, 3),
                                 (2, 2), (2, 2), _core.Padding.valid)


# ---- layers ------------------------------------------------------------------------------

def bind(layer, input_shape):
    layer._build(input_shape)
    n = layer.param_count
    layer.bind(np.zeros(n, np.float32), np.zeros(n, np.float32), 0)
    layer.initialize(np.random.default_rng(0))
    return layer


@pytest.mark.parametrize("shape,out_hw", MNIST)
def test_pooling_layers_at_mnist_shapes(shape, out_hw):
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape).astype(np.float32)
    for layer, fwd in [(L.MaxPooling2D(), lambda v: ref.max_pool2d(v)[0]),
                       (L.AveragePooling2D(), ref.avg_pool2d)]:
        bind(layer, shape[1:])
        assert layer.output_shape == out_hw + (shape[3],)
        y = layer.forward(x, training=True)
        np.testing.assert_allclose(y, fwd(x.astype(np.float64)), rtol=1e-6, atol=1e-6)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dy)
        if isinstance(layer, L.MaxPooling2D):
            want = ref.max_pool2d_backward(dy, ref.max_pool2d(x)[1], shape)
        else:
            want = ref.avg_pool2d_backward(dy.astype(np.float64), shape)
        np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(layer.forward(x, training=False), y)


def test_pooling_layer_options_and_config():
    layer = L.MaxPooling2D(pool_size=(3, 2), strides=1, padding="SAME", name="mp")
    bind(layer, (7, 5, 4))
    assert layer.output_shape == (7, 5, 4)
    cfg = layer.get_config()
    assert cfg == {"name": "mp", "trainable": True, "input_shape": [7, 5, 4], "pool_size": [3, 2],
                   "strides": [1, 1], "padding": "same", "data_format": "channels_last"}
    clone = L.MaxPooling2D.from_config(cfg)
    assert (clone.pool_size, clone.strides, clone.padding) == ((3, 2), (1, 1), "same")
    assert L.AveragePooling2D(3).strides == (3, 3)
    assert L.MaxPool2D is L.MaxPooling2D and L.AvgPool2D is L.AveragePooling2D
    g = bind(L.GlobalAveragePooling2D(keepdims=True), (5, 6, 7))
    assert g.output_shape == (1, 1, 7)
    x = np.random.default_rng(15).standard_normal((3, 5, 6, 7)).astype(np.float32)
    y = g.forward(x, training=True)
    assert y.shape == (3, 1, 1, 7)
    np.testing.assert_allclose(y[:, 0, 0], x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    dx = g.backward(np.ones(y.shape, np.float32))
    np.testing.assert_allclose(dx, np.full(x.shape, 1 / 30), rtol=1e-6)
    assert bind(L.GlobalAveragePooling2D(), (5, 6, 7)).output_shape == (7,)


def test_pooling_layer_errors():
    with pytest.raises(ValueError, match=r"MaxPooling2D: argument 'padding' must be 'valid' or 'same'"):
        L.MaxPooling2D(padding="full")
    with pytest.raises(ValueError, match=r"AveragePooling2D: argument 'strides' must be positive"):
        L.AveragePooling2D(2, strides=0)
    with pytest.raises(ValueError, match=r"only data_format='channels_last'"):
        L.MaxPooling2D(data_format="channels_first")
    with pytest.raises(ValueError, match=r"mp3: argument 'pool_size' \(3, 3\) is larger than the input \(2, 2\)"):
        L.MaxPooling2D(3, name="mp3")._build((2, 2, 4))
    with pytest.raises(ValueError, match=r"expects images of shape \(H, W, C\)"):
        L.GlobalAveragePooling2D()._build((5, 4))


def test_first_layer_needs_no_input_gradient():
    layer = bind(L.MaxPooling2D(), (4, 4, 2))
    layer.need_input_grad = False
    x = np.random.default_rng(16).standard_normal((2, 4, 4, 2)).astype(np.float32)
    y = layer.forward(x, training=True)
    assert layer.backward(np.ones_like(y)) is None


def test_pooling_model_predicts_and_saves(tmp_path):
    model = fn.Sequential([L.Input((9, 9, 3)), L.MaxPooling2D(3, 1, "same"),
                           L.AveragePooling2D(2), L.GlobalAveragePooling2D()], seed=0)
    x = np.random.default_rng(17).standard_normal((5, 9, 9, 3)).astype(np.float32)
    y = model.predict(x)
    want = ref.global_avg_pool2d(ref.avg_pool2d(ref.max_pool2d(x, 3, 1, "same")[0], 2))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    path = tmp_path / "pool.fastnn"
    model.save(path)
    np.testing.assert_array_equal(fn.load_model(path).predict(x), y)


@pytest.mark.skipif(not hasattr(_core, "adam_step"),
                    reason="needs the dense, loss and optimizer kernels (not in this build)")
def test_cnn_head_trains_deterministically(threads):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((64, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4, :, 0].mean(axis=(1, 2)) > 0).astype(np.int32)

    def run(t):
        fn.set_num_threads(t)
        model = fn.Sequential([L.Input((8, 8, 3)), L.MaxPooling2D(), L.Flatten(),
                               L.Dense(16, activation="relu"), L.Dense(2, activation="softmax")],
                              seed=1)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        hist = model.fit(x, y, batch_size=16, epochs=5, verbose=0, seed=2)
        return model.get_weights(), hist.history["loss"]

    w1, loss1 = run(1)
    w2, loss2 = run(2)
    assert loss1[-1] < loss1[0]
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
