"""Dense kernels (float32) against fastnn.reference (run in float64)."""
from __future__ import annotations

import numpy as np
import pytest

from fastnn import _core, ops
from fastnn import reference as ref

ACTS = ["linear", "relu", "sigmoid", "tanh", "gelu"]
IMPLS = [pytest.param(_core, id="tuned"), pytest.param(_core.plain, id="plain")]
EPS = float(np.finfo(np.float32).eps)
# Every value of N in {1, 3, 32, 257} and of IC, OC in {1, 7, 10, 17, 64, 128, 784}, plus
# the MLP shapes 784 -> 128 -> 64 -> 10 (784 -> 128 at batch 257).
SHAPES = [(n, ic, oc) for n in (1, 3, 32, 257)
          for ic, oc in [(1, 1), (7, 10), (10, 7), (17, 64), (64, 17), (128, 10), (1, 784),
                         (784, 128)]]
SHAPES += [(256, 128, 64), (256, 64, 10), (32, 784, 1)]


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def make(rng, N, IC, OC, bias=True):
    x = rng.normal(size=(N, IC)).astype(np.float32)
    w = (rng.normal(size=(IC, OC)) / np.sqrt(IC)).astype(np.float32)
    b = rng.normal(size=OC).astype(np.float32) if bias else None
    return x, w, b


def assert_within(got, want, bound, what=""):
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= bound), f"{what}: max excess {np.max(err - bound):.3g}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,IC,OC", SHAPES)
def test_dense_forward_and_backward(impl, N, IC, OC, rng, tol):
    x, w, b = make(rng, N, IC, OC, bias=(N + IC) % 2 == 0)  # half the shapes without bias
    xd, wd, bd = f64(x, w, b)
    # Keep the big shapes quick (the plain twins are triple loops): two activations for the
    # tuned kernels, one for the plain twins.
    big = N * IC * OC > 10**6 or N * OC > 50_000
    acts = ACTS if not big else ["relu", "gelu"] if impl is _core else ["tanh"]
    for kind in acts:
        act = getattr(_core.Act, kind)
        y = np.empty((N, OC), np.float32)
        z = np.empty((N, OC), np.float32)
        impl.dense_forward(y, z, x, w, b, act)
        # Forward: error of a length-IC dot product, then the activation (slope <= 1.13).
        pre_scale = np.abs(xd) @ np.abs(wd) + (0 if b is None else np.abs(bd))
        z_ref = xd @ wd + (0 if b is None else bd)
        assert_within(z, z_ref, tol(IC) * pre_scale, f"z {kind}")
        y_ref = ref.activation(z_ref, kind)
        assert_within(y, y_ref, 1.2 * tol(IC) * pre_scale + 3e-5 * np.abs(y_ref) + 1e-30,
                      f"y {kind}")

        # Backward from the kernel's own y and z, into buffers that already hold values.
        dy = rng.normal(size=(N, OC)).astype(np.float32)
        dx0, dw0, db0 = (rng.normal(size=s).astype(np.float32) for s in ((N, IC), (IC, OC), (OC,)))
        dx, dw, db = dx0.copy(), dw0.copy(), db0.copy()
        dz = np.empty((N, OC), np.float32)
        impl.dense_backward(dx, dw, db, dz, dy, x, w, y, z, act)
        dyd, yd, zd = f64(dy, y, z)
        gz = ref.activation_backward(dyd, kind, x=zd, y=yd)
        # Bound: the sums' rounding (tol of the reduction length) on |terms|, plus the error
        # dz = dy * act'(.) brings in: a few roundings, and act' itself is only good to ~2
        # eps absolute (gelu') or has an absolute rounding (tanh's 1 - y*y).
        ga = np.abs(gz)
        gerr = 4 * EPS * (ga + np.abs(dyd))
        xa, wa = np.abs(xd), np.abs(wd)
        assert_within(dw, dw0 + xd.T @ gz,
                      2 * EPS * np.abs(dw0) + tol(N) * (xa.T @ ga) + xa.T @ gerr, f"dw {kind}")
        assert_within(dx, dx0 + gz @ wd.T,
                      2 * EPS * np.abs(dx0) + tol(OC) * (ga @ wa.T) + gerr @ wa.T, f"dx {kind}")
        assert_within(db, db0 + gz.sum(0),
                      2 * EPS * np.abs(db0) + tol(N) * ga.sum(0) + gerr.sum(0), f"db {kind}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,IC,OC", [(1, 1, 1), (3, 7, 10), (32, 17, 64), (257, 784, 10),
                                     (256, 128, 64)])
