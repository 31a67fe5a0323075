"""Attention core: forward, and forward + backward, fastnn vs its NumPy twin vs PyTorch.

Groups: one per pass and shape, e.g. ``attention_fwd_bwd N=32 T=80 C=64 NH=2``; in each,
impl = numpy (fastnn.reference: the full (N, NH, T, T) score matrix), fastnn (fastnn.ops
with preallocated outputs), torch (torch.nn.functional.scaled_dot_product_attention on
(N, NH, T, D) views of the same (N, T, C) data, backward through autograd; skipped when
torch is not importable). Threads are pinned (FASTNN_BENCH_THREADS, default 2).
extra_info: nominal flops per call (forward 4·N·T²·C, backward 2.5× that) and GFLOP/s
at the median, the threads and fastnn.build_info().

test_attention_peak_memory measures, with tracemalloc, the peak memory that one forward
+ backward allocates at T = 2048 (outputs included, inputs not) for fastnn and for the
materialising twin, and records their ratio (extra_info["memory_ratio"]).
"""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn import reference as ref

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))

# (N, T, C, NH): the model shapes (T = 80 tokens, 2 or 8 heads), then long sequences.
SHAPES = [(32, 80, 64, 2), (32, 80, 64, 8), (32, 80, 128, 8), (32, 80, 256, 8),
          (32, 80, 512, 8), (4, 512, 128, 4), (4, 2048, 128, 4)]
CASES = [pytest.param(*s, id=f"N{s[0]}-T{s[1]}-C{s[2]}-NH{s[3]}") for s in SHAPES]
IMPLS = ["numpy", "fastnn", "torch"]


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    old = fastnn.get_num_threads()
    fastnn.set_num_threads(THREADS)
    try:
        import torch
        torch.set_num_threads(THREADS)
    except ImportError:
        pass
    yield
    fastnn.set_num_threads(old)


def make_data(N, T, C, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v, do = (rng.standard_normal((N, T, C)).astype(np.float32) for _ in range(4))
    mask = np.ones((N, T), dtype=bool)
    mask[:, T - T // 4:] = False  # a quarter of every sequence is padding
    mask[0] = True
    return q, k, v, do, mask


class TorchAttention:
    """Leaf tensors viewing the NumPy data as (N, NH, T, D); autograd for backward."""

    def __init__(self, q, k, v, do, mask, NH):
        import torch

        N, T, C = q.shape
        D = C // NH
        self.F = torch.nn.functional.scaled_dot_product_attention
        self.torch = torch
        view = lambda x: torch.from_numpy(x).view(N, T, NH, D).transpose(1, 2)  # noqa: E731
        self.leaves = [torch.from_numpy(x.copy()).requires_grad_() for x in (q, k, v)]
        self.q, self.k, self.v = (x.view(N, T, NH, D).transpose(1, 2) for x in self.leaves)
        self.do = view(do)
        self.mask = torch.from_numpy(mask)[:, None, None, :]

    def forward(self):
        with self.torch.no_grad():
            return self.F(self.q, self.k, self.v, attn_mask=self.mask)

    def step(self):
        for x in self.leaves:
            x.grad = None
        self.F(self.q, self.k, self.v, attn_mask=self.mask).backward(self.do)


def setup_impl(impl, N, T, C, NH):
    """(forward(), forward_backward()) closures over preallocated buffers, checked once."""
    q, k, v, do, mask = make_data(N, T, C)
    if impl == "torch":
        pytest.importorskip("torch")
        ta = TorchAttention(q, k, v, do, mask, NH)
        if T <= 512:  # check the torch rows against fastnn's twin once
            o64, _ = ref.attention(*(x.astype(np.float64) for x in (q, k, v)), mask,
                                   num_heads=NH)
            got = ta.forward().transpose(1, 2).reshape(N, T, C).numpy()
            np.testing.assert_allclose(got, o64, rtol=0, atol=1e-4)
        return ta.forward, ta.step

    if impl == "numpy":
        def forward():
            return ref.attention(q, k, v, mask, num_heads=NH)

        def step():
            o, lse = ref.attention(q, k, v, mask, num_heads=NH)
            return ref.attention_backward(do, q, k, v, o, lse, mask, num_heads=NH)

        return forward, step

    out = np.empty_like(q)
    grads = [np.zeros_like(x) for x in (q, k, v)]
    mask8 = mask.view(np.uint8)

    def forward():
        return ops.attention(q, k, v, mask=mask8, num_heads=NH, out=out)

    def step():
        o, lse = ops.attention(q, k, v, mask=mask8, num_heads=NH, out=out)
        # Backward adds into the gradients; their growing contents do not change the time.
        ops.attention_backward(do, q, k, v, o, lse, mask=mask8, num_heads=NH,
                               dq=grads[0], dk=grads[1], dv=grads[2])

    step()
    assert all(np.all(np.isfinite(g)) for g in grads)
    return forward, step


def run(benchmark, fn, impl, T):
    if impl == "numpy" and T >= 512:  # seconds per call: a few rounds are enough
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    else:
        benchmark(fn)


def record(benchmark, flops, impl):
    benchmark.extra_info.update(impl=impl, threads=THREADS, flops=flops,
                                build_info=fastnn.build_info())
    if benchmark.stats:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = flops / median / 1e9 if median > 0 else None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N, T, C, NH", CASES)
def test_attention_forward(benchmark, impl, N, T, C, NH):
    forward, _ = setup_impl(impl, N, T, C, NH)
    benchmark.group = f"attention_fwd N={N} T={T} C={C} NH={NH}"
    run(benchmark, forward, impl, T)
    record(benchmark, 4 * N * T * T * C, impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N, T, C, NH", CASES)
def test_attention_forward_backward(benchmark, impl, N, T, C, NH):
    _, step = setup_impl(impl, N, T, C, NH)
    benchmark.group = f"attention_fwd_bwd N={N} T={T} C={C} NH={NH}"
    run(benchmark, step, impl, T)
    record(benchmark, 14 * N * T * T * C, impl)


def peak_bytes(fn):
    """Peak bytes allocated (tracemalloc: NumPy arrays and Python objects) while fn runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_attention_peak_memory(benchmark):
    N, T, C, NH = 4, 2048, 128, 4
    _, fast = setup_impl("fastnn", N, T, C, NH)
    q, k, v, do, mask = make_data(N, T, C)

    def fast_fresh():  # outputs allocated inside, as a plain call would
        o, lse = ops.attention(q, k, v, mask=mask, num_heads=NH)
        return ops.attention_backward(do, q, k, v, o, lse, mask=mask, num_heads=NH)

    def twin():
        o, lse = ref.attention(q, k, v, mask, num_heads=NH)
        return ref.attention_backward(do, q, k, v, o, lse, mask, num_heads=NH)

    fastnn_peak = peak_bytes(fast_fresh)
    numpy_peak = peak_bytes(twin)
    ratio = fastnn_peak / numpy_peak
    benchmark.group = f"attention_memory N={N} T={T} C={C} NH={NH}"
    benchmark.pedantic(fast, rounds=1, iterations=1)
    benchmark.extra_info.update(fastnn_peak_bytes=fastnn_peak, numpy_peak_bytes=numpy_peak,
                                memory_ratio=ratio, threads=THREADS)
    # inputs are 4 × 4 MiB; fastnn allocates its outputs only (o, lse, dq, dk, dv)
    assert fastnn_peak <= 6 * q.nbytes, fastnn_peak
    assert ratio <= 0.25, ratio
