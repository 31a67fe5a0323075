"""Recurrent layers, forward + backward through time: fastnn vs its NumPy twin vs PyTorch.

Groups: one per cell and shape, e.g. ``lstm_fwd_bwd N=32 T=200 C=128 U=64``; in each,
impl = numpy (fastnn.reference: a plain time loop of NumPy products), fastnn (the
fastnn._core kernels on preallocated buffers, as a layer calls them), torch
(torch.nn.LSTM / GRU, batch_first, forward then backward through autograd; skipped when
torch is not importable). The GRU is Keras's reset_after form, which is PyTorch's.
Threads are pinned (FASTNN_BENCH_THREADS, default 2, for all three libraries).
extra_info: nominal flops of a forward + backward (3 × 2·N·T·(C + U)·G·U, G = 4 gates
for the LSTM, 3 for the GRU) and GFLOP/s at the median.

    pytest bench/test_rnn_bench.py --benchmark-only --benchmark-group-by=group
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastnn import _core
from fastnn import reference as ref

# (N, T, C, U): the IMDB BiLSTM's first layer, then a wider, shorter one.
SHAPES = [(32, 200, 128, 64), (32, 80, 64, 128)]
CELLS = {"lstm": 4, "gru": 3}


def make_problem(cell, N, T, C, U, seed=0):
    rng = np.random.default_rng(seed)
    G = CELLS[cell]
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    p = {"x": f32(N, T, C), "W": f32(C, G * U) / np.float32(math.sqrt(C)),
         "R": f32(U, G * U) / np.float32(math.sqrt(U)), "dy": f32(N, T, U)}
    p["b"] = f32(2, G * U) if cell == "gru" else f32(G * U)
    return p


class FastnnCell:
    """The kernels on buffers allocated once, as fastnn's layers run them."""

    def __init__(self, cell, p):
        self.cell, self.p = cell, p
        N, T, C = p["x"].shape
        U = p["R"].shape[0]
        G = CELLS[cell]
        self.y = np.empty((N, T, U), np.float32)
        self.s1 = np.empty((N, T, U) if cell == "lstm" else (N, T, G * U), np.float32)
        self.s2 = np.empty((N, T, G * U) if cell == "lstm" else (N, T, U), np.float32)
        self.grads = [np.zeros_like(p[k]) for k in ("x", "W", "R", "b")]
        n = (_core.lstm_backward_work(N, T, U) if cell == "lstm"
             else _core.gru_backward_work(N, T, U, True))
        self.work = np.empty(n, np.float32)

    def step(self):
        p, g = self.p, self.grads
        for a in g:
            a.fill(0)
        if self.cell == "lstm":
            _core.lstm_forward(self.y, self.s1, self.s2, p["x"], None, None, None, None, p["W"],
                               p["R"], p["b"])
            _core.lstm_backward(*g, None, None, p["dy"], None, None, self.y, self.s1, self.s2,
                                p["x"], None, None, None, None, p["W"], p["R"], work=self.work)
        else:
            _core.gru_forward(self.y, self.s1, self.s2, p["x"], None, None, None, p["W"], p["R"],
                              p["b"])
            _core.gru_backward(*g, None, p["dy"], None, self.y, self.s1, self.s2, p["x"], None,
                               None, None, p["W"], p["R"], work=self.work)


def numpy_step(cell, p):
    x, W, R, b, dy = p["x"], p["W"], p["R"], p["b"], p["dy"]
    if cell == "lstm":
        outs = ref.lstm(x, W, R, b)
        return ref.lstm_backward(dy, None, None, x, W, R, *outs)
    outs = ref.gru(x, W, R, b)
    return ref.gru_backward(dy, None, x, W, R, *outs)


class TorchCell:
    def __init__(self, cell, p):
        import torch

        N, T, C = p["x"].shape
        U = p["R"].shape[0]
        mod = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        self.m = mod(C, U, batch_first=True)
        self.x = torch.from_numpy(p["x"].copy()).requires_grad_()
        self.dy = torch.from_numpy(p["dy"])

    def step(self):
        self.x.grad = None
        self.m.zero_grad(set_to_none=True)
        y, _ = self.m(self.x)
        y.backward(self.dy)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("N,T,C,U", SHAPES, ids=[f"N{n}-T{t}-C{c}-U{u}" for n, t, c, u in SHAPES])
def test_rnn_fwd_bwd(benchmark, impl, cell, N, T, C, U):
    p = make_problem(cell, N, T, C, U)
    if impl == "fastnn":
        fn = FastnnCell(cell, p).step
    elif impl == "numpy":
        fn = lambda: numpy_step(cell, p)  # noqa: E731
    else:
        fn = TorchCell(cell, p).step
    benchmark.group = f"{cell}_fwd_bwd N={N} T={T} C={C} U={U}"
    flops = 3 * 2 * N * T * (C + U) * CELLS[cell] * U
    benchmark.extra_info["flops"] = flops
    benchmark.pedantic(fn, rounds=5 if impl == "numpy" else 15, iterations=1, warmup_rounds=1)
    benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9
