"""fastnn.reference checked in float64: gradients against central finite differences,
values against independent formulas. The C++ kernels are then tested against these."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastnn import reference as ref
from gradcheck import num_grad

ACTS = ["linear", "relu", "sigmoid", "tanh", "gelu"]


def away_from_zero(a, margin=1e-2):
    """Move entries of a out of (-margin, margin), so relu's kink is never straddled."""
    return np.where(np.abs(a) < margin, np.copysign(margin, a) + a, a)


def check(analytic, numeric, rtol=1e-6, atol=1e-7):
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


# ---- activations ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ACTS)
def test_activation_gradient(kind, rng):
    x = away_from_zero(rng.normal(scale=2.0, size=(3, 5)))
    dy = rng.normal(size=x.shape)
    y = ref.activation(x, kind)
    assert y.dtype == np.float64
    numeric = num_grad(lambda: float((ref.activation(x, kind) * dy).sum()), x)
    check(ref.activation_backward(dy, kind, x=x, y=y), numeric)


@pytest.mark.parametrize("kind", ACTS)
def test_activation_backward_adds(kind, rng):
    x = rng.normal(size=(4, 3))
    dy = rng.normal(size=x.shape)
    y = ref.activation(x, kind)
    dx = rng.normal(size=x.shape)
    expect = dx + ref.activation_backward(dy, kind, x=x, y=y)
    out = ref.activation_backward(dy, kind, x=x, y=y, dx=dx)
    assert out is dx
    np.testing.assert_array_equal(out, expect)


