"""ONNX export (checked by onnx.checker, run by onnxruntime against fastnn's predict) and
import (round trips, a PyTorch-exported CNN), and bad files. Skipped without onnx /
onnxruntime (pip install ".[onnx]")."""
import numpy as np
import pytest

import fastnn as fn
from fastnn.cli import mnist_cnn_model, mnist_mlp_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
L = fn.layers


def _ort_run(path, xs):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = xs if isinstance(xs, list) else [xs]
    return s.run(None, {i.name: np.asarray(a, np.float32) for i, a in zip(s.get_inputs(), xs)})


def _check_export(model, xs, tmp_path, rtol=1e-5):
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "model.onnx"
    proto = fn.onnx.export(model, path)
    onnx.checker.check_model(proto)
    want = model.predict(xs)
    want = want if isinstance(want, list) else [want]
    for batch in (None, 1):  # the batch axis is dynamic
        x = xs if batch is None else ([a[:1] for a in xs] if isinstance(xs, list) else xs[:1])
        got = _ort_run(path, x)
        for g, w in zip(got, want):
            w = w if batch is None else w[:1]
            scale = max(float(np.abs(w).max()), 1e-6)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)
    return path


def _trained(model, x, y, loss="sparse_categorical_crossentropy"):
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
    return model


@pytest.fixture
def images(rng):
    return rng.random((12, 28, 28)).astype(np.float32), rng.integers(0, 10, 12)


def test_mnist_mlp(images, tmp_path):
    x, y = images
    _check_export(_trained(mnist_mlp_model([64, 32], seed=1), x, y), x, tmp_path)


def test_mnist_cnn(images, tmp_path):
    x, y = images
    x = x.reshape(-1, 28, 28, 1)
    _check_export(_trained(mnist_cnn_model(seed=1), x, y), x, tmp_path)


def test_imdb_transformer_with_padding_mask(rng, tmp_path):
    ids = rng.integers(1, 60, (10, 16)).astype(np.float32)
    ids[0, 5:] = 0  # padding
    ids[1, :] = 0   # a review with no token: zero attention output, as in fastnn
    model = fn.Sequential([
        L.PositionalEmbedding(16, 32, input_dim=60, mask_zero=True, input_shape=(16,)),
        L.TransformerEncoder(2, 16, 64, dropout=0.1), L.TransformerEncoder(2, 16, 64, norm_first=True),
        L.GlobalAveragePooling1D(), L.Dropout(0.2), L.Dense(20, activation="relu"),
        L.Dense(2, activation="softmax")], seed=2)
    _check_export(_trained(model, ids, rng.integers(0, 2, 10)), ids, tmp_path)


def test_residual_functional_model(rng, tmp_path):
    x = fn.Input((8, 8, 3))
    h = L.Conv2D(6, 3, padding="same", activation="relu")(x)
    r = L.BatchNormalization()(L.Conv2D(6, 3, padding="same")(h))
    a = L.Add()([h, r])
    p = L.MaxPooling2D(2, padding="same")(L.ZeroPadding2D(1)(a))
    g = L.Concatenate()([L.GlobalAveragePooling2D()(p), L.GlobalMaxPooling2D()(p)])
    out = L.Dense(3, activation="softmax")(L.Dense(8, activation="gelu")(g))
    model = fn.Model(x, out, seed=3)
    xs = rng.random((6, 8, 8, 3)).astype(np.float32)
    _check_export(_trained(model, xs, rng.integers(0, 3, 6)), xs, tmp_path)


def test_two_inputs_two_outputs_and_merges(rng, tmp_path):
    a, b = fn.Input((5,)), fn.Input((5,))
    h = L.Dense(4)(a)
    k = L.Dense(4)(b)
    outs = [L.Subtract()([h, k]), L.Average()([L.Multiply()([h, k]), L.Maximum()([h, k]),
                                               L.Minimum()([h, k])])]
    model = fn.Model([a, b], outs, seed=4)
    _check_export(model, [rng.standard_normal((3, 5)), rng.standard_normal((3, 5))], tmp_path)


