"""fastnn.onnx.load of attention: fastnn's own transformers (with and without a padding
mask) and torch's nn.MultiheadAttention / nn.TransformerEncoderLayer exports (also with a
key_padding_mask input) come back as MultiHeadAttention layers that predict the same and
train. Skipped without onnx /
onnxruntime (and torch for the torch tests)."""
import numpy as np
import pytest

import fastnn as fn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
L = fn.layers


def _close(got, want, rtol=1e-5):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _fits(model, x, y):
    """fit towards y + 0.1 (the model predicts y: a loss with gradients) changes the
    attention weights and keeps the loss finite."""
    model.compile(optimizer="adam", loss="mse")
    attn = [lay for lay in model.layers if isinstance(lay, L.MultiHeadAttention)]
    assert attn
    before = attn[0].query_kernel.copy()
    hist = model.fit(x, y + 0.1, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert not np.array_equal(attn[0].query_kernel, before)


@pytest.mark.parametrize("mask", [False, True], ids=["no_mask", "padding_mask"])
def test_fastnn_transformer_round_trips(mask, rng, tmp_path):
    ids = rng.integers(1, 60, (10, 16)).astype(np.float32)
    if mask:
        ids[0, 5:] = 0  # padding
        ids[1, :] = 0   # a review with no token
    model = fn.Sequential([
        L.PositionalEmbedding(16, 32, input_dim=60, mask_zero=mask, input_shape=(16,)),
        L.TransformerEncoder(2, 16, 64, dropout=0.1),
        L.TransformerEncoder(2, 16, 48, norm_first=True, activation="gelu"),
        L.GlobalAveragePooling1D(), L.Dense(20, activation="relu"),
        L.Dense(2, activation="softmax")], seed=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(ids, rng.integers(0, 2, 10), epochs=1, verbose=0, seed=0)
    path = tmp_path / "imdb.onnx"
    fn.onnx.export(model, path)
    loaded = fn.onnx.load(path)
    want = model.predict(ids)
    _close(loaded.predict(ids), want)
    _close(loaded.predict(ids[:1]), want[:1])
    kinds = [type(lay).__name__ for lay in loaded.layers]
    assert kinds.count("MultiHeadAttention") == 2
    emb = next(lay for lay in loaded.layers if isinstance(lay, L.Embedding))
    assert emb.mask_zero == mask
    again = tmp_path / "again.onnx"  # the imported model exports again
    fn.onnx.export(loaded, again)
    s = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])
    _close(s.run(None, {s.get_inputs()[0].name: ids})[0], want)
    _fits(loaded, ids, want)


def test_fastnn_causal_attention_round_trips(rng, tmp_path):
    """use_causal_mask (a constant lower triangle in ONNX) comes back causal."""
    x = fn.Input((6, 8))
    h = L.MultiHeadAttention(2, 4)(x, x, use_causal_mask=True)
    model = fn.Model(x, L.Dense(3)(L.GlobalAveragePooling1D()(h)), seed=5)
    xs = rng.standard_normal((4, 6, 8)).astype(np.float32)
    path = tmp_path / "causal.onnx"
    fn.onnx.export(model, path)
    loaded = fn.onnx.load(path)
    want = model.predict(xs)
    _close(loaded.predict(xs), want)  # pooled over every query: differs if not causal
    x_in = fn.Input((6, 8))
    plain = fn.Model(x_in, L.Dense(3)(L.GlobalAveragePooling1D()(L.MultiHeadAttention(2, 4)(x_in))))
    plain.set_weights(model.get_weights())
    assert np.abs(plain.predict(xs) - want).max() > 1e-3  # so the comparison above can fail
    _fits(loaded, xs, want)


def test_fastnn_cross_attention_round_trips(rng, tmp_path):
    """Separate query and key/value inputs, projected to another output width."""
    q_in, kv_in = fn.Input((5, 8)), fn.Input((7, 6))
    y = L.MultiHeadAttention(2, 4, output_shape=3)(q_in, kv_in)
    model = fn.Model([q_in, kv_in], L.GlobalAveragePooling1D()(y), seed=4)
    xs = [rng.standard_normal((4, 5, 8)).astype(np.float32),
          rng.standard_normal((4, 7, 6)).astype(np.float32)]
    path = tmp_path / "cross.onnx"
    fn.onnx.export(model, path)
    loaded = fn.onnx.load(path)
    _close(loaded.predict(xs), model.predict(xs))


