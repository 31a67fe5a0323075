"""Layer normalisation kernels: the twin by finite differences in float64, kernels vs twin
in float32, the plain C++ twin, in place, 1 vs 2 threads, bad input."""
import numpy as np
import pytest

from fastnn import _core, ops
from fastnn import reference as ref
from gradcheck import num_grad

H = 1e-6  # finite-difference step

EPS32 = float(np.finfo(np.float32).eps)




@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 7), (3, 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_reference_gradients_by_finite_differences(shape, affine, rng):
    c = shape[-1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma = rng.uniform(0.5, 1.5, c) if affine else None
    beta = rng.standard_normal(c) if affine else None
    r = rng.standard_normal(shape)

    def loss():
        return np.sum(ref.layer_norm(x, gamma, beta, 1e-3)[0] * r)

    _, saved = ref.layer_norm(x, gamma, beta, 1e-3)
    dx, dg, db = ref.layer_norm_backward(r, x, gamma, saved)
    np.testing.assert_allclose(dx, num_grad(loss, x, H), rtol=1e-6, atol=1e-8)
    if affine:
        np.testing.assert_allclose(dg, num_grad(loss, gamma, H), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, num_grad(loss, beta, H), rtol=1e-6, atol=1e-8)


SHAPES = [(1, 1), (1, 5), (7, 3), (32, 80, 32), (2560, 64), (5, 300), (3, 4, 129), (100, 17)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_kernels_match_reference(shape, affine, rng):
    c = shape[-1]
    m = int(np.prod(shape[:-1]))
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32) if affine else None
    beta = rng.standard_normal(c).astype(np.float32) if affine else None
    y, saved = ops.layer_norm(x, gamma, beta, epsilon=1e-3)
    x64 = x.astype(np.float64)
    yr, sr = ref.layer_norm(x64, gamma, beta, 1e-3)
    tc = 8 * EPS32 * np.sqrt(c)
    np.testing.assert_allclose(y, yr, rtol=0, atol=tc * (1 + np.abs(yr).max()))
    np.testing.assert_allclose(saved.mean, sr.mean, rtol=tc, atol=tc)
    np.testing.assert_allclose(saved.rstd, sr.rstd, rtol=tc)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx0 = rng.standard_normal(shape).astype(np.float32)
    dx, dg, db = ops.layer_norm_backward(dy, x, gamma, saved, dx=dx0.copy())
    rdx, rdg, rdb = ref.layer_norm_backward(dy.astype(np.float64), x64, gamma, sr)
    np.testing.assert_allclose(dx - dx0, rdx, rtol=0, atol=tc * 4 * (1 + np.abs(rdx).max()))
    tm = 8 * EPS32 * np.sqrt(m) + tc
    np.testing.assert_allclose(dg, rdg, rtol=0, atol=tm * (1 + np.abs(dy).sum(0).max()))
    np.testing.assert_allclose(db, rdb, rtol=0, atol=tm * (1 + np.abs(rdb).max()))


def test_plain_twin_agrees_and_backward_adds(rng):
    m, c = 37, 45
    x = (rng.standard_normal((m, c)) * 2).astype(np.float32)
    g = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal((m, c)).astype(np.float32)
    res = []
    for naive in (False, True):
        y, mu, rs = (np.empty((m, c), np.float32), np.empty(m, np.float32), np.empty(m, np.float32))
        _core.layer_norm_forward(y, mu, rs, x, g, b, 1e-3, naive=naive)
        dx, dg, db = np.ones((m, c), np.float32), np.ones(c, np.float32), np.ones(c, np.float32)
        _core.layer_norm_backward(dx, dg, db, dy, mu, rs, x, g, naive=naive)
        res.append((y, mu, rs, dx, dg, db))
    for a, bb in zip(*res):
        np.testing.assert_allclose(a, bb, rtol=1e-5, atol=1e-5)
    assert np.abs(res[0][3] - 1).max() > 1e-3  # the ones were added into, not overwritten


def test_in_place_forward(rng):
    x = rng.standard_normal((6, 10)).astype(np.float32)
    y, _ = ops.layer_norm(x, None, None)
    x2 = x.copy()
    out, _ = ops.layer_norm(x2, None, None, out=x2)
    assert out is x2
    np.testing.assert_array_equal(x2, y)


def test_one_and_two_threads_bitwise(rng, num_threads):
    shape = (64, 80, 32)  # M = 5120 rows: parallel paths
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(0.5, 1.5, 32).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    res = []
    for k in (1, 2):
        num_threads(k)
        y, s = ops.layer_norm(x, g, b)
        res.append((y, s.mean, s.rstd) + ops.layer_norm_backward(dy, x, g, s))
    for a, bb in zip(*res):
        np.testing.assert_array_equal(a, bb)


def test_constant_rows_are_finite():
    x = np.full((3, 8), 5.0, np.float32)
    y, s = ops.layer_norm(x, None, None, epsilon=1e-3)
    assert np.all(y == 0) and np.all(np.isfinite(s.rstd))
    dx, _, _ = ops.layer_norm_backward(np.ones_like(x), x, None, s)
    assert np.all(np.isfinite(dx))


def test_bad_input():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer_norm: argument 'gamma' must be a C-contiguous float32 array of shape \(C,\) = \(3,\)"):
        ops.layer_norm(x, np.ones(4, np.float32), None)
    with pytest.raises(ValueError, match="epsilon"):
        ops.layer_norm(x, None, None, epsilon=-1.0)
    with pytest.raises(ValueError, match="'out' must have shape"):
        ops.layer_norm(x, None, None, out=np.zeros((3, 2), np.float32))
    y = np.empty((2, 3), np.float32)
    with pytest.raises(ValueError, match="'mean' must be a C-contiguous float32 array of shape"):
        _core.layer_norm_forward(y, np.empty(3, np.float32), None, x, None, None, 1e-3)
    with pytest.raises(ValueError, match="must not share memory"):
        _core.layer_norm_forward(y, y[0, :2], None, x, None, None, 1e-3)
    _, s = ops.layer_norm(x, None, None)
    with pytest.raises(ValueError, match="'dy' must have the shape"):
        ops.layer_norm_backward(np.zeros((2, 4)), x, None, s)
    with pytest.raises(TypeError, match="saved"):
        ops.layer_norm_backward(x, x, None, None)
    with pytest.raises(ValueError, match=r"layer_norm_backward: argument 'dgamma' must be a C-contiguous float32 array of shape \(C,\)"):
        ops.layer_norm_backward(x, x, None, s, dgamma=np.zeros(5, np.float32))
