"""The backward kernels' accumulate=False: their outputs are written (=), with the values
that adding into zeros gives, whatever the buffers held before (here NaN), so the layers
need not zero their gradient buffers first."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import _core


def nan_like(shape):
    return np.full(shape, np.nan, np.float32)


def both(run, shapes):
    """run(outs, accumulate) on NaN buffers with accumulate=False and on zeros with True;
    the outputs must be equal, bit for bit."""
    got = [nan_like(s) for s in shapes]
    want = [np.zeros(s, np.float32) for s in shapes]
    run(got, False)
    run(want, True)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w, err_msg=f"output {i}")


@pytest.mark.parametrize("impl", [_core, _core.plain], ids=["tuned", "plain"])
@pytest.mark.parametrize("N,IC,OC", [(1, 5, 3), (32, 300, 64), (7, 640, 33)])
def test_dense_backward_dx(impl, N, IC, OC, rng):
    x = rng.standard_normal((N, IC)).astype(np.float32)
    w = rng.standard_normal((IC, OC)).astype(np.float32)
    dy = rng.standard_normal((N, OC)).astype(np.float32)
    both(lambda o, acc: impl.dense_backward(o[0], None, None, None, dy, x, w, None, None,
                                            _core.Act.linear, True, acc), [(N, IC)])


@pytest.mark.parametrize("n", [1, 17, 100_000])
def test_dropout_backward(n, rng):
    dy = rng.standard_normal(n).astype(np.float32)
    mask = (rng.random(n) < 0.7).astype(np.uint8)
    both(lambda o, acc: _core.dropout_backward(o[0], dy, mask, 0.3, acc), [(n,)])


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("M,C", [(1, 1), (5, 7), (300, 64)])
def test_layer_norm_backward_dx(naive, M, C, rng):
    x = rng.standard_normal((M, C)).astype(np.float32)
    gamma = rng.standard_normal(C).astype(np.float32)
    y = np.empty_like(x)
    mean, rstd = np.empty(M, np.float32), np.empty(M, np.float32)
    _core.layer_norm_forward(y, mean, rstd, x, gamma, None, 1e-3)
    dy = rng.standard_normal((M, C)).astype(np.float32)

    def run(o, acc):
        dg = np.zeros(C, np.float32)  # the parameter gradients always add
        _core.layer_norm_backward(o[0], dg, None, dy, mean, rstd, x, gamma, naive, acc)
        np.testing.assert_array_equal(dg, want_dg)

    want_dg = np.zeros(C, np.float32)
    _core.layer_norm_backward(None, want_dg, None, dy, mean, rstd, x, gamma, naive)
    both(run, [(M, C)])


@pytest.mark.parametrize("fn_name", ["attention_backward", "attention_backward_naive"])
@pytest.mark.parametrize("N,Tq,Tk,NH,D,causal", [(2, 5, 7, 2, 8, False), (1, 33, 33, 4, 16, True),
                                                 (2, 3, 4, 1, 136, False)])
def test_attention_backward(fn_name, N, Tq, Tk, NH, D, causal, rng):
    C = NH * D
    q = rng.standard_normal((N, Tq, C)).astype(np.float32)
    k = rng.standard_normal((N, Tk, C)).astype(np.float32)
    v = rng.standard_normal((N, Tk, C)).astype(np.float32)
    mask = np.ones((N, Tk), np.uint8)
    mask[0, -1] = 0
    o, lse = np.empty_like(q), np.empty((N, NH, Tq), np.float32)
    _core.attention_forward(o, lse, q, k, v, mask, NH, causal, None)
    do = rng.standard_normal(q.shape).astype(np.float32)
    fn = getattr(_core, fn_name)
    both(lambda g, acc: fn(g[0], g[1], g[2], do, o, lse, q, k, v, mask, NH, causal, None, acc),
         [q.shape, k.shape, v.shape])
