"""Conv2D: forward, and forward + backward, for each conv layer of the MNIST CNN at batch 64.

    pytest bench/test_conv_bench.py --benchmark-only     # pytest-benchmark groups
    python bench/test_conv_bench.py [--threads 1,2]      # compact table, impls interleaved

Layers (channels-last, 3x3 kernels, 'valid', relu): 28x28x1 -> 32 (the first layer: no dx),
13x13x32 -> 64 and 5x5x64 -> 64 (the inputs after 2x2 max pooling).

Groups: one per pass and layer, e.g. ``conv_fwd_bwd N=64 13x13x32->64 relu +dx``; in each,
impl = numpy (fastnn.reference twin: im2col + matmul), fastnn (fastnn.ops), torch
(F.conv2d and aten.convolution_backward on NHWC memory as channels_last tensors, weights
in channels_last OIHW, no autograd: the fastest torch formulation we found). extra_info
holds flops per call and GFLOP/s at the median time. The conftest pins the threads
(FASTNN_BENCH_THREADS, default 2). The table mode reports the best time of interleaved
rounds and the process CPU time per call, which a loaded machine disturbs less than the
wall time.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import _common

N = 64
KH = KW = 3
# (H, W, C, OC, need_dx)
LAYERS = [(28, 28, 1, 32, False), (13, 13, 32, 64, True), (5, 5, 64, 64, True)]
CASES = [pytest.param(*layer, id=f"{layer[0]}x{layer[1]}x{layer[2]}-{layer[3]}")
         for layer in LAYERS]


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
        self.mask = (need_dx, True, True)
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

    conv2d = _common.kernel(impl, "conv2d")
    conv2d_backward = _common.kernel(impl, "conv2d_backward")
    y = np.empty(dy.shape, np.float32)
    dx = np.zeros(x.shape, np.float32) if need_dx else None
    dw = np.zeros(k.shape, np.float32)
    db = np.zeros(oc, np.float32)

    def forward():
        return conv2d(x, k, b, activation="relu", out=y)

    def step():
        conv2d(x, k, b, activation="relu", out=y)
        # Backward adds into dw/db/dx; their growing contents do not change the time.
        conv2d_backward(dy, x, k, y, activation="relu", need_dx=need_dx, dx=dx, dw=dw, db=db)

    step()
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dw))
    return forward, step


def flops_fwd(h, w, c, oc):
    return 2 * N * (h - KH + 1) * (w - KW + 1) * KH * KW * c * oc


@pytest.mark.parametrize("h, w, c, oc, need_dx", CASES)
def test_conv_forward(benchmark, impl, h, w, c, oc, need_dx):
    forward, _ = setup_impl(impl, h, w, c, oc, need_dx)
    benchmark.group = f"conv_fwd N={N} {h}x{w}x{c}->{oc} relu"
    benchmark(forward)
    _common.record_rate(benchmark, flops=flops_fwd(h, w, c, oc), impl=impl)


@pytest.mark.parametrize("h, w, c, oc, need_dx", CASES)
def test_conv_forward_backward(benchmark, impl, h, w, c, oc, need_dx):
    _, step = setup_impl(impl, h, w, c, oc, need_dx)
    benchmark.group = f"conv_fwd_bwd N={N} {h}x{w}x{c}->{oc} relu" + (" +dx" if need_dx else "")
    benchmark(step)
    # forward + dW (+ dx), each as many multiply-adds as the forward
    _common.record_rate(benchmark, flops=flops_fwd(h, w, c, oc) * (3 if need_dx else 2),
                        impl=impl)


# ---- python bench/test_conv_bench.py: one table, impls timed side by side ----------------

def table(threads=(1, 2), rounds=15, reps=5):
    import os

    import fastnn

    impls = ["fastnn"] + (["torch"] if _common.have_module("torch") else [])
    print(fastnn.build_info(), f"load average {os.getloadavg()}")
    for n in threads:
        _common.pin_threads(n, fastnn=True, torch="torch" in impls)
        print(f"\nthreads={n}: best wall time of {rounds} interleaved rounds of {reps} calls, "
              "and the least CPU time per call (ms); ratio = fastnn / torch")
        print(f"{'pass':8s} {'layer':14s} " + " ".join(f"{i + ' wall':>12s} {i + ' cpu':>11s}"
                                                     for i in impls) + "  wall/cpu ratio")
        for (h, w, c, oc, need_dx) in LAYERS:
            calls = {i: setup_impl(i, h, w, c, oc, need_dx) for i in impls}
            for pas, which in (("fwd", 0), ("fwd+bwd", 1)):
                wall = {i: float("inf") for i in impls}
                cpu = {i: float("inf") for i in impls}
                for _ in range(rounds):  # interleaved, so load changes hit every impl alike
                    for i in impls:
                        f = calls[i][which]
                        t0, c0 = time.perf_counter(), time.process_time()
                        for _ in range(reps):
                            f()
                        wall[i] = min(wall[i], (time.perf_counter() - t0) / reps)
                        cpu[i] = min(cpu[i], (time.process_time() - c0) / reps)
                ratio = (f"  {wall['fastnn'] / wall['torch']:.2f} / "
                         f"{cpu['fastnn'] / cpu['torch']:.2f}") if "torch" in impls else ""
                print(f"{pas:8s} {f'{h}x{w}x{c}->{oc}':14s} " +
                      " ".join(f"{wall[i] * 1e3:12.3f} {cpu[i] * 1e3:11.3f}" for i in impls) +
                      ratio, flush=True)


if __name__ == "__main__":
    ths = (1, 2)
    if "--threads" in sys.argv:
        ths = tuple(int(v) for v in sys.argv[sys.argv.index("--threads") + 1].split(","))
    table(ths)
