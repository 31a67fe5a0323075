"""Recurrent layers: LSTM, GRU, SimpleRNN and Bidirectional in models — outputs against
fastnn.ops on the layer's weights, whole-model gradients by finite differences, masks
with Keras's meaning, states in and out, saving, determinism, PyTorch, bad input."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import ops
from gradcheck import check_model_grads

L = fn.layers


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# --- the layer is its kernel ----------------------------------------------------------
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_layer_is_the_kernel(go_backwards, return_sequences, rng):
    x = _f32(rng, 3, 7, 5)
    layer = L.LSTM(4, go_backwards=go_backwards, return_sequences=return_sequences)
    got = layer(x)
    y, _, _ = ops.lstm(x, layer.kernel, layer.recurrent_kernel, layer.bias, reverse=go_backwards)
    want = (y[:, ::-1] if go_backwards else y) if return_sequences else y[:, 0 if go_backwards else -1]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_layer_is_the_kernel(reset_after, rng):
    x = _f32(rng, 2, 6, 3)
    layer = L.GRU(5, reset_after=reset_after, return_sequences=True)
    got = layer(x)
    assert layer.bias.shape == ((2, 15) if reset_after else (15,))
    want, _, _ = ops.gru(x, layer.kernel, layer.recurrent_kernel, layer.bias,
                         reset_after=reset_after)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_layer_is_the_kernel(activation, rng):
    x = _f32(rng, 2, 6, 3)
    layer = L.SimpleRNN(4, activation=activation, return_sequences=True)
    got = layer(x)
    want = ops.simple_rnn(x, layer.kernel, layer.recurrent_kernel, layer.bias,
                          activation=activation)
    np.testing.assert_array_equal(got, want)


def test_keras_initialization(rng):
    layer = L.LSTM(6)
    layer(_f32(rng, 1, 2, 3))
    b = layer.bias
    np.testing.assert_array_equal(b[6:12], 1.0)  # unit_forget_bias
    np.testing.assert_array_equal(np.delete(b, np.s_[6:12]), 0.0)
    q = layer.recurrent_kernel  # orthogonal (6, 24): orthonormal rows
    np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-5)
    assert layer.kernel.shape == (3, 24)
    assert L.LSTM(6, unit_forget_bias=False)(_f32(rng, 1, 2, 3)) is not None


# --- gradients of whole models by finite differences ------------------------------------
def _seq_model(core, t=6, c=3, out=2):
    inp = fn.Input((t, c))
    return fn.Model(inp, L.Dense(out)(core(inp)), seed=3)


CORES = {
    "lstm_seq_then_gru": lambda: (lambda x: L.GRU(4)(L.LSTM(5, return_sequences=True)(x))),
    "gru_original_backwards": lambda: (lambda x: L.GRU(4, reset_after=False, go_backwards=True)(x)),
    "simple_rnn_relu": lambda: (lambda x: L.SimpleRNN(4, activation="relu")(x)),
    "simple_rnn_no_bias": lambda: (lambda x: L.SimpleRNN(3, use_bias=False, go_backwards=True)(x)),
    "bidi_concat_seq": lambda: (lambda x: L.GlobalAveragePooling1D()(
        L.Bidirectional(L.LSTM(3, return_sequences=True))(x))),
    "bidi_sum": lambda: (lambda x: L.Bidirectional(L.GRU(3), merge_mode="sum")(x)),
    "bidi_mul": lambda: (lambda x: L.Bidirectional(L.SimpleRNN(3), merge_mode="mul")(x)),
    "bidi_ave": lambda: (lambda x: L.Bidirectional(L.LSTM(3), merge_mode="ave")(x)),
}


@pytest.mark.parametrize("name", sorted(CORES))
def test_model_gradients(name, rng):
    model = _seq_model(CORES[name]())
    check_model_grads(model, _f32(rng, 4, 6, 3), _f32(rng, 4, 2))


def test_gradients_through_states(rng):
    """return_state outputs and initial_state inputs carry gradients both ways."""
    x = fn.Input((5, 3))
    y, h, c = L.LSTM(4, return_state=True, return_sequences=True)(x)
    y2 = L.GRU(4)(y, initial_state=[L.Add()([h, c])])
    model = fn.Model(x, L.Dense(2)(L.Concatenate()([y2, h])), seed=1)
    check_model_grads(model, _f32(rng, 3, 5, 3), _f32(rng, 3, 2))


def test_gradients_with_padding_mask(rng):
    ids = rng.integers(1, 9, (4, 7))
    ids[0, 4:] = 0
    ids[2, :] = 0  # a sample with no real token
    inp = fn.Input((7,))
    e = L.Embedding(9, 3, mask_zero=True)(inp)
    h = L.Bidirectional(L.LSTM(3, return_sequences=True))(e)
    model = fn.Model(inp, L.Dense(2)(L.GRU(3)(h)), seed=2)
    check_model_grads(model, ids.astype(np.float32), _f32(rng, 4, 2), n_checks=60)


# --- masks, states, directions -----------------------------------------------------------
@pytest.mark.parametrize("cls", [L.LSTM, L.GRU, L.SimpleRNN])
def test_padding_means_a_shorter_sequence(cls, rng):
    """With post-padding and mask_zero, the final output of a padded review equals the
    output of the same review without its padding (states carry over padded steps)."""
    emb = L.Embedding(20, 4, mask_zero=True)
    rnn = cls(5)
    ids = rng.integers(1, 20, (1, 6))
    padded = np.concatenate([ids, np.zeros((1, 3), ids.dtype)], axis=1)
    e_full, e_short = emb(padded), emb(ids)
    m = (padded != 0).view(np.uint8)
    got = rnn(e_full, mask=m)
    want = rnn(e_short)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_masked_sequence_outputs_carry_and_zero(rng):
    x = _f32(rng, 2, 5, 3)
    m = np.array([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]], np.uint8)
    layer = L.GRU(4, return_sequences=True)
    y = layer(x, mask=m)
    np.testing.assert_array_equal(y[0, 2], y[0, 1])  # carried over the padded steps
    np.testing.assert_array_equal(y[0, 3], y[0, 1])
    np.testing.assert_array_equal(y[1], 0.0)  # never a real step: the zero initial state
    layer.zero_output_for_mask = True
    z = layer(x, mask=m)
    np.testing.assert_array_equal(z[0, 2:4], 0.0)
    np.testing.assert_array_equal(z[0, [0, 1, 4]], y[0, [0, 1, 4]])


def test_bidirectional_is_two_layers(rng):
    x = _f32(rng, 3, 6, 4)
    bi = L.Bidirectional(L.LSTM(5, return_sequences=True))
    y = bi(x)
    f, b = bi.forward_layer, bi.backward_layer
    assert b.go_backwards and not f.go_backwards
    np.testing.assert_array_equal(y[..., :5], f(x))
    np.testing.assert_array_equal(y[..., 5:], b(x)[:, ::-1])  # back in time order
    ys, fh, fc, bh, bc = L.Bidirectional(L.LSTM(2, return_state=True))(x)
    assert ys.shape == (3, 4) and fh.shape == bh.shape == fc.shape == bc.shape == (3, 2)


def test_return_state_and_initial_state_eager(rng):
    x = _f32(rng, 2, 4, 3)
    layer = L.LSTM(3, return_state=True)
    y, h, c = layer(x)
    np.testing.assert_array_equal(y, h)
    h0, c0 = _f32(rng, 2, 3), _f32(rng, 2, 3)
    y2, h2, c2 = layer(x, initial_state=[h0, c0])
    w, cs, _ = ops.lstm(x, layer.kernel, layer.recurrent_kernel, layer.bias, h0, c0)
    np.testing.assert_array_equal(h2, w[:, -1])
    np.testing.assert_array_equal(c2, cs[:, -1])


def test_dropout_only_while_training(rng):
    x = _f32(rng, 8, 5, 6)
    layer = L.LSTM(4, dropout=0.5, recurrent_dropout=0.5, seed=7)
    inference = layer(x)
    np.testing.assert_array_equal(inference, layer(x))
    trained = layer.forward(x, training=True)
    assert not np.allclose(trained, inference)


# --- training, saving, determinism --------------------------------------------------------
def _toy_text(rng, n=256, t=12, v=30):
    """Label = whether token 1 occurs; zero padding of random length at the end."""
    ids = rng.integers(2, v, (n, t))
    y = rng.integers(0, 2, n)
    pos = rng.integers(0, t // 2, n)
    ids[np.arange(n)[y == 1], pos[y == 1]] = 1
    lengths = rng.integers(t // 2 + 1, t + 1, n)
    ids[np.arange(t)[None, :] >= lengths[:, None]] = 0
    return ids, y


def _text_model(core, t=12, v=30):
    return fn.Sequential([L.Embedding(v, 8, mask_zero=True, input_shape=(t,)), core,
                          L.Dense(1, activation="sigmoid")], seed=5)


@pytest.mark.parametrize("core", [lambda: L.GRU(8), lambda: L.Bidirectional(L.LSTM(8)),
                                  lambda: L.SimpleRNN(8)])
def test_masked_models_learn(core, rng):
    ids, y = _toy_text(rng)
    model = _text_model(core())
    model.compile(optimizer=fn.optim.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(ids, y, epochs=6, batch_size=32, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.6 * hist.history["loss"][0]


def test_save_and_load(tmp_path, rng):
    inp = fn.Input((6, 3))
    h = L.Bidirectional(L.LSTM(4, return_sequences=True, dropout=0.1), merge_mode="sum")(inp)
    h = L.GRU(3, reset_after=False, return_sequences=True, go_backwards=True)(h)
    out = L.Dense(2)(L.SimpleRNN(2, activation="relu")(h))
    model = fn.Model(inp, out, seed=1)
    model.compile(optimizer="adam", loss="mse")
    x = _f32(rng, 5, 6, 3)
    model.fit(x, _f32(rng, 5, 2), epochs=1, verbose=0)
    path = tmp_path / "rnn.fastnn"
    model.save(path)
    loaded = fn.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    bi = [l for l in loaded.layers if isinstance(l, L.Bidirectional)][0]
    assert bi.merge_mode == "sum" and bi.forward_layer.dropout == 0.1


def test_save_and_load_with_states(tmp_path, rng):
    """A Functional model wired through initial_state and return_state reloads exactly."""
    x, h0 = fn.Input((5, 3)), fn.Input((4,))
    y, h, c = L.LSTM(4, return_state=True, return_sequences=True)(x, initial_state=[h0, h0])
    y2 = L.GRU(4)(y, initial_state=[c])
    model = fn.Model([x, h0], L.Dense(2)(L.Concatenate()([y2, h])), seed=4)
    model.compile(optimizer="adam", loss="mse")
    xs = [_f32(rng, 6, 5, 3), _f32(rng, 6, 4)]
    model.fit(xs, _f32(rng, 6, 2), epochs=1, verbose=0)
    path = tmp_path / "states.fastnn"
    model.save(path)
    np.testing.assert_array_equal(fn.load_model(path).predict(xs), model.predict(xs))


def test_fit_is_bitwise_the_same_for_any_thread_count(num_threads, rng):
    ids, y = _toy_text(rng, n=96)
    weights = []
    for threads in (1, 2):
        num_threads(threads)
        model = fn.Sequential([L.Embedding(30, 8, mask_zero=True, input_shape=(12,)),
                               L.Bidirectional(L.LSTM(16, return_sequences=True,
                                                      recurrent_dropout=0.2)),
                               L.GRU(8, dropout=0.1), L.Dense(1, activation="sigmoid")], seed=5)
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.fit(ids, y, epochs=1, batch_size=32, verbose=0, seed=3)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


# --- PyTorch ------------------------------------------------------------------------------
def test_matches_torch_lstm_and_gru(rng):
    torch = pytest.importorskip("torch")
    from fastnn.reference import gru_from_torch, lstm_from_torch

    x = _f32(rng, 3, 9, 5)
    tl = torch.nn.LSTM(5, 6, batch_first=True)
    layer = L.LSTM(6, return_sequences=True)
    layer(x)
    W, R, b = lstm_from_torch(*(p.detach().numpy() for p in (tl.weight_ih_l0, tl.weight_hh_l0,
                                                             tl.bias_ih_l0, tl.bias_hh_l0)))
    layer.kernel[...], layer.recurrent_kernel[...], layer.bias[...] = W, R, b
    want = tl(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6)

    tg = torch.nn.GRU(5, 4, batch_first=True)
    layer = L.GRU(4, return_sequences=True)
    layer(x)
    W, R, b = gru_from_torch(*(p.detach().numpy() for p in (tg.weight_ih_l0, tg.weight_hh_l0,
                                                            tg.bias_ih_l0, tg.bias_hh_l0)))
    layer.kernel[...], layer.recurrent_kernel[...], layer.bias[...] = W, R, b
    want = tg(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-6)


def test_matches_torch_bidirectional_lstm(rng):
    torch = pytest.importorskip("torch")
    from fastnn.reference import lstm_from_torch

    x = _f32(rng, 2, 7, 3)
    tl = torch.nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    bi = L.Bidirectional(L.LSTM(4, return_sequences=True))
    bi(x)
    sd = {k: v.detach().numpy() for k, v in tl.state_dict().items()}
    for sub, sfx in ((bi.forward_layer, ""), (bi.backward_layer, "_reverse")):
        W, R, b = lstm_from_torch(*(sd[f"{k}_l0{sfx}"] for k in
                                    ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        sub.kernel[...], sub.recurrent_kernel[...], sub.bias[...] = W, R, b
    want = tl(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(bi(x), want, rtol=1e-5, atol=1e-6)


# --- bad input ------------------------------------------------------------------------------
def test_bad_arguments():
    with pytest.raises(ValueError, match="units"):
        L.LSTM(0)
    with pytest.raises(ValueError, match="activation"):
        L.GRU(3, activation="relu")
    with pytest.raises(ValueError, match="stateful"):
        L.LSTM(3, stateful=True)
    with pytest.raises(ValueError, match="dropout"):
        L.LSTM(3, dropout=1.0)
    with pytest.raises(TypeError, match="LSTM, GRU or SimpleRNN"):
        L.Bidirectional(L.Dense(3))
    with pytest.raises(ValueError, match="merge_mode"):
        L.Bidirectional(L.LSTM(3), merge_mode="max")


def test_bad_shapes(rng):
    with pytest.raises(ValueError, match=r"expects sequences \(N, T, C\)"):
        fn.Sequential([L.LSTM(3, input_shape=(5,))]).build()
    layer = L.LSTM(3)
    layer(_f32(rng, 2, 4, 5))
    with pytest.raises(ValueError, match=r"\(N, T, 5\)"):
        layer(_f32(rng, 2, 4, 6))
    with pytest.raises(ValueError, match="mask"):
        layer(_f32(rng, 2, 4, 5), mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match="initial_state"):
        layer(_f32(rng, 2, 4, 5), initial_state=[_f32(rng, 2, 3)])
    with pytest.raises(ValueError, match=r"h0.*\(N, U\)"):
        layer(_f32(rng, 2, 4, 5), initial_state=[_f32(rng, 2, 4), _f32(rng, 2, 3)])
    x = fn.Input((4, 5))
    with pytest.raises(ValueError, match=r"initial state must have shape \(N, 3\)"):
        L.GRU(3)(x, initial_state=[fn.Input((4,))])


def test_ragged_ids_are_refused():
    model = _text_model(L.GRU(4))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises((ValueError, TypeError), match="x"):
        model.predict([[1, 2, 3], [4, 5]])


def test_bad_token_ids_reach_a_clear_error(rng):
    model = _text_model(L.LSTM(4))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(ValueError, match="id"):
        model.predict(np.full((2, 12), 31.0))
    with pytest.raises(ValueError, match="id"):
        model.predict(np.full((2, 12), -1.0))
