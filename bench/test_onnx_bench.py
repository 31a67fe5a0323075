"""Inference: fastnn's predict vs ONNX Runtime running the same model exported by
fastnn.onnx.export, side by side, in float32 and in int8.

Groups: one per model and batch, e.g. ``predict mnist-cnn batch=32``; impl = fastnn
(``model.predict(x)``) or onnxruntime (``InferenceSession.run`` with intra-op threads =
FASTNN_BENCH_THREADS, default 2; skipped when onnx or onnxruntime is missing), and their
int8 forms: fastnn-int8 (``fn.quantization.quantize(model)``, dynamic) and
onnxruntime-int8 (the exported file through ONNX Runtime's own
``onnxruntime.quantization.quantize_dynamic`` with its defaults). Models:
the MNIST MLP (784-128-10) and CNN of ``python -m fastnn train``, and the IMDB
transformer (token + position embedding, one encoder block C=32, masked pooling, maxlen
80). Weights are random: the time does not depend on them.

    pytest bench/test_onnx_bench.py --benchmark-only --benchmark-group-by=group
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastnn as fn
from fastnn.cli import mnist_cnn_model, mnist_mlp_model

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
L = fn.layers


def _transformer():
    return fn.Sequential([
        L.PositionalEmbedding(80, 32, input_dim=10000, mask_zero=True, input_shape=(80,)),
        L.TransformerEncoder(2, 16, 32), L.GlobalAveragePooling1D(), L.Dropout(0.1),
        L.Dense(20, activation="relu"), L.Dense(2, activation="softmax")], seed=0)


MODELS = {
    "mnist-mlp": (lambda: mnist_mlp_model([128], seed=0), lambda n, r: r.random((n, 28, 28))),
    "mnist-cnn": (lambda: mnist_cnn_model(seed=0), lambda n, r: r.random((n, 28, 28, 1))),
    "imdb-transformer": (_transformer, lambda n, r: np.where(
        np.arange(80) < 60, r.integers(1, 10000, (n, 80)), 0)),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            make, _ = MODELS[name]
            model = make()
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            model.build()
            path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
            qpath = path.with_name(f"{name}.int8.onnx")
            if _have_onnxruntime():
                from onnxruntime.quantization import quantize_dynamic

                fn.onnx.export(model, path)
                quantize_dynamic(str(path), str(qpath))
            cache[name] = (model, fn.quantization.quantize(model), path, qpath)
        return cache[name]
    return get


def _have_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("impl", ["fastnn", "onnxruntime", "fastnn-int8", "onnxruntime-int8"])
@pytest.mark.parametrize("batch", [1, 32, 256])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict(benchmark, built, impl, batch, name):
    fn.set_num_threads(THREADS)
    model, qmodel, path, qpath = built(name)
    x = MODELS[name][1](batch, np.random.default_rng(0)).astype(np.float32)
    if impl.startswith("fastnn"):
        m = qmodel if impl.endswith("int8") else model
        run = lambda: m.predict(x, batch_size=batch, verbose=0)  # noqa: E731  (one call, as ORT)
    else:
        if not _have_onnxruntime():
            pytest.skip("onnx / onnxruntime not installed")
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
        sess = ort.InferenceSession(str(qpath if impl.endswith("int8") else path), so,
                                    providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        run = lambda: sess.run(None, feed)  # noqa: E731
    benchmark.group = f"predict {name} batch={batch}"
    benchmark.extra_info["threads"] = THREADS
    benchmark.pedantic(run, rounds=30 if batch == 256 else 200, iterations=1, warmup_rounds=5)
    # End an onnxruntime session (and its spinning thread pool) before the next test, whose
    # OpenMP threads would otherwise share the cores with it.
    run = sess = None  # noqa: F841