def test_recurrent_layers(rng, tmp_path):
    ids = rng.integers(1, 40, (5, 10)).astype(np.float32)
    model = fn.Sequential([L.Embedding(40, 8, input_shape=(10,)),
                           L.Bidirectional(L.LSTM(6, return_sequences=True)),
                           L.GRU(5, return_sequences=True, go_backwards=True),
                           L.Bidirectional(L.GRU(4, reset_after=False), merge_mode="ave"),
                           L.Dense(1)], seed=5)
    # fastnn's and onnxruntime's sigmoid/tanh differ in the last bits; errors carried
    # through 10 steps of three layers stay below 1e-5 of the output
    _check_export(model, ids, tmp_path, rtol=2e-5)
    seq = fn.Sequential([L.SimpleRNN(4, activation="relu", return_sequences=True, input_shape=(6, 3)),
                         L.LSTM(3, go_backwards=True), L.Dense(2)], seed=6)
    _check_export(seq, rng.standard_normal((4, 6, 3)), tmp_path, rtol=2e-5)


def test_conv1d_and_sequence_pooling(rng, tmp_path):
    model = fn.Sequential([L.Conv1D(6, 3, padding="causal", activation="relu", input_shape=(12, 4)),
                           L.MaxPooling1D(2), L.Conv1D(4, 3, padding="same", dilation_rate=2),
                           L.AveragePooling1D(2, padding="same"), L.LayerNormalization(),
                           L.GlobalAveragePooling1D(), L.Dense(2)], seed=7)
    _check_export(model, rng.standard_normal((3, 12, 4)), tmp_path)


def test_subclassed_model(rng, tmp_path):
    class Net(fn.Model):
        def __init__(self):
            super().__init__()
            self.a = L.Dense(6, activation="tanh")
            self.b = L.Dense(3)

        def call(self, x, training=False):
            h = self.a(x)
            return self.b(fn.ops.square(h) + fn.ops.sigmoid(h) * 0.5)

    model = Net()
    model.build((None, 4))
    _check_export(model, rng.standard_normal((5, 4)), tmp_path)


# --- import --------------------------------------------------------------------------------
def test_import_round_trips(images, tmp_path, rng):
    x, y = images
    xs = x.reshape(-1, 28, 28, 1)
    for model, data in ((mnist_mlp_model([32], seed=1), x), (mnist_cnn_model(seed=2), xs)):
        path = _check_export(_trained(model, data, y), data, tmp_path)
        loaded = fn.onnx.load(path)
        np.testing.assert_allclose(loaded.predict(data), model.predict(data), rtol=1e-6, atol=1e-7)
        again = tmp_path / "again.onnx"
        fn.onnx.export(loaded, again)  # import then export: the same function again
        np.testing.assert_allclose(_ort_run(again, data)[0], model.predict(data), rtol=1e-5,
                                   atol=1e-6)
        loaded.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        loaded.fit(data, y, epochs=1, verbose=0)  # an imported model fine-tunes


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
def test_import_torch_cnn(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 6, 3)
            self.bn = torch.nn.BatchNorm2d(6)
            self.c2 = torch.nn.Conv2d(6, 8, 3, padding=1, stride=2)
            self.fc = torch.nn.Linear(8 * 7 * 7, 10)

        def forward(self, x):
            x = torch.relu(self.bn(self.c1(x)))
            x = torch.nn.functional.max_pool2d(x, 2)
            x = torch.relu(self.c2(x))
            return torch.softmax(self.fc(torch.flatten(x, 1)), -1)

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, 28, 28)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
    model = fn.onnx.load(path)
    np.testing.assert_allclose(model.predict(x.numpy()), net(x).detach().numpy(), rtol=1e-5,
                               atol=1e-6)


