"""fn.onnx.load of quantized ONNX models: fastnn's own int8 exports round trip bit for bit
(same int8 weights, scales and mode), ONNX Runtime's quantize_dynamic output becomes a
dynamic int8 model, its quantize_static output (QDQ or QOperator format) a static one, and
quantized graphs fastnn cannot run raise errors naming the nodes. Skipped without onnx /
onnxruntime."""
import numpy as np
import pytest

import fastnn as fn
from fastnn.cli import mnist_cnn_model, mnist_mlp_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
oq = pytest.importorskip("onnxruntime.quantization")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _ort_run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: np.asarray(x, np.float32)})[0]


def _trained(model, x, y):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=0)
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return rng.random((24, 28, 28)).astype(np.float32), rng.integers(0, 10, 24)


@pytest.fixture(scope="module")
def float_mlp(data, tmp_path_factory):
    x, y = data
    model = _trained(mnist_mlp_model([64], seed=1), x, y)
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    fn.onnx.export(model, path)
    return path


def _q_state(model):
    """[(class, mode, int8 kernel, scale, static input) ...] of the quantized layers."""
    out = []
    for la in model._leaf_layers:
        if getattr(la, "quantization", None):
            a = la._q["kernel"]
            out.append((type(la).__name__, la.quantization, a["int8"], a["scale"],
                        a["input"] if la.quantization == "static" else None))
    return out


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_fastnn_int8_round_trip(data, tmp_path, mode, arch):
    x, y = data
    model = mnist_mlp_model([64, 32], seed=1) if arch == "mlp" else mnist_cnn_model(seed=1)
    if arch == "cnn":
        x = x.reshape(-1, 28, 28, 1)
    q = fn.quantization.quantize(_trained(model, x, y), mode,
                                 calibration_data=x if mode == "static" else None)
    path = tmp_path / "q.onnx"
    fn.onnx.export(q, path)
    loaded = fn.onnx.load(path)
    want, got = _q_state(q), _q_state(loaded)
    assert [s[:2] for s in got] == [s[:2] for s in want]
    assert len(got) == (3 if arch == "mlp" else 5)
    for (_, _, wq, ws, wi), (_, _, gq, gs, gi) in zip(want, got):
        np.testing.assert_array_equal(gq, wq)
        np.testing.assert_array_equal(gs, ws)
        if mode == "static":
            np.testing.assert_array_equal(gi, wi)
    for batch in (x, x[:1]):  # the same int8 kernels on the same inputs: the same bits
        np.testing.assert_array_equal(loaded.predict(batch), q.predict(batch))
    saved = tmp_path / "loaded.fastnn"
    loaded.save(saved)
    again = fn.load_model(saved)
    assert fn.quantization.quantized_layers(again) == fn.quantization.quantized_layers(loaded)
    np.testing.assert_array_equal(again.predict(x), q.predict(x))
    # export -> load -> export gives the same integer graph
    path2 = tmp_path / "q2.onnx"
    fn.onnx.export(loaded, path2)
    np.testing.assert_array_equal(_ort_run(path2, x), _ort_run(path, x))


@pytest.mark.parametrize("per_channel,weight_type",
                         [(False, "QInt8"), (True, "QInt8"), (False, "QUInt8")])
def test_onnxruntime_quantize_dynamic_mlp(data, float_mlp, tmp_path, per_channel, weight_type):
    """MatMulInteger with u8 activations and s8 (or u8 with a zero point near 128) weights
    is fastnn's int8 product: the int32 sums and their float32 scaling are the same, so the
    outputs differ only by the softmax's last bits (ONNX Runtime's exp against fastnn's)."""
    x, _ = data
    path = tmp_path / "dyn.onnx"
    oq.quantize_dynamic(str(float_mlp), str(path), per_channel=per_channel,
                        weight_type=getattr(oq.QuantType, weight_type))
    model = fn.onnx.load(path)
    assert list(fn.quantization.quantized_layers(model).values()) == ["dynamic"] * 2
    for batch in (x, x[:1]):
        np.testing.assert_allclose(model.predict(batch), _ort_run(path, batch),
                                   rtol=1e-5, atol=1e-6)


