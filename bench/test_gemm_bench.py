"""GEMM benchmarks: fastnn.ops.matmul vs NumPy's BLAS (`a @ b`) vs torch (when importable).

    pytest bench/test_gemm_bench.py --benchmark-only          # pytest-benchmark groups
    python bench/test_gemm_bench.py [--threads 1,2] [--only square]   # compact table

One group per shape: 1024³ and 2048³, and the MNIST MLP layers (784→128→10, 784→128→64→10) at
batch 32..256 for the forward product y = x·w, the weight gradient dw = xᵀ·dz and the
input gradient dx = dz·wᵀ. Threads are pinned (FASTNN_BENCH_THREADS, default 2) for
fastnn, torch and NumPy's OpenBLAS; GFLOP/s and build_info() go into extra_info.
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import time

import numpy as np
import pytest

import fastnn
from fastnn import ops

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
BATCHES = (32, 64, 128, 256)
LAYERS = ((784, 128), (128, 10), (128, 64), (64, 10))  # (fan_in, fan_out)


def shapes():
    """(name, M, N, K, trans_a, trans_b) of every benchmarked product."""
    out = [("square 1024x1024x1024", 1024, 1024, 1024, False, False),
           ("square 2048x2048x2048", 2048, 2048, 2048, False, False)]
    for batch in BATCHES:
        for fi, fo in LAYERS:
            out.append((f"fwd x@w {batch}x{fi}->{fo}", batch, fo, fi, False, False))
            out.append((f"dw xT@dz {batch}x{fi}->{fo}", fi, fo, batch, True, False))
            out.append((f"dx dz@wT {batch}x{fi}->{fo}", batch, fi, fo, False, True))
    return out


# ---- thread pinning ---------------------------------------------------------------------

_blas_limit = None  # keeps a threadpoolctl limit alive


def set_numpy_threads(n: int) -> str:
    """Pin NumPy's BLAS to n threads; returns how (for extra_info)."""
    global _blas_limit
    try:
        from threadpoolctl import threadpool_limits

        _blas_limit = threadpool_limits(limits=n, user_api="blas")
        return f"{n} (threadpoolctl)"
    except ImportError:
        pass
    libdir = os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "lib*openblas*.so*")):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return f"{n} ({name})"
    return "not pinned (BLAS default)"


def set_threads(n: int) -> str:
    fastnn.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return set_numpy_threads(n)


# ---- implementations ----------------------------------------------------------------------

def operands(M, N, K, ta, tb, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    return a, b


def make_call(impl, a, b, ta, tb):
    if impl == "numpy":
        aa, bb = (a.T if ta else a), (b.T if tb else b)
        return lambda: aa @ bb
    if impl == "fastnn":
        return lambda: ops.matmul(a, b, ta, tb)
    if impl == "torch":
        torch = pytest.importorskip("torch")
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        at, bt = (at.T if ta else at), (bt.T if tb else bt)
        return lambda: torch.matmul(at, bt)
    raise ValueError(impl)


def to_numpy(r):
    return r.numpy() if hasattr(r, "numpy") else r


# ---- pytest-benchmark -------------------------------------------------------------------

pytestmark = pytest.mark.benchmark(min_rounds=5, max_time=0.5, warmup=True,
                                   warmup_iterations=3)


@pytest.fixture(scope="module")
def numpy_threads():
    before = fastnn.get_num_threads()
    how = set_threads(THREADS)
    yield how
    fastnn.set_num_threads(before)


@pytest.mark.parametrize("impl", ["numpy", "fastnn", "torch"])
@pytest.mark.parametrize("name,M,N,K,ta,tb",
                         [pytest.param(*s, id="-".join(s[0].split())) for s in shapes()])
def test_gemm(benchmark, numpy_threads, impl, name, M, N, K, ta, tb):
    a, b = operands(M, N, K, ta, tb)
    call = make_call(impl, a, b, ta, tb)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    got = to_numpy(call())
    assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.sqrt(K))

    benchmark.group = f"gemm {name} (M,N,K)=({M},{N},{K})"
    result = benchmark(call)
    assert result.shape == (M, N)
    if not benchmark.stats:  # None under --benchmark-disable
        return
    flops = 2.0 * M * N * K
    st = benchmark.stats.stats
    benchmark.extra_info.update({
        "M": M, "N": N, "K": K, "trans_a": ta, "trans_b": tb, "threads": THREADS,
        "numpy_threads": numpy_threads,
        "gflops_min_time": flops / st.min / 1e9,
        "gflops_median": flops / st.median / 1e9,
        "build_info": fastnn.build_info(),
    })


