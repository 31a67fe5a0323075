"""One Adam step and one AdaGrad step over a flat float32 parameter buffer: 101,770
parameters (the 784-128-10 MLP) and 1,000,000.

impl = numpy (fastnn.reference.adam_step), fastnn (fastnn.ops.adam_step), torch
(torch.optim.Adam(fused=True).step() on one flat parameter whose .grad is set: torch's
fastest CPU Adam, faster here than its foreach and for-loop versions; Adagrad(fused=True)
likewise). The test_*_isa rows time fastnn with each instruction set this CPU supports
(set_gemm_isa): "generic" is the exact square-root-and-divide loop, "avx2" / "avx512" the
passes with a refined reciprocal (cpp/cpu/optim.cpp), so one run compares them.
lr 1e-3, betas (0.9, 0.999), eps 1e-7; the step count advances every call, as in
training. extra_info holds GB/s over the bytes a step must move at the median time:
28 per parameter for Adam (read p, g, m, v; write p, m, v), 20 for AdaGrad.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import _common

SIZES = [101_770, 1_000_000]


def _isas():
    if not _common.have_module("fastnn"):
        return []
    from fastnn import _core
    return list(_core.supported_isas())


ISAS = _isas()


def make_state(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.1, 0.1, n).astype(np.float32)
    # |g| in [5e-3, 1.5e-2]: away from 0, so eps cannot blur the first-step check below.
    g = (1e-2 * rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)).astype(np.float32)
    return p, g, np.zeros(n, np.float32), np.zeros(n, np.float32)


@pytest.fixture
def pinned_isa(request):
    from fastnn import _core
    before = _core.gemm_isa()
    _core.set_gemm_isa(request.param)
    yield request.param
    _core.set_gemm_isa(before)


def _adam(benchmark, impl, n):
    p, g, m, v = make_state(n)
    p0 = p.copy()
    if impl == "torch":
        torch = pytest.importorskip("torch")
        tp = torch.nn.Parameter(torch.from_numpy(p))
        tp.grad = torch.from_numpy(g)
        opt = torch.optim.Adam([tp], lr=1e-3, betas=(0.9, 0.999), eps=1e-7, fused=True)
        run = opt.step
    else:
        adam_step = _common.kernel(impl, "adam_step")
        steps = itertools.count(1)

        def run():
            adam_step(p, g, m, v, next(steps), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7)

    run()
    # First step of Adam moves every parameter by about lr·sign(g).
    np.testing.assert_allclose(p0 - p, 1e-3 * np.sign(g), rtol=1e-2, atol=1e-6)
    benchmark.group = f"adam_step n={n:,}"
    benchmark(run)
    _common.record_rate(benchmark, nbytes=28 * n, impl=impl)


def _adagrad(benchmark, impl, n):
    p, g, acc, _ = make_state(n)
    p0 = p.copy()
    if impl == "torch":
        torch = pytest.importorskip("torch")
        tp = torch.nn.Parameter(torch.from_numpy(p))
        tp.grad = torch.from_numpy(g)
        opt = torch.optim.Adagrad([tp], lr=1e-3, eps=1e-7, fused=True)
        run = opt.step
    else:
        adagrad_step = _common.kernel(impl, "adagrad_step")

        def run():
            adagrad_step(p, g, acc, lr=1e-3, eps=1e-7)

    run()
    # First step of AdaGrad: accum = g², so every parameter moves by about lr·sign(g).
    np.testing.assert_allclose(p0 - p, 1e-3 * np.sign(g), rtol=1e-2, atol=1e-6)
    benchmark.group = f"adagrad_step n={n:,}"
    benchmark(run)
    _common.record_rate(benchmark, nbytes=20 * n, impl=impl)


@pytest.mark.parametrize("n", SIZES, ids=[f"n{n}" for n in SIZES])
def test_adam_step(benchmark, impl, n):
    _adam(benchmark, impl, n)


@pytest.mark.parametrize("pinned_isa", ISAS, indirect=True)
@pytest.mark.parametrize("n", SIZES, ids=[f"n{n}" for n in SIZES])
def test_adam_step_isa(benchmark, n, pinned_isa):
    _adam(benchmark, "fastnn", n)
    benchmark.extra_info["isa"] = pinned_isa


@pytest.mark.parametrize("n", SIZES, ids=[f"n{n}" for n in SIZES])
def test_adagrad_step(benchmark, impl, n):
    _adagrad(benchmark, impl, n)


@pytest.mark.parametrize("pinned_isa", ISAS, indirect=True)
@pytest.mark.parametrize("n", SIZES, ids=[f"n{n}" for n in SIZES])
def test_adagrad_step_isa(benchmark, n, pinned_isa):
    _adagrad(benchmark, "fastnn", n)
    benchmark.extra_info["isa"] = pinned_isa
