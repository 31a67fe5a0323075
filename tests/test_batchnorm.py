"""Batch normalisation: twin by finite differences, kernels vs twin, running statistics,
training vs inference, threads, the layer and its saved state, bad input."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import _core, ops
from fastnn import reference as ref
from gradcheck import num_grad

H = 1e-5  # finite-difference step

L = fn.layers
EPS32 = np.finfo(np.float32).eps


@pytest.fixture
def threads():
    n = fn.get_num_threads()
    yield
    fn.set_num_threads(n)




def params(c, rng, dtype=np.float32):
    return (rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype))


# ---- the twin, by central finite differences in float64 ----------------------------------

@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 2, 4)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_reference_gradients(shape, training, affine):
    rng = np.random.default_rng(0)
    c = shape[-1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = params(c, rng, np.float64) if affine else (None, None)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    r = rng.standard_normal(shape)

    def loss():
        return np.sum(ref.batch_norm(x, gamma, beta, rm.copy(), rv.copy(), training)[0] * r)

    _, saved = ref.batch_norm(x, gamma, beta, rm.copy(), rv.copy(), training)
    dx, dg, db = ref.batch_norm_backward(r, x, gamma, saved)
    np.testing.assert_allclose(dx, num_grad(loss, x, H), rtol=1e-6, atol=1e-8)
    if affine:
        np.testing.assert_allclose(dg, num_grad(loss, gamma, H), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, num_grad(loss, beta, H), rtol=1e-6, atol=1e-8)


# ---- C++ kernels vs the twin, float32 ----------------------------------------------------

SHAPES = [(1, 5), (7, 3), (32, 128), (256, 10), (2, 5, 7, 3), (1, 9, 9, 33), (3, 4, 5, 300),
          (8, 26, 26, 32)]


def tol(m):
    return 8 * EPS32 * np.sqrt(m)


@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_and_backward_match_reference(shape):
    rng = np.random.default_rng(1)
    c = shape[-1]
    m = int(np.prod(shape[:-1]))
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    gamma, beta = params(c, rng)
    rm, rv = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    rm64, rv64 = rm.astype(np.float64), rv.astype(np.float64)
    y, saved = ops.batch_norm(x, gamma, beta, rm, rv, True, momentum=0.9, epsilon=1e-3)
    x64 = x.astype(np.float64)
    yr, sr = ref.batch_norm(x64, gamma, beta, rm64, rv64, True, momentum=0.9, epsilon=1e-3)
    np.testing.assert_allclose(y, yr, rtol=tol(1), atol=tol(1) * 8)
    np.testing.assert_allclose(saved.mean, sr.mean, rtol=tol(1), atol=tol(1))
    np.testing.assert_allclose(saved.invstd, sr.invstd, rtol=tol(1))
    assert saved.training is True
    np.testing.assert_allclose(rm, rm64, rtol=tol(1), atol=tol(1))
    np.testing.assert_allclose(rv, rv64, rtol=tol(1), atol=tol(1))
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, dg, db = ops.batch_norm_backward(dy, x, gamma, saved)
    dxr, dgr, dbr = ref.batch_norm_backward(dy.astype(np.float64), x64, gamma, sr)
    np.testing.assert_allclose(dx, dxr, rtol=tol(m), atol=tol(m))
    np.testing.assert_allclose(dg, dgr, rtol=tol(m), atol=tol(m) * np.sqrt(m))
    np.testing.assert_allclose(db, dbr, rtol=tol(m), atol=tol(m) * np.sqrt(m))


@pytest.mark.parametrize("shape", [(7, 3), (2, 5, 7, 3), (2, 3, 3, 130)])
@pytest.mark.parametrize("affine", [True, False])
def test_inference_forward_and_backward_match_reference(shape, affine):
    rng = np.random.default_rng(2)
    c = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = params(c, rng) if affine else (None, None)
    rm, rv = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    y, saved = ops.batch_norm(x, gamma, beta, rm, rv, False)
    yr, sr = ref.batch_norm(x.astype(np.float64), gamma, beta, rm, rv, False)
    np.testing.assert_allclose(y, yr, rtol=tol(1), atol=tol(1) * 8)
    np.testing.assert_array_equal(saved.mean, rm)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, dg, db = ops.batch_norm_backward(dy, x, gamma, saved)
    dxr, dgr, dbr = ref.batch_norm_backward(dy.astype(np.float64), x.astype(np.float64), gamma, sr)
    m = x.size // c
    np.testing.assert_allclose(dx, dxr, rtol=tol(1), atol=tol(1))
    np.testing.assert_allclose(dg, dgr, rtol=tol(m), atol=tol(m) * np.sqrt(m))
    np.testing.assert_allclose(db, dbr, rtol=tol(m), atol=tol(m) * np.sqrt(m))


def test_large_mean_small_variance_is_stable():
    # float32 sums of x and x² would lose the variance entirely here.
    rng = np.random.default_rng(3)
    x = (1000 + 1e-2 * rng.standard_normal((4096, 5))).astype(np.float32)
    _, saved = ops.batch_norm(x, None, None, None, None, True, epsilon=0.0)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(saved.mean, x64.mean(0), rtol=1e-7)
    np.testing.assert_allclose(saved.invstd, 1 / x64.std(0), rtol=1e-5)


def test_batch_of_one_gives_beta():
    x = np.array([[1.0, -2.0, 3.5]], np.float32)
    gamma, beta = np.full(3, 2.0, np.float32), np.array([0.5, -1.0, 4.0], np.float32)
    y, saved = ops.batch_norm(x, gamma, beta, None, None, True)
    np.testing.assert_array_equal(y, beta[None])
    np.testing.assert_array_equal(saved.mean, x[0])


def test_running_statistics_follow_keras():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 4)).astype(np.float32) * 3 + 1
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    ops.batch_norm(x, None, None, rm, rv, True)  # Keras defaults: momentum 0.99
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(rm, 0.01 * x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rv, 0.99 + 0.01 * x64.var(0), rtol=1e-6)  # biased variance
    # momentum 0: the running statistics become the batch's; inference then equals training.
    y_train, _ = ops.batch_norm(x, None, None, rm, rv, True, momentum=0.0)
    np.testing.assert_allclose(rv, x64.var(0), rtol=1e-6)
    y_inf, _ = ops.batch_norm(x, None, None, rm, rv, False)
    np.testing.assert_allclose(y_inf, y_train, rtol=1e-5, atol=1e-5)
    # Inference does not touch the running statistics; training and inference differ.
    before = rm.copy(), rv.copy()
    y2, _ = ops.batch_norm(x * 2, None, None, rm, rv, False)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])
    assert not np.allclose(y2, ops.batch_norm(x * 2, None, None, None, None, True)[0], atol=1e-2)


def test_naive_twins_agree():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 140)).astype(np.float32)
    gamma, beta = params(140, rng)
    out = []
    for naive in (False, True):
        y, mu, r = np.empty_like(x), np.empty(140, np.float32), np.empty(140, np.float32)
        rm, rv = np.zeros(140, np.float32), np.ones(140, np.float32)
        _core.batch_norm_forward_train(y, mu, r, rm, rv, x, gamma, beta, 0.9, 1e-3, naive=naive)
        yi = np.empty_like(x)
        _core.batch_norm_forward_infer(yi, None, None, x, gamma, beta, rm, rv, 1e-3, naive=naive)
        dx, dg, db = np.zeros_like(x), np.zeros(140, np.float32), np.zeros(140, np.float32)
        _core.batch_norm_backward(dx, dg, db, np.cos(x), mu, r, x, gamma, True, naive=naive)
        out.append((y, mu, r, rm, rv, yi, dx, dg, db))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_backward_adds_and_skips_what_is_not_needed():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    gamma, beta = params(6, rng)
    _, saved = ops.batch_norm(x, gamma, beta, None, None, True)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dg, db = ops.batch_norm_backward(dy, x, gamma, saved)
    dx2, dg2, db2 = ops.batch_norm_backward(dy, x, gamma, saved, dx=dx.copy(), dgamma=dg.copy(),
                                            dbeta=db.copy())
    np.testing.assert_allclose(dx2, 2 * dx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dg2, 2 * dg, rtol=1e-6)
    np.testing.assert_allclose(db2, 2 * db, rtol=1e-6)
    only_dx = np.zeros_like(x)
    _core.batch_norm_backward(only_dx, None, None, dy, saved.mean, saved.invstd, x, gamma, True)
    np.testing.assert_array_equal(only_dx, dx)
    g = np.zeros(6, np.float32)
    _core.batch_norm_backward(None, g, None, dy, saved.mean, saved.invstd, x, gamma, True)
    np.testing.assert_array_equal(g, dg)


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_accumulate_false_overwrites_dx(naive, training):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((40, 150)).astype(np.float32)
    gamma, beta = params(150, rng)
    rm, rv = np.zeros(150, np.float32), np.ones(150, np.float32)
    _, saved = ops.batch_norm(x, gamma, beta, rm, rv, training)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    want = ops.batch_norm_backward(dy, x, gamma, saved, dx=np.zeros_like(x))[0]
    dx = np.full(x.shape, np.nan, np.float32)
    _core.batch_norm_backward(dx, None, None, dy, saved.mean, saved.invstd, x, gamma, training,
                              False, naive=naive)
    np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(64, 26, 26, 32), (16, 7, 7, 300), (20000, 3)])
def test_one_and_two_threads_are_bitwise_identical(shape, threads):
    rng = np.random.default_rng(7)
    c = shape[-1]
    x = (rng.standard_normal(shape) + 3).astype(np.float32)
    gamma, beta = params(c, rng)
    dy = rng.standard_normal(shape).astype(np.float32)
    res = []
    for t in (1, 2):
        fn.set_num_threads(t)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        y, saved = ops.batch_norm(x, gamma, beta, rm, rv, True)
        yi, _ = ops.batch_norm(x, gamma, beta, rm, rv, False)
        res.append((y, saved.mean, saved.invstd, rm, rv, yi,
                    *ops.batch_norm_backward(dy, x, gamma, saved)))
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


# ---- bad input ---------------------------------------------------------------------------

def test_bad_input_is_named():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g, b = params(3, rng)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'x' must have at least 2 dimensions"):
        ops.batch_norm(x[0], g, b, rm, rv, True)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'gamma' must be a C-contiguous float32 array of shape \(C,\) = \(3,\)"):
        ops.batch_norm(x, np.ones(4), b, rm, rv, True)
    with pytest.raises(TypeError, match=r"batch_norm: argument 'running_mean' must be a C-contiguous float32"):
        ops.batch_norm(x, g, b, np.zeros(3), rv, True)  # written: never converted
    with pytest.raises(ValueError, match=r"batch_norm: argument 'running_var' is read-only"):
        ro = rv.copy()
        ro.flags.writeable = False
        ops.batch_norm(x, g, b, rm, ro, True)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'momentum' must be in \[0, 1\]"):
        ops.batch_norm(x, g, b, rm, rv, True, momentum=1.5)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'epsilon' must be a finite number >= 0"):
        ops.batch_norm(x, g, b, rm, rv, False, epsilon=-1.0)
    with pytest.raises(ValueError, match=r"training=False needs 'running_mean' and 'running_var'"):
        ops.batch_norm(x, g, b, None, None, False)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'out' must have shape \(4, 3\)"):
        ops.batch_norm(x, g, b, rm, rv, True, out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"batch_norm: argument 'out' must be C-contiguous"):
        ops.batch_norm(x, g, b, rm, rv, True, out=np.empty((3, 4), np.float32).T)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'out' must not share memory with 'x'"):
        ops.batch_norm(x, g, b, rm, rv, True, out=x)
    with pytest.raises(ValueError, match=r"batch_norm: argument 'x' is empty"):
        ops.batch_norm(np.zeros((0, 3), np.float32), g, b, rm, rv, True)
    _, saved = ops.batch_norm(x, g, b, rm, rv, True)
    with pytest.raises(ValueError, match=r"batch_norm_backward: argument 'dy' must have the shape of 'x'"):
        ops.batch_norm_backward(x[:2], x, g, saved)
    with pytest.raises(TypeError, match=r"argument 'saved' must be the \(mean, invstd, training\)"):
        ops.batch_norm_backward(x, x, g, saved.mean)
    with pytest.raises(ValueError, match=r"batch_norm_backward: argument 'dgamma' must be a C-contiguous float32 array of shape \(C,\)"):
        ops.batch_norm_backward(x, x, g, saved, dgamma=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"batch_norm_backward: argument 'dx' must not share memory with 'dy'"):
        d = x.copy()
        _core.batch_norm_backward(d, None, None, d, saved.mean, saved.invstd, x, g, True)


# ---- the layer ---------------------------------------------------------------------------

def bind(layer, input_shape, seed=0):
    layer._build(input_shape)
    n = layer.param_count
    layer.bind(np.zeros(n, np.float32), np.zeros(n, np.float32), 0)
    layer.initialize(np.random.default_rng(seed))
    return layer


def test_layer_training_and_inference():
    rng = np.random.default_rng(9)
    layer = bind(L.BatchNormalization(momentum=0.9), (5, 5, 6))
    assert layer.param_count == 12  # gamma and beta; the moving statistics are state
    np.testing.assert_array_equal(layer.gamma, 1)
    np.testing.assert_array_equal(layer.beta, 0)
    np.testing.assert_array_equal(layer.moving_mean, 0)
    np.testing.assert_array_equal(layer.moving_variance, 1)
    layer.gamma[...] = rng.uniform(0.5, 1.5, 6)
    layer.beta[...] = rng.standard_normal(6)
    x = (rng.standard_normal((4, 5, 5, 6)) * 2 + 3).astype(np.float32)
    rm, rv = np.zeros(6), np.ones(6)
    yr, sr = ref.batch_norm(x.astype(np.float64), layer.gamma, layer.beta, rm, rv, True, momentum=0.9)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.moving_mean, rm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, rv, rtol=1e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(dy)
    dxr, dgr, dbr = ref.batch_norm_backward(dy.astype(np.float64), x.astype(np.float64), layer.gamma, sr)
    np.testing.assert_allclose(dx, dxr, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.dgamma, dgr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.dbeta, dbr, rtol=1e-4, atol=1e-4)
    # Inference uses (and keeps) the moving statistics.
    before = layer.moving_mean.copy()
    yi = layer.forward(x, training=False)
    np.testing.assert_array_equal(layer.moving_mean, before)
    yir, _ = ref.batch_norm(x.astype(np.float64), layer.gamma, layer.beta, layer.moving_mean,
                            layer.moving_variance, False)
    np.testing.assert_allclose(yi, yir, rtol=1e-5, atol=1e-5)
    assert not np.allclose(yi, y, atol=1e-2)


def test_layer_on_dense_features_without_scale_or_center():
    rng = np.random.default_rng(10)
    layer = bind(L.BatchNormalization(center=False, scale=False), (7,))
    assert layer.param_count == 0
    x = rng.standard_normal((16, 7)).astype(np.float32)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(0), x.var(0) / (x.var(0) + 1e-3), rtol=1e-4)
    assert layer.backward(np.ones_like(x)).shape == x.shape


def test_frozen_layer_uses_and_keeps_moving_statistics():
    rng = np.random.default_rng(11)
    layer = bind(L.BatchNormalization(trainable=False), (3,))
    layer.moving_mean[...] = [1, 2, 3]
    layer.moving_variance[...] = [4, 5, 6]
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, (x - [1, 2, 3]) / np.sqrt(np.array([4, 5, 6]) + 1e-3), rtol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean, [1, 2, 3])
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(dx, np.broadcast_to(1 / np.sqrt(np.array([4, 5, 6]) + 1e-3), x.shape),
                               rtol=1e-6)
    np.testing.assert_array_equal(layer.dgamma, 0)  # no parameter gradients when frozen


def test_layer_state_config_and_errors():
    layer = bind(L.BatchNormalization(axis=3, momentum=0.9, epsilon=1e-5, name="bn"), (4, 4, 8))
    st = layer.state()
    assert set(st) == {"moving_mean", "moving_variance"}
    assert st["moving_mean"] is layer.moving_mean  # loading writes in place
    cfg = layer.get_config()
    assert cfg["axis"] == 3 and cfg["momentum"] == 0.9 and cfg["epsilon"] == 1e-5
    assert cfg["center"] and cfg["scale"]
    clone = L.BatchNormalization.from_config(cfg)
    assert (clone.momentum, clone.epsilon, clone.axis) == (0.9, 1e-5, 3)
    with pytest.raises(ValueError, match=r"bn1: only the last axis \(channels last\) is supported: got axis=1"):
        L.BatchNormalization(axis=1, name="bn1")._build((4, 4, 8))
    with pytest.raises(ValueError, match=r"BatchNormalization: momentum must be in \[0, 1\]"):
        L.BatchNormalization(momentum=2)
    with pytest.raises(ValueError, match=r"BatchNormalization: epsilon must be a finite number"):
        L.BatchNormalization(epsilon=-1)


def test_model_saves_and_loads_moving_statistics(tmp_path):
    model = fn.Sequential([L.Input((6, 6, 3)), L.BatchNormalization(), L.MaxPooling2D(),
                           L.GlobalAveragePooling2D()], seed=0)
    model.build()
    bn = model.layers[1]
    bn.moving_mean[...] = [0.5, -1.0, 2.0]
    bn.moving_variance[...] = [1.5, 0.25, 4.0]
    bn.gamma[...] = [1.0, 2.0, 3.0]
    x = np.random.default_rng(12).standard_normal((4, 6, 6, 3)).astype(np.float32)
    y = model.predict(x)
    path = tmp_path / "bn.fastnn"
    model.save(path)
    loaded = fn.load_model(path)
    lbn = loaded.layers[1]
    np.testing.assert_array_equal(lbn.moving_mean, bn.moving_mean)
    np.testing.assert_array_equal(lbn.moving_variance, bn.moving_variance)
    np.testing.assert_array_equal(loaded.predict(x), y)


@pytest.mark.skipif(not hasattr(_core, "adam_step"),
                    reason="needs the dense, loss and optimizer kernels (not in this build)")
def test_model_with_batchnorm_trains_deterministically(threads, tmp_path):
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((96, 6, 6, 4)) * 4 + 3).astype(np.float32)
    y = (x[..., 0].mean(axis=(1, 2)) > 3).astype(np.int32)

    def run(t):
        fn.set_num_threads(t)
        model = fn.Sequential([L.Input((6, 6, 4)), L.BatchNormalization(), L.MaxPooling2D(),
                               L.Flatten(), L.Dense(16, activation="relu"),
                               L.BatchNormalization(), L.Dense(2, activation="softmax")], seed=1)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        hist = model.fit(x, y, batch_size=32, epochs=6, verbose=0, seed=2)
        return model, hist.history["loss"]

    m1, loss1 = run(1)
    m2, loss2 = run(2)
    assert loss1[-1] < loss1[0]
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    bn = m1.layers[1]
    np.testing.assert_array_equal(bn.moving_mean, m2.layers[1].moving_mean)
    assert np.all(bn.moving_mean > 0)  # moved towards the data mean (about 3)
    path = tmp_path / "bn.fastnn"
    m1.save(path)
    np.testing.assert_array_equal(fn.load_model(path).predict(x), m1.predict(x))
