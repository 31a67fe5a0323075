"""Optimizer steps: C++ kernels vs NumPy references (float64), textbook values, thread
independence, PyTorch (when installed), and argument checking.

Adam and AdaGrad have a pass per ISA (AVX-512 and AVX2 divide through a refined
reciprocal estimate, "generic" is the exact loop); the tests that take the `isa` fixture
run on every ISA this CPU supports, chosen with set_gemm_isa."""
import numpy as np
import pytest

import fastnn
from fastnn import _core, ops
from fastnn import reference as ref

SIZES = [1, 7, 1000, 100003]  # none a multiple of the SIMD width or the parallel grain
STEPS = 4
ISAS = list(_core.supported_isas())


@pytest.fixture
def restore_threads():
    n = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(n)


def _problem(n, seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    return p, grads


def _close(a32, a64, what):
    # float32 state after a few steps vs the float64 reference. Observed: error below
    # 2e-7·max|ref| (about 1 ulp of the largest value) and 4e-6 relative; allow ~20x.
    np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=4e-6 * np.abs(a64).max(),
                               err_msg=what)


def _as_f32_hyper(kw):
    # The kernels take float32 hyper-parameters: give the reference the same values.
    return {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in kw.items()}


# ---------------------------------------------------------------------------- SGD

SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=1e-2),
]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_reference(n, kw):
    p, grads = _problem(n, seed=n)
    v = np.zeros(n, np.float32) if kw.get("momentum") else None
    p64, v64 = p.astype(np.float64), np.zeros(n) if v is not None else None
    for g in grads:
        ops.sgd_step(p, g, v, **kw)
        ref.sgd_step(p64, g.astype(np.float64), v64, **_as_f32_hyper(kw))
    _close(p, p64, "params")
    if v is not None:
        _close(v, v64, "velocity")


def test_sgd_small_integers_exact():
    # p, g small integers, lr and momentum powers of two: every operation is exact.
    p0 = np.array([3, -2, 0, 7, 1, -5, 4], np.float32)
    g1 = np.array([1, 2, -3, 0, 4, -1, 2], np.float32)
    g2 = np.array([-2, 1, 1, 3, 0, 2, -4], np.float32)
    lr, mu = 0.25, 0.5

    p = p0.copy()
    ops.sgd_step(p, g1, lr=lr)
    np.testing.assert_array_equal(p, p0 - lr * g1)

    p, v = p0.copy(), np.zeros(7, np.float32)
    ops.sgd_step(p, g1, v, lr=lr, momentum=mu)
    ops.sgd_step(p, g2, v, lr=lr, momentum=mu)
    v1 = g1                                   # first step: v = g (v starts at 0)
    v2 = mu * v1 + g2
    np.testing.assert_array_equal(v, v2)
    np.testing.assert_array_equal(p, p0 - lr * v1 - lr * v2)

    p, v = p0.copy(), np.zeros(7, np.float32)
    ops.sgd_step(p, g1, v, lr=lr, momentum=mu, nesterov=True)
    ops.sgd_step(p, g2, v, lr=lr, momentum=mu, nesterov=True)
    np.testing.assert_array_equal(
        p, p0 - lr * (g1 + mu * v1) - lr * (g2 + mu * v2))

    p, wd = p0.copy(), 0.5
    ops.sgd_step(p, g1, lr=lr, weight_decay=wd)
    np.testing.assert_array_equal(p, p0 - lr * (g1 + wd * p0))


def test_sgd_momentum_zero_ignores_velocity():
    p, (g,) = _problem(50, steps=1)
    v = np.full(50, 7.0, np.float32)
    ops.sgd_step(p, g, v, lr=0.1)
    np.testing.assert_array_equal(v, 7.0)


# ---------------------------------------------------------------------------- Adam

