"""Loss kernels (float32) against fastnn.reference (run in float64)."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import _core, ops
from fastnn import reference as ref

IMPLS = [pytest.param(_core, id="tuned"), pytest.param(_core.plain, id="plain")]
EPS = float(np.finfo(np.float32).eps)
XENT_SHAPES = [(1, 1), (1, 10), (3, 2), (32, 10), (257, 17), (64, 1000), (5000, 10)]


def onehot(labels, C):
    return np.eye(C, dtype=np.float64)[labels]


# ---- softmax cross-entropy ------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,C", XENT_SHAPES)
@pytest.mark.parametrize("targets", ["labels", "onehot", "soft"])
def test_softmax_xent(impl, N, C, targets, rng, tol):
    x = rng.normal(scale=3.0, size=(N, C)).astype(np.float32)
    labels = rng.integers(0, C, N).astype(np.int32)
    if targets == "soft":  # rows that do not sum to 1, with zeros
        t = (rng.uniform(size=(N, C)) * (rng.uniform(size=(N, C)) > 0.3)).astype(np.float32)
    else:
        t = onehot(labels, C).astype(np.float32)
    scale = np.float32(1.0 / N)
    d0 = rng.normal(size=(N, C)).astype(np.float32)
    d = d0.copy()
    probs = np.empty((N, C), np.float32)
    if targets == "labels":
        loss = impl.softmax_xent(d, probs, x, labels, scale)
    else:
        loss = impl.softmax_xent_dense(d, probs, x, t, scale)
    want, g = ref.softmax_cross_entropy(x.astype(np.float64), t.astype(np.float64), "sum")
    tsum = t.astype(np.float64).sum()
    # Per row: log of a C-term sum, weighted by the row's targets.
    assert abs(loss - want) <= tol(C) * (abs(want) + tsum) + 1e-30
    np.testing.assert_allclose(probs, ref.softmax(x.astype(np.float64)), rtol=tol(C), atol=1e-37)
    rows = t.astype(np.float64).sum(1, keepdims=True) + 1
    assert np.all(np.abs(d - (d0 + scale * g)) <= 2 * EPS * np.abs(d0) + tol(C) * scale * rows)


@pytest.mark.parametrize("impl", IMPLS)
def test_softmax_xent_outputs_are_optional(impl, rng):
    x = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6).astype(np.int32)
    d, p = np.zeros_like(x), np.zeros_like(x)
    full = impl.softmax_xent(d, p, x, labels)
    assert impl.softmax_xent(None, None, x, labels) == full
    d2 = np.zeros_like(x)
    assert impl.softmax_xent(d2, None, x, labels) == full
    np.testing.assert_allclose(d2, d, rtol=0, atol=2 * EPS)  # probs recomputed, same formula
    t = onehot(labels, 5).astype(np.float32)
    d3 = np.zeros_like(x)
    assert impl.softmax_xent_dense(d3, None, x, t) == pytest.approx(full, rel=1e-6)
    np.testing.assert_allclose(d3, d, rtol=0, atol=2 * EPS)


def test_softmax_xent_gradient_near_certainty():
    # p(label) = 1 - 1e-6: the gradient there must be -1e-6, not lost to cancellation.
    x = np.array([[np.log(1e6), 0.0]], np.float32)
    d = np.zeros_like(x)
    _core.softmax_xent(d, None, x, np.array([0], np.int32))
    np.testing.assert_allclose(d, [[-1e-6, 1e-6]], rtol=1e-4)


def test_extreme_logits_give_finite_losses_and_gradients():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4]], np.float32)
    labels = np.array([0, 0, 2])
    loss, g = ops.softmax_cross_entropy(x, labels, reduction="sum")
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert loss == pytest.approx(0.0 + (2e4 + np.log(2)) + np.log(3), rel=1e-6)
    np.testing.assert_allclose(g[0], [0, 0, 0], atol=1e-30)
    np.testing.assert_allclose(g[1], [-1, 0.5, 0.5])
    loss, g = ops.softmax_cross_entropy(x, onehot(labels, 3) * 0.9 + 0.1 / 3, reduction="sum")
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    loss, g = ops.binary_cross_entropy_with_logits(np.array([1e4, -1e4, 1e4], np.float32),
                                                   np.array([0.0, 1.0, 1.0]), reduction="sum")
    assert loss == pytest.approx(2e4) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, [1.0, -1.0, 0.0])
    loss, g = ops.categorical_cross_entropy(np.array([[0.0, 1.0]], np.float32), np.array([0]))
    assert loss == pytest.approx(-np.log(1e-7)) and np.all(np.isfinite(g))


def test_masked_logits_with_zero_targets():
    x = np.array([[0.0, -np.inf, 2.0]], np.float32)
    t = np.array([[0.5, 0.0, 0.5]], np.float32)
    loss, g = ops.softmax_cross_entropy(x, t)
    want, gw = ref.softmax_cross_entropy(x.astype(np.float64), t.astype(np.float64))
    assert loss == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(g, gw, atol=1e-7)


# ---- elementwise losses ---------------------------------------------------------------

ELEM_SHAPES = [(1,), (7,), (3, 17), (257, 10), (2, 3, 5), (100_003,)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", ELEM_SHAPES)
def test_bce_logits(impl, shape, rng):
    x = rng.normal(scale=4.0, size=shape).astype(np.float32)
    x.reshape(-1)[:4] = [0.0, 30.0, -30.0, 1e4][: x.size]
    t = rng.uniform(size=shape).astype(np.float32)
    n = x.size
    d0 = rng.normal(size=shape).astype(np.float32)
    d = d0.copy()
    loss = impl.bce_logits(d, x, t, 1.0 / n)
    want, g = ref.binary_cross_entropy_with_logits(x.astype(np.float64), t.astype(np.float64),
                                                   "sum")
    # Each term has a few ulp of error relative to its parts; spans are summed in float.
    parts = np.abs(x.astype(np.float64)) * (1 + t) + np.log(2)
    assert abs(loss - want) <= 8 * EPS * parts.sum() + 1e-30
    assert np.all(np.abs(d - (d0 + g / n)) <= 2 * EPS * np.abs(d0) + 4 * EPS / n)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", ELEM_SHAPES)
def test_mse(impl, shape, rng):
    p = rng.normal(size=shape).astype(np.float32)
    t = rng.normal(size=shape).astype(np.float32)
    d0 = rng.normal(size=shape).astype(np.float32)
    d = d0.copy()
    loss = impl.mse(d, p, t, 0.5)
    pd, td = p.astype(np.float64), t.astype(np.float64)
    want = ((pd - td) ** 2).sum()
    assert loss == pytest.approx(want, rel=8 * EPS)
    bound = 2 * EPS * (np.abs(d0) + np.abs(pd - td))
    assert np.all(np.abs(d - (d0 + (pd - td))) <= bound)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,C", [(1, 1), (3, 10), (257, 17)])
def test_xent_probs(impl, N, C, rng):
    p = rng.uniform(size=(N, C)).astype(np.float32)
    p.reshape(-1)[0] = 0.0  # clipped to 1e-7
    t = (rng.uniform(size=(N, C)) * (rng.uniform(size=(N, C)) > 0.5)).astype(np.float32)
    d = np.zeros_like(p)
    loss = impl.xent_probs(d, p, t, 2.0)
    want, g = ref.categorical_cross_entropy(p.astype(np.float64), t.astype(np.float64), "sum")
    assert loss == pytest.approx(want, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(d, 2 * g, rtol=2 * EPS)


def test_mse_exact_on_small_integers(rng):
    p = rng.integers(-50, 50, size=(31, 7)).astype(np.float32)
    t = rng.integers(-50, 50, size=(31, 7)).astype(np.float32)
    loss, g = ops.mean_squared_error(p, t, reduction="sum")
    diff = p.astype(np.int64) - t.astype(np.int64)
    assert loss == float((diff ** 2).sum())
    np.testing.assert_array_equal(g, 2 * diff)


# ---- determinism ----------------------------------------------------------------------

def test_losses_same_bits_for_1_and_2_threads(rng, num_threads):
    N, C = 4099, 10  # several blocks of rows
    x = rng.normal(scale=3.0, size=(N, C)).astype(np.float32)
    labels = rng.integers(0, C, N)
    soft = rng.uniform(size=(N, C)).astype(np.float32)
    e = rng.normal(size=300_007).astype(np.float32)  # several blocks of elements
    te = rng.uniform(size=e.size).astype(np.float32)
    probs = ops.softmax(x)
    runs = []
    for t in (1, 2):
        num_threads(t)
        runs.append([ops.softmax_cross_entropy(x, labels), ops.softmax_cross_entropy(x, soft),
                     ops.categorical_cross_entropy(probs, labels),
                     ops.binary_cross_entropy_with_logits(e, te), ops.mean_squared_error(e, te)])
    for (l1, g1), (l2, g2) in zip(*runs):
        assert l1 == l2
        np.testing.assert_array_equal(g1, g2)


# ---- the Python wrappers ---------------------------------------------------------------

def test_ops_reductions_and_agreement_with_reference(rng):
    x = rng.normal(size=(8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    lm, gm = ops.softmax_cross_entropy(x, labels)
    ls, gs = ops.softmax_cross_entropy(x, labels, reduction="sum")
    assert isinstance(lm, float)
    assert lm == pytest.approx(ls / 8, rel=1e-12)
    np.testing.assert_allclose(gm * 8, gs, rtol=2 * EPS)
    lr, gr = ref.softmax_cross_entropy(x.astype(np.float64), labels)
    assert lm == pytest.approx(lr, rel=1e-6)
    np.testing.assert_allclose(gm, gr, atol=1e-7)
    # Float labels holding integers, one-hot rows and Python lists are accepted.
    assert ops.softmax_cross_entropy(x, labels.astype(np.float64))[0] == lm
    assert ops.softmax_cross_entropy(x.tolist(), onehot(labels, 5))[0] == pytest.approx(lm)
    # BCE / MSE "mean" is over all elements.
    t = rng.uniform(size=x.shape)
    lb, gb = ops.binary_cross_entropy_with_logits(x, t)
    lbr, gbr = ref.binary_cross_entropy_with_logits(x.astype(np.float64), t)
    assert lb == pytest.approx(lbr, rel=1e-6)
    np.testing.assert_allclose(gb, gbr, atol=1e-8)
    lq, gq = ops.mean_squared_error(x, t)
    lqr, gqr = ref.mean_squared_error(x.astype(np.float64), t)
    assert lq == pytest.approx(lqr, rel=1e-6)
    np.testing.assert_allclose(gq, gqr, atol=1e-8)
    lc, gc = ops.categorical_cross_entropy(ops.softmax(x), labels)
    assert lc == pytest.approx(lm, rel=1e-5)


# ---- bad input --------------------------------------------------------------------------

def test_labels_out_of_range():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"softmax_xent: argument 'labels' has value 4 at index 1, "
                                         r"outside \[0, C\) = \[0, 4\)"):
        _core.softmax_xent(None, None, x, np.array([0, 4, 1], np.int32))
    with pytest.raises(ValueError, match="argument 'labels' has value -1 at index 2"):
        _core.plain.softmax_xent(None, None, x, np.array([0, 1, -1], np.int32))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: argument 'labels' has label "
                                         r".*7.* outside \[0, 4\)"):
        ops.softmax_cross_entropy(x, [0, 7, 1])
    with pytest.raises(ValueError, match="argument 'labels' must hold integer class labels"):
        ops.softmax_cross_entropy(x, [0.5, 1, 2])


def test_ops_loss_bad_input():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="argument 'reduction' must be 'mean' or 'sum', got 'none'"):
        ops.softmax_cross_entropy(x, [0, 1, 2], reduction="none")
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: argument 'labels' must have "
                                         r"shape \(N,\) = \(3,\)"):
        ops.softmax_cross_entropy(x, [0, 1])
    with pytest.raises(ValueError, match=r"argument 'labels' given as targets must have shape "
                                         r"\(N, C\) = \(3, 4\), got \(3, 5\)"):
        ops.softmax_cross_entropy(x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: argument 'logits' must be 2-D"):
        ops.softmax_cross_entropy(np.zeros(4), [0])
    with pytest.raises(ValueError, match="softmax_cross_entropy: argument 'logits' is empty"):
        ops.softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, int))
    with pytest.raises(TypeError, match="argument 'labels' must be integer labels, got dtype <U1"):
        ops.softmax_cross_entropy(x, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="mean_squared_error: argument 'target' must have the shape "
                                         r"of 'pred', \(3, 4\), got \(4, 3\)"):
        ops.mean_squared_error(x, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="binary_cross_entropy_with_logits: argument 'logits' is "
                                         "empty"):
        ops.binary_cross_entropy_with_logits(np.zeros(0), np.zeros(0))


def test_core_loss_bad_input():
    x = np.zeros((3, 4), np.float32)
    labels = np.array([0, 1, 2], np.int32)
    with pytest.raises(TypeError, match=r"softmax_xent: argument 'labels' must be a C-contiguous "
                                        r"int32 array of shape \(N,\) = \(3,\), got int64"):
        _core.softmax_xent(None, None, x, labels.astype(np.int64))
    with pytest.raises(ValueError, match=r"softmax_xent: argument 'labels' .* \(N,\) = \(3,\), "
                                         r"got int32 array of shape \(2,\)"):
        _core.softmax_xent(None, None, x, labels[:2].copy())
    with pytest.raises(TypeError, match="softmax_xent: argument 'logits' must be .* float32"):
        _core.softmax_xent(None, None, x.astype(np.float64), labels)
    with pytest.raises(ValueError, match=r"softmax_xent: argument 'dlogits' .* \(N, C\) = \(3, 4\)"):
        _core.softmax_xent(np.zeros((4, 3), np.float32), None, x, labels)
    ro = np.zeros((3, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="softmax_xent: argument 'probs' is read-only"):
        _core.softmax_xent(None, ro, x, labels)
    with pytest.raises(ValueError, match="softmax_xent: argument 'dlogits' must not share memory "
                                         "with 'logits'"):
        _core.softmax_xent(x, None, x, labels)
    with pytest.raises(ValueError, match="softmax_xent: argument 'grad_scale' must be finite"):
        _core.softmax_xent(None, None, x, labels, float("nan"))
    with pytest.raises(ValueError, match=r"softmax_xent_dense: argument 'targets' .* \(N, C\) = "
                                         r"\(3, 4\)"):
        _core.softmax_xent_dense(None, None, x, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"bce_logits: argument 'targets' .* logits.shape = \(3, 4\)"):
        _core.bce_logits(None, x, np.zeros(12, np.float32))
    with pytest.raises(ValueError, match="mse: argument 'dpred' must not share memory with 'pred'"):
        _core.mse(x, x, np.zeros_like(x))
    with pytest.raises(ValueError, match="xent_probs: argument 'dprobs' must be C-contiguous"):
        _core.xent_probs(np.zeros((4, 3), np.float32).T, x, x.copy())
