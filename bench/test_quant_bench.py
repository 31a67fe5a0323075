"""Int8 inference: fastnn.ops.qdense / qconv2d against fastnn's float dense / conv2d.

    FASTNN_BENCH_THREADS=1 python -m pytest bench/test_quant_bench.py --benchmark-only
    python bench/test_quant_bench.py [--threads 1,2] [--rnn | --no-rnn] [--qisa avx512vnni]
                                     [--isa avx2]
        # compact table with the ratios; --qisa forces an int8 ISA of this CPU (e.g. the
        # VNNI kernel on a CPU that has AMX too), --isa the float GEMM's (with --qisa avx2:
        # both dense kernels an AVX2 machine runs; the float conv kernels stay the CPU's
        # own build), --no-rnn leaves out the recurrent rows

Groups: one per layer and batch, e.g. ``qdense N=32 784->128 relu``; in each, impl =
float (fastnn.ops.dense / conv2d, float32 weights), int8 (qdense / qconv2d with dynamic
per-tensor quantization of each batch, the default), int8_static (a fixed x_scale /
x_zero_point) and ort_int8 (onnxruntime's quantize_dynamic of the same layer: a
DynamicQuantizeLinear + MatMulInteger graph; skipped when onnx/onnxruntime are absent).
extra_info holds the operation count (2·M·N·K: one multiply and one add per product)
and GFLOP/s (float) or GOP/s (int8) at the median time; every int8 time includes the
quantization of the input and the dequantizing epilogue.

Recurrent groups ``qlstm N=.. T=200 128->64`` (and ``qgru``): the IMDB model's first
LSTM layer (a one-layer model's predict, so Model.predict's overhead is in every row):
float (the float32 layer), int8 (fastnn.quantization.quantize, dynamic: x per call, h
per step), int8_static (calibrated scales) and torch_int8 (torch.ao.quantization.
quantize_dynamic's int8 module, torch.ao.nn.quantized.dynamic.LSTM / GRU, of an nn.LSTM /
nn.GRU of the same size, under torch.inference_mode; skipped without torch) and
torch_float (the nn.LSTM / nn.GRU itself).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

import numpy as np
import pytest

import _common

# (K, N, activation): the 784-128-10 MLP's layers and a square 1024 layer.
DENSE = [(784, 128, "relu"), (128, 10, "linear"), (1024, 1024, "relu")]
BATCHES = [1, 32, 256]
# The seed CNN's conv layers at batch 64 (3×3, 'valid', relu): (H, W, C, OC).
CONV_N = 64
CONVS = [(28, 28, 1, 32), (13, 13, 32, 64)]
IMPLS = ["float", "int8", "int8_static", "ort_int8"]
# The IMDB bidirectional-LSTM model's first recurrent layer: (T, C, U).
RNN = (200, 128, 64)
RNN_IMPLS = ["float", "int8", "int8_static", "torch_int8", "torch_float"]


def dense_data(n, k, oc, seed=0):
    rng = np.random.default_rng(seed)
    lim = np.sqrt(6.0 / (k + oc))
    x = rng.uniform(0.0, 1.0, (n, k)).astype(np.float32)
    w = rng.uniform(-lim, lim, (k, oc)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, oc).astype(np.float32)
    return x, w, b


def ort_dense(x, w, b, act):
    """An onnxruntime session of y = act(x @ w + b), quantized by quantize_dynamic."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    k, oc = w.shape
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["z" if act == "relu" else "y"])]
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["z"], ["y"]))
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", oc])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "f.onnx"), os.path.join(d, "q.onnx")
        onnx.save(model, src)
        level = logging.getLogger().level  # quantize_dynamic warns about pre-processing
        logging.getLogger().setLevel(logging.ERROR)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(level)
        so = ort.SessionOptions()
        n = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
        so.intra_op_num_threads = n
        so.inter_op_num_threads = 1
        # ORT's pool otherwise spins after each run and takes the cores from the OpenMP
        # threads of the other impls timed in the same process (2-thread times of ms).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})[0]


def setup_dense(impl, n, k, oc, act):
    """A closure running one forward of the layer with impl (outputs preallocated)."""
    from fastnn import ops

    x, w, b = dense_data(n, k, oc)
    y = np.empty((n, oc), np.float32)
    if impl == "float":
        return lambda: ops.dense(x, w, b, activation=act, out=y)
    if impl == "ort_int8":
        return ort_dense(x, w, b, act)
    qw = ops.pack_qweight(w)
    if impl == "int8":
        fn = lambda: ops.qdense(x, qw, b, activation=act, out=y)  # noqa: E731
    else:
        _, s, z = ops.quantize_u8_dynamic(x)
        fn = lambda: ops.qdense(x, qw, b, activation=act, x_scale=s, x_zero_point=z, out=y)  # noqa: E731
    fn()
    ref = ops.dense(x, w, b, activation=act)
    assert np.abs(y - ref).max() <= 0.02 * max(np.abs(ref).max(), 1.0)
    return fn


