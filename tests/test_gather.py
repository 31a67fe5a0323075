"""fastnn._core.take_rows: the training loop's batch gathering (x[idx] with the next
batch's rows prefetched) against np.take, for every dtype fit can meet, and its errors."""
import numpy as np
import pytest

import fastnn
from fastnn import _core


def _rows(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 100).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8, np.float64])
@pytest.mark.parametrize("shape", [(50, 7), (40, 3, 5), (30,)])
@pytest.mark.parametrize("naive", [False, True])
def test_take_rows_matches_np_take(dtype, shape, naive):
    x = _rows(shape, dtype)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, shape[0], 13).astype(np.int64)
    nxt = rng.integers(0, shape[0], 9).astype(np.int64)
    out = np.full((13,) + shape[1:], 7, dtype)
    _core.take_rows(out, x, idx, None if naive else nxt, naive=naive)
    np.testing.assert_array_equal(out, np.take(x, idx, axis=0))


def test_take_rows_large_batch_is_the_same_for_any_thread_count():
    x = _rows((3000, 300), np.float32)  # a batch of 2,000 rows is 2.4 MB: several threads
    idx = np.random.default_rng(2).permutation(3000)[:2000]
    outs = []
    for n in (1, 2):
        fastnn.set_num_threads(n)
        out = np.empty((2000, 300), np.float32)
        _core.take_rows(out, x, idx, idx[:100])
        outs.append(out)
    fastnn.set_num_threads(2)
    np.testing.assert_array_equal(outs[0], x[idx])
    np.testing.assert_array_equal(outs[1], x[idx])


def test_take_rows_errors_name_the_argument():
    x = _rows((10, 4), np.float32)
    out = np.empty((3, 4), np.float32)
    idx = np.array([0, 9, 2], np.int64)
    with pytest.raises(ValueError, match="'idx' holds 10 at \\[1\\], outside \\[0, 10\\)"):
        _core.take_rows(out, x, np.array([0, 10, 2], np.int64))
    with pytest.raises(ValueError, match="'next' holds -1"):
        _core.take_rows(out, x, idx, np.array([-1], np.int64))
    with pytest.raises(TypeError, match="'out' must have x's dtype float32, got float64"):
        _core.take_rows(np.empty((3, 4)), x, idx)
    with pytest.raises(ValueError, match="'out' must have shape"):
        _core.take_rows(np.empty((3, 5), np.float32), x, idx)
    with pytest.raises(ValueError, match="'x' must be C-contiguous"):
        _core.take_rows(out, np.asfortranarray(_rows((10, 4), np.float32)), idx)
    with pytest.raises(TypeError, match="'idx' must be a C-contiguous int64"):
        _core.take_rows(out, x, idx.astype(np.int32))
    with pytest.raises(ValueError, match="'out' must not share memory with 'x'"):
        _core.take_rows(x[:3], x, idx)
    with pytest.raises(TypeError, match="'x' must be a numpy array, got list"):
        _core.take_rows(out, [[1.0]], idx)
    ro = np.empty((3, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="'out' must be writeable"):
        _core.take_rows(ro, x, idx)


def test_fit_gathers_the_same_batches_from_strided_and_contiguous_inputs():
    """fit takes its batches with take_rows from a C-contiguous array and with np.take
    otherwise (a strided view); both must train to the same weights."""
    L = fastnn.layers
    rng = np.random.default_rng(3)
    big = rng.standard_normal((64, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    weights = []
    for x in (np.ascontiguousarray(big[:, :6]), big[:, :6]):
        m = fastnn.Sequential([L.Dense(5, activation="relu", input_shape=(6,)),
                               L.Dense(3, activation="softmax")], seed=0)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(x, y, batch_size=10, epochs=2, seed=4, verbose=0)
        weights.append(m.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