def test_dense_exact_on_small_integers(impl, N, IC, OC, rng):
    # |sums| stay far below 2^24, so every float32 operation is exact.
    x = rng.integers(-4, 5, size=(N, IC)).astype(np.float32)
    w = rng.integers(-4, 5, size=(IC, OC)).astype(np.float32)
    b = rng.integers(-4, 5, size=OC).astype(np.float32)
    dy = rng.integers(-4, 5, size=(N, OC)).astype(np.float32)
    xi, wi, bi, dyi = (a.astype(np.int64) for a in (x, w, b, dy))
    for kind, expect in [("linear", xi @ wi + bi), ("relu", np.maximum(xi @ wi + bi, 0))]:
        y = np.empty((N, OC), np.float32)
        impl.dense_forward(y, None, x, w, b, getattr(_core.Act, kind))
        np.testing.assert_array_equal(y, expect)
    dx, dw, db = np.ones((N, IC), np.float32), np.ones((IC, OC), np.float32), np.ones(OC, np.float32)
    impl.dense_backward(dx, dw, db, None, dy, x, w, None, None, _core.Act.linear)
    np.testing.assert_array_equal(dx, 1 + dyi @ wi.T)
    np.testing.assert_array_equal(dw, 1 + xi.T @ dyi)
    np.testing.assert_array_equal(db, 1 + dyi.sum(0))


@pytest.mark.parametrize("kind", ACTS)
def test_dense_z_is_the_linear_output(kind, rng):
    x, w, b = make(rng, 9, 13, 11)
    z = np.empty((9, 11), np.float32)
    y = ops.dense(x, w, b, kind, z=z)
    np.testing.assert_array_equal(z, ops.dense(x, w, b))
    np.testing.assert_array_equal(y, ops.activation(z, kind))  # the epilogue is the same code


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,IC,OC", [(1, 1, 1), (3, 7, 10), (32, 784, 128), (257, 64, 10),
                                     (32, 300, 1100), (600, 40, 33)])
def test_dense_backward_overwrite_equals_adding_into_zeros(impl, N, IC, OC, rng):
    # accumulate=False writes dw and db (whatever they held: here NaN) with the values
    # += gives into zeros, bit for bit; dx is still added into.
    x, w, _ = make(rng, N, IC, OC)
    y = np.empty((N, OC), np.float32)
    impl.dense_forward(y, None, x, w, None, _core.Act.relu)
    dy = rng.normal(size=(N, OC)).astype(np.float32)
    dx0 = rng.normal(size=(N, IC)).astype(np.float32)
    got = [dx0.copy(), np.full((IC, OC), np.nan, np.float32), np.full(OC, np.nan, np.float32)]
    want = [dx0.copy(), np.zeros((IC, OC), np.float32), np.zeros(OC, np.float32)]
    for (dx, dw, db), acc in ((got, False), (want, True)):
        impl.dense_backward(dx, dw, db, np.empty_like(dy), dy, x, w, y, None, _core.Act.relu,
                            acc)
    for g, wnt, what in zip(got, want, ("dx", "dw", "db")):
        np.testing.assert_array_equal(g, wnt, err_msg=what)


def test_dense_backward_optional_gradients(rng):
    N, IC, OC = 6, 5, 4
    x, w, _ = make(rng, N, IC, OC)
    dy = rng.normal(size=(N, OC)).astype(np.float32)
    y = ops.dense(x, w, None, "tanh")
    full = ops.dense_backward(dy, x, w, y=y, activation="tanh")
    for flags in [dict(need_dx=False), dict(need_dw=False), dict(has_bias=False),
                  dict(need_dx=False, need_dw=False, has_bias=False)]:
        got = ops.dense_backward(dy, x, w, y=y, activation="tanh", **flags)
        for g, f, name in zip(got, full, ["need_dx", "need_dw", "has_bias"]):
            if flags.get(name, True):
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None


