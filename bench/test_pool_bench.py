"""Pooling and batch-norm benchmarks: fastnn layers vs the NumPy twins vs torch (if importable).

    pytest bench/test_pool_bench.py --benchmark-only     # pytest-benchmark groups
    python bench/test_pool_bench.py [--threads 1,2]      # compact table, impls interleaved

Shapes are the MNIST CNN's at batch 64: conv 3x3 -> (64, 26, 26, 32) -> max pool 2 ->
(64, 13, 13, 32); conv 3x3 -> (64, 11, 11, 64) -> max pool 2 -> (64, 5, 5, 64); batch norm
at (64, 26, 26, 32). fastnn runs the layers as a training step does (forward with
training=True keeps what backward needs; backward returns a fresh dx). torch gets the same
NHWC memory (channels_last tensors) and runs autograd (forward, then backward(dy)), as a
training step does. Threads are pinned (FASTNN_BENCH_THREADS, default 2) for fastnn and
torch. extra_info holds a nominal GFLOP/s (one op per window element read, per output,
and per element of dx; batch norm: 10 ops per element) and build_info().
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn import reference as ref

L = fastnn.layers
THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
POOL_SHAPES = [(64, 26, 26, 32), (64, 11, 11, 64)]
BN_SHAPE = (64, 26, 26, 32)


def set_threads(n: int) -> None:
    fastnn.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def _layer(layer, shape):
    layer._build(shape[1:])
    n = layer.param_count
    layer.bind(np.zeros(n, np.float32), np.zeros(n, np.float32), 0)
    layer.initialize(np.random.default_rng(0))
    return layer


def _torch_nhwc(a, grad=False):
    """A torch view of an NHWC array as logical NCHW with channels_last strides."""
    import torch

    t = torch.from_numpy(a).permute(0, 3, 1, 2)
    return t.detach().requires_grad_(True) if grad else t


def nominal_ops(kind: str, shape) -> float:
    n, h, w, c = shape
    if kind == "bn":
        return 10.0 * n * h * w * c
    if kind == "gap":
        return 2.0 * n * h * w * c + n * c
    oh, ow = h // 2, w // 2
    fwd = n * oh * ow * c * 4 + n * oh * ow * c
    return fwd if kind == "max_fwd" else fwd + n * oh * ow * c + n * h * w * c


def make_call(impl: str, kind: str, shape):
    """A no-argument callable running one benchmark step of `kind` with `impl`."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "bn":
        x = x * 2 + 1
    n, h, w, c = shape
    out_shape = {"gap": (n, c), "bn": shape}.get(kind, (n, h // 2, w // 2, c))
    dy = rng.standard_normal(out_shape).astype(np.float32)

    if impl == "fastnn":
        layer = {"max_fwd": L.MaxPooling2D, "max": L.MaxPooling2D, "avg": L.AveragePooling2D,
                 "gap": L.GlobalAveragePooling2D, "bn": L.BatchNormalization}[kind]()
        _layer(layer, shape)
        if kind == "max_fwd":
            return lambda: layer.forward(x, training=True)

        def step():
            layer.forward(x, training=True)
            return layer.backward(dy)
        return step

    if impl == "numpy":
        if kind == "max_fwd":
            return lambda: ref.max_pool2d(x)
        if kind == "max":
            return lambda: ref.max_pool2d_backward(dy, ref.max_pool2d(x)[1], shape)
        if kind == "avg":
            return lambda: (ref.avg_pool2d(x), ref.avg_pool2d_backward(dy, shape))[1]
        if kind == "gap":
            return lambda: (ref.global_avg_pool2d(x), ref.global_avg_pool2d_backward(dy, shape))[1]
        g, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)

        def bn_step():
            _, saved = ref.batch_norm(x, g, b, rm, rv, True)
            return ref.batch_norm_backward(dy, x, g, saved)[0]
        return bn_step

    if impl == "torch":
        torch = pytest.importorskip("torch")
        F = torch.nn.functional
        xt = _torch_nhwc(x, grad=True)
        if kind == "gap":
            dyt = torch.from_numpy(dy)
            fwd = lambda t: t.mean(dim=(2, 3))  # noqa: E731
        else:
            dyt = _torch_nhwc(dy)
            if kind == "bn":
                wt = torch.ones(c, requires_grad=True)
                bt = torch.zeros(c, requires_grad=True)
                rm, rv = torch.zeros(c), torch.ones(c)
                fwd = lambda t: F.batch_norm(t, rm, rv, wt, bt, True, 0.01, 1e-3)  # noqa: E731
            else:
                pool = F.avg_pool2d if kind == "avg" else F.max_pool2d
                fwd = lambda t: pool(t, 2)  # noqa: E731
        if kind == "max_fwd":
            return lambda: fwd(xt)

        def torch_step():
            xt.grad = None
            fwd(xt).backward(dyt)
            return xt.grad
        return torch_step
    raise ValueError(impl)


def to_numpy(r):
    if hasattr(r, "detach"):  # torch NCHW (channels_last) -> NHWC
        r = r.detach()
        return (r.permute(0, 2, 3, 1) if r.dim() == 4 else r).numpy()
    return r


CASES = ([("max_fwd", s) for s in POOL_SHAPES] + [("max", s) for s in POOL_SHAPES]
         + [("avg", s) for s in POOL_SHAPES] + [("gap", s) for s in POOL_SHAPES]
         + [("bn", BN_SHAPE)])
TITLE = {"max_fwd": "maxpool2d forward", "max": "maxpool2d forward+backward",
         "avg": "avgpool2d forward+backward", "gap": "global avgpool forward+backward",
         "bn": "batchnorm forward+backward (training)"}

# ---- pytest-benchmark -------------------------------------------------------------------

pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=0.5, warmup=True,
                                   warmup_iterations=3)


