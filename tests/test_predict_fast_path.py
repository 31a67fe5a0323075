"""predict's fast paths give the general path's results bit for bit, and its errors.

The fast paths: _prepare_x for one finite float32 C-contiguous array, Plan.direct (layers'
forward called without the mask bookkeeping when no layer creates a mask),
Plan.chain_infer (a chain of single-input steps run without slots) and Plan.fresh_outs /
all_fresh (outputs returned without a copy). `general` turns them all off.
"""
import numpy as np
import pytest

import fastnn as fn
from fastnn.cli import mnist_cnn_model, mnist_mlp_model

L = fn.layers


def general(model, x):
    """predict(x) through the general path: x given as a list (so _prepare_x takes its
    general branch), every step through forward_masked, every output copied."""
    plan = model._plan_infer
    saved = plan.direct, plan.fresh_outs, plan.all_fresh, plan.chain_infer
    plan.direct, plan.fresh_outs, plan.all_fresh, plan.chain_infer = (
        None, [False] * len(saved[1]), False, None)
    try:
        return model.predict(x if isinstance(x, list) else [x])
    finally:
        plan.direct, plan.fresh_outs, plan.all_fresh, plan.chain_infer = saved


def assert_bitwise(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        a, b = list(a.values()), list(b.values())
    if isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_bitwise(u, v)
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def _check(model, x, fast_direct=True, chain=None):
    model.predict(x)  # builds a subclassed model
    assert (model._plan_infer.direct is not None) == fast_direct
    if chain is not None:
        assert (model._plan_infer.chain_infer is not None) == chain
    for batch in (x[:1], x) if not isinstance(x, list) else (x,):
        fast = model.predict(batch)
        assert_bitwise(fast, general(model, batch))
        assert_bitwise(fast, model.predict(batch))  # repeatable, nothing overwritten


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_mlp(rng):
    m = mnist_mlp_model([128], seed=0)
    m.build()
    assert m._plan_infer.fresh_outs == [True]
    _check(m, rng.random((32, 28, 28), dtype=np.float32), chain=True)


def test_mlp_compiled_softmax_stays_applied(rng):
    m = mnist_mlp_model([16], seed=0)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.random((8, 28, 28), dtype=np.float32)
    m.fit(x, rng.integers(0, 10, 8), epochs=1, verbose=0)
    p = m.predict(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    _check(m, x)


def test_cnn(rng):
    m = mnist_cnn_model(seed=0)
    m.build()
    _check(m, rng.random((32, 28, 28, 1), dtype=np.float32), chain=True)


@pytest.mark.parametrize("mask_zero", [True, False])
def test_transformer(rng, mask_zero):
    ids = rng.integers(1, 50, (6, 12)).astype(np.float32)
    ids[0, 7:] = 0
    m = fn.Sequential([L.PositionalEmbedding(12, 16, input_dim=50, mask_zero=mask_zero,
                                             input_shape=(12,)),
                       L.TransformerEncoder(2, 8, 32, dropout=0.1),
                       L.GlobalAveragePooling1D(), L.Dense(2, activation="softmax")], seed=0)
    m.build()
    # A layer that makes a padding mask keeps the general step path.
    _check(m, ids, fast_direct=not mask_zero)


def test_multi_input_functional(rng):
    a, b = fn.Input((5,), name="a"), fn.Input((3,), name="b")
    h = L.Concatenate()([L.Dense(4, activation="relu")(a), L.Dense(4)(b)])
    shared = L.Dense(4, activation="tanh")
    h = L.Add()([shared(h), shared(L.Dense(8)(h))])
    m = fn.Model([a, b], {"p": L.Dense(3, activation="softmax")(h), "h": L.Flatten()(h)}, seed=0)
    m.build()
    xs = [rng.standard_normal((7, 5)).astype(np.float32),
          rng.standard_normal((7, 3)).astype(np.float32)]
    _check(m, xs, chain=False)
    # Flatten returns a view of its input, so that output is copied.
    assert m._plan_infer.fresh_outs == [True, False]


def test_quantized(rng):
    for make, x in ((lambda: mnist_mlp_model([32], seed=0), rng.random((9, 28, 28), dtype=np.float32)),
                    (lambda: mnist_cnn_model(small=True, seed=0), rng.random((9, 28, 28, 1), dtype=np.float32))):
        m = make()
        m.build()
        _check(fn.quantization.quantize(m), x)
        _check(fn.quantization.quantize(m, "static", calibration_data=x), x)


def test_outputs_are_the_callers(rng):
    m = mnist_mlp_model([8], seed=0)
    m.build()
    x = rng.random((2, 28, 28), dtype=np.float32)
    p = m.predict(x)
    want = p.copy()
    p[...] = -1  # the caller owns it: the next call is unaffected
    q = m.predict(x)
    assert q is not p
    np.testing.assert_array_equal(q, want)


def test_subclass_overriding_forward_is_copied():
    class Twice(L.Dense):
        def forward(self, x, training=False):
            return super().forward(x, training) * 2

    m = fn.Sequential([Twice(3, input_shape=(4,))], seed=0)
    m.build()
    assert m._plan_infer.fresh_outs == [False]


@pytest.mark.parametrize("bad, msg", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x),
     "predict: argument 'x' contains NaN or infinite values"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 700, -np.inf, x),
     "predict: argument 'x' contains NaN or infinite values"),
    (lambda x: x[:, :, :27].copy(),
     r"predict: argument 'x' must have shape (N, 28, 28) for this model, got (2, 28, 27)"),
    (lambda x: x[:0], r"predict: argument 'x' is empty (shape (0, 28, 28))"),
    (lambda x: x[0, 0, 0],
     r"predict: argument 'x' must have shape (N, 28, 28) for this model, got (1,)"),
])
def test_bad_inputs_raise_as_before(rng, bad, msg):
    m = mnist_mlp_model([8], seed=0)
    m.build()
    x = bad(rng.random((2, 28, 28), dtype=np.float32)).astype(np.float32)
    with pytest.raises(ValueError) as e:
        m.predict(x)
    assert str(e.value) == msg


def test_other_inputs_still_accepted(rng):
    m = mnist_mlp_model([8], seed=0)
    m.build()
    x = rng.random((3, 28, 28), dtype=np.float32)
    want = m.predict(x)
    huge = np.full((1, 28, 28), 3e38, np.float32)  # finite: accepted (the outputs are NaN)
    assert_bitwise(m.predict(huge), general(m, huge))
    assert_bitwise(m.predict(x.astype(np.float64)), want)
    assert_bitwise(m.predict(np.asfortranarray(x)), want)


@pytest.mark.parametrize("n", [1, 7, 16, 33, 1000])
def test_all_finite_binding(n):
    from fastnn import _core
    x = np.linspace(-3e38, 3e38, n, dtype=np.float32)
    x[n // 2] = np.float32(1e-45)  # a denormal is finite
    assert _core.all_finite(x) and _core.all_finite(x.reshape(1, n, 1))
    for bad in (np.nan, np.inf, -np.inf):
        for i in {0, n // 2, n - 1}:
            y = x.copy()
            y[i] = bad
            assert not _core.all_finite(y)
    with pytest.raises(TypeError, match="all_finite: argument 'x'"):
        _core.all_finite(x.astype(np.float64))