@pytest.mark.parametrize("kind", ["linear", "relu", "gelu"])
def test_dense_backward_dz_may_be_dy(kind, rng):
    N, IC, OC = 7, 5, 6
    x, w, b = make(rng, N, IC, OC)
    act = getattr(_core.Act, kind)
    y, z = np.empty((N, OC), np.float32), np.empty((N, OC), np.float32)
    _core.dense_forward(y, z, x, w, b, act)
    dy = rng.normal(size=(N, OC)).astype(np.float32)
    grads_sep = [np.zeros(s, np.float32) for s in ((N, IC), (IC, OC), (OC,))]
    _core.dense_backward(*grads_sep, np.empty_like(dy), dy.copy(), x, w, y, z, act)
    grads_alias = [np.zeros(s, np.float32) for s in ((N, IC), (IC, OC), (OC,))]
    scratch = dy.copy()
    _core.dense_backward(*grads_alias, scratch, scratch, x, w, y, z, act)
    for a, s in zip(grads_alias, grads_sep):
        np.testing.assert_array_equal(a, s)
    if kind != "linear":  # dy was overwritten by dz
        np.testing.assert_array_equal(
            scratch, ops.activation_backward(dy, kind, x=z, y=y))


def test_ops_dense_accumulates_and_keeps_dy(rng):
    N, IC, OC = 8, 6, 3
    x, w, b = make(rng, N, IC, OC)
    dy = rng.normal(size=(N, OC)).astype(np.float32)
    dy_before = dy.copy()
    y = ops.dense(x, w, b, "sigmoid")
    once = ops.dense_backward(dy, x, w, y=y, activation="sigmoid")
    np.testing.assert_array_equal(dy, dy_before)
    acc = [g.copy() for g in once]
    ret = ops.dense_backward(dy, x, w, y=y, activation="sigmoid", dx=acc[0], dw=acc[1], db=acc[2])
    assert all(r is a for r, a in zip(ret, acc))
    for a, g in zip(acc, once):
        np.testing.assert_array_equal(a, 2 * g)  # g + g is exact


def test_ops_dense_nd_input(rng):
    x = rng.normal(size=(2, 5, 7)).astype(np.float32)
    w = rng.normal(size=(7, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    z = np.empty((2, 5, 4), np.float32)
    y = ops.dense(x, w, b, "gelu", z=z)
    assert y.shape == (2, 5, 4)
    np.testing.assert_array_equal(y.reshape(10, 4), ops.dense(x.reshape(10, 7), w, b, "gelu"))
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx, dw, db = ops.dense_backward(dy, x, w, y=y, z=z, activation="gelu")
    dx2, dw2, db2 = ops.dense_backward(dy.reshape(10, 4), x.reshape(10, 7), w,
                                       y=y.reshape(10, 4), z=z.reshape(10, 4), activation="gelu")
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx.reshape(10, 7), dx2)
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_array_equal(db, db2)


def test_ops_dense_converts_inputs(rng):
    x = rng.normal(size=(3, 4))
    w = rng.normal(size=(4, 2))
    y = ops.dense(x.tolist(), w, [0.5, -0.5], "relu")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, np.maximum(x @ w + [0.5, -0.5], 0), rtol=1e-5, atol=1e-6)
    out = np.empty((3, 2), np.float32)
    assert ops.dense(x, w, out=out) is out


@pytest.mark.parametrize("kind", ["relu", "gelu"])
def test_dense_same_bits_for_1_and_2_threads(kind, rng, num_threads):
    # Big enough that the epilogue, dz and the column sums all split across threads.
    N, IC, OC = 257, 64, 128
    x, w, b = make(rng, N, IC, OC)
    dy = rng.normal(size=(N, OC)).astype(np.float32)
    runs = []
    for t in (1, 2):
        num_threads(t)
        z = np.empty((N, OC), np.float32)
        y = ops.dense(x, w, b, kind, z=z)
        runs.append((y, z) + ops.dense_backward(dy, x, w, y=y, z=z, activation=kind))
    for a, b_ in zip(*runs):
        np.testing.assert_array_equal(a, b_)


# ---- bad input ----------------------------------------------------------------------------