_ADAM_DEFAULTS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0)
ADAM_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, weight_decay=0.05),
    dict(lr=1e-2, weight_decay=0.05, decoupled=True),
    dict(lr=3e-3, beta1=0.0, beta2=0.99, eps=1e-5),
    dict(lr=1e-2, beta2=0.99, eps=0.1),  # large eps: its place (after bias correction) shows
    dict(lr=1e-2, beta1=0.5, beta2=0.9, eps=1e-8, weight_decay=0.1, decoupled=True),
]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kw", ADAM_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_adam_matches_reference(n, kw, isa):
    p, grads = _problem(n, seed=n + 1)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    p64, m64, v64 = p.astype(np.float64), np.zeros(n), np.zeros(n)
    kw64 = _as_f32_hyper({**_ADAM_DEFAULTS, **kw})
    for t, g in enumerate(grads, start=1):
        ops.adam_step(p, g, m, v, t, **kw)
        ref.adam_step(p64, g.astype(np.float64), m64, v64, t, **kw64)
    _close(p, p64, "params")
    _close(m, m64, "m")
    _close(v, v64, "v")


def test_adam_late_step_bias_correction(isa):
    # at a large step the bias corrections are ~1; state carried in from earlier steps
    p, (g,) = _problem(1000, seed=3, steps=1)
    rng = np.random.default_rng(4)
    m = (0.1 * rng.standard_normal(1000)).astype(np.float32)
    v = (0.1 * rng.random(1000) + 1e-3).astype(np.float32)
    p64, m64, v64 = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    ops.adam_step(p, g, m, v, 10_000, lr=1e-2)
    ref.adam_step(p64, g.astype(np.float64), m64, v64, 10_000,
                  **_as_f32_hyper({**_ADAM_DEFAULTS, "lr": 1e-2}))
    _close(p, p64, "params")


def test_adam_first_step_moves_by_lr_sign_g(isa):
    # step 1: m_hat = g, v_hat = g², so every parameter moves by lr·g/(|g| + eps) ≈ lr·sign(g)
    p0, (g,) = _problem(1007, seed=5, steps=1)
    g[np.abs(g) < 1e-2] = 1e-2
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    lr = 1e-3
    ops.adam_step(p, g, m, v, 1, lr=lr)
    np.testing.assert_allclose(p0 - p, lr * np.sign(g), rtol=1e-3)
    # (1 − β) of the float32 β the kernel receives (0.999 is not a float32)
    np.testing.assert_allclose(m, (1 - np.float32(0.9)) * g, rtol=1e-6)
    np.testing.assert_allclose(v, (1 - np.float32(0.999)) * g * g, rtol=1e-6)


def test_adam_weight_decay_forms_with_zero_gradient(isa):
    p0, _ = _problem(1003, seed=6, steps=1)
    p0[np.abs(p0) < 1e-2] = 0.5
    g = np.zeros_like(p0)
    lr, wd = 1e-2, 0.1
    # AdamW: zero moments leave only the decoupled decay p·(1 − lr·wd), exactly
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    ops.adam_step(p, g, m, v, 1, lr=lr, weight_decay=wd, decoupled=True)
    np.testing.assert_array_equal(p, p0 * np.float32(1 - lr * wd))
    np.testing.assert_array_equal(m, 0)
    # Adam + L2: the gradient is wd·p, so the first step moves by ≈ lr·sign(p)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    ops.adam_step(p, g, m, v, 1, lr=lr, weight_decay=wd)
    np.testing.assert_allclose(p0 - p, lr * np.sign(p0), rtol=1e-3)


# ---------------------------------------------------------------------------- AdaGrad

