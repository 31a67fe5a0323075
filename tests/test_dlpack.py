"""Arrays from other frameworks: DLPack (PyTorch CPU tensors) and buffer-protocol inputs.

A float32 C-contiguous CPU input reaches the kernel in place (the kernel's argument has
the input's data pointer); other dtypes and layouts are converted once and give the
NumPy answer; another device or a tensor that requires grad is refused with a message
naming the argument; arrays that are written must be NumPy arrays (a view from
numpy.from_dlpack writes into the tensor); results are NumPy arrays that
torch.from_dlpack shares without a copy.
"""
import array

import numpy as np
import pytest

import fastnn as fn
from fastnn import _core, ops
from fastnn.ops._util import as_f32, from_any

L = fn.layers


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def ptr(a) -> int:
    return a.__array_interface__["data"][0]


@pytest.fixture
def spy(monkeypatch):
    """spy("dense_forward") -> list of the data pointers of each call's array arguments."""
    def install(name):
        calls = []
        real = getattr(_core, name)

        def wrapper(*args, **kwargs):
            calls.append([ptr(a) for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)])
            return real(*args, **kwargs)

        monkeypatch.setattr(_core, name, wrapper)
        return calls
    return install


class OtherDevice:
    """An array on a CUDA device as far as DLPack is concerned; it must never be exported."""

    shape = (2, 2)
    dtype = "float32"

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("__dlpack__ must not be called for a non-CPU array")


class Exporter:
    """Only the DLPack protocol, over a NumPy array (no torch needed)."""

    def __init__(self, a):
        self.a = a

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- no copy for float32 C-contiguous tensors ---------------------------------------------

def _cases():
    """(name, _core function the op calls, fn(*arrays), arrays)."""
    ids = np.array([[0, 3, 2], [1, 1, 4]], np.int32)
    return [
        ("matmul", "gemm", lambda a, b: ops.matmul(a, b), (rand(5, 7), rand(7, 3, seed=1))),
        ("dense", "dense_forward", lambda x, w, b: ops.dense(x, w, b, activation="gelu"),
         (rand(4, 6), rand(6, 5, seed=1), rand(5, seed=2))),
        ("conv2d", "conv2d_forward", lambda x, w: ops.conv2d(x, w, padding="same"),
         (rand(2, 5, 6, 3), rand(3, 3, 3, 4, seed=1))),
        ("attention", "attention_forward",
         lambda q, k, v: ops.attention(q, k, v, num_heads=2, causal=True)[0],
         (rand(2, 5, 8), rand(2, 5, 8, seed=1), rand(2, 5, 8, seed=2))),
        ("activation", "act_forward", lambda x: ops.activation(x, "tanh"), (rand(3, 9),)),
        ("softmax", "softmax_forward", lambda x: ops.softmax(x), (rand(3, 9),)),
        ("embedding", "embedding_forward", lambda i, w: ops.embedding(i, w),
         (ids, rand(5, 4))),
        ("softmax_cross_entropy", "softmax_xent",
         lambda x, y: ops.softmax_cross_entropy(x, y)[1],
         (rand(4, 6), np.array([0, 5, 2, 2], np.int32))),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_contiguous_float32_tensor_is_used_in_place(torch, spy, case):
    _, core_fn, f, arrays = case
    expected = f(*arrays)
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    calls = spy(core_fn)
    got = f(*tensors)
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, expected)  # same kernel, same data: bitwise equal
    (seen,) = calls
    for t in tensors:
        assert t.data_ptr() in seen  # the kernel read the tensor's own memory


def test_float32_buffer_export_is_used_in_place(spy):
    x = rand(3, 4)
    calls = spy("act_forward")
    got = ops.relu(Exporter(x))
    np.testing.assert_array_equal(got, np.maximum(x, 0))
    assert ptr(x) in calls[0]
    assert ptr(from_any(Exporter(x), "op", "x")) == ptr(x)
    assert as_f32(Exporter(x), "op", "x").flags.c_contiguous


def test_numpy_fast_path_is_unchanged():
    x = rand(2, 3)
    assert as_f32(x, "op", "x") is x
    assert from_any(x, "op", "x") is x


# --- conversions: other dtypes and layouts ------------------------------------------------

