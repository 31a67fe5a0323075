"""fastnn.pruning: schedules, masks through training/saving, strip_pruning, sparse
inference in predict, compact files, bad input."""
import os

import numpy as np
import pytest

import fastnn as fn
from fastnn import pruning


def mlp(seed=1, ic=64, hidden=32, out=5):
    m = fn.Sequential([fn.layers.Dense(hidden, activation="relu", input_shape=(ic,)),
                       fn.layers.Dense(out, activation="softmax")], seed=seed)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def data(n=256, ic=64, out=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ic)).astype(np.float32)
    y = (np.abs(x[:, :out]).argmax(1)).astype(np.int32)
    return x, y


def kernels(m):
    return [l.kernel for l in m._leaf_layers if hasattr(l, "kernel")]


def masks(m):
    return [e.mask.copy() for e in m._pruning.entries]


def assert_masked(m):
    for e in m._pruning.entries:
        assert np.all(e.var.value[e.mask == 0] == 0)


# --- schedules vs TF-MOT's formulas ----------------------------------------------------
def test_polynomial_decay_values():
    s = pruning.PolynomialDecay(0.1, 0.8, begin_step=10, end_step=110, power=3, frequency=20)
    for step in [0, 10, 30, 50, 60, 110, 130, 500]:
        p = min(1.0, max(0.0, (step - 10) / 100))
        want = 0.8 + (0.1 - 0.8) * (1 - p) ** 3
        should, sp = s(step)
        assert sp == pytest.approx(want, abs=1e-12)
        assert should == (10 <= step <= 110 and (step - 10) % 20 == 0)


def test_constant_sparsity_values():
    s = pruning.ConstantSparsity(0.7, begin_step=5, frequency=10)
    assert s(5) == (True, 0.7) and s(4) == (False, 0.7) and s(6)[0] is False and s(1005)[0]
    e = pruning.ConstantSparsity(0.5, begin_step=0, end_step=20, frequency=10)
    assert [e(k)[0] for k in (0, 10, 20, 30)] == [True, True, True, False]


@pytest.mark.parametrize("kw,name", [
    (dict(initial_sparsity=1.0), "initial_sparsity"), (dict(final_sparsity=-0.1), "final_sparsity"),
    (dict(begin_step=-1), "begin_step"), (dict(end_step=-1), "end_step"),
    (dict(frequency=0), "frequency"), (dict(power=0), "power"), (dict(begin_step=50, end_step=10), "end_step")])
def test_polynomial_bad_arguments(kw, name):
    args = dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=100)
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        pruning.PolynomialDecay(**args)


def test_constant_bad_arguments():
    with pytest.raises(ValueError, match="target_sparsity"):
        pruning.ConstantSparsity(1.0, 0)
    with pytest.raises(ValueError, match="frequency"):
        pruning.ConstantSparsity(0.5, 0, frequency=-3)


def test_prune_bad_arguments():
    m = mlp()
    with pytest.raises(ValueError, match="pruning_schedule"):
        pruning.prune_low_magnitude(m, pruning_schedule=0.5)
    with pytest.raises(ValueError, match="block_size"):
        pruning.prune_low_magnitude(m, block_size=(0, 1))
    with pytest.raises(ValueError, match="pruning_scope"):
        pruning.prune_low_magnitude(m, pruning_scope="model")
    with pytest.raises(ValueError, match="to_prune_layers"):
        pruning.prune_low_magnitude(m, to_prune_layers=["nope"])
    with pytest.raises(ValueError, match="to_prune"):
        pruning.prune_low_magnitude("model")
    with pytest.raises(ValueError, match="Dense and Conv2D"):
        pruning.prune_low_magnitude(fn.layers.Flatten())


# --- masks --------------------------------------------------------------------------------------
def test_magnitude_mask_exact_count_and_ties():
    w = np.array([[0.5, -0.1, 0.1], [0.3, -0.3, 0.0]], np.float32)
    m = pruning._mask_from_scores(pruning._scores(w, (1, 1)), 0.5).reshape(w.shape)
    # 3 smallest |w|: 0.0 (idx 5), then the tie 0.1 (idx 1, 2)
    np.testing.assert_array_equal(m, [[1, 0, 0], [1, 1, 0]])
    m = pruning._mask_from_scores(pruning._scores(w, (1, 1)), 2 / 6).reshape(w.shape)
    np.testing.assert_array_equal(m, [[1, 0, 1], [1, 1, 0]])  # tie broken by index


