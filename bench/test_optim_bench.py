"""One Adam step over a flat float32 parameter buffer: 101,770 parameters (the
784-128-10 MLP) and 1,000,000.

impl = numpy (fastnn.reference.adam_step), fastnn (fastnn.ops.adam_step), torch
(torch.optim.Adam(fused=True).step() on one flat parameter whose .grad is set: torch's
fastest CPU Adam, faster here than its foreach and for-loop versions).
lr 1e-3, betas (0.9, 0.999), eps 1e-7; the step count advances every call, as in
training. extra_info holds GB/s over the 28 bytes per parameter an Adam step must move
(read p, g, m, v; write p, m, v) at the median time.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import _common

SIZES = [101_770, 1_000_000]


def make_state(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.1, 0.1, n).astype(np.float32)
    # |g| in [5e-3, 1.5e-2]: away from 0, so eps cannot blur the first-step check below.
    g = (1e-2 * rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)).astype(np.float32)
    return p, g, np.zeros(n, np.float32), np.zeros(n, np.float32)


@pytest.mark.parametrize("n", SIZES, ids=[f"n{n}" for n in SIZES])
def test_adam_step(benchmark, impl, n):
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
