"""Embedding kernels: the twin by finite differences, kernels vs twin (exact: a gather and
a scatter-add), repeated ids, 1 vs 2 threads, the plain C++ twin, bad input."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import _core, ops
from fastnn import reference as ref
from gradcheck import num_grad

H = 1e-6  # finite-difference step




def test_reference_gradients_by_finite_differences(rng):
    ids = np.array([[0, 2, 2, 5], [5, 5, 1, 0], [3, 2, 2, 2]])  # repeats within and across rows
    w = rng.standard_normal((6, 3))
    pos = rng.standard_normal((4, 3))
    r = rng.standard_normal((3, 4, 3))

    def loss():
        return np.sum(ref.embedding(ids, w, pos) * r)

    dw, dpos = ref.embedding_backward(r, ids, 6, need_dpos=True)
    np.testing.assert_allclose(dw, num_grad(loss, w, H), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dpos, num_grad(loss, pos, H), rtol=1e-7, atol=1e-9)
    assert np.all(dw[4] == 0)  # id 4 never looked up


SHAPES = [(1, 1, 1, 1), (1, 7, 5, 3), (3, 5, 11, 17), (32, 80, 10000, 32), (7, 13, 50, 65)]


@pytest.mark.parametrize("n,t,v,c", SHAPES)
@pytest.mark.parametrize("with_pos", [False, True])
def test_kernels_match_reference(n, t, v, c, with_pos, rng):
    ids = rng.integers(0, v, (n, t))
    w = rng.standard_normal((v, c)).astype(np.float32)
    pos = rng.standard_normal((t, c)).astype(np.float32) if with_pos else None
    y = ops.embedding(ids, w, pos)
    np.testing.assert_array_equal(y, ref.embedding(ids, w, pos))  # gather (+ one add): exact
    dy = rng.standard_normal((n, t, c)).astype(np.float32)
    dw, dpos = ops.embedding_backward(dy, ids, v, need_dpos=with_pos)
    rw, rp = ref.embedding_backward(dy.astype(np.float64), ids, v, need_dpos=with_pos)
    k = max(1, int(np.bincount(ids.ravel()).max()))  # the longest sum
    np.testing.assert_allclose(dw, rw, rtol=0, atol=4 * np.finfo(np.float32).eps * k * np.abs(rw).max())
    if with_pos:
        np.testing.assert_allclose(dpos, rp, rtol=0, atol=4 * np.finfo(np.float32).eps * n * np.abs(rp).max())
    else:
        assert dpos is None


def test_repeated_ids_small_integers_exact(rng):
    # Every id repeated many times; integer values make every partial sum exact.
    ids = np.array([[3, 3, 3, 0], [3, 1, 1, 3]] * 8)  # (16, 4)
    dy = rng.integers(-8, 9, ids.shape + (5,)).astype(np.float32)
    dw0 = rng.integers(-4, 5, (4, 5)).astype(np.float32)
    dw = dw0.copy()
    out, _ = ops.embedding_backward(dy, ids, dw=dw)
    assert out is dw  # added into the caller's array
    expect = dw0.astype(np.float64)
    np.add.at(expect, ids.ravel(), dy.reshape(-1, 5))
    np.testing.assert_array_equal(dw, expect)
    np.testing.assert_array_equal(dw[2], dw0[2])  # untouched row


def test_plain_twin_is_bitwise_identical(rng):
    n, t, v, c = 9, 31, 40, 19
    ids = rng.integers(0, v, (n, t)).astype(np.int32)
    w = rng.standard_normal((v, c)).astype(np.float32)
    pos = rng.standard_normal((t, c)).astype(np.float32)
    dy = rng.standard_normal((n, t, c)).astype(np.float32)
    outs = []
    for naive in (False, True):
        y = np.empty((n, t, c), np.float32)
        _core.embedding_forward(y, ids, w, pos, naive=naive)
        dw, dp = np.ones((v, c), np.float32), np.ones((t, c), np.float32)
        _core.embedding_backward(dw, dp, dy, ids, naive=naive)
        outs.append((y, dw, dp))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_one_and_two_threads_bitwise(rng, num_threads):
    n, t, v, c = 64, 80, 1000, 32  # large enough for the parallel paths
    ids = rng.integers(0, 50, (n, t)).astype(np.int32)  # many repeats
    w = rng.standard_normal((v, c)).astype(np.float32)
    pos = rng.standard_normal((t, c)).astype(np.float32)
    dy = rng.standard_normal((n, t, c)).astype(np.float32)
    res = []
    for k in (1, 2):
        num_threads(k)
        y = ops.embedding(ids, w, pos)
        dw, dp = ops.embedding_backward(dy, ids, v, need_dpos=True)
        res.append((y, dw, dp))
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


def test_nd_ids_and_float_ids(rng):
    w = rng.standard_normal((10, 3)).astype(np.float32)
    ids = rng.integers(0, 10, (2, 3, 4))
    np.testing.assert_array_equal(ops.embedding(ids, w), w[ids])
    np.testing.assert_array_equal(ops.embedding(ids[0, 0], w), w[ids[0, 0]])  # (T,)
    np.testing.assert_array_equal(ops.embedding(ids.astype(np.float32), w), w[ids])


def test_bad_input():
    w = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"embedding_forward: argument 'ids' holds id 5 at \[1, 0\], outside \[0, V\) = \[0, 5\)"):
        ops.embedding([[0, 1], [5, 2]], w)
    with pytest.raises(ValueError, match=r"id -1"):
        ops.embedding([[-1]], w)
    with pytest.raises(ValueError, match="whole-number"):
        ops.embedding([[0.5]], w)
    with pytest.raises(ValueError, match="int32 range"):
        ops.embedding(np.array([[2**40]]), w)
    with pytest.raises(TypeError, match="integer array"):
        ops.embedding(np.array([["a"]]), w)
    with pytest.raises(ValueError, match=r"'w' must be 2-D"):
        ops.embedding([[0]], np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"'pos' must be a C-contiguous float32 array of shape \(T, C\) = \(2, 3\)"):
        ops.embedding([[0, 1]], w, np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="'out' must have shape"):
        ops.embedding([[0, 1]], w, out=np.zeros((1, 2, 4), np.float32))
    # The binding itself: int32 ids only, never converted.
    y = np.empty((1, 2, 3), np.float32)
    with pytest.raises(TypeError, match=r"embedding_forward: argument 'ids' must be a C-contiguous int32 array of shape \(N, T\)"):
        _core.embedding_forward(y, np.zeros((1, 2), np.int64), w)
    with pytest.raises(ValueError, match=r"embedding_backward: argument 'ids' holds id 7"):
        ops.embedding_backward(np.zeros((1, 1, 3), np.float32), [[7]], 5)
    with pytest.raises(ValueError, match=r"'dw' must be a C-contiguous float32 array of shape \(V, C\)"):
        ops.embedding_backward(np.zeros((1, 1, 3), np.float32), [[0]], dw=np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="num_embeddings"):
        ops.embedding_backward(np.zeros((1, 1, 3), np.float32), [[0]])
    with pytest.raises(ValueError, match=r"'dy' must have shape ids.shape"):
        ops.embedding_backward(np.zeros((1, 2, 3), np.float32), [[0]], 5)