ADAGRAD_CASES = [dict(lr=0.1), dict(lr=0.05, eps=1e-5, weight_decay=0.01)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kw", ADAGRAD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_adagrad_matches_reference(n, kw, isa):
    p, grads = _problem(n, seed=n + 2)
    acc = np.full(n, 0.1, np.float32)
    p64, acc64 = p.astype(np.float64), np.full(n, np.float32(0.1), np.float64)
    kw64 = _as_f32_hyper({"lr": 0.01, "eps": 1e-7, **kw})
    for g in grads:
        ops.adagrad_step(p, g, acc, **kw)
        ref.adagrad_step(p64, g.astype(np.float64), acc64, **kw64)
    _close(p, p64, "params")
    _close(acc, acc64, "accum")


def test_adagrad_first_step_textbook(isa):
    p0, (g,) = _problem(999, seed=7, steps=1)
    g[np.abs(g) < 1e-2] = 1e-2
    p, acc = p0.copy(), np.zeros_like(p0)
    ops.adagrad_step(p, g, acc, lr=1e-2)
    np.testing.assert_array_equal(acc, g * g)
    np.testing.assert_allclose(p0 - p, 1e-2 * np.sign(g), rtol=1e-3)


# ---------------------------------------------------------------------------- determinism

def _run_all(n=100003):
    p, grads = _problem(n, seed=11)
    out = {}
    for name, kw in [("sgd", dict(lr=0.1, weight_decay=1e-3)),
                     ("nesterov", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3))]:
        q = p.copy()
        vel = np.zeros(n, np.float32)
        for g in grads:
            ops.sgd_step(q, g, vel, **kw)
        out[name] = (q, vel)
    for name, kw in [("adam", {}), ("adam_l2", dict(weight_decay=1e-2)),
                     ("adamw", dict(weight_decay=1e-2, decoupled=True))]:
        q, m, v = p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for t, g in enumerate(grads, 1):
            ops.adam_step(q, g, m, v, t, lr=1e-2, **kw)
        out[name] = (q, m, v)
    for name, kw in [("adagrad", {}), ("adagrad_wd", dict(weight_decay=1e-3))]:
        q, acc = p.copy(), np.zeros(n, np.float32)
        for g in grads:
            ops.adagrad_step(q, g, acc, **kw)
        out[name] = (q, acc)
    return out