def test_ops_dense_bad_input():
    x = np.zeros((4, 3), np.float32)
    w = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="dense: unknown activation 'softmax'; expected one of"):
        ops.dense(x, w, activation="softmax")
    with pytest.raises(ValueError, match=r"dense: argument 'x' has 5 features .* 'w' of shape "
                                         r"\(3, 2\) expects IC = 3"):
        ops.dense(np.zeros((4, 5), np.float32), w)
    with pytest.raises(ValueError, match=r"dense: argument 'w' must be 2-D \(IC, OC\)"):
        ops.dense(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"dense: argument 'x' must be \(N, IC\)"):
        ops.dense(np.zeros(3, np.float32), w)
    with pytest.raises(ValueError, match=r"dense: argument 'b' must have shape \(OC,\) = \(2,\)"):
        ops.dense(x, w, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="dense: argument 'out' must be a float32 array, got float64"):
        ops.dense(x, w, out=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"dense: argument 'out' must have shape \(4, 2\)"):
        ops.dense(x, w, out=np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="dense: argument 'z' must be C-contiguous"):
        ops.dense(x, w, z=np.zeros((2, 4), np.float32).T)
    ro = np.zeros((4, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dense: argument 'out' is read-only"):
        ops.dense(x, w, out=ro)
    with pytest.raises(TypeError, match="dense: argument 'x' must hold real numbers"):
        ops.dense(np.array([["a"]]), w)


def test_ops_dense_backward_bad_input():
    x = np.zeros((4, 3), np.float32)
    w = np.zeros((3, 2), np.float32)
    dy = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"dense_backward: argument 'dy' must have shape \(4, 2\) "
                                         r"\(x's batch axes, OC\), got \(5, 2\)"):
        ops.dense_backward(np.zeros((5, 2), np.float32), x, w)
    with pytest.raises(ValueError, match="argument 'y' \\(the forward output\\) is required for "
                                         "activation 'relu'"):
        ops.dense_backward(dy, x, w, activation="relu")
    with pytest.raises(ValueError, match="argument 'z' \\(the pre-activation.*required for "
                                         "activation 'gelu'"):
        ops.dense_backward(dy, x, w, y=dy, activation="gelu")
    with pytest.raises(ValueError, match="argument 'y' must have the shape of 'dy'"):
        ops.dense_backward(dy, x, w, y=np.zeros((2, 4), np.float32), activation="tanh")
    with pytest.raises(ValueError, match="argument 'dx' was given but need_dx=False"):
        ops.dense_backward(dy, x, w, need_dx=False, dx=np.zeros_like(x))
    with pytest.raises(ValueError, match=r"argument 'dw' must have shape \(3, 2\)"):
        ops.dense_backward(dy, x, w, dw=np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="argument 'db' must be a float32 array"):
        ops.dense_backward(dy, x, w, db=np.zeros(2, np.int32))


def test_core_dense_bad_input():
    x = np.zeros((4, 3), np.float32)
    w = np.zeros((3, 2), np.float32)
    y = np.zeros((4, 2), np.float32)
    relu = _core.Act.relu
    with pytest.raises(TypeError, match=r"dense_forward: argument 'x' must be a C-contiguous "
                                        r"float32 array of shape \(N, IC\).*got float64"):
        _core.dense_forward(y, None, x.astype(np.float64), w)
    with pytest.raises(ValueError, match=r"dense_forward: argument 'w' .* \(IC, OC\) = \(3, \?\), "
                                         r"got float32 array of shape \(4, 2\)"):
        _core.dense_forward(y, None, x, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"dense_forward: argument 'y' .* \(N, OC\) = \(4, 2\)"):
        _core.dense_forward(np.zeros((3, 2), np.float32), None, x, w)
    with pytest.raises(ValueError, match="dense_forward: argument 'y' must not share memory with 'z'"):
        _core.dense_forward(y, y, x, w)
    with pytest.raises(ValueError, match=r"dense_backward: argument 'x' .* \(N, IC\) = \(5, 3\), "
                                         r"got float32 array of shape \(4, 3\)"):
        _core.dense_backward(None, None, None, None, np.zeros((5, 2), np.float32), x, w)
    with pytest.raises(ValueError, match=r"dense_backward: argument 'dz' \(N, OC\) scratch is "
                                         "required for activation relu"):
        _core.dense_backward(None, None, None, None, y, x, w, y, None, relu)
    with pytest.raises(ValueError, match="dense_backward: argument 'y' is required for activation "
                                         "sigmoid"):
        _core.dense_backward(None, None, None, y.copy(), y, x, w, None, None, _core.Act.sigmoid)
    with pytest.raises(ValueError, match="dense_backward: argument 'z' is required for activation "
                                         "gelu"):
        _core.dense_backward(None, None, None, y.copy(), y, x, w, y, None, _core.Act.gelu)
    dx = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="dense_backward: argument 'dx' must not share memory with 'x'"):
        _core.dense_backward(x, None, None, None, y, x, w)
    with pytest.raises(ValueError, match="dense_backward: argument 'dz' must not share memory with 'dy'"):
        big = np.zeros(9, np.float32)
        _core.dense_backward(dx, None, None, big[1:].reshape(4, 2), big[:8].reshape(4, 2), x, w, y,
                             None, relu)
    ro = np.zeros((3, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dense_backward: argument 'dw' is read-only"):
        _core.dense_backward(None, ro, None, None, y, x, w)


# ---- sparse input (dense_forward_sparse / dense_backward_sparse) ----------------------

def _sparse_case(rng, N, IC, OC, zero_cols):
    """Small integers (exact sums) with the columns `zero_cols` zero in every row."""
    x = rng.integers(-3, 4, size=(N, IC)).astype(np.float32)
    x[:, zero_cols] = 0.0
    w = rng.integers(-3, 4, size=(IC, OC)).astype(np.float32)
    b = rng.integers(-3, 4, size=OC).astype(np.float32)
    return x, w, b


@pytest.mark.parametrize("N,IC,OC,zero", [
    (32, 784, 128, 400),   # the MNIST first layer: gathered
    (1, 7, 10, 6),         # one nonzero column left
    (3, 17, 64, 13),       # gathered, odd sizes
    (4, 1200, 20, 400),    # gathered: several K blocks of w's rows, an edge panel
    (400, 64, 10, 20),     # gathered: several K (batch) blocks in dw, an edge panel
    (5, 16, 9, 3),         # 13/16 nonzero > 3/4: plain dense path
    (4, 10, 3, 10),        # all columns zero: plain dense path
])
@pytest.mark.parametrize("kind", ["linear", "relu", "gelu"])
@pytest.mark.parametrize("isa", list(_core.supported_isas()))
def test_dense_sparse_matches_dense(N, IC, OC, zero, kind, isa, rng, num_threads):
    # (isa: the GEMM kernels, whose packing gathers w's rows for the sparse product)
    zero_cols = rng.choice(IC, size=zero, replace=False)
    x, w, b = _sparse_case(rng, N, IC, OC, zero_cols)
    act = getattr(_core.Act, kind)
    nonzero = np.flatnonzero(np.any(x != 0, axis=0))
    gathered = 0 < len(nonzero) <= 0.75 * IC
    before = _core.gemm_isa()
    _core.set_gemm_isa(isa)
    try:
        _check_sparse_pair(x, w, b, act, kind, nonzero, gathered, rng, num_threads)
    finally:
        _core.set_gemm_isa(before)


def _check_sparse_pair(x, w, b, act, kind, nonzero, gathered, rng, num_threads):
    (N, IC), OC = x.shape, w.shape[1]
    for threads in (1, 2):
        num_threads(threads)
        y, z = np.empty((N, OC), np.float32), np.empty((N, OC), np.float32)
        cols = np.full(IC, -1, np.int32)
        xc = np.empty((N, IC), np.float32)
        nk = _core.dense_forward_sparse(y, z, cols, xc, x, w, b, act)
        y_ref, z_ref = np.empty_like(y), np.empty_like(z)
        _core.dense_forward(y_ref, z_ref, x, w, b, act)
        np.testing.assert_array_equal(z, z_ref)  # integer sums: exact
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
        if not gathered:
            assert nk == 0
            continue
        assert nk == len(nonzero)
        np.testing.assert_array_equal(cols[:nk], nonzero)
        np.testing.assert_array_equal(xc.ravel()[:N * nk].reshape(N, nk), x[:, nonzero])

        dy = rng.integers(-3, 4, size=(N, OC)).astype(np.float32)
        dw0 = rng.integers(-3, 4, size=(IC, OC)).astype(np.float32)  # gradients add up
        db0 = rng.integers(-3, 4, size=OC).astype(np.float32)
        dw, db, dz = dw0.copy(), db0.copy(), np.empty((N, OC), np.float32)
        dwc = np.empty((IC, OC), np.float32)
        _core.dense_backward_sparse(dw, db, dz, dwc, dy, cols, nk, xc, y, z, act)
        dw_ref, db_ref, dz_ref = dw0.copy(), db0.copy(), np.empty((N, OC), np.float32)
        _core.dense_backward(None, dw_ref, db_ref, dz_ref, dy, x, w, y_ref, z_ref, act)
        if kind != "gelu":  # integer sums: exact
            np.testing.assert_array_equal(dw, dw_ref)
            np.testing.assert_array_equal(db, db_ref)
        else:  # the same products, summed in another order
            scale = np.abs(x).T @ np.abs(dz_ref) + np.abs(dw0)
            assert_within(dw, dw_ref.astype(np.float64), 4 * EPS * (N + 1) * scale, "dw")
            np.testing.assert_array_equal(db, db_ref)
        # accumulate=False: the same values as adding into zeros, every row of dw written
        dw_over, db_over = np.full_like(dw0, np.nan), np.full_like(db0, np.nan)
        _core.dense_backward_sparse(dw_over, db_over, dz, dwc, dy, cols, nk, xc, y, z, act,
                                    False)
        dw_zero, db_zero = np.zeros_like(dw0), np.zeros_like(db0)
        _core.dense_backward_sparse(dw_zero, db_zero, dz, dwc, dy, cols, nk, xc, y, z, act)
        np.testing.assert_array_equal(dw_over, dw_zero)
        np.testing.assert_array_equal(db_over, db_zero)


def test_dense_sparse_bad_input(rng):
    x, w, b = _sparse_case(rng, 4, 8, 3, [0, 1, 2, 3])
    y, cols = np.empty((4, 3), np.float32), np.empty(8, np.int32)
    xc = np.empty((4, 8), np.float32)
    with pytest.raises(TypeError, match="dense_forward_sparse: argument 'cols'.*int32"):
        _core.dense_forward_sparse(y, None, cols.astype(np.int64), xc, x, w, b)
    with pytest.raises(ValueError, match="argument 'xc'.*must not share memory with 'x'"):
        _core.dense_forward_sparse(y, None, cols, x, x, w, b)
    nk = _core.dense_forward_sparse(y, None, cols, xc, x, w, b)
    assert nk == 4
    dw, dwc, dy = np.zeros_like(w), np.empty_like(w), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="argument 'nk' must be in \\[1, IC\\]"):
        _core.dense_backward_sparse(dw, None, None, dwc, dy, cols, 9, xc)
    bad = cols.copy()
    bad[1] = bad[0]
    with pytest.raises(ValueError, match="argument 'cols' must start with nk ascending"):
        _core.dense_backward_sparse(dw, None, None, dwc, dy, bad, nk, xc)
    with pytest.raises(ValueError, match="argument 'dz'.*required for activation relu"):
        _core.dense_backward_sparse(dw, None, None, dwc, dy, cols, nk, xc, y, None,
                                    _core.Act.relu)


def test_dense_layer_skips_zero_input_columns(rng):
    # The first Dense layer of a model (no input gradient) trains through the sparse pair;
    # its loss and gradients equal those of the same model run densely.
    import fastnn as fn

    x = rng.normal(size=(16, 40)).astype(np.float32)
    x[:, rng.choice(40, 25, replace=False)] = 0.0
    y = rng.integers(0, 3, size=16).astype(np.int32)
    results = []
    for dense_first in (False, True):
        model = fn.Sequential([fn.layers.Dense(6, activation="relu", input_shape=(40,)),
                               fn.layers.Dense(3, activation="softmax")], seed=5)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.layers[0].need_input_grad = dense_first  # True: the plain dense kernels
        model._configure_output()
        with model._emitting_logits():
            loss, _ = model._loss_and_grads(x, y)
        assert (model.layers[0]._nk > 0) == (not dense_first)
        results.append((loss, model._grads.copy()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)
