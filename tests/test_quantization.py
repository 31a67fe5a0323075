"""fastnn.quantization: int8 copies of models (dynamic and static), their outputs against
the NumPy twins of the int8 kernels and against the float model, saving and loading,
summary, sizes, and bad input. (The kernels themselves: test_quant_kernels.py.)"""
import numpy as np
import pytest

import fastnn as fn
from fastnn.cli import mnist_cnn_model, mnist_mlp_model
from fastnn.layers.quantized import input_params
from fastnn.reference import quant as ref

L = fn.layers


def _trained(model, x, y, epochs=2):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, seed=0)
    return model


@pytest.fixture
def digits(rng):
    """Separable 'images': class k lights up block k."""
    n = 200
    y = rng.integers(0, 10, n)
    x = rng.random((n, 28, 28)).astype(np.float32) * 0.3
    for i, k in enumerate(y):
        x[i, 2 * k:2 * k + 6, 4:20] += 0.7
    return x, y.astype(np.int32)


def _one_dense(rng, act="relu", k=37, n=19):
    m = fn.Sequential([L.Dense(n, activation=act, input_shape=(k,))], seed=3)
    m.build()
    b = m.layers[0].bias
    b[...] = rng.normal(size=b.shape).astype(np.float32)
    return m


@pytest.mark.parametrize("act", ["linear", "relu"])
def test_dynamic_dense_is_its_twin(rng, act):
    m = _one_dense(rng, act)
    w, b = m.layers[0].kernel.copy(), m.layers[0].bias.copy()
    x = rng.normal(size=(23, 37)).astype(np.float32)
    q = fn.quantization.quantize(m)
    wq, ws = ref.quantize_weight(w)
    _, xs, xz = ref.quantize_u8_dynamic(x)
    want = ref.qdense(x, (wq, ws), b, act)
    np.testing.assert_array_equal(q.predict(x, batch_size=23), want)
    # and it is the float layer within the quantization error
    f = m.predict(x)
    err = np.abs(want - f).max()
    bound = 37 * (xs / 2 * np.abs(w).max() + np.abs(x).max() * ws.max() / 2) + xs * ws.max() * 37
    assert err <= bound
    assert err > 0  # int8 really ran


def test_static_uses_the_calibrated_range(rng):
    m = _one_dense(rng, "linear")
    w, b = m.layers[0].kernel.copy(), m.layers[0].bias.copy()
    cal = rng.normal(size=(64, 37)).astype(np.float32)
    q = fn.quantization.quantize(m, mode="static", calibration_data=cal)
    xs, xz = input_params(cal.min(), cal.max())
    x = rng.normal(size=(5, 37)).astype(np.float32) * 3  # beyond the range: clipped
    wq, ws = ref.quantize_weight(w)
    want = ref.qdense(x, (wq, ws), b, "linear", x_scale=xs, x_zero_point=xz)
    np.testing.assert_array_equal(q.predict(x), want)
    assert q.layers[0].qinput("kernel") == (np.float32(xs), xz)


def test_percentile_clips_the_outliers(rng):
    m = _one_dense(rng, "linear")
    cal = rng.normal(size=(256, 37)).astype(np.float32)
    cal[0, 0] = 1000.0
    mm = fn.quantization.quantize(m, mode="static", calibration_data=cal)
    pc = fn.quantization.quantize(m, mode="static", calibration_data=cal,
                                  method="percentile", percentile=99.9)
    assert mm.layers[0].qinput("kernel")[0] > 3.9
    assert pc.layers[0].qinput("kernel")[0] < 0.05


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_mlp_and_cnn_keep_their_accuracy(digits, mode):
    x, y = digits
    for model, xx in ((mnist_mlp_model([64], seed=1), x),
                      (mnist_cnn_model(small=True, seed=1), x.reshape(-1, 28, 28, 1))):
        _trained(model, xx, y)
        q = fn.quantization.quantize(model, mode, calibration_data=xx[:64] if mode == "static" else None)
        f, g = model.predict(xx), q.predict(xx)
        assert np.abs(f - g).max() < 0.05
        assert (f.argmax(1) == g.argmax(1)).mean() >= 0.98
        assert q.evaluate(xx, y, verbose=0)[1] >= model.evaluate(xx, y, verbose=0)[1] - 0.02


def test_transformer_projections(rng):
    tokens = rng.integers(1, 50, (40, 12)).astype(np.int32)
    tokens[:, 9:] = 0
    m = fn.Sequential([L.PositionalEmbedding(12, 16, input_dim=50, mask_zero=True, input_shape=(12,)),
                       L.TransformerEncoder(2, 8, 32, dropout=0.0),
                       L.GlobalAveragePooling1D(), L.Dense(2, activation="softmax")], seed=0)
    m.build()
    q = fn.quantization.quantize(m)
    enc = q.layers[1].name
    assert set(fn.quantization.quantized_layers(q)) == {
        q.layers[0].name, f"{enc}/attention", f"{enc}/ffn1", f"{enc}/ffn2", q.layers[-1].name}
    f, g = m.predict(tokens), q.predict(tokens)
    np.testing.assert_allclose(g, f, atol=0.02)
    assert not np.array_equal(g, f)