def test_bitwise_identical_for_1_and_2_threads(restore_threads, isa):
    fastnn.set_num_threads(1)
    one = _run_all()
    fastnn.set_num_threads(2)
    two = _run_all()
    for name in one:
        for a, b in zip(one[name], two[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


SPLIT_CASES = [
    ("adam_step", 2, dict(lr=1e-2)),
    ("adam_step", 2, dict(lr=1e-2, weight_decay=1e-2)),
    ("adam_step", 2, dict(lr=1e-2, weight_decay=1e-2, decoupled=True)),
    ("adagrad_step", 1, dict(lr=1e-2)),
    ("adagrad_step", 1, dict(lr=1e-2, weight_decay=1e-2)),
]


@pytest.mark.parametrize("name, nstate, kw", SPLIT_CASES, ids=lambda c: str(c)[:40])
@pytest.mark.parametrize("n, cut", [(100003, 50001), (37, 5)])
def test_bitwise_identical_for_any_split(name, nstate, kw, n, cut, isa):
    # an element's update does not depend on where its chunk starts (vector body, tail
    # or misaligned start): stepping two unaligned halves separately gives the same bits
    p, grads = _problem(n, seed=12)
    whole = [p.copy()] + [np.zeros(n, np.float32) for _ in range(nstate)]
    parts = [a.copy() for a in whole]
    step = getattr(ops, name)
    for t, g in enumerate(grads, 1):
        extra = (t,) if name == "adam_step" else ()
        step(whole[0], g, *whole[1:], *extra, **kw)
        for sl in (slice(0, cut), slice(cut, n)):
            step(parts[0][sl], g[sl], *[a[sl] for a in parts[1:]], *extra, **kw)
    for a, b in zip(whole, parts):
        np.testing.assert_array_equal(a, b)


ZERO_CASES = [
    ("sgd_step", lambda n: (), dict(lr=0.1, weight_decay=1e-3)),
    ("sgd_step", lambda n: (np.zeros(n, np.float32),), dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("adam_step", lambda n: (np.zeros(n, np.float32), np.zeros(n, np.float32), 1), dict(lr=1e-2)),
    ("adam_step", lambda n: (np.zeros(n, np.float32), np.zeros(n, np.float32), 3),
     dict(lr=1e-2, weight_decay=1e-2, decoupled=True)),
    ("adagrad_step", lambda n: (np.full(n, 0.1, np.float32),), dict(weight_decay=1e-3)),
]


@pytest.mark.parametrize("n", [7, 100003])
@pytest.mark.parametrize("name, state, kw", ZERO_CASES, ids=lambda c: str(c)[:40])
def test_zero_grads_same_step_then_zero(n, name, state, kw, restore_threads, isa):
    # zero_grads changes nothing of the update, and leaves grads at 0 (kernel and twin)
    p, (g,) = _problem(n, seed=14, steps=1)
    for threads in (1, 2):
        fastnn.set_num_threads(threads)
        plain, zeroed = (p.copy(), state(n)), (p.copy(), state(n))
        getattr(ops, name)(plain[0], g, *plain[1], **kw)
        g2 = g.copy()
        getattr(ops, name)(zeroed[0], g2, *zeroed[1], **kw, zero_grads=True)
        np.testing.assert_array_equal(zeroed[0], plain[0])
        for a, b in zip(zeroed[1], plain[1]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(g2, 0.0)
    g64 = g.astype(np.float64)
    getattr(ref, name)(p.astype(np.float64), g64, *[np.asarray(a, np.float64) if isinstance(a, np.ndarray) else a
                                                     for a in state(n)], **kw, zero_grads=True)
    np.testing.assert_array_equal(g64, 0.0)


def test_zero_grads_needs_writable_float32_grads():
    p, g, m, v = _state()
    with pytest.raises(TypeError, match=r"adam_step: argument 'grads' must be a C-contiguous float32"):
        ops.adam_step(p, g.astype(np.float64), m, v, 1, zero_grads=True)
    ro = g.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"sgd_step: argument 'grads' is read-only"):
        ops.sgd_step(p, ro, zero_grads=True)
    ops.sgd_step(p, ro)  # only read without zero_grads


def test_any_shape_same_as_flat():
    p, (g,) = _problem(128 * 10, seed=13, steps=1)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p2, m2, v2 = p.reshape(128, 10).copy(), np.zeros((128, 10), np.float32), np.zeros((128, 10), np.float32)
    ops.adam_step(p, g, m, v, 1)
    ops.adam_step(p2, g.reshape(128, 10), m2, v2, 1)
    np.testing.assert_array_equal(p2.ravel(), p)


# ---------------------------------------------------------------------------- accuracy, special values

# Largest relative difference between an update (p = 0 before the step, so p after it is
# −step_size·m/(√v·c + eps) in float32) and the same formula in float64 on the kernel's
# own float32 m, v and step scalars. The exact loop rounds four times (the square root,
# the fused ·c + eps, the quotient, ·step_size): at most 4·2^-24. The AVX-512 / AVX2
# quotient is off by at most 2^-28 before its rounding, so 4.06·2^-24 bounds every ISA.
# Observed (wide-range m, v, eps 1e-7 and 1e-30, every ISA): 3.18·2^-24 for Adam,
# 3.05·2^-24 for AdaGrad.
UPDATE_RTOL = 5 * 2.0 ** -24  # 2.98e-7


def _adam_scalars(step, lr, beta1, beta2):
    # the float32 scalars adam_step computes in double from float32 hyper-parameters
    lr, b1, b2 = (float(np.float32(x)) for x in (lr, beta1, beta2))
    step_size = float(np.float32(lr / (1.0 - b1 ** step)))
    inv_bc2_sqrt = float(np.float32(1.0 / np.sqrt(1.0 - b2 ** step)))
    return step_size, inv_bc2_sqrt


def _wide_state(n, seed):
    # v over most of the float32 range (1e-36 to 1e36); m and g scaled by √v, so that
    # m/√v (1e-6 to 1e3) and every intermediate stay normal floats
    rng = np.random.default_rng(seed)
    v = 10.0 ** rng.uniform(-36, 36, n)
    m = rng.choice([-1, 1], n) * np.sqrt(v) * 10.0 ** rng.uniform(-6, 3, n)
    g = rng.choice([-1, 1], n) * np.sqrt(v) * 10.0 ** rng.uniform(-3, 1, n)
    return g.astype(np.float32), m.astype(np.float32), v.astype(np.float32)


@pytest.mark.parametrize("step", [1, 10, 5000])
@pytest.mark.parametrize("eps", [1e-7, 1e-30])
def test_adam_update_accuracy(step, eps, isa):
    n = 4099
    g, m, v = _wide_state(n, seed=step)
    p = np.zeros(n, np.float32)
    lr, beta1, beta2 = 1e-2, 0.9, 0.999
    ops.adam_step(p, g, m, v, step, lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    step_size, c = _adam_scalars(step, lr, beta1, beta2)
    m64, v64 = m.astype(np.float64), v.astype(np.float64)
    want = -step_size * m64 / (np.sqrt(v64) * c + float(np.float32(eps)))
    rel = np.abs(p - want) / np.abs(want)
    assert rel.max() <= UPDATE_RTOL, f"max relative difference {rel.max():.3g} ({rel.max() / 2.0 ** -24:.2f}·2^-24)"


@pytest.mark.parametrize("eps", [1e-7, 1e-30])
def test_adagrad_update_accuracy(eps, isa):
    n = 4099
    g, _, acc = _wide_state(n, seed=7)
    p = np.zeros(n, np.float32)
    ops.adagrad_step(p, g, acc, lr=1e-2, eps=eps)
    want = -float(np.float32(1e-2)) * g.astype(np.float64) / (
        np.sqrt(acc.astype(np.float64)) + float(np.float32(eps)))
    nz = want != 0
    rel = np.abs(p[nz] - want[nz]) / np.abs(want[nz])
    assert rel.max() <= UPDATE_RTOL, f"max relative difference {rel.max():.3g} ({rel.max() / 2.0 ** -24:.2f}·2^-24)"


def _step_on(isa_name, name, arrays, *args, **kw):
    # one step on copies of arrays with the given ISA; returns the copies
    out = [a.copy() for a in arrays]
    before = _core.gemm_isa()
    _core.set_gemm_isa(isa_name)
    try:
        getattr(ops, name)(out[0], out[1], *out[2:], *args, **kw)
    finally:
        _core.set_gemm_isa(before)
    return out


def _same_as_exact_loop(fast, exact, what):
    # NaN, ±inf and zeros (with their sign) in the same places. Finite values: p within
    # 2 ulp (the fast quotient may be 1 ulp off, and 1 ulp of q can be 2 of step_size·q
    # where that product's mantissa is the smaller), the state within 1 ulp (same formula;
    # only a compiler's different fusing of its products could move it).
    for a, b, w in zip(fast, exact, what):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=w)
        fin = np.isfinite(b)
        np.testing.assert_array_equal(a[~fin & ~np.isnan(b)], b[~fin & ~np.isnan(b)], err_msg=w)
        np.testing.assert_array_equal(np.signbit(a[b == 0]), np.signbit(b[b == 0]), err_msg=w)
        np.testing.assert_array_equal(a[b == 0], 0, err_msg=w)
        np.testing.assert_array_max_ulp(a[fin], b[fin], maxulp=2 if w == "p" else 1)


# (p, g, m, v) per element, one step of Adam at step 3 (v: the state before the step)
_INF, _NAN, _BIG = np.inf, np.nan, 1e20
ADAM_SPECIAL = [
    (0.5, 0.0, 0.0, 0.0),        # never-used weight: v = 0, m = 0, p must not move
    (-0.0, 0.0, 0.0, 0.0),       # ... and -0 stays -0
    (0.5, 0.0, 0.3, 0.0),        # v = 0, m != 0: denominator eps
    (0.5, 0.0, -2e-30, 0.0),
    (0.5, 1e-3, 0.0, 0.0),       # first step of a weight
    (0.5, 0.0, 1e-20, 1e-36),    # tiny v
    (0.5, 1e-18, 1e-18, 2e-38),  # smallest normal v
    (0.5, 0.0, 3e18, 3e38),      # huge v
    (0.5, 1e19, 1e18, 1e38),     # g² near the top of the range
    (0.5, _BIG, 0.0, 0.0),       # g² overflows: v = +inf, m finite: q = 0, p stays
    (0.5, -_BIG, 0.0, 0.0),
    (0.5, 0.0, 1.0, _INF),       # v = +inf already
    (0.5, 0.0, -1.0, _INF),
    (0.5, 0.0, _INF, _INF),      # m = inf and v = inf: NaN, as inf/inf
    (0.5, 0.0, _INF, 1.0),       # m = inf, v finite: p = -inf
    (0.5, _NAN, 0.0, 0.0),       # NaN gradient: NaN everywhere
    (0.5, 0.0, _NAN, 1.0),
    (0.5, 0.0, 1.0, _NAN),
    (0.5, 0.0, 1.0, -1.0),       # negative v (a broken state): sqrt gives NaN
    (_INF, 1.0, 0.0, 0.0),       # infinite parameter
    (_NAN, 1.0, 0.0, 0.0),
]
ADAGRAD_SPECIAL = [  # (p, g, acc)
    (0.5, 0.0, 0.0),
    (-0.0, 0.0, 0.0),
    (0.5, 1e-3, 0.0),
    (0.5, 1e-19, 1e-36),
    (0.5, 1e19, 3e38),
    (0.5, _BIG, 0.0),            # g² overflows: acc = +inf, q = g/inf = 0
    (0.5, 1.0, _INF),
    (0.5, _INF, 0.0),            # inf/inf: NaN
    (0.5, _NAN, 1.0),
    (0.5, 1.0, _NAN),
    (0.5, 1.0, -4.0),
    (_INF, 1.0, 1.0),
]


@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=1e-2, eps=1e-30),
                                dict(lr=1e-2, weight_decay=0.1),
                                dict(lr=1e-2, weight_decay=0.1, decoupled=True)],
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("fast", [i for i in ISAS if i != "generic"] or ["generic"])
def test_adam_special_values_as_exact_loop(kw, fast):
    # every case at several positions: in a full vector and in the tail (n = 3·21 + 2)
    cases = np.array(ADAM_SPECIAL * 3 + ADAM_SPECIAL[:2], np.float32).T.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        a = _step_on(fast, "adam_step", list(cases), 3, **kw)
        b = _step_on("generic", "adam_step", list(cases), 3, **kw)
    _same_as_exact_loop([a[0], a[2], a[3]], [b[0], b[2], b[3]], ["p", "m", "v"])
    p0, g = cases[0], cases[1]
    if not kw.get("weight_decay"):
        # no gradient, no moments: not moved (bit for bit, -0 included); v = inf: not moved
        still = ((g == 0) & (cases[2] == 0) & (cases[3] == 0)) | (a[3] == np.inf) & np.isfinite(a[2])
        np.testing.assert_array_equal(a[0][still].view(np.uint32), p0[still].view(np.uint32))
        assert still.sum() >= 9


@pytest.mark.parametrize("kw", [dict(lr=1e-2), dict(lr=1e-2, eps=1e-30), dict(lr=1e-2, weight_decay=0.1)],
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("fast", [i for i in ISAS if i != "generic"] or ["generic"])
def test_adagrad_special_values_as_exact_loop(kw, fast):
    cases = np.array(ADAGRAD_SPECIAL * 3 + ADAGRAD_SPECIAL[:3], np.float32).T.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        a = _step_on(fast, "adagrad_step", list(cases), **kw)
        b = _step_on("generic", "adagrad_step", list(cases), **kw)
    _same_as_exact_loop([a[0], a[2]], [b[0], b[2]], ["p", "accum"])


@pytest.mark.parametrize("fast", [i for i in ISAS if i != "generic"] or ["generic"])
def test_fast_passes_match_exact_loop(fast):
    # steps on random training-like data: every ISA stays within 2 ulp of the exact loop
    # in the update of p (p is 0 before each compared step) and within 1 ulp in m, v
    n = 1003
    rng = np.random.default_rng(31)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    acc = np.zeros(n, np.float32)
    for t in range(1, 30):
        g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n)).astype(np.float32)
        g[rng.random(n) < 0.2] = 0.0  # sparse gradients: v decays towards 0
        state = [np.zeros(n, np.float32), g, m, v]
        a = _step_on(fast, "adam_step", state, t, lr=1e-3)
        b = _step_on("generic", "adam_step", state, t, lr=1e-3)
        _same_as_exact_loop([a[0], a[2], a[3]], [b[0], b[2], b[3]], ["p", "m", "v"])
        m, v = b[2], b[3]
        state = [np.zeros(n, np.float32), g, acc]
        a = _step_on(fast, "adagrad_step", state, lr=1e-2)
        b = _step_on("generic", "adagrad_step", state, lr=1e-2)
        _same_as_exact_loop([a[0], a[2]], [b[0], b[2]], ["p", "accum"])
        acc = b[2]