def _torch_net(torch, kind, **kw):
    """A torch model of kind "mha" (nn.MultiheadAttention), "layers" (two
    nn.TransformerEncoderLayer) or "encoder" (an nn.TransformerEncoder of two, which
    converts the mask once for both); forward(x, m=None) takes an optional boolean key
    padding mask m (N, S), true = ignore that key."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if kind == "mha":
                self.m = torch.nn.MultiheadAttention(16, 4, batch_first=True)
            elif kind == "encoder":
                layer = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, **kw)
                self.m = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            else:
                self.m = torch.nn.ModuleList([
                    torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True, **kw)
                    for _ in range(2)])
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x, m=None):
            if kind == "mha":
                y, _ = self.m(x, x, x, key_padding_mask=m, need_weights=False)
            elif kind == "encoder":
                y = self.m(x, src_key_padding_mask=m)
            else:
                y = x
                for layer in self.m:
                    y = layer(y, src_key_padding_mask=m)
            return self.fc(y.mean(1))
    return Net()


_TORCH = {
    "multihead_attention": dict(kind="mha"),
    "encoder_post_norm_relu": dict(kind="layers"),
    "encoder_pre_norm_relu": dict(kind="layers", norm_first=True),
    "encoder_post_norm_gelu": dict(kind="layers", activation="gelu"),
    "encoder_pre_norm_gelu": dict(kind="layers", norm_first=True, activation="gelu"),
}


def _torch_export(torch, net, x, path, batch_first=True):
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0 if batch_first else 1: "N"}, "y": {0: "N"}},
                      dynamo=False, opset_version=17)


def _imported_predicts_as_torch(torch, net, tmp_path):
    """net exported (x: (N, 9, 16)) and loaded: the model predicts what torch does at batch
    5 and 1. Returns (model, x, torch's output)."""
    x = torch.randn(5, 9, 16)
    path = tmp_path / "torch_attn.onnx"
    _torch_export(torch, net, x, path)
    model = fn.onnx.load(path)
    with torch.no_grad():
        want = net(x).numpy()
    _close(model.predict(x.numpy()), want)
    _close(model.predict(x.numpy()[:1]), want[:1])
    return model, x, want


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
@pytest.mark.filterwarnings("ignore::UserWarning")  # its notes on nested tensors / fast path
@pytest.mark.parametrize("name", sorted(_TORCH))
def test_import_torch_attention(name, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_net(torch, **_TORCH[name]).eval()
    model, x, want = _imported_predicts_as_torch(torch, net, tmp_path)
    n_attn = sum(isinstance(lay, L.MultiHeadAttention) for lay in model.layers)
    assert n_attn == (1 if name == "multihead_attention" else 2)
    _fits(model, x.numpy(), want)


_TORCH_MASKED = {
    "multihead_attention": dict(kind="mha"),
    "encoder_layers_post_norm": dict(kind="layers"),
    "encoder_layers_pre_norm": dict(kind="layers", norm_first=True),
    "transformer_encoder_pre_norm_gelu": dict(kind="encoder", norm_first=True, activation="gelu"),
}


def _padding(torch, n, t):
    """Some keys masked in most samples, never all of one sample's."""
    m = torch.zeros(n, t, dtype=torch.bool)
    m[0, t - 3:] = True
    if n > 1:
        m[1, :2] = True
    if n > 2:
        m[2, 1::2] = True
    return m


def test_fastnn_key_mask_input_round_trips(rng, tmp_path):
    """A key mask given as a model input (nonzero = attend), here also with a padding
    mask from the embedding: onnxruntime runs the export as fastnn predicts, and it
    loads back with the same inputs and predictions."""
    ids_in, m_in = fn.Input((7,), name="ids"), fn.Input((7,), name="keys")
    h = L.Embedding(30, 8, mask_zero=True)(ids_in)
    h = L.MultiHeadAttention(2, 4)(h, h, h, key_mask=m_in)
    model = fn.Model([ids_in, m_in], L.Dense(3)(L.GlobalAveragePooling1D()(h)), seed=4)
    ids = rng.integers(1, 30, (5, 7)).astype(np.float32)
    ids[0, 4:] = 0
    keys = (rng.random((5, 7)) > 0.4).astype(np.float32)
    keys[:, 0] = 1
    path = tmp_path / "key_mask.onnx"
    fn.onnx.export(model, path)
    want = model.predict([ids, keys])
    assert np.abs(model.predict([ids, np.ones_like(keys)]) - want).max() > 1e-3
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _close(s.run(None, {"ids": ids, "keys": keys})[0], want)
    loaded = fn.onnx.load(path)
    assert [t.name for t in loaded.inputs] == ["ids", "keys"]
    for ms in (keys, np.ones_like(keys)):
        _close(loaded.predict([ids, ms]), model.predict([ids, ms]))
    _fits(loaded, [ids, keys], want)


_TRACER_NOTE = "ignore:Converting a tensor to a Python boolean"  # torch's checks of the masks


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings(_TRACER_NOTE)
@pytest.mark.parametrize("name", sorted(_TORCH_MASKED))
def test_import_torch_key_padding_mask(name, rng, tmp_path):
    """The mask stays a model input (after x, as in torch and the file), true = ignore the
    key; the imported attention layers get its logical_not as their key mask."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_net(torch, **_TORCH_MASKED[name]).eval()
    x, m = torch.randn(3, 9, 16), _padding(torch, 3, 9)
    path = tmp_path / "torch_masked.onnx"
    torch.onnx.export(net, (x, m), str(path), input_names=["x", "m"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "m": {0: "N"}, "y": {0: "N"}},
                      dynamo=False, opset_version=17)
    model = fn.onnx.load(path)
    assert [t.name for t in model.inputs] == ["x", "m"]
    with torch.no_grad():
        want = net(x, m).numpy()
        unmasked = net(x, torch.zeros_like(m)).numpy()
    xs = [x.numpy(), m.numpy()]
    _close(model.predict(xs), want)
    _close(model.predict([a[:1] for a in xs]), want[:1])
    assert np.abs(model.predict([xs[0], np.zeros_like(xs[1])]) - want).max() > 1e-3
    _close(model.predict([xs[0], np.zeros_like(xs[1])]), unmasked)
    n_attn = sum(isinstance(lay, L.MultiHeadAttention) for lay in model.layers)
    assert n_attn == (1 if name == "multihead_attention" else 2)
    model.compile(optimizer="adam", loss="mse")  # one step towards random labels
    hist = model.fit(xs, rng.standard_normal(want.shape).astype(np.float32), epochs=1,
                     batch_size=3, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    # exported again, the mask is the same input with the same meaning
    again = tmp_path / "again.onnx"
    fn.onnx.export(model, again)
    s = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])
    assert [i.name for i in s.get_inputs()] == ["x", "m"]
    got = s.run(None, {"x": xs[0], "m": xs[1].astype(np.float32)})[0]
    _close(got, model.predict(xs))
    # and loads back as the same model: the same inputs, the same predictions
    back = fn.onnx.load(again)
    assert [t.name for t in back.inputs] == ["x", "m"]
    for ms in (xs[1], np.zeros_like(xs[1])):  # the model as fit above
        _close(back.predict([xs[0], ms]), model.predict([xs[0], ms]))
    assert sum(isinstance(lay, L.MultiHeadAttention) for lay in back.layers) == n_attn


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings(_TRACER_NOTE)
@pytest.mark.parametrize("mask", ["attn_mask_bool", "attn_mask_float", "key_padding_float"])
def test_torch_masks_fastnn_cannot_take_are_named(mask, tmp_path):
    """torch's attn_mask (T, S) is one mask for the whole batch: a fastnn model input always
    has the batch first, and its attention masks keys per sample only; a float
    key_padding_mask is added to the scores as it is, which fastnn's attention cannot do.
    Both are a ValueError naming the Softmax node, never a model that predicts otherwise."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = torch.nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x, m):
            if mask == "key_padding_float":
                return self.m(x, x, x, key_padding_mask=m, need_weights=False)[0]
            return self.m(x, x, x, attn_mask=m, need_weights=False)[0]

    torch.manual_seed(0)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    m = {"attn_mask_bool": causal,
         "attn_mask_float": torch.zeros(6, 6).masked_fill(causal, float("-inf")),
         "key_padding_float": torch.zeros(3, 6).masked_fill(_padding(torch, 3, 6), float("-inf"))}[mask]
    dyn = {"x": {0: "N"}, "y": {0: "N"}}
    if mask == "key_padding_float":
        dyn["m"] = {0: "N"}
    path = tmp_path / "masked.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(3, 6, 16), m), str(path), input_names=["x", "m"],
                      output_names=["y"], dynamic_axes=dyn, dynamo=False, opset_version=17)
    want = "float mask" if mask == "key_padding_float" else "attn_mask"
    with pytest.raises(ValueError, match=f"Softmax node .*{want}"):
        fn.onnx.load(path)


class _CausalNet:
    """torch attention with a causal mask made inside the model: a float attn_mask buffer
    (generate_square_subsequent_mask), a bool one, or TransformerEncoderLayer's
    is_causal (a mask computed from the shapes with Trilu); window=2 makes the float
    buffer a band (each query sees itself and one key before), which is not causal."""

    def __new__(cls, torch, kind, window=None):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = torch.nn.TransformerEncoderLayer(16, 4, 32, batch_first=True,
                                                          dropout=0.0) if kind == "is_causal" \
                    else torch.nn.MultiheadAttention(16, 4, batch_first=True)
                self.fc = torch.nn.Linear(16, 3)
                upper = torch.triu(torch.ones(9, 9, dtype=torch.bool), 1)
                if window:
                    upper |= torch.tril(torch.ones(9, 9, dtype=torch.bool), -window)
                self.register_buffer("bmask", upper)
                self.register_buffer("fmask", torch.zeros(9, 9).masked_fill(upper, float("-inf")))

            def forward(self, x):
                if kind == "is_causal":
                    y = self.m(x, src_mask=self.fmask, is_causal=True)
                else:
                    m = self.bmask if kind == "bool" else self.fmask
                    y = self.m(x, x, x, attn_mask=m, need_weights=False)[0]
                return self.fc(y.mean(1))
        return Net()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings(_TRACER_NOTE)
@pytest.mark.parametrize("kind", ["float", "bool", "is_causal"])
def test_import_torch_causal_masks(kind, tmp_path):
    """A causal mask built inside the torch model becomes use_causal_mask."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _CausalNet(torch, kind).eval()
    model, x, want = _imported_predicts_as_torch(torch, net, tmp_path)
    attn = [lay for lay in model.layers if isinstance(lay, L.MultiHeadAttention)]
    assert len(attn) == 1
    if kind != "is_causal":  # the mask matters: the same net without it differs
        with torch.no_grad():
            plain = net.fc(net.m(x, x, x, need_weights=False)[0].mean(1)).numpy()
        assert np.abs(plain - want).max() > 1e-3
    _fits(model, x.numpy(), want)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings(_TRACER_NOTE)
def test_import_torch_other_constant_mask_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    net = _CausalNet(torch, "float", window=2).eval()
    path = tmp_path / "band.onnx"
    _torch_export(torch, net, torch.randn(2, 9, 16), path)
    with pytest.raises(ValueError, match="Softmax node .*mask of shape \\(1, 1, 9, 9\\) made inside "
                                         "the model .*causal one only"):
        fn.onnx.load(path)


# --- what is not attention fastnn can run ---------------------------------------------------
def _save(path, nodes, inits=(), x_shape=("N", 4, 8), y_shape=("N", 4, 8)):
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_attention_without_projections_is_named(tmp_path):
    from onnx import helper

    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "xt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"])]
    with pytest.raises(ValueError, match="attention at Softmax node 'p'.*reaches"):
        fn.onnx.load(_save(tmp_path / "bare.onnx", nodes))


def test_erf_outside_gelu_is_named(tmp_path):
    from onnx import helper

    with pytest.raises(ValueError, match="Erf node 'y'.*only inside"):
        fn.onnx.load(_save(tmp_path / "erf.onnx", [helper.make_node("Erf", ["x"], ["y"])]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_attention_over_another_axis_is_refused(tmp_path):
    """torch's time-major MultiheadAttention given batch-first data attends over the
    batch axis: fastnn cannot run that and says so (here the export fixes the batch in
    its reshapes, so the probe run already refuses it) instead of predicting otherwise."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = torch.nn.MultiheadAttention(16, 4)  # batch_first=False

        def forward(self, x):
            return self.m(x, x, x, need_weights=False)[0]

    torch.manual_seed(0)
    path = tmp_path / "time_major.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(3, 6, 16),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                      dynamo=False, opset_version=17)
    with pytest.raises(ValueError, match="attention"):
        fn.onnx.load(path)