def test_activation_values():
    x = np.array([-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0])
    sig = np.array([1 / (1 + math.exp(-v)) for v in x])
    np.testing.assert_allclose(ref.sigmoid(x), sig, rtol=1e-15)
    np.testing.assert_allclose(ref.tanh(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_array_equal(ref.relu(x), np.maximum(x, 0))
    gelu = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(ref.gelu(x), gelu, rtol=1e-14, atol=1e-15)  # 1 + erf cancels in the tail
    assert ref.gelu(np.array([1.0]))[0] == pytest.approx(0.8413447460685429, rel=1e-15)
    # No overflow warnings from the stable sigmoid at huge |x|.
    with np.errstate(over="raise"):
        np.testing.assert_array_equal(ref.sigmoid(np.array([-1e4, 1e4])), [0.0, 1.0])


def test_softmax_gradient_and_values(rng):
    x = rng.normal(scale=3.0, size=(4, 6))
    dy = rng.normal(size=x.shape)
    y = ref.softmax(x)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(y, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-14)
    numeric = num_grad(lambda: float((ref.softmax(x) * dy).sum()), x)
    check(ref.softmax_backward(dy, y), numeric)


# ---- dense ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ACTS)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradient(kind, bias, rng):
    N, IC, OC = 3, 4, 5
    x = rng.normal(size=(N, IC))
    w = rng.normal(size=(IC, OC)) / 2
    b = rng.normal(size=OC) if bias else None
    dy = rng.normal(size=(N, OC))
    z = np.empty((N, OC))
    y = ref.dense(x, w, b, kind, z=z)
    assert np.min(np.abs(z)) > 1e-4  # the relu kink is not within reach of the FD step
    np.testing.assert_allclose(z, x @ w + (b if bias else 0), rtol=1e-15)

    def loss():
        return float((ref.dense(x, w, b, kind) * dy).sum())

    dx, dw, db = ref.dense_backward(dy, x, w, y=y, z=z, activation=kind, has_bias=bias)
    check(dx, num_grad(loss, x))
    check(dw, num_grad(loss, w))
    if bias:
        check(db, num_grad(loss, b))
    else:
        assert db is None


def test_dense_nd_and_accumulate(rng):
    x = rng.normal(size=(2, 3, 4))
    w = rng.normal(size=(4, 5))
    b = rng.normal(size=5)
    dy = rng.normal(size=(2, 3, 5))
    y = ref.dense(x, w, b, "tanh")
    assert y.shape == (2, 3, 5)

    def loss():
        return float((ref.dense(x, w, b, "tanh") * dy).sum())

    acc = [rng.normal(size=s) for s in (x.shape, w.shape, b.shape)]
    start = [a.copy() for a in acc]
    dx, dw, db = ref.dense_backward(dy, x, w, y=y, activation="tanh",
                                    dx=acc[0], dw=acc[1], db=acc[2])
    assert dx is acc[0] and dw is acc[1] and db is acc[2]
    check(dx - start[0], num_grad(loss, x))
    check(dw - start[1], num_grad(loss, w))
    check(db - start[2], num_grad(loss, b))


# ---- losses -----------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_cross_entropy_labels(reduction, rng):
    N, C = 4, 5
    x = rng.normal(scale=2.0, size=(N, C))
    labels = rng.integers(0, C, N)
    loss, grad = ref.softmax_cross_entropy(x, labels, reduction)
    rows = [-math.log(math.exp(x[i, labels[i]]) / np.exp(x[i]).sum()) for i in range(N)]
    assert loss == pytest.approx(sum(rows) / (N if reduction == "mean" else 1), rel=1e-14)
    check(grad, num_grad(lambda: ref.softmax_cross_entropy(x, labels, reduction)[0], x))


def test_softmax_cross_entropy_dense_targets(rng):
    N, C = 3, 6
    x = rng.normal(scale=2.0, size=(N, C))
    t = rng.uniform(size=(N, C))
    t[0, 2] = 0.0  # a zero target, and rows that do not sum to 1
    loss, grad = ref.softmax_cross_entropy(x, t)
    check(grad, num_grad(lambda: ref.softmax_cross_entropy(x, t)[0], x))
    # One-hot targets give the same as integer labels.
    labels = rng.integers(0, C, N)
    onehot = np.eye(C)[labels]
    a, ga = ref.softmax_cross_entropy(x, labels)
    b, gb = ref.softmax_cross_entropy(x, onehot)
    assert a == pytest.approx(b, rel=1e-15)
    np.testing.assert_allclose(ga, gb, rtol=1e-15)


def test_softmax_cross_entropy_masked_logit():
    x = np.array([[0.0, -np.inf, 1.0]])
    loss, grad = ref.softmax_cross_entropy(x, np.array([2]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad)) and grad[0, 1] == 0.0


def test_categorical_cross_entropy(rng):
    N, C = 3, 4
    p = rng.uniform(0.05, 1.0, size=(N, C))
    t = rng.uniform(size=(N, C))
    loss, grad = ref.categorical_cross_entropy(p, t)
    assert loss == pytest.approx(-(t * np.log(p)).sum() / N, rel=1e-14)
    check(grad, num_grad(lambda: ref.categorical_cross_entropy(p, t)[0], p))


def test_binary_cross_entropy_with_logits(rng):
    x = rng.normal(scale=3.0, size=(3, 4))
    t = rng.uniform(size=x.shape)
    loss, grad = ref.binary_cross_entropy_with_logits(x, t)
    s = 1 / (1 + np.exp(-x))
    naive = -(t * np.log(s) + (1 - t) * np.log(1 - s)).mean()
    assert loss == pytest.approx(naive, rel=1e-12)
    check(grad, num_grad(lambda: ref.binary_cross_entropy_with_logits(x, t)[0], x))
    big, gbig = ref.binary_cross_entropy_with_logits(np.array([1e4, -1e4]), np.array([0.0, 1.0]),
                                                     "sum")
    assert big == 2e4 and np.all(np.isfinite(gbig))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mean_squared_error(reduction, rng):
    p = rng.normal(size=(2, 3, 2))
    t = rng.normal(size=p.shape)
    loss, grad = ref.mean_squared_error(p, t, reduction)
    assert loss == pytest.approx(((p - t) ** 2).sum() / (p.size if reduction == "mean" else 1))
    check(grad, num_grad(lambda: ref.mean_squared_error(p, t, reduction)[0], p))


def test_reference_rejects_unknowns():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ref.activation(np.zeros(3), "swish")
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        ref.mean_squared_error(np.zeros(3), np.zeros(3), "none")