# ---------------------------------------------------------------------------- PyTorch

def test_matches_pytorch(isa):
    torch = pytest.importorskip("torch")
    n = 1003
    p0, grads = _problem(n, seed=21)
    cases = [
        ("sgd", torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)),
        ("adam", torch.optim.Adam, dict(lr=1e-2, eps=1e-7, weight_decay=1e-2)),
        ("adamw", torch.optim.AdamW, dict(lr=1e-2, eps=1e-7, weight_decay=1e-1)),
        ("adagrad", torch.optim.Adagrad, dict(lr=1e-1, eps=1e-7, weight_decay=1e-2)),
    ]
    for name, cls, kw in cases:
        tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        opt = cls([tp], foreach=False, **kw)
        p, s1, s2 = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for t, g in enumerate(grads, 1):
            tp.grad = torch.from_numpy(g.copy())
            opt.step()
            if name == "sgd":
                ops.sgd_step(p, g, s1, **kw)
            elif name == "adagrad":
                ops.adagrad_step(p, g, s1, **kw)
            else:
                ops.adam_step(p, g, s1, s2, t, decoupled=(name == "adamw"), **kw)
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------- bad input

def _state(n=8):
    p = np.ones(n, np.float32)
    return p, np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)


def test_bad_buffers():
    p, g, m, v = _state()
    with pytest.raises(ValueError, match=r"adam_step: argument 'grads' .*shape like params = \(8,\).*\(9,\)"):
        ops.adam_step(p, np.ones(9, np.float32), m, v, 1)
    with pytest.raises(ValueError, match=r"argument 'v' .*shape like params = \(8,\)"):
        ops.adam_step(p, g, m, np.zeros(7, np.float32), 1)
    with pytest.raises(ValueError, match=r"argument 'm' .*\(4, 2\)"):
        ops.adam_step(p, g, m.reshape(4, 2), v, 1)
    with pytest.raises(TypeError, match=r"argument 'params' must be a C-contiguous float32.*float64"):
        ops.adam_step(p.astype(np.float64), g, m, v, 1)
    with pytest.raises(TypeError, match=r"argument 'accum' must be a C-contiguous float32.*float16"):
        ops.adagrad_step(p, g, m.astype(np.float16))
    with pytest.raises(TypeError, match=r"argument 'params' .*got list"):
        ops.sgd_step([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"argument 'params' must be C-contiguous"):
        ops.sgd_step(np.ones(16, np.float32)[::2], g)
    ro = p.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"argument 'params' is read-only"):
        ops.sgd_step(ro, g)
    with pytest.raises(ValueError, match=r"argument 'params' is empty"):
        ops.sgd_step(np.ones(0, np.float32), np.ones(0, np.float32))
    with pytest.raises(ValueError, match=r"argument 'params' must not share memory with 'm'"):
        ops.adam_step(p, g, p, v, 1)
    with pytest.raises(ValueError, match=r"argument 'm' must not share memory with 'v'"):
        ops.adam_step(p, g, m, m, 1)
    with pytest.raises(ValueError, match=r"argument 'velocity' must not share memory with 'grads'"):
        ops.sgd_step(p, g, g, momentum=0.9)
    # grads is only read: other dtypes are converted, and the step still happens
    q = p.copy()
    ops.sgd_step(q, [1.0] * 8, lr=0.5)
    np.testing.assert_array_equal(q, 0.5)


