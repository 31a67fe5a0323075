"""The Keras helpers around the graph: Rescaling, ZeroPadding2D, UpSampling2D,
GlobalMaxPooling1D/2D, SpatialDropout1D/2D, the merge layers' broadcasting and errors,
and fastnn.utils. Forward passes are compared with NumPy expressions (exact: they move or
scale values), backward passes with finite differences through a model."""
from __future__ import annotations

import numpy as np
import pytest

import fastnn as fn
from gradcheck import check_model_grads

L = fn.layers


def _f32(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def _grads_through(layer, in_shape, rng, n=3):
    """Finite differences of Dense -> layer -> Dense: the layer's backward is what carries
    the first Dense's gradient."""
    inp = fn.Input(shape=in_shape)
    h = L.Dense(in_shape[-1], activation="tanh")(inp)
    out = L.Dense(2)(L.Flatten()(layer(h)))
    model = fn.Model(inp, out, seed=2)
    check_model_grads(model, _f32(rng, n, *in_shape), _f32(rng, n, 2))


# ------------------------------------------------------------------ Rescaling

def test_rescaling_forward_and_gradients(rng):
    x = _f32(rng, 4, 3, 2)
    np.testing.assert_allclose(L.Rescaling(1 / 255.0)(x), x * np.float32(1 / 255.0), rtol=1e-7)
    np.testing.assert_allclose(L.Rescaling(2.0, offset=-1.0)(x), x * 2 - 1, rtol=1e-6)
    _grads_through(L.Rescaling(0.5, offset=0.25), (3, 2), rng)


# ------------------------------------------------------------------ ZeroPadding2D

@pytest.mark.parametrize("padding, pads", [(1, ((1, 1), (1, 1))), ((2, 0), ((2, 2), (0, 0))),
                                           (((0, 1), (2, 3)), ((0, 1), (2, 3)))])
def test_zero_padding_matches_np_pad(rng, padding, pads):
    x = _f32(rng, 2, 3, 4, 2)
    layer = L.ZeroPadding2D(padding)
    y = layer(x)
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0),) + pads + ((0, 0),)))
    assert layer.output_shape == y.shape[1:]


def test_zero_padding_gradients_and_errors(rng):
    _grads_through(L.ZeroPadding2D(((1, 0), (0, 2))), (3, 3, 2), rng)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        L.ZeroPadding2D(-1)
    with pytest.raises(ValueError, match="padding must be an int"):
        L.ZeroPadding2D("same")
    with pytest.raises(ValueError, match=r"zero_padding2d.*\(H, W, C\).*\(5, 4\)"):
        L.ZeroPadding2D(1)(fn.Input(shape=(5, 4)))


# ------------------------------------------------------------------ UpSampling2D

def test_upsampling_matches_np_repeat_and_gradients(rng):
    x = _f32(rng, 2, 3, 2, 3)
    y = L.UpSampling2D((2, 3))(x)
    np.testing.assert_array_equal(y, x.repeat(2, axis=1).repeat(3, axis=2))
    assert L.UpSampling2D(2)(x).shape == (2, 6, 4, 3)
    _grads_through(L.UpSampling2D((2, 2)), (2, 3, 2), rng)
    with pytest.raises(ValueError, match="nearest"):
        L.UpSampling2D(2, interpolation="bilinear")
    with pytest.raises(ValueError, match="positive int"):
        L.UpSampling2D(0)


# ------------------------------------------------------------------ GlobalMaxPooling

@pytest.mark.parametrize("layer_cls, shape", [(L.GlobalMaxPooling1D, (7, 3)),
                                              (L.GlobalMaxPooling2D, (4, 5, 3))])
def test_global_max_pooling(rng, layer_cls, shape):
    x = _f32(rng, 2, *shape)
    axes = tuple(range(1, len(shape)))
    np.testing.assert_array_equal(layer_cls()(x), x.max(axis=axes))
    kept = layer_cls(keepdims=True)(x)
    np.testing.assert_array_equal(kept, x.max(axis=axes, keepdims=True))
    _grads_through(layer_cls(), shape, rng)
    with pytest.raises(ValueError, match="expects"):
        layer_cls()(fn.Input(shape=shape + (1,)))


def test_global_max_pooling_ties_send_the_gradient_to_the_first_maximum():
    layer = L.GlobalMaxPooling1D()
    x = np.array([[[1.0], [3.0], [3.0]]], np.float32)
    layer(x)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1), np.float32)),
                                  [[[0.0], [1.0], [0.0]]])


# ------------------------------------------------------------------ SpatialDropout

@pytest.mark.parametrize("layer_cls, shape", [(L.SpatialDropout1D, (20, 16)),
                                              (L.SpatialDropout2D, (5, 4, 16))])
