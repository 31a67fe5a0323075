"""Conv1D, MaxPooling1D and AveragePooling1D: forward and backward against direct NumPy
loops in float64 over valid/same/causal padding, strides, dilations, groups, lengths and
kernel sizes; output shapes against Keras's formulas; the (N, 1, T, C) views; saving and
loading; Sequential and Functional models; bad input; the ``train imdb-cnn1d`` job on a
tiny synthetic corpus."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import fastnn as fn
from fastnn.layers.conv1d import Conv1D
from fastnn.layers.pooling1d_local import (AveragePooling1D, AvgPool1D, MaxPool1D,
                                           MaxPooling1D)
from gradcheck import check_model_grads

L = fn.layers
EPS32 = float(np.finfo(np.float32).eps)


# ---------------------------------------------------------------------------------------
# Keras's output lengths and plain NumPy twins (float64)

def keras_conv_length(T, k, s, d, padding):
    """keras.src.ops.operation_utils.compute_conv_output_shape for one axis."""
    if padding == "valid":
        return (T - d * (k - 1) - 1) // s + 1
    return (T - 1) // s + 1  # "same" and "causal"


def keras_pool_length(T, p, s, padding):
    return (T - p) // s + 1 if padding == "valid" else (T - 1) // s + 1


def left_pad_conv(T, k, s, d, padding):
    """Zeros before step 0: none (valid), the smaller half (same, as TensorFlow), all of
    d*(k-1) (causal)."""
    span = d * (k - 1) + 1
    if padding == "valid":
        return 0
    if padding == "causal":
        return span - 1
    out = keras_conv_length(T, k, s, d, padding)
    return max((out - 1) * s + span - T, 0) // 2


def np_conv1d(x, w, b, s, d, padding, groups):
    """y[n, o, f] = b[f] + sum_{k, c} xpad[n, o*s + k*d, c of f's group] w[k, c, f]."""
    N, T, C = x.shape
    K, Cg, F = w.shape
    out = keras_conv_length(T, K, s, d, padding)
    left = left_pad_conv(T, K, s, d, padding)
    xp = np.zeros((N, left + T + d * (K - 1) + s * out, C))
    xp[:, left:left + T] = x
    y = np.zeros((N, out, F)) + (0.0 if b is None else b)
    Fg = F // groups
    for g, k in itertools.product(range(groups), range(K)):
        rows = np.arange(out) * s + k * d
        y[:, :, g * Fg:(g + 1) * Fg] += (xp[:, rows, g * Cg:(g + 1) * Cg]
                                         @ w[k, :, g * Fg:(g + 1) * Fg])
    return y


def np_conv1d_backward(dz, x, w, s, d, padding, groups):
    """(dx, dw, db) of np_conv1d for the gradient dz of its output."""
    N, T, C = x.shape
    K, Cg, F = w.shape
    out = dz.shape[1]
    left = left_pad_conv(T, K, s, d, padding)
    xp = np.zeros((N, left + T + d * (K - 1) + s * out, C))
    xp[:, left:left + T] = x
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    Fg = F // groups
    for g, k in itertools.product(range(groups), range(K)):
        rows = np.arange(out) * s + k * d  # distinct rows: += on a fancy index is safe
        fs, cs = slice(g * Fg, (g + 1) * Fg), slice(g * Cg, (g + 1) * Cg)
        dw[k, :, fs] += np.einsum("noc,nof->cf", xp[:, rows, cs], dz[:, :, fs])
        dxp[:, rows, cs] += dz[:, :, fs] @ w[k, :, fs].T
    return dxp[:, left:left + T], dw, dz.sum(axis=(0, 1))


def pool_windows(T, p, s, padding):
    """[first, last) steps of each window, clipped to the real steps."""
    out = keras_pool_length(T, p, s, padding)
    left = max((out - 1) * s + p - T, 0) // 2 if padding == "same" else 0
    return [(max(o * s - left, 0), min(o * s - left + p, T)) for o in range(out)]


def np_pool1d(x, p, s, padding, kind):
    win = pool_windows(x.shape[1], p, s, padding)
    f = np.max if kind == "max" else np.mean
    return np.stack([f(x[:, a:b], axis=1) for a, b in win], axis=1)


def np_pool1d_backward(dy, x, p, s, padding, kind):
    dx = np.zeros(x.shape)
    n, c = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[2]), indexing="ij")
    for o, (a, b) in enumerate(pool_windows(x.shape[1], p, s, padding)):
        if kind == "max":
            dx[n, a + x[:, a:b].argmax(axis=1), c] += dy[:, o]
        else:
            dx[:, a:b] += dy[:, o, None] / (b - a)
    return dx