def test_save_load_summary_and_size(digits, tmp_path):
    x, y = digits
    model = _trained(mnist_mlp_model([128], seed=1), x, y, epochs=1)
    for mode in ("dynamic", "static"):
        q = fn.quantization.quantize(model, mode, calibration_data=x[:50] if mode == "static" else None)
        path = tmp_path / f"{mode}.fastnn"
        q.save(path)
        back = fn.models.load_model(path)
        np.testing.assert_array_equal(back.predict(x), q.predict(x))
        assert fn.quantization.quantized_layers(back) == {la.name: mode for la in q.layers[1:]}
        lines = []
        back.summary(print_fn=lines.append)
        text = "\n".join(lines)
        assert f"Dense, int8 {mode}" in text and "Int8 weights: 101,632" in text
        assert fn.quantization.model_bytes(back) <= 0.3 * fn.quantization.model_bytes(model)
        tensors, _ = fn.io.load_safetensors(path)
        assert sum(a.dtype == np.int8 for a in tensors.values()) == 2
    fpath = tmp_path / "float.fastnn"
    model.save(fpath, include_optimizer=False)
    assert path.stat().st_size <= 0.3 * fpath.stat().st_size
    # the float model is untouched
    assert fn.quantization.quantized_layers(model) == {}


def test_subclassed_model(rng, tmp_path):
    @fn.saving.register_keras_serializable(package="TestQ")
    class Net(fn.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.a = L.Dense(8, activation="relu")
            self.b = L.Dense(3)

        def call(self, x):
            return self.b(self.a(x))

    net = Net()
    net.build((None, 5))
    x = rng.normal(size=(7, 5)).astype(np.float32)
    q = fn.quantization.quantize(net)
    q.save(tmp_path / "n.fastnn")
    back = fn.models.load_model(tmp_path / "n.fastnn")
    np.testing.assert_array_equal(back.predict(x), q.predict(x))
    np.testing.assert_allclose(q.predict(x), net.predict(x), atol=0.05)


def test_grouped_conv_stays_float(rng):
    m = fn.Sequential([L.Conv2D(4, 3, groups=2, input_shape=(6, 6, 4)),
                       L.Conv2D(3, 1), L.Flatten()], seed=0)
    m.build()
    q = fn.quantization.quantize(m)
    assert list(fn.quantization.quantized_layers(q)) == [q.layers[1].name]
    x = rng.random((3, 6, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(q.predict(x), m.predict(x), atol=0.05)


def test_bad_input(rng, digits):
    x, y = digits
    with pytest.raises(ValueError, match="not built"):
        fn.quantization.quantize(fn.Sequential([L.Dense(3)]))
    with pytest.raises(TypeError, match="fastnn model"):
        fn.quantization.quantize(L.Dense(3))
    m = mnist_mlp_model([16], seed=0)
    m.build()
    with pytest.raises(ValueError, match="mode"):
        fn.quantization.quantize(m, mode="int4")
    with pytest.raises(ValueError, match="needs calibration_data"):
        fn.quantization.quantize(m, mode="static")
    with pytest.raises(ValueError, match="calibration_data is for"):
        fn.quantization.quantize(m, calibration_data=x)
    with pytest.raises(ValueError, match="method"):
        fn.quantization.quantize(m, mode="static", calibration_data=x, method="kl")
    with pytest.raises(ValueError, match="percentile"):
        fn.quantization.quantize(m, mode="static", calibration_data=x, method="percentile",
                                 percentile=101)
    with pytest.raises(ValueError, match="calibration_data does not fit"):
        fn.quantization.quantize(m, mode="static", calibration_data=x.reshape(200, 784)[:, :100])
    q = fn.quantization.quantize(m)
    with pytest.raises(ValueError, match="quantized already"):
        fn.quantization.quantize(q)
    q.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(RuntimeError, match="inference only"):
        q.fit(x, y, epochs=1, verbose=0)
    assert q.evaluate(x, y, verbose=0) > 0  # evaluating is fine


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_embedding_tables(rng, tmp_path, mode):
    ids = rng.integers(0, 30, (6, 9)).astype(np.int32)
    m = fn.Sequential([L.Embedding(30, 12, input_shape=(9,)), L.Flatten()], seed=0)
    m.build()
    table = m.layers[0].embeddings.copy()
    q = fn.quantization.quantize(m, mode, calibration_data=ids if mode == "static" else None)
    wq, ws = ref.quantize_weight(table)
    want = (wq[ids].astype(np.float32) * ws).reshape(6, -1)
    np.testing.assert_array_equal(q.predict(ids), want)
    assert np.abs(want - m.predict(ids)).max() <= ws.max() / 2 + 1e-7
    q.save(tmp_path / "e.fastnn")
    np.testing.assert_array_equal(fn.models.load_model(tmp_path / "e.fastnn").predict(ids), want)


def test_a_pruned_model_is_quantized_as_stripped(digits, tmp_path):
    x, y = digits
    m = fn.pruning.prune_low_magnitude(mnist_mlp_model([32], seed=0),
                                       pruning_schedule=fn.pruning.ConstantSparsity(0.5, 0))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0, callbacks=[fn.pruning.UpdatePruningStep()])
    q = fn.quantization.quantize(m)
    assert not fn.pruning.is_pruned(q) and fn.pruning.is_pruned(m)
    want = fn.quantization.quantize(fn.pruning.strip_pruning(m)).predict(x)
    np.testing.assert_array_equal(q.predict(x), want)
    q.save(tmp_path / "pq.fastnn")
    np.testing.assert_array_equal(fn.models.load_model(tmp_path / "pq.fastnn").predict(x), want)