def test_spatial_dropout_drops_whole_channels(rng, layer_cls, shape):
    x = np.abs(_f32(rng, 8, *shape)) + 0.5
    layer = layer_cls(0.5, seed=1)
    np.testing.assert_array_equal(layer(x), x)                  # inference: identity
    y = layer.forward(x, training=True)
    ratio = (y / x).reshape(8, -1, shape[-1])
    # every (sample, channel) is 0 everywhere or 1 / (1 - rate) everywhere
    assert np.all((ratio == 0).all(axis=1) | np.isclose(ratio, 2.0).all(axis=1))
    dropped = (ratio == 0).all(axis=1).mean()
    assert 0.3 < dropped < 0.7
    dy = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(dy), y / x)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        layer_cls(1.0)


# ------------------------------------------------------------------ merge layers

def test_merge_broadcasting_gradients_sum_back(rng):
    a_in, b_in = fn.Input(shape=(4, 3)), fn.Input(shape=(1, 3))
    a = L.Dense(3, activation="tanh")(a_in)
    b = L.Dense(3, activation="tanh")(b_in)
    parts = [L.Add()([a, b]), L.Multiply()([a, b]), L.Subtract()([b, a]),
             L.Maximum()([a, b]), L.Average()([b, a])]
    assert all(p.shape == (None, 4, 3) for p in parts)
    out = L.Dense(2)(L.Flatten()(L.Concatenate()(parts)))
    model = fn.Model([a_in, b_in], out, seed=4)
    check_model_grads(model, [_f32(rng, 3, 4, 3), _f32(rng, 3, 1, 3)], _f32(rng, 3, 2))


def test_merge_forward_matches_numpy(rng):
    a, b, c = _f32(rng, 2, 3), _f32(rng, 2, 3), _f32(rng, 2, 3)
    np.testing.assert_allclose(L.Add()([a, b, c]), a + b + c, rtol=1e-6)
    np.testing.assert_allclose(L.Multiply()([a, b, c]), a * b * c, rtol=1e-6)
    np.testing.assert_allclose(L.Average()([a, b, c]), (a + b + c) / 3, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(L.Maximum()([a, b, c]), np.maximum(np.maximum(a, b), c))
    np.testing.assert_array_equal(L.Minimum()([a, b]), np.minimum(a, b))
    np.testing.assert_array_equal(L.Subtract()([a, b]), a - b)
    np.testing.assert_array_equal(L.Concatenate(axis=1)([a, b]), np.concatenate([a, b], 1))


def test_merge_errors_name_the_layer_and_shapes():
    a, b, c = fn.Input(shape=(4, 5)), fn.Input(shape=(1, 5)), fn.Input(shape=(3, 5))
    with pytest.raises(ValueError, match=r"add\w*: inputs have incompatible shapes \(4, 5\) and \(3, 5\)"):
        L.Add()([a, c])
    with pytest.raises(ValueError, match="at least 2 inputs, got a list of 1"):
        L.Add()([a])
    with pytest.raises(ValueError, match="at least 2 inputs, got KerasTensor"):
        L.Multiply()(a)
    with pytest.raises(ValueError, match="exactly 2 inputs, got 3"):
        L.Subtract()([a, b, b])
    with pytest.raises(ValueError, match="axis 0 is not a feature axis"):
        L.Concatenate(axis=0)([a, c])
    with pytest.raises(ValueError, match=r"must match except on axis 2.*\(4, 5\), \(3, 5\)"):
        L.Concatenate(axis=2)([a, c])
    with pytest.raises(ValueError, match="same rank"):
        L.Concatenate()([a, fn.Input(shape=(5,))])
    assert L.Concatenate(axis=1)([a, b, c]).shape == (None, 8, 5)
    assert fn.layers.concatenate([a, c], axis=-2).shape == (None, 7, 5)


# ------------------------------------------------------------------ utils

def test_to_categorical():
    y = fn.utils.to_categorical([0, 2, 1, 2])
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[[0, 2, 1, 2]])
    assert y.dtype == np.float32
    assert fn.utils.to_categorical(np.array([[1], [0]]), num_classes=4).shape == (2, 4)
    assert fn.utils.to_categorical(np.zeros((2, 3), int), 5).shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        fn.utils.to_categorical([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="must be integers"):
        fn.utils.to_categorical([0.5, 1.0])


def test_set_random_seed_makes_models_and_numpy_repeat():
    def make():
        fn.utils.set_random_seed(7)
        noise = np.random.rand(3)
        m = fn.Sequential([L.Input(shape=(4,)), L.Dense(3)])
        return noise, m.get_weights()[0]
    (n1, w1), (n2, w2) = make(), make()
    np.testing.assert_array_equal(n1, n2)
    np.testing.assert_array_equal(w1, w2)