def setup_conv(impl, h, w_, c, oc):
    from fastnn import ops

    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (CONV_N, h, w_, c)).astype(np.float32)
    lim = np.sqrt(6.0 / (9 * c + oc))
    k = rng.uniform(-lim, lim, (3, 3, c, oc)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, oc).astype(np.float32)
    y = np.empty((CONV_N, h - 2, w_ - 2, oc), np.float32)
    if impl == "float":
        return lambda: ops.conv2d(x, k, b, activation="relu", out=y)
    if impl == "ort_int8":
        pytest.skip("ort_int8: dense layers only")
    qk = ops.pack_qweight(k)
    if impl == "int8":
        fn = lambda: ops.qconv2d(x, qk, b, activation="relu", out=y)  # noqa: E731
    else:
        _, s, z = ops.quantize_u8_dynamic(x)
        fn = lambda: ops.qconv2d(x, qk, b, activation="relu", x_scale=s, x_zero_point=z,  # noqa: E731
                                 out=y)
    fn()
    ref = ops.conv2d(x, k, b, activation="relu")
    assert np.abs(y - ref).max() <= 0.02 * max(np.abs(ref).max(), 1.0)
    return fn


def rnn_data(n, t, c, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 0.5, (n, t, c)).astype(np.float32)


def torch_rnn(kind, n, t, c, u, quantized=True):
    """torch nn.LSTM / nn.GRU (batch_first), in int8 (qint8 weights, activations
    quantized per step as torch does) or left in float32."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(int(os.environ.get("FASTNN_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    mod = cls(c, u, batch_first=True).eval()
    if quantized:
        # torch.ao.nn.quantized.dynamic.LSTM / GRU: what quantize_dynamic maps nn.LSTM /
        # nn.GRU to (torch 2.13's quantize_dynamic returned the float module unchanged
        # here, so the module is converted directly, with the default dynamic qconfig).
        import warnings
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated for torchao
            warnings.simplefilter("ignore")
            import torch.ao.nn.quantized.dynamic as qd
            from torch.ao.quantization import default_dynamic_qconfig
            mod.qconfig = default_dynamic_qconfig
            mod = (qd.LSTM if kind == "lstm" else qd.GRU).from_float(mod)
        assert type(mod).__module__.startswith("torch.ao.nn.quantized.dynamic")
    x = torch.from_numpy(rnn_data(n, t, c))

    def run():
        with torch.inference_mode():
            return mod(x)[0]
    return run


def setup_rnn(impl, kind, n, t, c, u):
    """A closure predicting one batch with a one-layer LSTM/GRU model (int8 impls: its
    quantized copy)."""
    import fastnn as fn

    if impl in ("torch_int8", "torch_float"):
        return torch_rnn(kind, n, t, c, u, impl == "torch_int8")
    L = fn.layers
    layer = L.LSTM(u, input_shape=(t, c)) if kind == "lstm" else L.GRU(u, input_shape=(t, c))
    model = fn.Sequential([layer], seed=0)
    model.build()
    x = rnn_data(n, t, c)
    if impl == "int8":
        model = fn.quantization.quantize(model)
    elif impl == "int8_static":
        model = fn.quantization.quantize(model, mode="static", calibration_data=rnn_data(64, t, c, 1))
    run = lambda: model.predict(x, batch_size=n)  # noqa: E731
    run()
    return run


@pytest.mark.parametrize("impl", RNN_IMPLS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_qrnn(benchmark, impl, n, kind):
    t, c, u = RNN
    fn = setup_rnn(impl, kind, n, t, c, u)
    benchmark.group = f"q{kind} N={n} T={t} {c}->{u}"
    benchmark(fn)
    _record(benchmark, impl if impl != "torch_float" else "float",
            2 * n * t * (c + u) * (4 if kind == "lstm" else 3) * u)


def _record(benchmark, impl, ops_count):
    _common.record_rate(benchmark, flops=ops_count, impl=impl)
    key = "gflops" if impl == "float" else "gops"
    if "gflops" in benchmark.extra_info and key != "gflops":
        benchmark.extra_info[key] = benchmark.extra_info.pop("gflops")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("k, oc, act", DENSE, ids=[f"{k}x{oc}" for k, oc, _ in DENSE])
def test_qdense(benchmark, impl, n, k, oc, act):
    fn = setup_dense(impl, n, k, oc, act)
    benchmark.group = f"qdense N={n} {k}->{oc} {act}"
    benchmark(fn)
    _record(benchmark, impl, 2 * n * k * oc)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("h, w, c, oc", CONVS, ids=[f"{h}x{w}x{c}-{oc}" for h, w, c, oc in CONVS])
def test_qconv(benchmark, impl, h, w, c, oc):
    fn = setup_conv(impl, h, w, c, oc)
    benchmark.group = f"qconv N={CONV_N} {h}x{w}x{c}->{oc} 3x3 relu"
    benchmark(fn)
    _record(benchmark, impl, 2 * CONV_N * (h - 2) * (w - 2) * 9 * c * oc)


# ---- python bench/test_quant_bench.py: one table, impls timed side by side -------------

def _best(fns, rounds=7, min_time=0.05):
    """Best time per call of each fn, over interleaved rounds of ~min_time each."""
    reps = []
    for fn in fns:
        fn()
        t0, r = time.perf_counter(), 0
        while time.perf_counter() - t0 < min_time / 5:
            fn()
            r += 1
        reps.append(max(r * 5, 3))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(reps[i]):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / reps[i])
    return best


def rnn_table(threads, kinds=("lstm", "gru")):
    """fastnn float / int8 (dynamic, static) / torch int8 (quantize_dynamic) / torch float
    predict times of one LSTM/GRU layer, side by side in one run."""
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    t, c, u = RNN
    impls = ["float", "int8", "int8_static"] + (["torch_int8", "torch_float"] if have_torch else [])
    print(f"\n{'threads':>7} {'layer':<26} " + " ".join(f"{i + ' ms':>14}" for i in impls)
          + f" {'float/int8':>10}" + (f" {'torch8/int8':>11}" if have_torch else ""))
    for nt in threads:
        _common.pin_threads(nt, fastnn=True, torch=have_torch)
        os.environ["FASTNN_BENCH_THREADS"] = str(nt)
        for kind in kinds:
            for n in BATCHES:
                fns = [setup_rnn(i, kind, n, t, c, u) for i in impls]
                times = _best(fns, rounds=5 if n < 256 else 3)
                row = f"{nt:>7} {f'{kind} N={n} T={t} {c}->{u}':<26} " + " ".join(
                    f"{x * 1e3:>14.2f}" for x in times) + f" {times[0] / times[1]:>10.2f}"
                if have_torch:
                    row += f" {times[3] / times[1]:>11.2f}"
                print(row, flush=True)


def main(argv):
    threads = [2]
    for i, a in enumerate(argv):
        if a == "--threads":
            threads = [int(t) for t in argv[i + 1].split(",")]
    if "--rnn" in argv:  # the recurrent rows only
        import fastnn
        print(f"fastnn {fastnn.build_info()}")
        rnn_table(threads)
        return
    import fastnn
    from fastnn import _core

    if "--qisa" in argv:
        name = argv[argv.index("--qisa") + 1]
        if name not in _core.qgemm_supported_isas():
            sys.exit(f"--qisa: this CPU runs {list(_core.qgemm_supported_isas())}, not {name!r}")
        _core.set_qgemm_isa(name)
    if "--isa" in argv:  # the float GEMM's (e.g. avx2 with --qisa avx2 on an AVX-512 CPU)
        name = argv[argv.index("--isa") + 1]
        if name not in _core.supported_isas():
            sys.exit(f"--isa: this CPU runs {list(_core.supported_isas())}, not {name!r}")
        _core.set_gemm_isa(name)
    print(f"fastnn {fastnn.build_info()}")
    print(f"int8 ISA {_core.qgemm_isa()}, float GEMM ISA {_core.gemm_isa()}")
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False
    print(f"{'threads':>7} {'layer':<28} {'float us':>10} {'int8 us':>10} {'ratio':>6} "
          f"{'int8 GOP/s':>10} {'ort int8 us':>11}")
    for nt in threads:
        _common.pin_threads(nt, fastnn=True, torch=False)
        os.environ["FASTNN_BENCH_THREADS"] = str(nt)
        impls = ("float", "int8", "ort_int8") if have_ort else ("float", "int8")
        rows = [(f"dense N={n} {k}->{oc}", lambda n=n, k=k, oc=oc, a=a: [
                    setup_dense(i, n, k, oc, a) for i in impls], 2 * n * k * oc)
                for (k, oc, a) in DENSE for n in BATCHES]
        rows += [(f"conv N={CONV_N} {h}x{w}x{c}->{oc}", lambda h=h, w=w, c=c, oc=oc: [
                     setup_conv(i, h, w, c, oc) for i in ("float", "int8")],
                  2 * CONV_N * (h - 2) * (w - 2) * 9 * c * oc) for (h, w, c, oc) in CONVS]
        for name, make, count in rows:
            times = _best(make())
            tf, ti = times[:2]
            ort = f"{times[2] * 1e6:>11.1f}" if len(times) > 2 else f"{'-':>11}"
            print(f"{nt:>7} {name:<28} {tf * 1e6:>10.1f} {ti * 1e6:>10.1f} {tf / ti:>6.2f} "
                  f"{count / ti / 1e9:>10.1f} {ort}")
    if "--no-rnn" not in argv:
        rnn_table(threads)


if __name__ == "__main__":
    main(sys.argv[1:])