def test_block_mask():
    w = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    m = pruning._mask_from_scores(pruning._scores(w, (2, 2)), 0.5).reshape(4, 4)
    np.testing.assert_array_equal(m, [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])


def test_fit_keeps_masks_exact_and_reaches_sparsity():
    x, y = data()
    m = mlp()
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.PolynomialDecay(0.2, 0.8, 0, 12, frequency=4))
    m.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    assert m._pruning.step == 23
    sp = pruning.get_sparsity(m)
    for name in [l.name for l in m._leaf_layers]:
        assert sp[name] == pytest.approx(0.8, abs=0.01)
    assert_masked(m)
    # biases not pruned
    assert np.count_nonzero(m._leaf_layers[0].bias) > 0
    # Adam's moments of pruned weights are zero: nothing can move them back
    st = m.optimizer.state()
    for a, b, mk in m._pruning.ranges():
        assert np.all(st["m"][a:b][mk == 0] == 0) and np.all(st["v"][a:b][mk == 0] == 0)


def test_fit_without_callback_raises():
    x, y = data()
    m = mlp()
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        m.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        m.train_on_batch(x[:32], y[:32])


def test_train_on_batch_and_gradient_tape_keep_masks():
    x, y = data()
    m = mlp()
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.ConstantSparsity(0.6, 0, frequency=3))
    cb = pruning.UpdatePruningStep()
    cb.set_model(m)
    cb.on_train_begin()
    for i in range(4):
        cb.on_train_batch_begin(i)
        m.train_on_batch(x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32])
        assert_masked(m)
    opt = fn.optim.SGD(0.1, momentum=0.9)
    for i in range(4):
        cb.on_train_batch_begin(i)
        with fn.GradientTape() as tape:
            loss = m.compute_loss(y=y[:32], y_pred=m(x[:32], training=True))
        grads = tape.gradient(loss, m.trainable_weights)
        opt.apply_gradients(zip(grads, m.trainable_weights))
        assert_masked(m)
    assert pruning.get_sparsity(m)["total"] == pytest.approx(0.6, abs=0.01)