@pytest.mark.parametrize("call, match", [
    (lambda p, g, m, v: ops.sgd_step(p, g, lr=-0.1), r"sgd_step: argument 'lr' must be a finite number >= 0, got -0.1"),
    (lambda p, g, m, v: ops.sgd_step(p, g, lr=float("nan")), r"argument 'lr' must be a finite number"),
    (lambda p, g, m, v: ops.sgd_step(p, g, m, momentum=1.0), r"argument 'momentum' must be in \[0, 1\)"),
    (lambda p, g, m, v: ops.sgd_step(p, g, m, momentum=-0.5), r"argument 'momentum' must be in \[0, 1\)"),
    (lambda p, g, m, v: ops.sgd_step(p, g, momentum=0.9), r"argument 'velocity' is required when momentum > 0"),
    (lambda p, g, m, v: ops.sgd_step(p, g, m, nesterov=True), r"argument 'nesterov' needs momentum > 0"),
    (lambda p, g, m, v: ops.sgd_step(p, g, weight_decay=-1.0), r"argument 'weight_decay' must be a finite number >= 0"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 1, beta1=1.0), r"adam_step: argument 'beta1' must be in \[0, 1\)"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 1, beta2=-0.1), r"argument 'beta2' must be in \[0, 1\)"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 1, beta2=0.99999999), r"argument 'beta2' must be in \[0, 1\) \(as float32\)"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 1, eps=0.0), r"argument 'eps' must be a finite number > 0"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 0), r"argument 'step' must be >= 1"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 1, lr=float("inf")), r"argument 'lr' must be a finite number"),
    (lambda p, g, m, v: ops.adam_step(p, g, m, v, 1, weight_decay=float("nan"), decoupled=True), r"argument 'weight_decay'"),
    (lambda p, g, m, v: ops.adagrad_step(p, g, m, eps=-1e-7), r"adagrad_step: argument 'eps' must be a finite number > 0"),
    (lambda p, g, m, v: ops.adagrad_step(p, g, m, lr=-1.0), r"adagrad_step: argument 'lr'"),
])
def test_bad_hyperparameters(call, match):
    p, g, m, v = _state()
    before = p.copy()
    with pytest.raises(ValueError, match=match):
        call(p, g, m, v)
    np.testing.assert_array_equal(p, before)  # nothing was written


