"""Dense layer: forward, and forward + backward, at the MNIST MLP shapes.

Groups: one per pass and shape, e.g. ``dense_fwd N=32 784->128 relu``; in each,
impl = numpy (fastnn.reference twins), fastnn (fastnn.ops), torch (addmm/mm with out=
into preallocated tensors, manual backward: the fastest way torch offers, no autograd
overhead). extra_info holds flops per call and GFLOP/s at the median time.

Backward computes dz = dy ⊙ act'(y), dW = xᵀ·dz, db = Σ_N dz and, for every layer but
the first, dx = dz·Wᵀ — what training the 784-128-10 MLP needs (the first layer never
needs dx).
"""
from __future__ import annotations

import numpy as np
import pytest

import _common

# (IC, OC, activation, need_dx): layer 1 and layer 2 of the 784-128-10 MLP.
LAYERS = [(784, 128, "relu", False), (128, 10, "linear", True)]
BATCHES = [32, 128]
CASES = [pytest.param(n, ic, oc, act, ndx, id=f"N{n}-{ic}x{oc}-{act}")
         for n in BATCHES for (ic, oc, act, ndx) in LAYERS]


def make_data(n, ic, oc, seed=0):
    rng = np.random.default_rng(seed)
    lim = np.sqrt(6.0 / (ic + oc))
    x = rng.uniform(0.0, 1.0, (n, ic)).astype(np.float32)
    w = rng.uniform(-lim, lim, (ic, oc)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, oc).astype(np.float32)
    dy = rng.standard_normal((n, oc)).astype(np.float32)
    return x, w, b, dy


def ref64(x, w, b, dy, act, need_dx):
    """float64 forward and backward, to check the torch rows (this file's own code)."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    z = x @ w + b
    y = np.maximum(z, 0.0) if act == "relu" else z
    dz = dy * (y > 0) if act == "relu" else dy
    return y, (dz @ w.T if need_dx else None), x.T @ dz, dz.sum(0)


class TorchDense:
    """Preallocated torch tensors sharing memory with the NumPy inputs."""

    def __init__(self, x, w, b, dy, act, need_dx):
        import torch

        self.torch = torch
        t = torch.from_numpy
        self.x, self.w, self.b, self.dy = t(x), t(w), t(b), t(dy)
        n, oc = dy.shape
        self.y = torch.empty(n, oc)
        self.dz = torch.empty(n, oc) if act == "relu" else self.dy
        self.dx = torch.empty(x.shape) if need_dx else None
        self.dw = torch.empty(w.shape)
        self.db = torch.empty(oc)
        self.relu = act == "relu"
        self.xt, self.wt = self.x.t(), self.w.t()

    def forward(self):
        torch = self.torch
        torch.addmm(self.b, self.x, self.w, out=self.y)
        if self.relu:
            torch.relu_(self.y)
        return self.y

    def backward(self):
        torch = self.torch
        if self.relu:
            torch.ops.aten.threshold_backward.grad_input(self.dy, self.y, 0,
                                                         grad_input=self.dz)
        torch.mm(self.xt, self.dz, out=self.dw)
        torch.sum(self.dz, 0, out=self.db)
        if self.dx is not None:
            torch.mm(self.dz, self.wt, out=self.dx)

    def step(self):
        self.forward()
        self.backward()


def setup_impl(impl, n, ic, oc, act, need_dx):
    """Returns (forward(), forward_backward()) closures over preallocated buffers."""
    x, w, b, dy = make_data(n, ic, oc)
    if impl == "torch":
        pytest.importorskip("torch")
        td = TorchDense(x, w, b, dy, act, need_dx)
        td.step()
        y64, dx64, dw64, db64 = ref64(x, w, b, dy, act, need_dx)
        tol = dict(rtol=1e-4, atol=1e-5 * np.sqrt(max(ic, n)))
        np.testing.assert_allclose(td.y.numpy(), y64, **tol)
        np.testing.assert_allclose(td.dw.numpy(), dw64, **tol)
        np.testing.assert_allclose(td.db.numpy(), db64, **tol)
        if need_dx:
            np.testing.assert_allclose(td.dx.numpy(), dx64, **tol)
        return td.forward, td.step

    dense = _common.kernel(impl, "dense")
    dense_backward = _common.kernel(impl, "dense_backward")
    y = np.empty((n, oc), np.float32)
    dx = np.zeros((n, ic), np.float32) if need_dx else None
    dw = np.zeros((ic, oc), np.float32)
    db = np.zeros(oc, np.float32)

    def forward():
        return dense(x, w, b, activation=act, out=y)

    def step():
        dense(x, w, b, activation=act, out=y)
        # Backward adds into dw/db/dx; their growing contents do not change the time.
        dense_backward(dy, x, w, y=y, activation=act, need_dx=need_dx, dx=dx, dw=dw, db=db)

    step()
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dw))
    return forward, step


@pytest.mark.parametrize("n, ic, oc, act, need_dx", CASES)
def test_dense_forward(benchmark, impl, n, ic, oc, act, need_dx):
    forward, _ = setup_impl(impl, n, ic, oc, act, need_dx)
    benchmark.group = f"dense_fwd N={n} {ic}->{oc} {act}"
    benchmark(forward)
    _common.record_rate(benchmark, flops=2 * n * ic * oc, impl=impl)


@pytest.mark.parametrize("n, ic, oc, act, need_dx", CASES)
def test_dense_forward_backward(benchmark, impl, n, ic, oc, act, need_dx):
    _, step = setup_impl(impl, n, ic, oc, act, need_dx)
    benchmark.group = f"dense_fwd_bwd N={n} {ic}->{oc} {act}" + (" +dx" if need_dx else "")
    benchmark(step)
    # forward GEMM + dW GEMM (+ dx GEMM)
    flops = 2 * n * ic * oc * (3 if need_dx else 2)
    _common.record_rate(benchmark, flops=flops, impl=impl)