def assert_close(got, want, scale, K, what, c=4.0):
    """|got - want| <= c * eps32 * sqrt(K) * scale elementwise; scale is the same sum over
    |terms|, K the number of terms."""
    tol = c * EPS32 * np.sqrt(max(K, 1)) * scale + 1e-30
    err = np.abs(np.asarray(got, np.float64) - want)
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    assert np.all(err <= tol), (f"{what}: error {err[worst]:.3g} > tolerance {tol[worst]:.3g} "
                                f"at {worst} (got {got[worst]!r}, want {want[worst]!r})")


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def built(layer, x):
    """The layer built for x's samples, with its parameters drawn (as on first use)."""
    layer(x[:1])
    return layer


# ---------------------------------------------------------------------------------------
# Conv1D against the twin

def conv_cases():
    """Every padding x strides 1-3 x dilation 1-3 x groups 1, 2, with T in [1, 50],
    kernel sizes 1-7 and odd channel counts (per group) drawn from a fixed seed."""
    rng = np.random.default_rng(1234)
    out = []
    for padding, s, d, groups in itertools.product(("valid", "same", "causal"), (1, 2, 3),
                                                   (1, 2, 3), (1, 2)):
        k = int(rng.integers(1, 8))
        T = int(rng.integers(1, 51))
        if padding == "valid":
            T = max(T, d * (k - 1) + 1)
        cg, fg = int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 3, 5, 9]))
        out.append((padding, s, d, groups, k, T, cg * groups, fg * groups))
    # the edges: one step, the longest kernel and dilation, a kernel that fits exactly
    out += [("same", 1, 3, 1, 7, 1, 3, 5), ("causal", 3, 3, 1, 7, 1, 1, 3),
            ("causal", 2, 1, 2, 7, 50, 6, 10), ("valid", 1, 3, 1, 7, 19, 5, 3),
            ("valid", 3, 1, 2, 1, 50, 10, 2), ("same", 2, 1, 1, 6, 7, 3, 3)]
    return out


CONV_CASES = conv_cases()


@pytest.mark.parametrize("padding,s,d,groups,k,T,C,F", CONV_CASES,
                         ids=[f"{p}-s{s}-d{d}-g{g}-k{k}-T{T}-C{C}-F{F}"
                              for p, s, d, g, k, T, C, F in CONV_CASES])