def test_bad_scalar_types():
    p, g, m, v = _state()
    with pytest.raises(TypeError, match=r"adam_step: argument 'step' must be an int, got float"):
        ops.adam_step(p, g, m, v, 1.0)
    with pytest.raises(TypeError, match=r"sgd_step: argument 'lr' must be a real number, got str"):
        ops.sgd_step(p, g, lr="0.1")


def test_subnormals_flushed_inside_kernels_only(isa):
    # Kernels run with subnormals flushed to zero (a decayed first moment of 1e-40 reads
    # as 0); the caller's floating-point mode is restored afterwards, so NumPy in the same
    # thread still produces subnormals.
    n = 1000
    p, g = np.ones(n, np.float32), np.zeros(n, np.float32)
    m, v = np.full(n, 1e-40, np.float32), np.ones(n, np.float32)
    ops.adam_step(p, g, m, v, step=1)
    assert np.all(m == 0.0)
    np.testing.assert_array_equal(p, np.ones(n, np.float32))
    tiny = np.float32(1e-38) / np.float32(100.0)
    assert 0.0 < tiny < np.finfo(np.float32).tiny


def test_step_builds_the_state_on_first_use_and_checks_its_arguments():
    p = np.linspace(-1, 1, 40, dtype=np.float32)
    g = np.full(40, 0.5, np.float32)
    opt = fastnn.optim.Adam(1e-2)
    opt.step(p, g)  # unbuilt: the first step sizes the state
    want = np.linspace(-1, 1, 40, dtype=np.float64)
    ref.adam_step(want, g, np.zeros(40), np.zeros(40), 1, lr=1e-2)
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="built for 40 parameters, got 39"):
        opt.step(p[:39], g[:39])
    with pytest.raises(ValueError, match="'grads' has 39 elements"):
        opt.step(p, g[:39])
    with pytest.raises(TypeError, match="'params' must be a 1-D float32 array, got list"):
        fastnn.optim.SGD(0.1).step([1.0, 2.0], g)