def test_onnxruntime_uint8_weights_that_do_not_fit_int8(float_mlp, tmp_path):
    path = tmp_path / "dyn_u8.onnx"
    oq.quantize_dynamic(str(float_mlp), str(path), per_channel=True,
                        weight_type=oq.QuantType.QUInt8)
    g = onnx.load(str(path)).graph
    names = [n.name or n.output[0] for n in g.node if n.op_type == "MatMulInteger"]
    with pytest.raises(ValueError, match="outside int8") as e:
        fn.onnx.load(path)
    assert "MatMulInteger" in str(e.value) and any(repr(n) in str(e.value) for n in names)


class _Reader:
    def __init__(self, name, x):
        self.it = iter([{name: x[i:i + 8]} for i in range(0, len(x), 8)])

    def get_next(self):
        return next(self.it, None)


@pytest.mark.parametrize("per_channel", [False, True])
def test_onnxruntime_quantize_static_qdq_mlp(data, float_mlp, tmp_path, per_channel):
    """QDQ MatMuls become static int8 Dense layers (the same input quantization and int8
    weights); the Q/DQ pairs on the products' and softmax's outputs are float32 in fastnn,
    so the outputs differ by those roundings: a few steps of the output's scale."""
    x, _ = data
    path = tmp_path / "static.onnx"
    name = onnx.load(str(float_mlp)).graph.input[0].name
    oq.quantize_static(str(float_mlp), str(path), _Reader(name, x),
                       quant_format=oq.QuantFormat.QDQ, per_channel=per_channel)
    model = fn.onnx.load(path)
    assert list(fn.quantization.quantized_layers(model).values()) == ["static"] * 2
    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    last = [n for n in g.node if n.op_type == "DequantizeLinear"][-1]
    step = float(inits[last.input[1]])  # the softmax output's quantization step
    for batch in (x, x[:1]):
        got, want = model.predict(batch), _ort_run(path, batch)
        assert np.max(np.abs(got - want)) <= 3 * step
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9


def test_qdq_keeps_the_relu_onnxruntime_folded_into_a_range(tmp_path):
    """ONNX Runtime drops the Relu after a QDQ Conv and lets the zero point of the next
    QuantizeLinear clip at 0. When what reads that tensor is not an int8 product (here a
    global average pool), the import keeps the saturation as a Clip: without it the
    outputs were off by about the output's own size."""
    L = fn.layers
    model = fn.Sequential([L.Conv2D(8, 3, activation="relu", input_shape=(8, 8, 3)),
                           L.GlobalAveragePooling2D(), L.Dense(4)], seed=0)
    model.build()
    float_path, path = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    fn.onnx.export(model, float_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 8, 3)).astype(np.float32)
    name = onnx.load(str(float_path)).graph.input[0].name
    oq.quantize_static(str(float_path), str(path), _Reader(name, x),
                       quant_format=oq.QuantFormat.QDQ)
    assert "Relu" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    imported = fn.onnx.load(path)
    step = _output_step(path)
    for batch in (x[:5], rng.standard_normal((7, 8, 8, 3)).astype(np.float32)):
        assert np.max(np.abs(imported.predict(batch) - _ort_run(path, batch))) <= 3 * step


@pytest.fixture(scope="module")
def float_cnn(data, tmp_path_factory):
    x, y = data
    model = _trained(mnist_cnn_model(seed=1), x.reshape(-1, 28, 28, 1), y)
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    fn.onnx.export(model, path)
    return path


def _qoperator(float_path, path, x, per_channel=False, activation_type="QUInt8"):
    name = onnx.load(str(float_path)).graph.input[0].name
    oq.quantize_static(str(float_path), str(path), _Reader(name, x),
                       quant_format=oq.QuantFormat.QOperator, per_channel=per_channel,
                       activation_type=getattr(oq.QuantType, activation_type),
                       weight_type=oq.QuantType.QInt8)
    return path


