"""predict of the 784-128-10 MNIST MLP, 90% sparse, dense path vs sparse path.

Groups ``predict N=<batch> threads=<t>``; impl = dense (the stripped model with its sparse
kernel cache turned off: Dense runs the GEMM) and sparse (fastnn.pruning's rule: the CSC
kernel where it is faster). Both models hold the same weights (layer 1 90% zeros, layer 2
as global pruning leaves it, ~60% zeros). Threads are pinned per case with
fastnn.set_num_threads (FASTNN_BENCH_THREADS is the session default).

    pytest bench/test_sparse_bench.py --benchmark-only --benchmark-group-by=group
"""
from __future__ import annotations

import numpy as np
import pytest

import fastnn as fn
from fastnn import pruning

BATCHES = [1, 8, 32, 256]
THREADS = [1, 2]


def _model():
    rng = np.random.default_rng(0)
    m = fn.Sequential([fn.layers.Flatten(input_shape=(28, 28)),
                       fn.layers.Dense(128, activation="relu"),
                       fn.layers.Dense(10, activation="softmax")], seed=1)
    w = m.get_weights()
    w[0][rng.random(w[0].shape) < 0.9] = 0
    w[2][rng.random(w[2].shape) < 0.6] = 0
    m.set_weights(w)
    return pruning.strip_pruning(m)


_MODELS = {}


def models():
    if not _MODELS:
        sparse = _model()
        dense = pruning.strip_pruning(sparse)
        for layer in dense._leaf_layers:
            layer.__dict__.pop("_sparse", None)
        _MODELS.update(dense=dense, sparse=sparse)
    return _MODELS


@pytest.mark.parametrize("impl", ["dense", "sparse"])
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", BATCHES)
def test_predict(benchmark, impl, threads, n):
    m = models()[impl]
    x = np.random.default_rng(n).random((n, 28, 28)).astype(np.float32)
    before = fn.get_num_threads()
    fn.set_num_threads(threads)
    try:
        y = m.predict(x, batch_size=n)
        ref = models()["dense"].predict(x, batch_size=n)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
        benchmark.group = f"predict N={n} threads={threads}"
        benchmark.extra_info.update(batch=n, threads=threads, build_info=str(fn.build_info()))
        benchmark.pedantic(m.predict, args=(x,), kwargs={"batch_size": n},
                           rounds=200 if n < 256 else 50, iterations=5, warmup_rounds=5)
    finally:
        fn.set_num_threads(before)