def test_conv1d_forward_backward_match_numpy(rng, padding, s, d, groups, k, T, C, F):
    N = 3
    layer = Conv1D(F, k, strides=s, padding=padding, dilation_rate=d, groups=groups)
    x = _f32(rng, N, T, C)
    built(layer, x)
    assert layer.kernel.shape == (k, C // groups, F) and layer.bias.shape == (F,)
    layer.bias[...] = _f32(rng, F)
    w, b = layer.kernel.astype(np.float64), layer.bias.astype(np.float64)
    x64 = x.astype(np.float64)

    y = layer.forward(x, training=True)
    out = keras_conv_length(T, k, s, d, padding)
    assert y.shape == (N, out, F) and layer.output_shape == (out, F)
    want = np_conv1d(x64, w, b, s, d, padding, groups)
    scale = np_conv1d(np.abs(x64), np.abs(w), np.abs(b), s, d, padding, groups)
    assert_close(y, want, scale, k * C // groups + 1, "y")

    dy = _f32(rng, *y.shape)
    layer.dkernel[...] = 1.0  # backward adds into the gradient buffers
    layer.dbias[...] = -1.0
    dx = layer.backward(dy.copy())
    gx, gw, gb = np_conv1d_backward(dy.astype(np.float64), x64, w, s, d, padding, groups)
    sx, sw, sb = np_conv1d_backward(np.abs(dy.astype(np.float64)), np.abs(x64), np.abs(w),
                                    s, d, padding, groups)
    assert dx.shape == x.shape
    assert_close(dx, gx, sx, k * F // groups, "dx")
    assert_close(layer.dkernel, gw + 1.0, sw + 1.0, N * out + 1, "dkernel")
    assert_close(layer.dbias, gb - 1.0, sb + 1.0, N * out + 1, "dbias")


def test_conv1d_small_integers_are_exact(rng):
    """Small-integer inputs make every sum exact: the kernels must agree to the bit."""
    layer = built(Conv1D(7, 4, strides=2, padding="causal", dilation_rate=2, groups=1), _f32(rng, 2, 23, 5))
    x = rng.integers(-3, 4, size=(2, 23, 5)).astype(np.float32)
    layer.kernel[...] = rng.integers(-3, 4, size=layer.kernel.shape)
    layer.bias[...] = rng.integers(-3, 4, size=7)
    want = np_conv1d(x.astype(np.float64), layer.kernel.astype(np.float64),
                     layer.bias.astype(np.float64), 2, 2, "causal", 1)
    np.testing.assert_array_equal(layer(x), want)


@pytest.mark.parametrize("s,d", [(1, 1), (1, 2), (2, 1), (3, 1)])
def test_causal_output_never_sees_the_future(rng, s, d):
    """Output step o reads input steps o*s - d*(k-1) .. o*s: a change at input step t
    first shows at output step ceil(t / s), never earlier."""
    layer = built(Conv1D(3, 3, strides=s, padding="causal", dilation_rate=d), _f32(rng, 1, 20, 2))
    x = _f32(rng, 1, 20, 2)
    y = layer(x)
    for t in (0, 7, 18):
        x2 = x.copy()
        x2[0, t] += 10.0
        changed = np.nonzero(np.any(layer(x2) != y, axis=(0, 2)))[0]
        assert changed.size and changed.min() == -(-t // s), (t, changed)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "softmax"])
def test_conv1d_activations_forward_backward(rng, activation):
    from fastnn import reference as ref

    layer = built(Conv1D(6, 3, strides=2, padding="causal", dilation_rate=1, groups=3,
                         activation=activation), _f32(rng, 2, 17, 9))
    layer.bias[...] = _f32(rng, 6)
    x = _f32(rng, 2, 17, 9)
    w, b = layer.kernel.astype(np.float64), layer.bias.astype(np.float64)
    z = np_conv1d(x.astype(np.float64), w, b, 2, 1, "causal", 3)
    if activation == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
    else:
        want = ref.activation(z, activation)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    dy = _f32(rng, *y.shape)
    if activation == "softmax":
        dz = want * (dy - (dy * want).sum(axis=-1, keepdims=True))
    else:
        dz = ref.activation_backward(dy.astype(np.float64), activation, x=z, y=want)
    gx, gw, gb = np_conv1d_backward(dz, x.astype(np.float64), w, 2, 1, "causal", 3)
    layer.dkernel[...] = 0.0
    layer.dbias[...] = 0.0
    dx = layer.backward(dy)
    for got, exp, what in ((dx, gx, "dx"), (layer.dkernel, gw, "dkernel"), (layer.dbias, gb, "dbias")):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-5, err_msg=what)


def test_conv1d_runs_on_views_of_x_and_the_kernel(rng):
    """The 2-D kernels get (N, 1, T, C) and (1, K, C/groups, F) views: no copies."""
    layer = built(Conv1D(4, 3, padding="causal"), _f32(rng, 2, 9, 3))
    x = _f32(rng, 2, 9, 3)
    y = layer.forward(x, training=True)
    assert np.shares_memory(layer._x, x) and layer._x.shape == (2, 1, 9, 3)
    assert np.shares_memory(layer._y, y)
    assert np.shares_memory(layer._kernel_2d(layer.kernel), layer.kernel)
    assert np.shares_memory(layer._kernel_2d(layer.dkernel), layer.dkernel)


def test_conv1d_first_layer_frozen_and_no_bias(rng):
    x = _f32(rng, 2, 12, 4)
    layer = built(Conv1D(5, 3, padding="same", use_bias=False), x)
    assert layer.param_count == 3 * 4 * 5 and not hasattr(layer, "bias")
    layer.need_input_grad = False
    y = layer.forward(x, training=True)
    layer.dkernel[...] = 0.0
    dy = _f32(rng, *y.shape)
    assert layer.backward(dy.copy()) is None
    _, gw, _ = np_conv1d_backward(dy.astype(np.float64), x.astype(np.float64),
                                  layer.kernel.astype(np.float64), 1, 1, "same", 1)
    np.testing.assert_allclose(layer.dkernel, gw, rtol=1e-5, atol=1e-5)
    layer.need_input_grad, layer.trainable = True, False
    layer.forward(x, training=True)
    layer.dkernel[...] = 0.0
    dx = layer.backward(dy.copy())
    assert dx.shape == x.shape and not layer.dkernel.any()


def test_conv1d_masks_are_not_passed_on():
    """As in Keras, Conv1D does not support masking: a mask ends at it."""
    layer = Conv1D(2, 3)
    assert layer.compute_mask(np.zeros((1, 5, 2)), np.ones((1, 5))) is None


# ---------------------------------------------------------------------------------------
# Pooling against the twin

def pool_cases():
    rng = np.random.default_rng(99)
    out = []
    for kind, padding, p, s in itertools.product(("max", "avg"), ("valid", "same"),
                                                 (1, 2, 3, 5), (None, 1, 2, 3)):
        T = int(rng.integers(1, 51))
        if padding == "valid":
            T = max(T, p)
        out.append((kind, padding, p, s, T, int(rng.choice([1, 3, 7]))))
    out += [("max", "same", 5, 3, 1, 3), ("avg", "same", 4, None, 2, 5),
            ("avg", "valid", 5, 2, 5, 1), ("max", "valid", 2, None, 50, 9)]
    return out


POOL_CASES = pool_cases()


@pytest.mark.parametrize("kind,padding,p,s,T,C", POOL_CASES,
                         ids=[f"{k}-{pd}-p{p}-s{s}-T{T}-C{C}" for k, pd, p, s, T, C in POOL_CASES])
def test_pooling1d_forward_backward_match_numpy(rng, kind, padding, p, s, T, C):
    cls = MaxPooling1D if kind == "max" else AveragePooling1D
    layer = cls(p, strides=s, padding=padding)
    x = _f32(rng, 3, T, C)
    y = layer(x)
    stride = p if s is None else s
    out = keras_pool_length(T, p, stride, padding)
    assert y.shape == (3, out, C) and layer.output_shape == (out, C)
    x64 = x.astype(np.float64)
    want = np_pool1d(x64, p, stride, padding, kind)
    if kind == "max":
        np.testing.assert_array_equal(y, want)
    else:
        assert_close(y, want, np_pool1d(np.abs(x64), p, stride, padding, kind), p, "y")
    y = layer.forward(x, training=True)
    dy = _f32(rng, *y.shape)
    dx = layer.backward(dy)
    gx = np_pool1d_backward(dy.astype(np.float64), x64, p, stride, padding, kind)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, gx, rtol=4 * EPS32 * p, atol=4 * EPS32 * p)


def test_pooling1d_aliases_config_and_first_layer(rng):
    assert MaxPool1D is MaxPooling1D and AvgPool1D is AveragePooling1D
    layer = MaxPooling1D(3, strides=(2,), padding="SAME")
    assert (layer.pool_size, layer.strides, layer.padding) == ((3,), (2,), "same")
    cfg = layer.get_config()
    assert {k: cfg[k] for k in ("pool_size", "strides", "padding", "data_format")} == {
        "pool_size": [3], "strides": [2], "padding": "same", "data_format": "channels_last"}
    same = MaxPooling1D.from_config(json.loads(json.dumps(cfg)))
    assert same.get_config() == cfg
    assert AveragePooling1D().strides == (2,)  # strides default to pool_size
    x = _f32(rng, 2, 8, 3)
    for cls in (MaxPooling1D, AveragePooling1D):
        pool = cls()
        pool(x)
        pool.need_input_grad = False
        assert pool.backward(pool.forward(x, training=True)) is None


# ---------------------------------------------------------------------------------------
# Shapes, configs, models

def test_output_shapes_follow_keras_formulas():
    for T, k, s, d, padding in itertools.product((1, 2, 7, 16, 50), (1, 2, 5, 7), (1, 2, 3),
                                                 (1, 3), ("valid", "same", "causal")):
        if padding == "valid" and T < d * (k - 1) + 1:
            continue
        inp = fn.Input(shape=(T, 3))
        h = Conv1D(4, k, strides=s, padding=padding, dilation_rate=d)(inp)
        assert tuple(h.shape) == (None, keras_conv_length(T, k, s, d, padding), 4), (T, k, s, d, padding)
    for T, p, s, padding in itertools.product((1, 2, 7, 16, 50), (1, 2, 3, 5), (1, 2, 3),
                                              ("valid", "same")):
        if padding == "valid" and T < p:
            continue
        for cls in (MaxPooling1D, AveragePooling1D):
            h = cls(p, strides=s, padding=padding)(fn.Input(shape=(T, 3)))
            assert tuple(h.shape) == (None, keras_pool_length(T, p, s, padding), 3)


def test_conv1d_config_round_trip_and_keras_attributes():
    layer = Conv1D(8, (5,), strides=[2], padding="Causal", dilation_rate=3, groups=2,
                   activation="relu", use_bias=False, kernel_initializer="he_normal",
                   name="c1", data_format="channels_last")
    assert (layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding) == (
        (5,), (2,), (3,), "causal")
    cfg = layer.get_config()
    want = {"name": "c1", "trainable": True, "filters": 8, "kernel_size": [5], "strides": [2],
            "padding": "causal", "dilation_rate": [3], "groups": 2, "activation": "relu",
            "use_bias": False, "kernel_initializer": "he_normal", "bias_initializer": "zeros",
            "data_format": "channels_last"}
    assert cfg == want
    again = Conv1D.from_config(json.loads(json.dumps(cfg)))
    assert again.get_config() == cfg
    assert fn.layers.base.layer_class("Conv1D") is Conv1D
    assert fn.layers.base.layer_class("MaxPooling1D") is MaxPooling1D


def cnn(T=24, C=5, seed=0):
    return fn.Sequential([
        Conv1D(6, 3, padding="causal", dilation_rate=2, activation="relu", input_shape=(T, C)),
        MaxPooling1D(2),
        Conv1D(8, 3, strides=2, padding="same", groups=2, activation="tanh"),
        AveragePooling1D(2, padding="same"),
        Conv1D(4, 2, activation="relu"),
        L.GlobalMaxPooling1D(),
        L.Dense(3, activation="softmax")], seed=seed)


def _data(rng, n=64, T=24, C=5):
    x = _f32(rng, n, T, C)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64) + (x[:, -1, 1] > 1).astype(np.int64)
    return x, y


def test_sequential_trains_and_save_load_round_trip(rng, tmp_path):
    x, y = _data(rng)
    model = cnn()
    model.compile(optimizer=fn.optim.Adam(learning_rate=1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, seed=0)
    after = model.evaluate(x, y, verbose=0)[0]
    assert after < before - 0.05, (before, after)
    assert [w.shape for w in model.get_weights()][:2] == [(3, 5, 6), (6,)]
    path = tmp_path / "cnn1d.fastnn"
    model.save(path)
    same = fn.load_model(path)
    assert [type(l).__name__ for l in same.layers][:4] == [
        "Conv1D", "MaxPooling1D", "Conv1D", "AveragePooling1D"]
    np.testing.assert_array_equal(model.predict(x), same.predict(x))
    assert same.layers[0].get_config() == model.layers[0].get_config()
    # training continues from the same state
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=1, shuffle=False)
    same.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=1, shuffle=False)
    for a, b in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_functional_model_gradients_match_finite_differences(rng):
    inp = fn.Input(shape=(11, 3))
    h = L.Dense(4, activation="tanh")(inp)  # gives the convolutions an input gradient to pass
    a = Conv1D(4, 3, padding="causal", dilation_rate=2, activation="tanh")(h)
    b = Conv1D(4, 2, strides=2, padding="same", groups=2)(h)
    b = AveragePooling1D(2, strides=1, padding="same")(MaxPooling1D(3, 1, padding="same")(b))
    a = MaxPooling1D(2, padding="same")(a)
    out = L.Dense(2)(L.Flatten()(L.Concatenate()([a, b])))
    model = fn.Model(inp, out, seed=3)
    assert tuple(a.shape) == tuple(b.shape) == (None, 6, 4)
    check_model_grads(model, _f32(rng, 4, 11, 3), _f32(rng, 4, 2))