def test_global_scope_and_layer_selection():
    x, y = data()
    m = mlp()
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.ConstantSparsity(0.5, 0),
                                pruning_scope="global")
    m.fit(x[:64], y[:64], epochs=1, batch_size=64, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    w = np.concatenate([k.reshape(-1) for k in kernels(m)])
    assert np.count_nonzero(w == 0) == round(0.5 * w.size)
    m2 = mlp()
    pruning.prune_low_magnitude(m2, pruning_schedule=pruning.ConstantSparsity(0.5, 0),
                                to_prune_layers=[m2._leaf_layers[1].name])
    m2.fit(x[:64], y[:64], epochs=1, batch_size=64, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    sp = pruning.get_sparsity(m2)
    assert sp[m2._leaf_layers[0].name] == 0.0 and sp[m2._leaf_layers[1].name] == 0.5


def test_layer_wrapping_and_conv2d():
    x = np.random.default_rng(0).random((16, 8, 8, 2)).astype(np.float32)
    y = np.arange(16) % 3
    conv = pruning.prune_low_magnitude(fn.layers.Conv2D(4, 3, activation="relu"),
                                       pruning_schedule=pruning.ConstantSparsity(0.75, 0))
    m = fn.Sequential([fn.Input(shape=(8, 8, 2)), conv, fn.layers.Flatten(),
                       fn.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    sp = pruning.get_sparsity(m)
    assert sp[conv.name] == 0.75 and sp[m._leaf_layers[-1].name] == 0.0


def test_save_load_continue_with_exact_masks(tmp_path):
    x, y = data()
    m = mlp()
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.PolynomialDecay(0.0, 0.7, 0, 16, frequency=8))
    m.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    path = tmp_path / "p.fnn"
    m.save(path)
    back = fn.load_model(path)
    assert pruning.is_pruned(back) and back._pruning.step == m._pruning.step
    for a, b in zip(masks(m), masks(back)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    # both continue identically: same masks, same weights
    for model in (m, back):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=3, shuffle=False,
                  callbacks=[pruning.UpdatePruningStep()])
        assert_masked(model)
    for a, b in zip(masks(m), masks(back)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert back._pruning.step == 15  # 8 steps per epoch


def test_strip_pruning_equality_and_compact_file(tmp_path):
    x, y = data()
    m = mlp(ic=784, hidden=128, out=10)
    xs, ys = data(256, 784, 10)
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.ConstantSparsity(0.9, 0))
    m.fit(xs, ys, epochs=1, batch_size=64, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    s = pruning.strip_pruning(m)
    assert not pruning.is_pruned(s) and s is not m
    for a, b in zip(m.get_weights(), s.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert pruning.get_sparsity(s)["total"] == pytest.approx(0.9, abs=1e-3)
    plain = pruning.strip_pruning(mlp(ic=784, hidden=128, out=10))
    plain.save(tmp_path / "dense.fnn")
    s.save(tmp_path / "sparse.fnn")
    ratio = os.path.getsize(tmp_path / "sparse.fnn") / os.path.getsize(tmp_path / "dense.fnn")
    assert ratio <= 0.25
    back = fn.load_model(tmp_path / "sparse.fnn")
    for a, b in zip(s.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    # an ordinary (dense) file is unchanged: plain weights.i tensors, loads as before
    t, meta = fn.io.load_safetensors(tmp_path / "dense.fnn")
    assert "compact_weights" not in meta and all(k.startswith("weights.") and k.count(".") == 1 for k in t)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, 8, 16, 17, 32, 100, 256])
def test_sparse_predict_equals_dense_path(n, threads):
    rng = np.random.default_rng(n)
    m = mlp(ic=784, hidden=128, out=10)
    w = m.get_weights()
    w[0][rng.random(w[0].shape) < 0.9] = 0
    m.set_weights(w)
    s = pruning.strip_pruning(m)
    x = rng.random((n, 784)).astype(np.float32)
    layer = s._leaf_layers[0]
    assert layer._sparse is not None
    before = fn.get_num_threads()
    fn.set_num_threads(threads)
    try:
        y_sparse = s.predict(x, batch_size=n)
    finally:
        fn.set_num_threads(before)
    used = layer._sparse.csc is not None
    assert used == (n >= pruning.SPARSE_MIN_BATCH)
    sp, layer._sparse = layer._sparse, None
    y_dense = s.predict(x, batch_size=n)
    layer._sparse = sp
    np.testing.assert_allclose(y_sparse, y_dense, rtol=1e-5, atol=1e-6)
    # weights set later are seen (the cached CSC is rebuilt)
    w2 = s.get_weights()
    w2[0] *= 2
    s.set_weights(w2)
    layer._sparse = None
    y2 = s.predict(x, batch_size=n)
    layer._sparse = sp
    np.testing.assert_allclose(s.predict(x, batch_size=n), y2, rtol=1e-5, atol=1e-6)


@pytest.fixture
def one_thread():
    before = fn.get_num_threads()
    fn.set_num_threads(1)
    yield
    fn.set_num_threads(before)


def test_sparse_cache_follows_training(one_thread):
    rng = np.random.default_rng(0)
    m = mlp(ic=784, hidden=128, out=10)
    xs, ys = data(64, 784, 10)
    pruning.prune_low_magnitude(m, pruning_schedule=pruning.ConstantSparsity(0.9, 0))
    m.fit(xs, ys, epochs=1, batch_size=32, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    x = rng.random((32, 784)).astype(np.float32)
    y1 = m.predict(x)
    m.fit(xs, ys, epochs=1, batch_size=32, verbose=0, callbacks=[pruning.UpdatePruningStep()])
    layer = m._leaf_layers[0]
    y2 = m.predict(x)
    sp, layer._sparse = layer._sparse, None
    np.testing.assert_allclose(y2, m.predict(x), rtol=1e-5, atol=1e-6)
    layer._sparse = sp
    assert not np.allclose(y1, y2)


def test_mnist_90_sparse_close_to_dense():
    """bench/train_sparse_mnist.py at full size (60K samples, 3 epochs; ~7 s on 2 cores)."""
    if not os.environ.get("FASTNN_DATA") and not os.path.isdir(os.path.expanduser("~/.fastnn")):
        pytest.skip("MNIST not available (set FASTNN_DATA)")
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "train_sparse_mnist", os.path.join(os.path.dirname(__file__), "..", "bench", "train_sparse_mnist.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        dense, pruned, acc_d, acc_p, _ = mod.train(epochs=3)
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"MNIST not available: {e}")
    assert pruning.get_sparsity(pruned)["total"] == pytest.approx(0.9, abs=1e-3)
    assert acc_p >= acc_d - 0.005, (acc_d, acc_p)
