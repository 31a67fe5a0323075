"""sparse_dense_forward (CSC kernel) against its plain twin and the NumPy reference."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import _core
from fastnn.ops.sparse_dense import scratch_size

EPS = np.finfo(np.float32).eps


def sparse_w(rng, ic, oc, density, empty_cols=()):
    w = rng.standard_normal((ic, oc)).astype(np.float32)
    w[rng.random((ic, oc)) >= density] = 0.0
    for c in empty_cols:
        w[:, c] = 0.0
    return w


def run(fn_, x, csc, b, act):
    n, ic = x.shape
    y = np.empty((n, csc.shape[1]), np.float32)
    xt = np.empty(scratch_size(n, ic), np.float32)
    fn_(y, xt, x, csc.indptr, csc.indices, csc.values, b, act)
    return y


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 15, 16, 17, 33, 64, 100, 300])
@pytest.mark.parametrize("ic,oc,density", [(784, 128, 0.1), (37, 19, 0.3), (5, 3, 1.0), (128, 10, 0.1)])
def test_kernel_vs_twin_and_reference(n, ic, oc, density):
    rng = np.random.default_rng(n * 1000 + ic)
    w = sparse_w(rng, ic, oc, density, empty_cols=(0,) if oc > 2 else ())
    csc = fn.ops.dense_to_csc(w)
    np.testing.assert_array_equal(csc.to_dense(), w)
    x = rng.standard_normal((n, ic)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    for act in (_core.Act.linear, _core.Act.relu, _core.Act.tanh):
        y = run(_core.sparse_dense_forward, x, csc, b, act)
        y0 = run(_core.plain.sparse_dense_forward, x, csc, b, act)
        ref = fn.reference.sparse_dense(x.astype(np.float64), csc, b, act.name)
        k = max(1, int(np.diff(csc.indptr).max()))
        scale = np.abs(x).max() * np.abs(w).sum(0).max() + 1
        tol = 4 * EPS * np.sqrt(k) * scale
        np.testing.assert_allclose(y, ref, rtol=0, atol=tol)
        np.testing.assert_allclose(y0, ref, rtol=0, atol=tol)
        # column 0 is empty: act(b) exactly
        if oc > 2:
            np.testing.assert_allclose(y[:, 0], fn.reference.activation(np.broadcast_to(b[0], (n,)), act.name), rtol=1e-6)


def test_small_integers_exact():
    rng = np.random.default_rng(0)
    w = rng.integers(-3, 4, (50, 20)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    csc = fn.ops.dense_to_csc(w)
    for n in (1, 5, 16, 40):
        x = rng.integers(-4, 5, (n, 50)).astype(np.float32)
        np.testing.assert_array_equal(fn.ops.sparse_dense(x, csc), x @ w)


def test_all_zero_kernel_and_dense_path_agree():
    rng = np.random.default_rng(1)
    csc = fn.ops.dense_to_csc(np.zeros((30, 7), np.float32))
    assert csc.nnz == 0
    b = rng.standard_normal(7).astype(np.float32)
    for n in (1, 20):
        x = rng.standard_normal((n, 30)).astype(np.float32)
        np.testing.assert_array_equal(fn.ops.sparse_dense(x, csc, b), np.broadcast_to(b, (n, 7)))
        np.testing.assert_array_equal(fn.ops.sparse_dense(x, csc, b, "relu"), np.maximum(np.broadcast_to(b, (n, 7)), 0))


@pytest.mark.parametrize("n", [1, 9, 64, 257])
def test_threads_bitwise(n):
    rng = np.random.default_rng(n)
    w = sparse_w(rng, 784, 128, 0.1)
    csc = fn.ops.dense_to_csc(w)
    x = rng.random((n, 784)).astype(np.float32)
    before = fn.get_num_threads()
    try:
        fn.set_num_threads(1)
        y1 = fn.ops.sparse_dense(x, csc, None, "relu")
        fn.set_num_threads(2)
        y2 = fn.ops.sparse_dense(x, csc, None, "relu")
    finally:
        fn.set_num_threads(before)
    np.testing.assert_array_equal(y1, y2)


def test_matches_dense_op():
    rng = np.random.default_rng(3)
    w = sparse_w(rng, 200, 64, 0.15)
    b = rng.standard_normal(64).astype(np.float32)
    x = rng.random((4, 6, 200)).astype(np.float32)  # (..., IC)
    y = fn.ops.sparse_dense(x, fn.ops.dense_to_csc(w), b, "gelu")
    np.testing.assert_allclose(y, fn.ops.dense(x, w, b, "gelu"), rtol=1e-5, atol=1e-5)


def test_bad_input():
    rng = np.random.default_rng(4)
    w = sparse_w(rng, 10, 4, 0.5)
    csc = fn.ops.dense_to_csc(w)
    x = rng.random((3, 10)).astype(np.float32)
    with pytest.raises(ValueError, match="'x'"):
        fn.ops.sparse_dense(rng.random((3, 9)), csc)
    with pytest.raises(ValueError, match="'b'"):
        fn.ops.sparse_dense(x, csc, np.zeros(5))
    with pytest.raises(TypeError, match="'w'"):
        fn.ops.sparse_dense(x, w)
    with pytest.raises(ValueError, match="activation"):
        fn.ops.sparse_dense(x, csc, activation="swish")
    with pytest.raises(ValueError, match="'w'"):
        fn.ops.dense_to_csc(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        fn.ops.dense_to_csc(np.full((2, 2), np.nan))
    y = np.empty((3, 4), np.float32)
    bad = csc.indices.copy()
    bad[0] = 10
    with pytest.raises(ValueError, match="'indices'.*\\[0, IC\\)"):
        _core.sparse_dense_forward(y, None, x, csc.indptr, bad, csc.values, None)
    bad_ptr = csc.indptr.copy()
    bad_ptr[1], bad_ptr[2] = bad_ptr[2], bad_ptr[1] - 1
    with pytest.raises(ValueError, match="'indptr'"):
        _core.sparse_dense_forward(y, None, x, bad_ptr, csc.indices, csc.values, None)
    with pytest.raises(ValueError, match="'values'"):
        _core.sparse_dense_forward(y, None, x, csc.indptr, csc.indices, csc.values[:-1], None)
    with pytest.raises(TypeError, match="'indices'"):
        _core.sparse_dense_forward(y, None, x, csc.indptr, csc.indices.astype(np.int64), csc.values, None)
    x20 = rng.random((20, 10)).astype(np.float32)
    with pytest.raises(TypeError, match="'xt'"):
        _core.sparse_dense_forward(np.empty((20, 4), np.float32), None, x20, csc.indptr, csc.indices, csc.values, None)
    with pytest.raises(ValueError, match="'y'"):
        _core.sparse_dense_forward(np.empty((3, 5), np.float32), None, x, csc.indptr, csc.indices, csc.values, None)