def test_embedding_conv1d_global_max_model(rng):
    """The IMDB model's shape: token ids -> Embedding -> Conv1D -> GlobalMaxPooling1D."""
    ids = rng.integers(1, 30, size=(40, 16))
    y = (ids[:, :8] < 10).any(axis=1).astype(np.int64)
    model = fn.Sequential([L.Embedding(30, 8, input_shape=(16,)),
                           Conv1D(16, 5, activation="relu"), L.GlobalMaxPooling1D(),
                           L.Dense(2, activation="softmax")], seed=0)
    model.compile(optimizer=fn.optim.Adam(learning_rate=1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ids, y, epochs=20, batch_size=8, verbose=0, seed=0)
    assert model.evaluate(ids, y, verbose=0)[1] > 0.9


# ---------------------------------------------------------------------------------------
# Bad input

@pytest.mark.parametrize("make", [lambda: Conv1D(4, 3), lambda: MaxPooling1D(2),
                                  lambda: AveragePooling1D(2)])
def test_wrong_rank_names_the_layer_and_the_expected_shape(rng, make):
    layer = make()
    with pytest.raises(ValueError, match=rf"{layer.name}: \w+ expects inputs \(N, T, C\), "
                                         r"got samples of shape \(5, 6, 2\)"):
        layer(_f32(rng, 2, 5, 6, 2))
    with pytest.raises(ValueError, match=r"expects inputs \(N, T, C\).*Reshape\(\(7, 1\)\)"):
        make()(_f32(rng, 2, 7))
    with pytest.raises(ValueError, match=r"expects inputs \(N, T, C\)"):
        make()(fn.Input(shape=(4, 4, 1)))
    layer = make()
    layer(_f32(rng, 2, 9, 3))
    with pytest.raises(ValueError, match=rf"{layer.name}: expected input \(N, 9, 3\), got shape \(2, 8, 3\)"):
        layer.forward(_f32(rng, 2, 8, 3))
    with pytest.raises(ValueError, match=rf"{layer.name}: expected input \(N, 9, 3\), got shape \(2, 9\)"):
        layer.forward(_f32(rng, 2, 9))


def test_sequences_shorter_than_the_window_are_refused(rng):
    with pytest.raises(ValueError, match=r"conv_short: the kernel \(kernel_size 3, dilation_rate 2\) "
                                         r"spans 5 steps, more than the input's T = 4"):
        Conv1D(2, 3, dilation_rate=2, name="conv_short")(_f32(rng, 1, 4, 2))
    with pytest.raises(ValueError, match=r"pool_short: pool_size 3 is larger than the input's T = 2"):
        MaxPooling1D(3, name="pool_short")(_f32(rng, 1, 2, 2))
    # same and causal padding take any length
    assert Conv1D(2, 3, dilation_rate=2, padding="causal")(_f32(rng, 1, 4, 2)).shape == (1, 4, 2)
    assert MaxPooling1D(3, padding="same")(_f32(rng, 1, 2, 2)).shape == (1, 1, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Conv1D: padding must be 'valid', 'same' or 'causal'"):
        Conv1D(2, 3, padding="full")
    with pytest.raises(TypeError, match="Conv1D: argument 'kernel_size' must be an int or a tuple of one int"):
        Conv1D(2, (3, 3))
    with pytest.raises(ValueError, match="Conv1D: argument 'strides' must be >= 1"):
        Conv1D(2, 3, strides=0)
    with pytest.raises(ValueError, match="Conv1D: filters must be a positive int"):
        Conv1D(0, 3)
    with pytest.raises(ValueError, match=r"Conv1D: filters \(3\) must be divisible by groups \(2\)"):
        Conv1D(3, 3, groups=2)
    with pytest.raises(ValueError, match="channels_last"):
        Conv1D(2, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="MaxPooling1D: argument 'padding' must be 'valid' or 'same'"):
        MaxPooling1D(2, padding="causal")
    with pytest.raises(TypeError, match="AveragePooling1D: argument 'pool_size'"):
        AveragePooling1D((2, 2))
    with pytest.raises(ValueError, match="channels_last"):
        MaxPooling1D(data_format="channels_first")
    layer = Conv1D(4, 3, groups=2, name="grouped")
    with pytest.raises(ValueError, match="grouped: input channels C = 3 are not divisible by groups = 2"):
        layer(np.zeros((1, 5, 3), np.float32))


def test_causal_with_strides_is_allowed_as_in_keras(rng):
    y = Conv1D(3, 4, strides=3, padding="causal")(_f32(rng, 2, 10, 2))
    assert y.shape == (2, 4, 3)


# ---------------------------------------------------------------------------------------
# The command-line job, on a tiny synthetic corpus

def test_cli_train_imdb_cnn1d_smoke(monkeypatch, tmp_path, capsys):
    from fastnn import cli
    from fastnn.datasets import imdb

    rng = np.random.default_rng(0)
    good, bad = ["great", "loved", "superb", "fine"], ["awful", "boring", "bad", "dull"]
    filler = ["the", "film", "plot", "cast", "a", "was", "and", "it"]

    def texts(n):
        out, labels = [], []
        for i in range(n):
            label = i % 2
            words = list(rng.choice(filler, size=12)) + list(rng.choice(good if label else bad, size=3))
            rng.shuffle(words)
            out.append(" ".join(words))
            labels.append(label)
        return out, np.array(labels)

    corpus = (texts(96), texts(32))
    monkeypatch.setattr(imdb, "load_texts", lambda path=None: corpus)
    save = tmp_path / "cnn"
    rc = cli.main(["train", "imdb-cnn1d", "--epochs", "4", "--maxlen", "20", "--vocab", "40",
                   "--embed-dim", "8", "--filters", "16", "--batch-size", "16", "--lr", "1e-2",
                   "--verbose", "0", "--threads", "1", "--save", str(save)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "conv1d" in out and "global_max_pooling1d" in out
    acc = float(out.split("test accuracy: ")[1].split()[0])
    assert acc >= 0.9, out
    assert cli.main(["predict", "imdb", str(save), "superb great loved", "awful dull bad"]) == 0
    probs = [float(line.split("\t")[0]) for line in capsys.readouterr().out.splitlines()]
    assert probs[0] > 0.5 > probs[1]