@pytest.fixture(scope="module")
def pinned():
    before = fastnn.get_num_threads()
    set_threads(THREADS)
    yield
    fastnn.set_num_threads(before)


@pytest.mark.parametrize("impl", ["numpy", "fastnn", "torch"])
@pytest.mark.parametrize("kind,shape", CASES, ids=[f"{k}-{'x'.join(map(str, s))}" for k, s in CASES])
def test_pool(benchmark, pinned, impl, kind, shape):
    call = make_call(impl, kind, shape)
    if kind != "max_fwd":  # same gradient as the NumPy twin
        want = make_call("numpy", kind, shape)()
        got = to_numpy(call())
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
    benchmark.group = f"{TITLE[kind]} {shape}"
    benchmark(call)
    if not benchmark.stats:  # None under --benchmark-disable
        return
    st = benchmark.stats.stats
    ops_ = nominal_ops(kind, shape)
    benchmark.extra_info.update({
        "shape": list(shape), "threads": THREADS,
        "gflops_min_time": ops_ / st.min / 1e9, "gflops_median": ops_ / st.median / 1e9,
        "build_info": fastnn.build_info(),
    })


# ---- python bench/test_pool_bench.py: one table, impls timed side by side -------------------

def _best(f, reps):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def table(threads=(1, 2), rounds=15, reps=10):
    impls = ["fastnn"]
    try:
        import torch  # noqa: F401

        impls.append("torch")
    except ImportError:
        pass
    print(fastnn.build_info())
    for n in threads:
        set_threads(n)
        print(f"\nthreads={n}; best of {rounds} interleaved rounds x {reps} calls (µs); "
              "ratio = torch time / fastnn time")
        print(f"{'step':40s} {'shape':18s} " + " ".join(f"{i:>9s}" for i in impls) + "   torch/fastnn")
        for kind, shape in CASES:
            calls = {i: make_call(i, kind, shape) for i in impls}
            for f in calls.values():
                f()
            best = {i: float("inf") for i in impls}
            for _ in range(rounds):  # interleaved, so load changes hit every impl alike
                for i in impls:
                    best[i] = min(best[i], _best(calls[i], reps))
            ratio = f"{best['torch'] / best['fastnn']:8.2f}" if "torch" in best else ""
            print(f"{TITLE[kind]:40s} {str(shape):18s} " +
                  " ".join(f"{best[i] * 1e6:9.1f}" for i in impls) + f"   {ratio}", flush=True)


if __name__ == "__main__":
    ths = (1, 2)
    if "--threads" in sys.argv:
        ths = tuple(int(x) for x in sys.argv[sys.argv.index("--threads") + 1].split(","))
    table(ths)