def test_strided_and_float64_tensors_are_converted(torch, spy):
    a64 = rand(7, 5).astype(np.float64)
    b = rand(7, 3, seed=1)
    expected = ops.matmul(np.ascontiguousarray(a64.T, np.float32), b)
    ta = torch.from_numpy(a64).T  # float64 and transposed: (5, 7)
    calls = spy("gemm")
    got = ops.matmul(ta, torch.from_numpy(b))
    np.testing.assert_array_equal(got, expected)
    assert ta.data_ptr() not in calls[0]  # converted once to a float32 copy

    x = rand(4, 10)
    t = torch.from_numpy(x)[:, ::2]  # every other column: not contiguous
    np.testing.assert_array_equal(ops.relu(t), np.maximum(x[:, ::2], 0))
    w = rand(10, 3, seed=2)
    np.testing.assert_array_equal(ops.dense(torch.from_numpy(x).double(), torch.from_numpy(w)),
                                  ops.dense(x, w))  # float64 -> float32 exactly as NumPy's


def test_integer_tensors_for_ids_labels_and_masks(torch):
    w = rand(6, 3)
    ids = np.array([[5, 0, 2, 2]])
    np.testing.assert_array_equal(ops.embedding(torch.from_numpy(ids), w), w[ids])  # int64
    np.testing.assert_array_equal(ops.embedding(torch.from_numpy(ids.astype(np.int32)), w),
                                  w[ids])
    logits = rand(3, 4)
    y = np.array([3, 0, 1])
    np.testing.assert_array_equal(ops.softmax_cross_entropy(torch.from_numpy(logits),
                                                            torch.from_numpy(y))[1],
                                  ops.softmax_cross_entropy(logits, y)[1])
    q = rand(2, 3, 4)
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    np.testing.assert_array_equal(ops.attention(q, q, q, mask=torch.from_numpy(mask))[0],
                                  ops.attention(q, q, q, mask=mask)[0])
    x = rand(1, 4, 4, 2)
    yv, idx = ops.max_pool2d(x)
    dy = rand(*yv.shape, seed=3)
    np.testing.assert_array_equal(
        ops.max_pool2d_backward(dy, torch.from_numpy(idx.astype(np.int64)), x.shape),
        ops.max_pool2d_backward(dy, idx, x.shape))
    d, m = ops.dropout(x, 0.5, seed=1)
    np.testing.assert_array_equal(ops.dropout_backward(x, torch.from_numpy(m.astype(bool)), 0.5),
                                  ops.dropout_backward(x, m, 0.5))
    with pytest.raises(ValueError, match="argument 'labels' has label 7 outside"):
        ops.softmax_cross_entropy(logits, torch.tensor([7, 0, 1]))


# --- outputs --------------------------------------------------------------------------------

def test_results_are_numpy_arrays_torch_shares_without_copy(torch):
    x = torch.from_numpy(rand(3, 4))
    for r in (ops.relu(x), ops.matmul(x, x.T.contiguous()), ops.dense(x, x.T.contiguous())):
        assert type(r) is np.ndarray
        t = torch.from_dlpack(r)
        assert t.data_ptr() == r.ctypes.data
        t[0, 0] = 123.0
        assert r[0, 0] == 123.0


def test_out_as_tensor_is_refused_view_is_written_in_place(torch):
    x = torch.from_numpy(rand(3, 4))
    target = torch.zeros(3, 4)
    with pytest.raises(TypeError, match=r"relu: argument 'out' must be a numpy.ndarray, got "
                                        r"Tensor: it is written in place.*numpy.from_dlpack"):
        ops.relu(x, out=target)
    with pytest.raises(TypeError, match=r"argument 'z' must be a numpy.ndarray, got Tensor"):
        ops.dense(x, x.T.contiguous(), z=torch.zeros(3, 3))
    with pytest.raises(TypeError, match=r"matmul: argument 'out' must be a numpy.ndarray"):
        ops.matmul(x, x.T.contiguous(), out=torch.zeros(3, 3))
    assert not target.any()  # nothing was written anywhere

    view = np.from_dlpack(target)
    assert view.flags.writeable and view.ctypes.data == target.data_ptr()
    r = ops.relu(x, out=view)
    assert r is view
    np.testing.assert_array_equal(target.numpy(), np.maximum(x.numpy(), 0))
    c = torch.zeros(3, 3)
    ops.matmul(x, x.T.contiguous(), out=np.from_dlpack(c))
    np.testing.assert_array_equal(c.numpy(), ops.matmul(x, x.T.contiguous()))


# --- refused inputs -------------------------------------------------------------------------