def _output_step(path):
    """The scale of the file's last DequantizeLinear: one quantization step of the output."""
    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    return float(inits[[n for n in g.node if n.op_type == "DequantizeLinear"][-1].input[1]])


@pytest.mark.parametrize("activation_type", ["QUInt8", "QInt8"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_onnxruntime_quantize_static_qoperator(data, float_mlp, float_cnn, tmp_path, arch,
                                               per_channel, activation_type):
    """QLinearMatMul / QLinearConv become static int8 Dense / Conv2D layers (the same input
    quantization and int8 weights), MaxPool and the transposes run on float tensors, and
    QLinearSoftmax is a float softmax. fastnn keeps float32 between layers where ONNX
    Runtime rounds every output to its scale, so the outputs differ by those roundings: a
    few steps of the output's scale, on the calibration data and on other inputs (the
    saturation of each output to its range is kept)."""
    x, _ = data
    if arch == "cnn":
        x = x.reshape(-1, 28, 28, 1)
    path = _qoperator(float_mlp if arch == "mlp" else float_cnn, tmp_path / "qop.onnx", x,
                      per_channel, activation_type)
    model = fn.onnx.load(path)
    n = 2 if arch == "mlp" else 5
    assert list(fn.quantization.quantized_layers(model).values()) == ["static"] * n
    step = _output_step(path)
    other = np.random.default_rng(3).random((7,) + x.shape[1:]).astype(np.float32) * 1.5
    for batch in (x[:1], x[:7], other):
        got, want = model.predict(batch), _ort_run(path, batch)
        assert np.max(np.abs(got - want)) <= 3 * step
        assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.85
    saved = tmp_path / "qop.fastnn"
    model.save(saved)
    again = fn.load_model(saved)
    assert fn.quantization.quantized_layers(again) == fn.quantization.quantized_layers(model)
    np.testing.assert_array_equal(again.predict(x[:7]), model.predict(x[:7]))


def _float_ops_model(rng):
    """A float graph of the other operators ONNX Runtime quantizes to QOperator nodes:
    Conv -> Relu -> x·sigmoid(x) + x -> AveragePool -> GlobalAveragePool -> Gemm."""
    inits = {"w": rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32),
             "b": rng.normal(0, 0.1, 4).astype(np.float32),
             "gw": rng.normal(0, 0.5, (3, 4)).astype(np.float32),
             "gb": rng.normal(0, 0.1, 3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c0"], pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c0"], ["c"]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Mul", ["c", "s"], ["m"]),
             helper.make_node("Add", ["m", "c"], ["a"]),
             helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["gp"]),
             helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "ops",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("per_channel", [False, True])
def test_onnxruntime_qoperator_float_ops_and_qgemm(tmp_path, per_channel):
    """QLinearSigmoid / QLinearMul / QLinearAdd of two tensors / QLinearAveragePool /
    QLinearGlobalAveragePool become float operators and QGemm a static int8 Dense. The
    Relu ONNX Runtime folds into the convolution's output range (and drops) comes back as
    the saturation of that output, which the float operators read."""
    rng = np.random.default_rng(0)
    float_path = tmp_path / "ops.onnx"
    onnx.save(_float_ops_model(rng), str(float_path))
    x = rng.random((16, 1, 8, 8)).astype(np.float32)
    path = _qoperator(float_path, tmp_path / "ops_qop.onnx", x, per_channel)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QLinearSigmoid", "QLinearMul", "QLinearAdd", "QLinearAveragePool",
            "QLinearGlobalAveragePool", "QGemm"} <= ops and "Relu" not in ops
    model = fn.onnx.load(path)
    assert list(fn.quantization.quantized_layers(model).values()) == ["static"] * 2
    step = _output_step(path)
    for batch in (x[:1], x[:7], rng.random((7, 1, 8, 8)).astype(np.float32) * 1.5):
        assert np.max(np.abs(model.predict(batch) - _ort_run(path, batch))) <= 3 * step


