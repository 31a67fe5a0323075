"""Fused softmax + cross-entropy (integer labels), forward + backward: the mean loss and
dlogits = (softmax − onehot)/N, at the MNIST output shapes (N × 10).

impl = numpy (fastnn.reference.softmax_cross_entropy), fastnn
(fastnn.ops.softmax_cross_entropy), torch (log_softmax, gather, exp, scatter_add — a
manual backward, faster on the development machine than autograd through
F.cross_entropy).
extra_info holds GB/s over logits read + dlogits written at the median time.
"""
from __future__ import annotations

import numpy as np
import pytest

import _common

SHAPES = [(32, 10), (128, 10)]


def make_data(n, c, seed=0):
    rng = np.random.default_rng(seed)
    logits = (3.0 * rng.standard_normal((n, c))).astype(np.float32)
    labels = rng.integers(0, c, n).astype(np.int32)
    return logits, labels


def ref64(logits, labels):
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    d = p.copy()
    d[np.arange(n), labels] -= 1.0
    return loss, d / n


def torch_xent(logits, labels):
    import torch

    x = torch.from_numpy(logits)
    lab = torch.from_numpy(labels.astype(np.int64))[:, None]
    n = x.shape[0]
    minus_one = torch.full((n, 1), -1.0)
    inv_n = 1.0 / n

    def run():
        lsm = torch.log_softmax(x, 1)
        loss = -lsm.gather(1, lab).mean()
        d = lsm.exp_()
        d.scatter_add_(1, lab, minus_one)
        d.mul_(inv_n)
        return loss, d

    return run


@pytest.mark.parametrize("n, c", SHAPES, ids=[f"{n}x{c}" for n, c in SHAPES])
def test_softmax_cross_entropy(benchmark, impl, n, c):
    logits, labels = make_data(n, c)
    loss64, d64 = ref64(logits, labels)
    if impl == "torch":
        pytest.importorskip("torch")
        run = torch_xent(logits, labels)
        loss, d = run()
        np.testing.assert_allclose(float(loss), loss64, rtol=1e-5)
        np.testing.assert_allclose(d.numpy(), d64, rtol=1e-4, atol=1e-7)
    else:
        f = _common.kernel(impl, "softmax_cross_entropy")

        def run():
            return f(logits, labels)

        loss, d = run()
        assert np.isfinite(float(loss)) and np.all(np.isfinite(d))
    benchmark.group = f"softmax_xent_fwd_bwd {n}x{c}"
    benchmark(run)
    _common.record_rate(benchmark, nbytes=2 * 4 * n * c + 4 * n, impl=impl)
