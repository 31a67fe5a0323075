"""Activation and softmax kernels (float32) against fastnn.reference (run in float64)."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import _core, ops
from fastnn import reference as ref

ACTS = ["linear", "relu", "sigmoid", "tanh", "gelu"]
IMPLS = [pytest.param(_core, id="tuned"), pytest.param(_core.plain, id="plain")]
SHAPES = [(1,), (7,), (3, 17), (32, 10), (257, 128), (2, 3, 5)]
EPS = float(np.finfo(np.float32).eps)

# Relative error allowed per activation (measured maxima: sigmoid 2.6 ulp, tanh 1.5 ulp,
# gelu 1.4e-6 on [-3, 3] and 2e-5 far in the negative tail, where |gelu| < 1e-30).
RTOL = {"linear": 0.0, "relu": 0.0, "sigmoid": 8 * EPS, "tanh": 8 * EPS, "gelu": 3e-5}


def inputs(rng, shape):
    """Normal values plus, when there is room, zeros, tiny, large and extreme ones."""
    x = rng.normal(scale=3.0, size=shape).astype(np.float32)
    special = np.array([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.625, 0.625, 9.0, -9.0, 20.0, -20.0,
                        88.0, -88.0, 100.0, -100.0, 1e4, -1e4], np.float32)
    flat = x.reshape(-1)
    k = min(flat.size // 2, special.size)
    flat[:k] = special[:k]
    return x


def act_ref(x, kind):
    return ref.activation(x.astype(np.float64), kind)


def grad_ref(dy, kind, x, y):
    return ref.activation_backward(dy.astype(np.float64), kind, x=x.astype(np.float64),
                                   y=y.astype(np.float64))


# ---- forward / backward against the reference --------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_act_forward(impl, kind, shape, rng):
    x = inputs(rng, shape)
    y = np.full_like(x, np.nan)
    impl.act_forward(y, x, getattr(_core.Act, kind))
    np.testing.assert_allclose(y, act_ref(x, kind), rtol=RTOL[kind], atol=1e-37)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_act_backward_adds(impl, kind, shape, rng):
    x = inputs(rng, shape)
    y = act_ref(x, kind).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    dx0 = rng.normal(size=shape).astype(np.float32)
    dx = dx0.copy()
    impl.act_backward(dx, dy, x, y, getattr(_core.Act, kind))
    g = grad_ref(dy, kind, x, y)
    # dx0 + g rounded once, the derivative's own relative error (gelu's: 3e-5), and the
    # rounding of y*y in tanh's 1 - y*y, which is absolute (eps/2), not relative.
    err = np.abs(dx - (dx0 + g))
    bound = (2 * EPS * np.abs(dx0 + g) + max(RTOL[kind], 4 * EPS) * np.abs(g)
             + EPS * np.abs(dy) + 1e-37)
    assert np.all(err <= bound), float(np.max(err - bound))


@pytest.mark.parametrize("kind", ACTS)
def test_act_forward_in_place(kind, rng):
    x = inputs(rng, (5, 9))
    y = np.empty_like(x)
    _core.act_forward(y, x, getattr(_core.Act, kind))
    _core.act_forward(x, x, getattr(_core.Act, kind))  # y may be x itself
    np.testing.assert_array_equal(x, y)


def test_act_extremes_are_finite_and_saturate():
    x = np.array([-1e4, -100.0, -88.0, 88.0, 100.0, 1e4], np.float32)
    for kind, expect in [("sigmoid", [0, 0, 0, 1, 1, 1]), ("tanh", [-1, -1, -1, 1, 1, 1])]:
        y = ops.activation(x, kind)
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, expect, atol=1e-30)
    np.testing.assert_array_equal(ops.gelu(np.array([-1e4, 1e4], np.float32)), [0.0, 1e4])


# ---- softmax ------------------------------------------------------------------------

SOFTMAX_SHAPES = [(1, 1), (1, 7), (3, 10), (32, 784), (257, 17), (2, 3, 5), (6,)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
def test_softmax_forward(impl, shape, rng, tol):
    x = (rng.normal(scale=4.0, size=shape)).astype(np.float32)
    y = np.empty_like(x)
    impl.softmax_forward(y, x)
    C = shape[-1]
    np.testing.assert_allclose(y, ref.softmax(x.astype(np.float64)), rtol=tol(C), atol=1e-37)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
def test_softmax_backward_adds(impl, shape, rng, tol):
    x = rng.normal(scale=2.0, size=shape)
    y = ref.softmax(x).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    dx0 = rng.normal(size=shape).astype(np.float32)
    dx = dx0.copy()
    impl.softmax_backward(dx, dy, y)
    yd, dyd = y.astype(np.float64), dy.astype(np.float64)
    g = ref.softmax_backward(dyd, yd)
    C = shape[-1]
    # y * (dy - s) with s = sum(dy * y) over C terms.
    scale = np.abs(yd) * (np.abs(dyd) + (np.abs(dyd) * yd).sum(-1, keepdims=True))
    assert np.all(np.abs(dx - (dx0 + g)) <= 2 * EPS * np.abs(dx0 + g) + tol(C) * scale + 1e-37)


def test_softmax_stable_and_masked():
    x = np.array([[1e4, -1e4, 0.0], [-np.inf, 3.0, -np.inf], [5.0, 5.0, 5.0]], np.float32)
    y = ops.softmax(x)
    np.testing.assert_array_equal(y[0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y[1], [0.0, 1.0, 0.0])  # -inf entries give exact zeros
    np.testing.assert_allclose(y[2], 1 / 3, rtol=EPS)
    z = x.copy()
    _core.softmax_forward(z, z)  # y may be x itself
    np.testing.assert_array_equal(z, y)


# ---- determinism ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ACTS)
def test_act_same_bits_for_1_and_2_threads(kind, rng, num_threads):
    n = 200_003  # several chunks, and a tail that is not a multiple of the SIMD width
    x = rng.normal(scale=3.0, size=n).astype(np.float32)
    dy = rng.normal(size=n).astype(np.float32)
    results = []
    for t in (1, 2):
        num_threads(t)
        y = ops.activation(x, kind)
        dx = ops.activation_backward(dy, kind, x=x, y=y)
        results.append((y, dx))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_softmax_same_bits_for_1_and_2_threads(rng, num_threads):
    x = rng.normal(scale=3.0, size=(4099, 10)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    results = []
    for t in (1, 2):
        num_threads(t)
        y = ops.softmax(x)
        results.append((y, ops.softmax_backward(dy, y)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


# ---- the Python wrappers ------------------------------------------------------------------

def test_ops_named_functions_match_activation(rng):
    x = rng.normal(size=(4, 6)).astype(np.float32)
    for name in ["relu", "sigmoid", "tanh", "gelu"]:
        np.testing.assert_array_equal(getattr(ops, name)(x), ops.activation(x, name))
    np.testing.assert_array_equal(ops.activation(x, None), x)
    np.testing.assert_array_equal(ops.activation(x, _core.Act.relu), ops.relu(x))


def test_ops_convert_inputs_and_write_out(rng):
    x64 = rng.normal(size=(3, 4))
    y = ops.sigmoid(x64)
    assert y.dtype == np.float32 and y.shape == (3, 4)
    np.testing.assert_array_equal(ops.relu([[-1, 2], [3, -4]]), [[0, 2], [3, 0]])
    out = np.empty((3, 4), np.float32)
    assert ops.tanh(x64, out=out) is out
    np.testing.assert_array_equal(out, ops.tanh(x64.astype(np.float32)))
    x = x64.astype(np.float32)
    assert ops.softmax(x, out=x) is x  # in place


def test_ops_activation_backward(rng):
    x = rng.normal(size=(5, 3)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    for kind in ACTS:
        y = ops.activation(x, kind)
        g = ops.activation_backward(dy, kind, x=x, y=y)
        dx = np.ones_like(x)
        assert ops.activation_backward(dy, kind, x=x, y=y, dx=dx) is dx
        np.testing.assert_allclose(dx, 1 + g, rtol=0, atol=2 * EPS)  # (an FMA may fuse dx + dy*d)
    y = ops.softmax(x)
    g = ops.softmax_backward(dy, y)
    np.testing.assert_allclose(g, ref.softmax_backward(dy.astype(np.float64), y.astype(np.float64)),
                               atol=1e-6)


# ---- bad input ----------------------------------------------------------------------------

def test_unknown_activation_lists_valid_ones():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unknown activation 'swish'; expected one of 'linear', "
                                         "'relu', 'sigmoid', 'tanh', 'gelu'"):
        ops.activation(x, "swish")
    with pytest.raises(ValueError, match="activation_backward: unknown activation 'ReLU'"):
        ops.activation_backward(x, "ReLU", y=x)


def test_ops_bad_out():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="relu: argument 'out' must be a float32 array, got float64"):
        ops.relu(x, out=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"relu: argument 'out' must have shape \(2, 3\), got \(3, 2\)"):
        ops.relu(x, out=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="argument 'out' must be C-contiguous"):
        ops.relu(x, out=np.zeros((3, 2), np.float32).T)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="argument 'out' is read-only"):
        ops.relu(x, out=ro)
    with pytest.raises(TypeError, match="argument 'out' must be a numpy.ndarray, got list"):
        ops.relu(x, out=[0.0] * 6)
    with pytest.raises(ValueError, match="argument 'dx' must have shape"):
        ops.activation_backward(x, "linear", dx=np.zeros(6, np.float32))


def test_ops_backward_needs_saved_tensors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="argument 'y' \\(the forward output\\) is required for "
                                         "activation 'sigmoid'"):
        ops.activation_backward(x, "sigmoid", x=x)
    with pytest.raises(ValueError, match="argument 'x' \\(the forward input\\) is required"):
        ops.activation_backward(x, "gelu", y=x)


def test_core_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    y = np.zeros((2, 3), np.float32)
    relu = _core.Act.relu
    with pytest.raises(TypeError, match="act_forward: argument 'x' must be a C-contiguous float32 "
                                        r"array of shape \(\.\.\.\).*got float64"):
        _core.act_forward(y, x.astype(np.float64), relu)
    with pytest.raises(TypeError, match="act_forward: argument 'x' must be .* got list"):
        _core.act_forward(y, [1.0, 2.0], relu)
    with pytest.raises(ValueError, match=r"act_forward: argument 'y' .* shape x.shape = \(2, 3\), "
                                         r"got float32 array of shape \(3, 2\)"):
        _core.act_forward(np.zeros((3, 2), np.float32), x, relu)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="act_forward: argument 'y' is read-only"):
        _core.act_forward(ro, x, relu)
    with pytest.raises(ValueError, match="act_forward: argument 'x' must be C-contiguous"):
        _core.act_forward(np.zeros((3, 2), np.float32), y.T, relu)
    with pytest.raises(ValueError, match="act_forward: argument 'x' is empty"):
        _core.act_forward(np.zeros((0,), np.float32), np.zeros((0,), np.float32), relu)
    buf = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="act_forward: argument 'y' must not share memory with 'x'"):
        _core.act_forward(buf[1:], buf[:-1], relu)
    with pytest.raises(TypeError):
        _core.act_forward(y, x, "relu")  # _core takes the enum only
    with pytest.raises(ValueError, match="act_backward: argument 'y' is required for activation "
                                         "tanh"):
        _core.act_backward(y, x, None, None, _core.Act.tanh)
    with pytest.raises(ValueError, match="act_backward: argument 'x' is required for activation "
                                         "gelu"):
        _core.act_backward(y, x, None, x, _core.Act.gelu)
    with pytest.raises(ValueError, match="act_backward: argument 'dx' must not share memory with 'dy'"):
        _core.act_backward(y, y, None, None, _core.Act.linear)
    with pytest.raises(ValueError, match=r"softmax_forward: argument 'x' must be .*\(\.\.\., C\)"):
        _core.softmax_forward(np.zeros((), np.float32), np.zeros((), np.float32))
    with pytest.raises(ValueError, match="softmax_backward: argument 'y' .* shape dy.shape"):
        _core.softmax_backward(y, x, np.zeros((2, 4), np.float32))
