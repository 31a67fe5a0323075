"""Conv2D: forward, and forward + backward, for each conv layer of the MNIST CNN at batch 64.

Layers (channels-last, 3x3 kernels, 'valid', relu): 28x28x1 -> 32 (the first layer: no dx),
13x13x32 -> 64 and 5x5x64 -> 64 (the inputs after 2x2 max pooling).

Groups: one per pass and layer, e.g. ``conv_fwd_bwd N=64 13x13x32->64 +dx``; in each,
impl = numpy (fastnn.reference twin: im2col + matmul), fastnn (fastnn.ops), torch
(F.conv2d and aten.convolution_backward on preallocated tensors, channels-last input, no
autograd: the fastest way torch offers). extra_info holds flops per call and GFLOP/s at
the median time. Threads are pinned to FASTNN_BENCH_THREADS (default 2).
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

try:  # the shared bench helpers, when this folder has them
    import _common
except ImportError:  # pragma: no cover - standalone use
    _common = None

N = 64
# (H, W, C, OC, need_dx)
LAYERS = [(28, 28, 1, 32, False), (13, 13, 32, 64, True), (5, 5, 64, 64, True)]
CASES = [pytest.param(*layer, id=f"{layer[0]}x{layer[1]}x{layer[2]}-{layer[3]}")
         for layer in LAYERS]
KH = KW = 3


def _have(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_NO_TORCH = [] if _have("torch") else [pytest.mark.skip(reason="torch is not installed")]
IMPLS = [pytest.param("numpy", id="numpy"), pytest.param("fastnn", id="fastnn"),
         pytest.param("torch", id="torch", marks=_NO_TORCH)]


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    n = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))
    if _common is not None:
        _common.pin_threads(n, fastnn=True, torch=_have("torch"))
    else:
        import fastnn
        fastnn.set_num_threads(n)
        if _have("torch"):
            import torch
            torch.set_num_threads(n)
    yield n


def record_rate(benchmark, flops, **extra):
    if _common is not None:
        return _common.record_rate(benchmark, flops=flops, **extra)
    benchmark.extra_info.update(extra, flops=int(flops))
    med = getattr(getattr(getattr(benchmark, "stats", None), "stats", None), "median", None)
    if med:
        benchmark.extra_info["gflops"] = round(flops / med / 1e9, 3)


def make_data(h, w, c, oc, seed=0):
    rng = np.random.default_rng(seed)
    lim = np.sqrt(6.0 / (KH * KW * (c + oc)))
    x = rng.uniform(0.0, 1.0, (N, h, w, c)).astype(np.float32)
    k = rng.uniform(-lim, lim, (KH, KW, c, oc)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, oc).astype(np.float32)
    dy = rng.standard_normal((N, h - KH + 1, w - KW + 1, oc)).astype(np.float32)
    return x, k, b, dy


class TorchConv:
    """Preallocated torch tensors; x and dy share memory with the NumPy (NHWC) arrays."""

    def __init__(self, x, k, b, dy, need_dx):
        import torch

        self.torch = torch
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2)    # NCHW view, channels-last memory
        self.dy = torch.from_numpy(dy).permute(0, 3, 1, 2)
        self.w = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous(
            memory_format=torch.channels_last)                 # (OC, C, KH, KW)
        self.b = torch.from_numpy(b)
        self.y = None
        self.dz = torch.empty_like(self.dy)
        self.mask = (True, True, True) if need_dx else (False, True, True)
        self.grads = None

    def forward(self):
        torch = self.torch
        self.y = torch.relu_(torch.nn.functional.conv2d(self.x, self.w, self.b))
        return self.y

    def step(self):
        torch = self.torch
        self.forward()
        torch.ops.aten.threshold_backward.grad_input(self.dy, self.y, 0, grad_input=self.dz)
        self.grads = torch.ops.aten.convolution_backward(
            self.dz, self.x, self.w, [self.w.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0],
            1, self.mask)


def ref64(x, k, b, dy):
    from fastnn import reference as ref

    x, k, b, dy = (a.astype(np.float64) for a in (x, k, b, dy))
    y = ref.conv2d(x, k, b, activation="relu")
    return (y,) + ref.conv2d_backward(dy, x, k, y, activation="relu")


def setup_impl(impl, h, w, c, oc, need_dx):
    """Returns (forward(), forward_backward()) closures over preallocated buffers."""
    x, k, b, dy = make_data(h, w, c, oc)
    if impl == "torch":
        pytest.importorskip("torch")
        tc = TorchConv(x, k, b, dy, need_dx)
        tc.step()
        y64, dx64, dw64, db64 = ref64(x, k, b, dy)

        def close(got, want, k_sum):  # float32 sums of k_sum terms
            np.testing.assert_allclose(got, want, rtol=1e-4,
                                       atol=1e-6 * np.sqrt(k_sum) * np.abs(want).max())

        close(tc.y.permute(0, 2, 3, 1).numpy(), y64, KH * KW * c)
        close(tc.grads[1].permute(2, 3, 1, 0).numpy(), dw64, dy.size // oc)
        close(tc.grads[2].numpy(), db64, dy.size // oc)
        if need_dx:
            close(tc.grads[0].permute(0, 2, 3, 1).numpy(), dx64, KH * KW * oc)
        return tc.forward, tc.step

    if impl == "fastnn":
        from fastnn import ops as mod
    else:
        from fastnn import reference as mod
    y = np.empty(dy.shape, np.float32)
    dx = np.zeros(x.shape, np.float32) if need_dx else None
    dw = np.zeros(k.shape, np.float32)
    db = np.zeros(oc, np.float32)

    def forward():
        return mod.conv2d(x, k, b, activation="relu", out=y)

    def step():
        mod.conv2d(x, k, b, activation="relu", out=y)
        # Backward adds into dw/db/dx; their growing contents do not change the time.
        mod.conv2d_backward(dy, x, k, y, activation="relu", need_dx=need_dx, dx=dx, dw=dw,
                            db=db)

    step()
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dw))
    return forward, step


def flops_fwd(h, w, c, oc):
    return 2 * N * (h - KH + 1) * (w - KW + 1) * KH * KW * c * oc


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("h, w, c, oc, need_dx", CASES)
def test_conv_forward(benchmark, impl, h, w, c, oc, need_dx):
    forward, _ = setup_impl(impl, h, w, c, oc, need_dx)
    benchmark.group = f"conv_fwd N={N} {h}x{w}x{c}->{oc} relu"
    benchmark(forward)
    record_rate(benchmark, flops_fwd(h, w, c, oc), impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("h, w, c, oc, need_dx", CASES)
def test_conv_forward_backward(benchmark, impl, h, w, c, oc, need_dx):
    _, step = setup_impl(impl, h, w, c, oc, need_dx)
    benchmark.group = f"conv_fwd_bwd N={N} {h}x{w}x{c}->{oc} relu" + (" +dx" if need_dx else "")
    benchmark(step)
    # forward + dW (+ dx), each as many multiply-adds as the forward
    record_rate(benchmark, flops_fwd(h, w, c, oc) * (3 if need_dx else 2), impl=impl)