def test_other_device_is_refused_naming_the_argument():
    a = rand(2, 2)
    with pytest.raises(TypeError, match=r"matmul: argument 'b' \(OtherDevice \(float32\)\) is "
                                        r"on device CUDA \(DLPack device type 2, index 0\)"):
        ops.matmul(a, OtherDevice())
    with pytest.raises(TypeError, match=r"relu: argument 'x' .*CUDA.*move it to the CPU"):
        ops.relu(OtherDevice())
    with pytest.raises(TypeError, match=r"embedding: argument 'ids' .*CUDA"):
        ops.embedding(OtherDevice(), a)
    with pytest.raises(TypeError, match=r"softmax_cross_entropy: argument 'labels' .*CUDA"):
        ops.softmax_cross_entropy(a, OtherDevice())
    with pytest.raises(TypeError, match=r"attention: argument 'mask' .*CUDA"):
        q = rand(2, 2, 4)
        ops.attention(q, q, q, mask=OtherDevice())


def test_tensor_requiring_grad_is_refused(torch):
    x = torch.ones(2, 3, requires_grad=True)
    with pytest.raises(TypeError, match=r"relu: argument 'x' is a tensor that requires grad.*"
                                        r"tensor.detach\(\)"):
        ops.relu(x)
    with pytest.raises(TypeError, match=r"dense: argument 'w' is a tensor that requires grad"):
        ops.dense(np.ones((2, 3), np.float32), torch.ones(3, 2, requires_grad=True))
    np.testing.assert_array_equal(ops.relu(x.detach()), np.ones((2, 3), np.float32))


def test_dtype_numpy_cannot_view_is_refused(torch):
    with pytest.raises(TypeError, match=r"relu: argument 'x' \(Tensor \(torch.bfloat16\)\) "
                                        r"cannot be viewed by NumPy through DLPack"):
        ops.relu(torch.ones(3, dtype=torch.bfloat16))


# --- buffer protocol ------------------------------------------------------------------------

def test_buffer_protocol_inputs_without_copy(spy):
    x = rand(3, 4)
    calls = spy("act_forward")
    np.testing.assert_array_equal(ops.relu(memoryview(x)), np.maximum(x, 0))
    assert ptr(x) in calls[-1]

    buf = array.array("f", [-1.0, 2.0, -3.0, 4.0])
    np.testing.assert_array_equal(ops.relu(buf), [0, 2, 0, 4])
    assert buf.buffer_info()[0] in calls[-1]

    x64 = x.astype(np.float64)  # a buffer of another dtype: converted once
    np.testing.assert_array_equal(ops.relu(memoryview(x64)), np.maximum(x, 0))
    assert ptr(x64) not in calls[-1]

    with pytest.raises(TypeError, match="argument 'out' must be a numpy.ndarray, got memoryview"):
        ops.relu(x, out=memoryview(np.empty_like(x)))


# --- models ---------------------------------------------------------------------------------

def _model(seed=0):
    m = fn.Sequential([L.Dense(6, activation="tanh", input_shape=(5,)), L.Dense(3)], seed=seed)
    m.compile(optimizer=fn.optim.SGD(0.1),
              loss=fn.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def test_model_predict_evaluate_fit_take_tensors(torch, monkeypatch):
    x = rand(8, 5)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    m = _model()
    expected = m.predict(x)
    tx = torch.from_numpy(x.copy())

    seen = []
    real_run = m._run
    monkeypatch.setattr(m, "_run", lambda xs, training: seen.append(ptr(xs[0])) or
                        real_run(xs, training))
    got = m.predict(tx, batch_size=8)
    np.testing.assert_array_equal(got, expected)
    assert seen == [tx.data_ptr()]  # the model read the tensor's memory
    assert torch.from_dlpack(got).data_ptr() == got.ctypes.data
    monkeypatch.undo()

    np.testing.assert_array_equal(m.predict_on_batch(tx), m.predict_on_batch(x))
    np.testing.assert_array_equal(m.predict(tx.double()), expected)       # converted
    np.testing.assert_array_equal(m.predict(torch.from_numpy(np.asfortranarray(x))), expected)
    assert m.evaluate(tx, torch.from_numpy(y), verbose=0) == m.evaluate(x, y, verbose=0)

    a, b = _model(), _model()
    a.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    b.fit(tx, torch.from_numpy(y), epochs=2, batch_size=4, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_model_refuses_other_device_and_grad_tensors(torch):
    m = _model()
    with pytest.raises(TypeError, match=r"predict: argument 'x' \(OtherDevice.*CUDA"):
        m.predict(OtherDevice())
    with pytest.raises(TypeError, match=r"predict: argument 'x' is a tensor that requires grad"):
        m.predict(torch.ones(2, 5, requires_grad=True))
    with pytest.raises(TypeError, match=r"fit: argument 'y' .*CUDA"):
        m.fit(np.ones((2, 5), np.float32), OtherDevice(), verbose=0)
