"""Dropout: mask statistics and reproducibility, exact values, the reference twin (same
mask, finite differences), thread independence, and argument checking."""
import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn import reference as ref

SIZES = [1, 7, 1000, 100003]
RATES = [0.1, 0.5, 0.9]


@pytest.fixture
def restore_threads():
    n = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(n)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _scale(rate):
    return np.float32(1) / (np.float32(1) - np.float32(rate))  # as the kernel computes it


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("rate", RATES)
def test_forward_exact_and_matches_reference(n, rate):
    x = _x(n, seed=n)
    y, mask = ops.dropout(x, rate, seed=1234 + n)
    assert y.dtype == np.float32 and mask.dtype == np.uint8
    assert y.shape == mask.shape == (n,)
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(y, np.where(mask == 1, x * _scale(rate), np.float32(0)))
    # the reference draws the very same mask, and scales in float64
    y64, mask64 = ref.dropout(x.astype(np.float64), rate, 1234 + n)
    np.testing.assert_array_equal(mask, mask64)
    np.testing.assert_allclose(y, y64, rtol=1e-6, atol=0)


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("seed", [0, 1, 2**63 + 12345])
def test_keep_fraction_is_binomial(rate, seed):
    n, q = 100003, 1.0 - rate
    _, mask = ops.dropout(np.ones(n, np.float32), rate, seed)
    k = mask.astype(np.int64)
    kept = k.sum()
    assert abs(kept - n * q) <= 5 * np.sqrt(n * q * (1 - q)), (kept, n * q)
    # neighbours are independent: P(keep_i and keep_i+1) = q² (overlapping pairs add
    # 2(q³ − q⁴) per element to the variance)
    both = (k[1:] & k[:-1]).sum()
    sd = np.sqrt((n - 1) * (q * q * (1 - q * q) + 2 * (q ** 3 - q ** 4)))
    assert abs(both - (n - 1) * q * q) <= 5 * sd, (both, (n - 1) * q * q)
    # and every lane of an 8-wide SIMD group keeps its share
    lanes = k[: n - n % 8].reshape(-1, 8).mean(axis=0)
    assert np.all(np.abs(lanes - q) <= 5 * np.sqrt(q * (1 - q) / (n // 8)))


def test_seeds():
    x = _x(10007)
    y1, m1 = ops.dropout(x, 0.5, 42)
    y2, m2 = ops.dropout(x, 0.5, 42)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(y1, y2)
    # another seed: an independent mask, differing in ~2q(1−q) = half of the places
    _, m3 = ops.dropout(x, 0.5, 43)
    differ = (m1 != m3).sum()
    assert abs(differ - 10007 / 2) <= 5 * np.sqrt(10007 / 4), differ
    # numpy integers are accepted; the largest seed works
    _, m4 = ops.dropout(x, 0.5, np.uint64(42))
    np.testing.assert_array_equal(m1, m4)
    _, m5 = ops.dropout(x, 0.5, 2**64 - 1)
    assert (m5 != m1).any()


def test_mask_indexes_flat_elements():
    # element i's bit depends only on (seed, i): any shape, any prefix gives the same bits
    x = _x((256, 128), seed=3)
    y2, m2 = ops.dropout(x, 0.3, 7)
    y1, m1 = ops.dropout(x.ravel(), 0.3, 7)
    np.testing.assert_array_equal(m2.ravel(), m1)
    np.testing.assert_array_equal(y2.ravel(), y1)
    _, head = ops.dropout(x.ravel()[:1001], 0.3, 7)
    np.testing.assert_array_equal(head, m1[:1001])


def test_same_for_1_and_2_threads(restore_threads):
    x = _x(100003, seed=4)
    fastnn.set_num_threads(1)
    y1, m1 = ops.dropout(x, 0.4, 99)
    g1 = ops.dropout_backward(x, m1, 0.4)
    fastnn.set_num_threads(2)
    y2, m2 = ops.dropout(x, 0.4, 99)
    g2 = ops.dropout_backward(x, m2, 0.4)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(g1, g2)


def test_rate_zero_is_identity():
    x = _x(1003, seed=5)
    y, mask = ops.dropout(x, 0.0, 1)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(mask, 1)
    dy = _x(1003, seed=6)
    np.testing.assert_array_equal(ops.dropout_backward(dy, mask, 0.0), dy)


@pytest.mark.parametrize("n", SIZES)
def test_backward(n):
    rate = 0.3
    x, dy, dx0 = _x(n, 7), _x(n, 8), _x(n, 9)
    _, mask = ops.dropout(x, rate, 5)
    expect = np.where(mask == 1, dy * _scale(rate), np.float32(0))
    np.testing.assert_array_equal(ops.dropout_backward(dy, mask, rate), expect)
    dx = dx0.copy()
    out = ops.dropout_backward(dy, mask, rate, dx=dx)
    assert out is dx
    np.testing.assert_array_equal(dx, dx0 + expect)  # adds into dx
    np.testing.assert_allclose(dx, ref.dropout_backward(dy.astype(np.float64), mask, rate,
                                                        dx0.astype(np.float64)),
                               rtol=1e-6, atol=1e-6)
    # a bool mask is read as 0/1
    np.testing.assert_array_equal(ops.dropout_backward(dy, mask.astype(bool), rate), expect)


def test_reference_gradient_by_finite_differences():
    # float64: d/dx sum(w · dropout(x)) = dropout_backward(w, mask)
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal(23), rng.standard_normal(23)
    rate, seed, h = 0.4, 17, 1e-6
    _, mask = ref.dropout(x, rate, seed)
    grad = ref.dropout_backward(w, mask, rate)
    num = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = (np.sum(w * ref.dropout(x + e, rate, seed)[0]) -
                  np.sum(w * ref.dropout(x - e, rate, seed)[0])) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-7, atol=1e-8)
    assert 0 < mask.sum() < x.size  # both kinds of element were checked


def test_out_and_mask_arguments():
    x = _x((32, 10), seed=11)
    out, mask = np.empty_like(x), np.empty(x.shape, np.uint8)
    y, m = ops.dropout(x, 0.25, 3, out=out, mask=mask)
    assert y is out and m is mask
    y2, m2 = ops.dropout(x, 0.25, 3)
    np.testing.assert_array_equal(out, y2)
    np.testing.assert_array_equal(mask, m2)
    # input conversion: a float64 list-of-lists input is converted once
    y3, _ = ops.dropout(x.astype(np.float64).tolist(), 0.25, 3)
    np.testing.assert_array_equal(y3, y2)


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("rate", [1.0, -0.1, float("nan"), 0.99999999, 2.0])
def test_bad_rate(rate):
    x = _x(8)
    with pytest.raises(ValueError, match=r"dropout_forward: argument 'rate' must be in \[0, 1\)"):
        ops.dropout(x, rate, 0)
    with pytest.raises(ValueError, match=r"dropout_backward: argument 'rate' must be in \[0, 1\)"):
        ops.dropout_backward(x, np.ones(8, np.uint8), rate)


def test_bad_seed():
    x = _x(8)
    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match=r"argument 'seed' must be an int in \[0, 2\*\*64\)"):
            ops.dropout(x, 0.5, seed)
    for seed in (1.5, "3", True, None):
        with pytest.raises(TypeError, match=r"argument 'seed' must be an int"):
            ops.dropout(x, 0.5, seed)


def test_bad_buffers():
    x = _x((4, 6))
    with pytest.raises(TypeError, match=r"argument 'out' must be a C-contiguous float32 .*float64"):
        ops.dropout(x, 0.5, 0, out=np.empty((4, 6)))
    with pytest.raises(ValueError, match=r"argument 'out' .*like x = \(4, 6\).*\(6, 4\)"):
        ops.dropout(x, 0.5, 0, out=np.empty((6, 4), np.float32))
    with pytest.raises(TypeError, match=r"argument 'mask' must be a C-contiguous uint8 .*int32"):
        ops.dropout(x, 0.5, 0, mask=np.empty((4, 6), np.int32))
    with pytest.raises(TypeError, match=r"argument 'mask' must be a numpy.ndarray"):
        ops.dropout(x, 0.5, 0, mask=[0] * 24)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"argument 'out' is read-only"):
        ops.dropout(x, 0.5, 0, out=ro)
    with pytest.raises(ValueError, match=r"argument 'out' must not share memory with 'x'"):
        ops.dropout(x, 0.5, 0, out=x)
    with pytest.raises(ValueError, match=r"argument 'out' must be C-contiguous"):
        ops.dropout(x, 0.5, 0, out=np.empty((6, 4), np.float32).T)
    with pytest.raises(ValueError, match=r"argument 'x' is empty"):
        ops.dropout(np.zeros((0, 3), np.float32), 0.5, 0)
    dy, mask = _x((4, 6)), np.ones((4, 6), np.uint8)
    with pytest.raises(ValueError, match=r"dropout_backward: argument 'mask' .*like dy = \(4, 6\)"):
        ops.dropout_backward(dy, np.ones(24, np.uint8), 0.5)
    with pytest.raises(TypeError, match=r"argument 'mask' must be a C-contiguous uint8 .*float32"):
        ops.dropout_backward(dy, dy, 0.5)
    ro = np.zeros_like(dy)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"argument 'dx' is read-only"):
        ops.dropout_backward(dy, mask, 0.5, dx=ro)
    with pytest.raises(ValueError, match=r"argument 'dx' must not share memory with 'dy'"):
        ops.dropout_backward(dy, mask, 0.5, dx=dy)