# --- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [6, 17])
def test_import_clip(tmp_path, rng, opset):
    """Clip with constant bounds (attributes before opset 11, inputs after; the upper one
    left out) after a Dense and inside an NCHW convolution chain."""
    from onnx import TensorProto, helper, numpy_helper
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    if opset == 6:
        clip = [helper.make_node("Clip", ["c"], ["r"], min=-0.5)]
    else:
        clip = [helper.make_node("Clip", ["c", "lo"], ["r"])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), *clip,
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "k"], ["y0"]),
             helper.make_node("Clip", ["y0", "lo", "hi"], ["y"])]
    inits = {"w": w, "k": rng.normal(size=(12, 5)).astype(np.float32),
             "lo": np.float32(-0.5), "hi": np.float32(0.25)}
    if opset == 6:
        nodes[-1] = helper.make_node("Clip", ["y0"], ["y"], min=-0.5, max=0.25)
    g = helper.make_graph(nodes, "clip",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "clip.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    x = rng.normal(size=(4, 2, 6, 6)).astype(np.float32)
    model = fn.onnx.load(path)
    np.testing.assert_allclose(model.predict(x), _ort_run(path, x)[0], rtol=1e-5, atol=1e-5)


def test_unsupported_layers_and_options_are_named(tmp_path, rng):
    @fn.saving.register_keras_serializable()
    class Odd(L.Layer):
        def forward(self, x, training=False):
            return x

        def backward(self, dy):
            return dy

    model = fn.Sequential([L.Dense(3, input_shape=(4,)), Odd()])
    with pytest.raises(ValueError, match="Odd"):
        fn.onnx.export(model, tmp_path / "x.onnx")
    masked = fn.Sequential([L.Embedding(9, 3, mask_zero=True, input_shape=(5,)), L.LSTM(2)])
    with pytest.raises(ValueError, match="padding mask"):
        fn.onnx.export(masked, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset"):
        fn.onnx.export(model, tmp_path / "x.onnx", opset=11)


def test_bad_files(tmp_path):
    from onnx import TensorProto, helper

    good = _check_export(fn.Sequential([L.Dense(3, input_shape=(4,))], seed=1),
                         np.ones((2, 4), np.float32), tmp_path)
    data = good.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        fn.onnx.load(cut)
    node = helper.make_node("Hardmax", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="Hardmax"):
        fn.onnx.load(path)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C"])])
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="fixed"):
        fn.onnx.load(path)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_models_run_in_onnxruntime(images, rng, tmp_path, mode):
    """Quantized models export as ONNX's integer operators (DynamicQuantizeLinear or
    QuantizeLinear, MatMulInteger, ConvInteger) and give fastnn's int8 outputs."""
    x, y = images
    tokens = np.where(np.arange(20) < 15, rng.integers(1, 100, (12, 20)), 0)
    transformer = fn.Sequential([
        L.PositionalEmbedding(20, 16, input_dim=100, mask_zero=True, input_shape=(20,)),
        L.TransformerEncoder(2, 8, 16), L.GlobalAveragePooling1D(),
        L.Dense(2, activation="softmax")], seed=0)
    for model, xx in ((mnist_mlp_model([64], seed=1), x),
                      (mnist_cnn_model(seed=1), x.reshape(-1, 28, 28, 1)),
                      (transformer, tokens)):
        _trained(model, xx, y % 2)
        q = fn.quantization.quantize(model, mode, calibration_data=xx if mode == "static" else None)
        path = tmp_path / "q.onnx"
        onnx.checker.check_model(fn.onnx.export(q, path))
        for batch in (xx, xx[:1]):  # dynamic ranges are per batch: predict each one
            got, want = _ort_run(path, batch)[0], q.predict(batch)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "MatMulInteger" in ops or "ConvInteger" in ops


# --- recurrent import ----------------------------------------------------------------------
def _close(got, want, rtol):
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


_RNN_MODELS = {
    "lstm": lambda rs: [L.LSTM(5, return_sequences=rs)],
    "gru": lambda rs: [L.GRU(5, return_sequences=rs)],
    "gru_reset_before": lambda rs: [L.GRU(5, reset_after=False, return_sequences=rs)],
    "simple_rnn": lambda rs: [L.SimpleRNN(5, activation="relu", return_sequences=rs)],
    "bidirectional_lstm": lambda rs: [L.Bidirectional(L.LSTM(5, return_sequences=rs))],
    "bidirectional_gru_ave": lambda rs: [L.Bidirectional(L.GRU(4, return_sequences=rs),
                                                         merge_mode="ave")],
    "go_backwards": lambda rs: [L.LSTM(4, go_backwards=True, return_sequences=rs)],
    "stacked": lambda rs: [L.LSTM(5, return_sequences=True),
                           L.Bidirectional(L.GRU(4, return_sequences=True)),
                           L.GRU(3, go_backwards=True, return_sequences=True),
                           L.SimpleRNN(3, return_sequences=rs)],
}


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("kind", sorted(_RNN_MODELS))
def test_import_recurrent_round_trips(kind, return_sequences, rng, tmp_path):
    """fastnn's recurrent layers exported as ONNX LSTM/GRU/RNN nodes come back as the same
    layers (Bidirectional included) and predict the same."""
    model = fn.Sequential([L.InputLayer((7, 3)), *_RNN_MODELS[kind](return_sequences),
                           L.Dense(2)], seed=8)
    x = rng.standard_normal((4, 7, 3)).astype(np.float32)
    path = tmp_path / "rnn.onnx"
    fn.onnx.export(model, path)
    loaded = fn.onnx.load(path)
    want = model.predict(x)
    _close(loaded.predict(x), want, 1e-5)
    _close(loaded.predict(x[:1]), want[:1], 1e-5)
    kinds = {type(lay).__name__ for lay in loaded.layers}
    assert kinds & {"LSTM", "GRU", "SimpleRNN", "Bidirectional"}
    if kind == "bidirectional_lstm":  # the concatenated directions: one Bidirectional
        assert "Bidirectional" in kinds and "Concatenate" not in kinds


def test_import_recurrent_states(rng, tmp_path):
    """Y, Y_h and Y_c as outputs: return_sequences and return_state (Bidirectional's too)."""
    x = fn.Input((6, 3))
    y, h, c = L.LSTM(4, return_sequences=True, return_state=True)(x)
    z, hf, cf, hb, cb = L.Bidirectional(L.LSTM(3, return_state=True))(y)
    model = fn.Model(x, [y, h, c, z, hf, cb], seed=9)
    xs = rng.standard_normal((3, 6, 3)).astype(np.float32)
    path = _check_export(model, xs, tmp_path)
    for got, want in zip(fn.onnx.load(path).predict(xs), model.predict(xs)):
        _close(got, want, 1e-5)


def _torch_recurrent(torch, kind, layers=1, bidirectional=False, on="last", **kw):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(3, 5, num_layers=layers, batch_first=True,
                                               bidirectional=bidirectional, **kw)
            self.fc = torch.nn.Linear(5 * (2 if bidirectional else 1), 2)

        def forward(self, x):
            y, h = self.rnn(x)
            if on == "all":  # a Linear on every step
                return self.fc(y)
            if on == "h_n":  # the last layer's final states
                h = h[0] if isinstance(h, tuple) else h
                return self.fc(torch.cat([h[-2], h[-1]], 1) if bidirectional else h[-1])
            return self.fc(y[:, -1])
    return Net()


_TORCH_RNNS = {
    "lstm": dict(kind="LSTM"),
    "lstm_2_layers_all_steps": dict(kind="LSTM", layers=2, on="all"),
    "lstm_bidirectional": dict(kind="LSTM", bidirectional=True),
    "lstm_2_layers_bidirectional_h_n": dict(kind="LSTM", layers=2, bidirectional=True, on="h_n"),
    "lstm_no_bias": dict(kind="LSTM", bias=False),
    "gru": dict(kind="GRU", on="all"),
    "gru_bidirectional_h_n": dict(kind="GRU", bidirectional=True, on="h_n"),
    "rnn_tanh": dict(kind="RNN", nonlinearity="tanh"),
    "rnn_relu_2_layers": dict(kind="RNN", layers=2, nonlinearity="relu", on="h_n"),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
@pytest.mark.filterwarnings("ignore:Converting a tensor")  # its tracer on nn.RNN's checks
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size")
@pytest.mark.parametrize("name", sorted(_TORCH_RNNS))
def test_import_torch_recurrent(name, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_recurrent(torch, **_TORCH_RNNS[name]).eval()
    x = torch.randn(4, 9, 3)
    path = tmp_path / "torch_rnn.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
    model = fn.onnx.load(path)
    with torch.no_grad():
        want = net(x).numpy()
    _close(model.predict(x.numpy()), want, 2e-5 if "2_layers" in name else 1e-5)
    again = tmp_path / "again.onnx"  # the imported model exports again
    fn.onnx.export(model, again)
    _close(_ort_run(again, x.numpy())[0], want, 2e-5)


def _lstm_file(path, attrs=None, extra=(), inputs=(), layout=0):
    """x (N, 4, 3) -> Transpose -> ONNX LSTM (hidden 2) -> Y_h squeezed (layout 1: no
    Transpose); extra: more LSTM inputs after W, R, B (as (name, array or None) pairs),
    inputs: more graph inputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (1, 8, 3)), ("R", (1, 8, 2)), ("B", (1, 16)))]
    names = ["xt" if layout == 0 else "x", "W", "R", "B"]
    for n, a in extra:
        names.append(n)
        if a is not None:
            inits.append(numpy_helper.from_array(a, n))
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2])] if layout == 0 else []
    nodes += [helper.make_node("LSTM", names, ["", "h"], name="lstm0", hidden_size=2,
                               layout=layout, **(attrs or {})),
              helper.make_node("Squeeze", ["h", "axes"], ["y"])]
    inits.append(numpy_helper.from_array(np.array([layout], np.int64), "axes"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])]
                          + [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_import_recurrent_unsupported_attributes(tmp_path, rng):
    path = _lstm_file(tmp_path / "ok.onnx", extra=[("", None), ("h0", np.zeros((1, 3, 2), np.float32))])
    x = rng.standard_normal((3, 4, 3)).astype(np.float32)
    _close(fn.onnx.load(path).predict(x), _ort_run(path, x)[0], 1e-5)  # a zero initial_h
    path = _lstm_file(tmp_path / "batch_major.onnx", layout=1)
    want = _ort_run(_lstm_file(tmp_path / "time_major.onnx"), x)[0]
    _close(fn.onnx.load(path).predict(x), want, 1e-5)  # layout 1: (N, T, C), Y_h (N, D, U)
    bad = [({"clip": 3.0}, (), (), "clip"),
           ({"input_forget": 1}, (), (), "input_forget"),
           ({"activations": ["Sigmoid", "Relu", "Tanh"]}, (), (), "activations"),
           ({}, [("", None), ("h0", np.ones((1, 3, 2), np.float32))], (), "initial_h"),
           ({}, [("", None), ("h0", None)], [("h0", [1, "N", 2])], "initial_h"),
           ({}, [("lens", None)], [("lens", ["N"])], "sequence_lens")]
    for k, (attrs, extra, inputs, what) in enumerate(bad):
        path = _lstm_file(tmp_path / f"bad{k}.onnx", attrs, extra, inputs)
        with pytest.raises(ValueError, match=f"LSTM node 'lstm0'.*{what}"):
            fn.onnx.load(path)