# ---- python bench/test_gemm_bench.py: one table, impls timed side by side -------------------

def _call_times(f, reps):
    """(min, median) time of single calls. On a shared machine the median shows what a
    caller typically gets, the min what the code does when both cores are free."""
    for _ in range(3):
        f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[0], times[len(times) // 2]


# Seconds to wait before timing another library on a large product. A BLAS keeps its
# worker threads spinning for a while after a call (OpenBLAS for tens of milliseconds);
# timed right after NumPy, fastnn's second thread shared its core with a spinning
# OpenBLAS thread and 1024^3 ran at half speed (94 against 156 GFLOP/s with this pause,
# AMD Zen 4, 2 threads).
SETTLE_S = 0.3


def table(threads=(1, 2), rounds=7, only=None):
    """GFLOP/s of numpy `a @ b`, fastnn.ops.matmul (allocating its result, as numpy does),
    torch if importable, and `_core.gemm` into a preallocated out (the kernel plus the
    binding, without the Python wrapper). `only`: shapes whose name contains it."""
    from fastnn import _core

    impls = ["numpy", "fastnn"]
    try:
        import torch  # noqa: F401

        impls.append("torch")
    except ImportError:
        pass
    cols = impls + ["core"]
    print(fastnn.build_info())
    for n in threads:
        how = set_threads(n)
        print(f"\nthreads={n} (numpy: {how}); load average {os.getloadavg()[0]:.1f}. GFLOP/s "
              f"from the best of {rounds} interleaved rounds of single-call medians; "
              f"ratios = numpy time / fastnn time, by median and by fastest call")
        print(f"{'shape':28s} {'M':>5s} {'N':>5s} {'K':>5s} " +
              " ".join(f"{i:>7s}" for i in cols) + "  ratio(med) ratio(min)")
        for name, M, N, K, ta, tb in shapes():
            if only and only not in name:
                continue
            a, b = operands(M, N, K, ta, tb)
            out = np.empty((M, N), np.float32)
            calls = {i: make_call(i, a, b, ta, tb) for i in impls}
            calls["core"] = lambda: _core.gemm(out, a, b, ta, tb)
            flops = 2.0 * M * N * K
            reps = max(5, min(300, int(1e7 / flops)))
            med = {i: float("inf") for i in cols}
            low = dict(med)
            for _ in range(rounds):  # interleaved, so load changes hit every impl alike
                for i in cols:
                    if flops >= 1e8:
                        time.sleep(SETTLE_S)
                    lo, md = _call_times(calls[i], reps)
                    low[i], med[i] = min(low[i], lo), min(med[i], md)
            print(f"{name:28s} {M:5d} {N:5d} {K:5d} " +
                  " ".join(f"{flops / med[i] / 1e9:7.1f}" for i in cols) +
                  f"  {med['numpy'] / med['fastnn']:10.2f} {low['numpy'] / low['fastnn']:10.2f}",
                  flush=True)


if __name__ == "__main__":
    ths = (1, 2)
    if "--threads" in sys.argv:
        ths = tuple(int(x) for x in sys.argv[sys.argv.index("--threads") + 1].split(","))
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    table(ths, only=only)