def _leaky_relu_qoperator(tmp_path):
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("LeakyRelu", ["h"], ["r"], alpha=0.1, name="leaky"),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    float_path = tmp_path / "leaky.onnx"
    onnx.save(_graph(nodes, {"w1": rng.normal(size=(4, 5)).astype(np.float32),
                             "w2": rng.normal(size=(5, 3)).astype(np.float32)}), str(float_path))
    return _qoperator(float_path, tmp_path / "leaky_qop.onnx",
                      rng.normal(size=(16, 4)).astype(np.float32))


@pytest.mark.parametrize("case", ["op", "asymmetric", "scale"])
def test_qoperator_graphs_fastnn_cannot_import_name_the_node(data, float_mlp, tmp_path, case):
    if case == "op":  # QLinearLeakyRelu: no int8 form in fastnn
        proto = onnx.load(str(_leaky_relu_qoperator(tmp_path)))
        node = next(n for n in proto.graph.node if n.op_type == "QLinearLeakyRelu")
        match = "QLinearLeakyRelu node .*not supported"
    else:
        x, _ = data
        proto = onnx.load(str(_qoperator(float_mlp, tmp_path / "qop.onnx", x)))
        node = next(n for n in proto.graph.node if n.op_type == "QLinearMatMul")
        if case == "asymmetric":  # int8 weights with a zero point: q - 100 leaves int8
            zp = numpy_helper.from_array(np.int8(100), "weight_zero_point_100")
            proto.graph.initializer.append(zp)
            node.input[5] = zp.name
            match = "outside int8"
        else:  # the QLinearMatMul reads its input with another scale than it was made with
            other = numpy_helper.from_array(np.float32(0.5), "other_scale")
            proto.graph.initializer.append(other)
            node.input[1] = other.name
            match = "but it was quantized with"
    path = tmp_path / "bad.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match=match) as e:
        fn.onnx.load(path)
    msg = str(e.value)
    assert f"{node.op_type} node {(node.name or node.output[0])!r}" in msg
    assert "cannot import" in msg and "QuantFormat.QDQ" in msg


def _graph(nodes, inits, out_dim=3):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _integer_dense(w=None, scale_from_input=True, extra=()):
    w = np.arange(12, dtype=np.int8).reshape(4, 3) - 6 if w is None else w
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], name="dql"),
             helper.make_node("MatMulInteger", ["xq", "w", "xz"], ["acc"], name="mmi"),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs" if scale_from_input else "ws2", "ws"], ["s"]),
             helper.make_node("Mul", ["accf", "s"], ["y"], name="scale_mul"), *extra]
    inits = {"w": w, "ws": np.full(3, 0.5, np.float32), "ws2": np.float32(0.1)}
    return _graph(nodes, inits)


def test_hand_written_integer_dense(tmp_path):
    path = tmp_path / "ok.onnx"
    onnx.save(_integer_dense(), str(path))
    model = fn.onnx.load(path)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert fn.quantization.quantized_layers(model)
    np.testing.assert_allclose(model.predict(x), _ort_run(path, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case,match", [
    ("scale", "Mul\\(input scale, constant weight scale\\)"),
    ("asymmetric", "outside int8"),
    ("no_cast", "Cast to float"),
])
def test_unsupported_integer_graphs_name_the_node(tmp_path, case, match):
    if case == "scale":
        proto = _integer_dense(scale_from_input=False)
    elif case == "asymmetric":
        w = np.full((4, 3), 250, np.uint8)
        proto = _integer_dense()
        proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
        proto.graph.node[1].input.append("wz")
        proto.graph.initializer.append(numpy_helper.from_array(np.uint8(0), "wz"))
    else:
        nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
                 helper.make_node("MatMulInteger", ["xq", "w", "xz"], ["acc"], name="mmi"),
                 helper.make_node("CastLike", ["acc", "x"], ["y"])]
        proto = _graph(nodes, {"w": np.ones((4, 3), np.int8)})
    path = tmp_path / "bad.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match=match) as e:
        fn.onnx.load(path)
    msg = str(e.value)
    assert "MatMulInteger node 'mmi'" in msg and "cannot import" in msg
