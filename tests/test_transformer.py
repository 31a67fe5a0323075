"""Transformer layers: gradients of MultiHeadAttention and TransformerEncoder by finite
differences, padding masks (finite outputs, zero gradients for padding), Embedding /
PositionalEmbedding / LayerNormalization / GlobalAveragePooling1D layers, reproducible
seeded training, 1 vs 2 threads, save / load."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import reference as ref

L = fn.layers


def bound(layer, shape, rng):
    """Build a layer on its own flat float32 parameter / gradient buffers."""
    layer._build(tuple(shape))
    n = layer.param_count
    p, g = np.zeros(n, np.float32), np.zeros(n, np.float32)
    layer.bind(p, g, 0)
    layer.initialize(rng)
    p += rng.uniform(-0.1, 0.1, n).astype(np.float32)  # non-zero biases, gamma != 1
    return p, g


def check_fd(loss, analytic, arr, idx, h=1e-2, rel=2e-2):
    """Central differences of loss() (float64) w.r.t. arr.flat[idx] against analytic."""
    flat = arr.reshape(-1)
    num = np.empty(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        lp = loss()
        flat[i] = old - h
        lm = loss()
        flat[i] = old
        num[j] = (lp - lm) / (2 * h)
    a = analytic.reshape(-1)[idx]
    scale = max(np.abs(a).max(), np.abs(num).max(), 1e-3)
    np.testing.assert_allclose(a, num, rtol=0, atol=rel * scale)
    return scale


def sample(n, k, rng):
    return rng.choice(n, size=min(n, k), replace=False)


@pytest.mark.parametrize("heads,kd,causal", [(2, 3, False), (1, 5, True), (3, 2, False)])
def test_mha_self_attention_gradients(heads, kd, causal, rng):
    n, t, c = 2, 5, 6
    mha = L.MultiHeadAttention(heads, kd)
    p, g = bound(mha, (t, c), rng)
    x = rng.standard_normal((n, t, c)).astype(np.float32)
    mask = np.ones((n, t), np.uint8)
    mask[1, 3:] = 0
    r = rng.standard_normal((n, t, c))

    def loss():
        return float(np.sum(mha.forward(x, mask=mask, training=False, use_causal_mask=causal) * r))

    mha.forward(x, mask=mask, training=True, use_causal_mask=causal)
    g.fill(0)
    dx = mha.backward(r.astype(np.float32))
    check_fd(loss, g, p, sample(p.size, 60, rng))
    check_fd(loss, dx, x, sample(x.size, 30, rng))
    # Padded steps still get gradient through their query (they attend to real keys).
    assert np.all(dx[1, 3:] != 0)


def test_mha_separate_query_key_value(rng):
    n, tq, tk, cq, ck, cv = 2, 4, 6, 5, 3, 7
    mha = L.MultiHeadAttention(2, 4, output_shape=3)
    mha._kv_dims = (cv, ck)
    p, g = bound(mha, (tq, cq), rng)
    q = rng.standard_normal((n, tq, cq)).astype(np.float32)
    k = rng.standard_normal((n, tk, ck)).astype(np.float32)
    v = rng.standard_normal((n, tk, cv)).astype(np.float32)
    mask = np.ones((n, tk), bool)
    mask[0, :] = False  # no visible key at all in sample 0
    mask[1, 4:] = False
    r = rng.standard_normal((n, tq, 3))

    def loss():
        return float(np.sum(mha.forward(q, v, k, mask=mask) * r))

    y = mha.forward(q, v, k, mask=mask, training=True)
    assert y.shape == (n, tq, 3) and np.all(np.isfinite(y))
    g.fill(0)
    dq, dv, dk = mha.backward(r.astype(np.float32))
    assert np.all(dk[0] == 0) and np.all(dv[0] == 0)  # nothing attended
    assert np.all(dk[1, 4:] == 0) and np.all(dv[1, 4:] == 0)  # masked keys
    check_fd(loss, g, p, sample(p.size, 60, rng))
    for a, d in ((q, dq), (k, dk), (v, dv)):
        check_fd(loss, d, a, sample(a.size, 20, rng))


def test_mha_value_is_key_default(rng):
    mha = L.MultiHeadAttention(2, 2)
    q = rng.standard_normal((3, 4, 5)).astype(np.float32)
    v = rng.standard_normal((3, 6, 5)).astype(np.float32)
    y = mha(q, v)
    assert y.shape == (3, 4, 5)
    np.testing.assert_allclose(y, mha.forward(q, v, v), rtol=1e-6, atol=1e-6)
    mha.forward(q, v, training=True)
    dq, dv = mha.backward(np.ones((3, 4, 5), np.float32))
    assert dq.shape == q.shape and dv.shape == v.shape


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_gradients(norm_first, rng):
    n, t, c = 2, 5, 6
    enc = L.TransformerEncoder(2, 3, 7, dropout=0.0, norm_first=norm_first, activation="gelu")
    p, g = bound(enc, (t, c), rng)
    x = rng.standard_normal((n, t, c)).astype(np.float32)
    mask = np.ones((n, t), np.uint8)
    mask[0, 4:] = 0
    r = rng.standard_normal((n, t, c))

    def loss():
        return float(np.sum(enc.forward(x, mask=mask) * r))

    y = enc.forward(x, True, mask=mask)
    np.testing.assert_allclose(y, enc.forward(x, mask=mask), rtol=1e-6, atol=1e-6)
    g.fill(0)
    dx = enc.backward(r.astype(np.float32))
    check_fd(loss, g, p, sample(p.size, 80, rng), h=1e-2, rel=3e-2)
    check_fd(loss, dx, x, sample(x.size, 30, rng), h=1e-2, rel=3e-2)


def test_layer_normalization_layer_matches_reference(rng):
    ln = L.LayerNormalization()
    p, g = bound(ln, (4, 9), rng)
    x = rng.standard_normal((3, 4, 9)).astype(np.float32)
    y = ln.forward(x, True)
    yr, saved = ref.layer_norm(x.astype(np.float64), ln.gamma, ln.beta, 1e-3)
    np.testing.assert_allclose(y, yr, atol=1e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    g.fill(0)
    dx = ln.backward(dy)
    rdx, rdg, rdb = ref.layer_norm_backward(dy.astype(np.float64), x.astype(np.float64), ln.gamma, saved)
    np.testing.assert_allclose(dx, rdx, atol=1e-4)
    np.testing.assert_allclose(ln.dgamma, rdg, atol=1e-4)
    np.testing.assert_allclose(ln.dbeta, rdb, atol=1e-4)
    with pytest.raises(ValueError, match="axis=-1"):
        L.LayerNormalization(axis=1)


def test_embedding_layers(rng):
    emb = L.Embedding(10, 4, mask_zero=True)
    ids = np.array([[1, 2, 0], [0, 0, 0]])
    y = emb(ids)
    np.testing.assert_array_equal(y, emb.embeddings[ids])
    np.testing.assert_array_equal(emb.compute_mask(ids, None), [[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"holds id 10 .* outside \[0, V\) = \[0, 10\)"):
        emb(np.array([[10]]))
    pe = L.PositionalEmbedding(5, 4, input_dim=10)
    y = pe(ids)
    np.testing.assert_allclose(y, pe.token_embeddings[ids] + pe.position_embeddings[:3])
    sin = L.PositionalEmbedding(5, 4, input_dim=10, positional="sinusoidal")
    y = sin(ids)
    tab = sin._table
    np.testing.assert_allclose(tab[1], [np.sin(1), np.cos(1), np.sin(1e-2), np.cos(1e-2)], rtol=1e-6)
    np.testing.assert_allclose(y, sin.token_embeddings[ids] + tab[:3], rtol=1e-6)
    assert sin.param_count == 40  # no position weights
    add = L.PositionalEmbedding(5, 4)  # float input: adds the position table
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(add(x), x + add.position_embeddings[:3], rtol=1e-6)
    with pytest.raises(ValueError, match="exceed maxlen 5"):
        pe(np.ones((1, 6)))
    with pytest.raises(ValueError, match="positional"):
        L.PositionalEmbedding(5, 4, positional="rotary")


def test_global_average_pooling_1d_masked(rng):
    pool = L.GlobalAveragePooling1D()
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(pool.forward(x), x.mean(1), rtol=1e-6)
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], np.uint8)
    pool._build((4, 2))
    y = pool.forward(x, True, mask=mask)
    np.testing.assert_allclose(y[0], x[0, :2].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(y[1], 0)  # all padding: zeros, no NaN
    np.testing.assert_allclose(y[2], x[2].mean(0), rtol=1e-6)
    dx = pool.backward(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(dx[0, 2:], 0)
    np.testing.assert_array_equal(dx[1], 0)
    np.testing.assert_allclose(dx[0, :2], 0.5)


def text_model(t=12, v=50, c=16, dropout=0.0, seed=0, blocks=1):
    return fn.Sequential(
        [L.PositionalEmbedding(t, c, input_dim=v, mask_zero=True, input_shape=(t,))]
        + [L.TransformerEncoder(2, 8, 24, dropout=dropout) for _ in range(blocks)]
        + [L.GlobalAveragePooling1D(), L.Dense(2, activation="softmax")], seed=seed)


def token_batch(rng, n=16, t=12, v=50):
    x = rng.integers(1, v, (n, t)).astype(np.float32)
    lens = rng.integers(0, t + 1, n)
    lens[0] = 0  # one sequence that is all padding
    for i, k in enumerate(lens):
        x[i, :t - k] = 0  # pre-padding, as pad_sequences does
    return x, rng.integers(0, 2, n)


def test_padding_gives_finite_outputs_and_zero_gradients(rng):
    model = text_model(blocks=2)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model._configure_output()
    x, y = token_batch(rng)
    x[:, :3] = 0  # the first 3 positions are padding in every sequence
    with model._emitting_logits():
        loss, pred = model._loss_and_grads(x, y.astype(np.int32))
    assert np.isfinite(loss) and np.all(np.isfinite(pred))
    assert np.all(np.isfinite(model._grads))
    emb = model.layers[0]
    np.testing.assert_array_equal(emb.dtoken_embeddings[0], 0)  # id 0 = padding only
    np.testing.assert_array_equal(emb.dposition_embeddings[:3], 0)  # always-padded positions
    assert np.abs(emb.dposition_embeddings[3:]).max() > 0
    out = model.predict(x)
    assert np.all(np.isfinite(out))
    # The all-padding sequence's output does not depend on its (ignored) content.
    x2 = x.copy()
    np.testing.assert_allclose(model.predict(x2[:1]), out[:1], rtol=1e-6)


def test_seeded_training_is_reproducible_and_thread_independent(rng, num_threads):
    x, y = token_batch(rng, n=64)
    weights = []
    for threads in (1, 2, 2):
        num_threads(threads)
        model = text_model(dropout=0.2, seed=3)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, seed=5, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(weights[0], weights[1]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(weights[1], weights[2]):
        np.testing.assert_array_equal(a, b)


def test_dropout_changes_training_but_not_inference(rng):
    x, y = token_batch(rng, n=32)
    model = text_model(dropout=0.5, seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    p1 = model.predict(x)
    np.testing.assert_array_equal(p1, model.predict(x))
    enc = model.layers[1]
    h = model.layers[0].forward(x, False)
    m = model.layers[0].compute_mask(x, None)
    a, b = enc.forward(h, True, mask=m).copy(), enc.forward(h, True, mask=m).copy()
    assert not np.array_equal(a, b)


def test_save_and_load_round_trip(tmp_path, rng):
    x, y = token_batch(rng, n=32)
    model = fn.Sequential([
        L.Embedding(50, 16, mask_zero=True, input_shape=(12,)),
        L.PositionalEmbedding(12, 16, positional="sinusoidal"),
        L.TransformerEncoder(2, 8, 24, norm_first=True),
        L.LayerNormalization(epsilon=1e-5),
        L.GlobalAveragePooling1D(),
        L.Dense(1, activation="sigmoid")], seed=2)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=0)
    model.save(tmp_path / "m.fastnn")
    back = fn.load_model(tmp_path / "m.fastnn")
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    assert [type(l).__name__ for l in back.layers] == [type(l).__name__ for l in model.layers]


def test_training_learns_a_token_rule(rng):
    # Label = whether token 7 occurs: one block learns it quickly.
    n, t = 512, 12
    x = rng.integers(1, 50, (n, t)).astype(np.float32)
    x[x == 7] = 8
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        x[i, rng.integers(0, t)] = 7
    x[: n // 4, :4] = 0
    model = text_model(seed=0)
    model.compile(optimizer=fn.optim.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(x, y, epochs=6, batch_size=32, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="value_dim"):
        L.MultiHeadAttention(2, 4, value_dim=5)
    with pytest.raises(ValueError, match="num_heads"):
        L.MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match="dropout"):
        L.TransformerEncoder(2, 4, 8, dropout=1.0)
    mha = L.MultiHeadAttention(2, 4)
    with pytest.raises(ValueError, match=r"mask must have shape \(N, Tk\) = \(1, 3\)"):
        mha(np.zeros((1, 3, 4)), mask=np.ones((1, 4)))


def test_mask_flows_only_through_layers_that_support_it(rng):
    x = np.array([[0, 0, 3, 4], [5, 6, 7, 8]], np.float32)
    emb = L.Embedding(10, 4, mask_zero=True, input_shape=(4,))
    masked = fn.Sequential([emb, L.LayerNormalization(), L.GlobalAveragePooling1D()], seed=0)
    masked.build()
    h = masked.layers[1].forward(emb.forward(x))
    np.testing.assert_allclose(masked.predict(x)[0], h[0, 2:].mean(0), rtol=1e-5)
    # Dense does not declare mask support: the mask stops there (as in Keras, where a
    # layer without supports_masking drops it).
    dense = fn.Sequential([L.Embedding(10, 4, mask_zero=True, input_shape=(4,)), L.Dense(3),
                           L.GlobalAveragePooling1D(keepdims=True)], seed=0)
    out = dense.predict(x)
    assert out.shape == (2, 1, 3)
    d = dense.layers[1].forward(dense.layers[0].forward(x))
    np.testing.assert_allclose(out[:, 0], d.mean(1), rtol=1e-5)


def test_logical_not_on_arrays_and_in_a_graph(rng):
    x = np.array([[0.0, 1.0, 2.0, -0.5]], np.float32)
    np.testing.assert_array_equal(fn.ops.logical_not(x), [[1, 0, 0, 0]])
    inp = fn.Input((4,))
    model = fn.Model(inp, L.Dense(2)(fn.ops.logical_not(inp)), seed=0)
    got = model.predict(x)
    np.testing.assert_allclose(got, model.layers[-1].forward(np.equal(x, 0).astype(np.float32)),
                               rtol=1e-6)
    model.compile(optimizer="sgd", loss="mse")  # a mask has no gradient: training runs
    model.fit(x, np.zeros((1, 2), np.float32), epochs=1, verbose=0)


def test_mha_key_mask_tensor(rng, tmp_path):
    """key_mask (N, Tk) given as a tensor in a graph: nonzero = attend, as forward's mask;
    with an Embedding(mask_zero=True) padding mask as well, a key needs both."""
    x_in, m_in = fn.Input((6, 8)), fn.Input((6,))
    mha = L.MultiHeadAttention(2, 4)
    model = fn.Model([x_in, m_in], mha(x_in, key_mask=m_in), seed=1)
    model.build()
    xs = rng.standard_normal((3, 6, 8)).astype(np.float32)
    keep = np.ones((3, 6), np.float32)
    keep[0, 4:] = 0
    keep[2, 1::2] = 0
    want = mha.forward(xs, mask=keep)
    np.testing.assert_allclose(model.predict([xs, keep]), want, rtol=1e-6, atol=1e-6)
    assert np.abs(mha.forward(xs) - want).max() > 1e-3  # the mask matters
    model.save(tmp_path / "m.fastnn")
    np.testing.assert_array_equal(fn.load_model(tmp_path / "m.fastnn").predict([xs, keep]),
                                  model.predict([xs, keep]))
    model.compile(optimizer="adam", loss="mse")
    before = mha.query_kernel.copy()
    hist = model.fit([xs, keep], want + 0.1, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert not np.array_equal(mha.query_kernel, before)

    ids_in, m2_in = fn.Input((6,)), fn.Input((6,))
    h = L.Embedding(10, 8, mask_zero=True)(ids_in)
    attn = L.MultiHeadAttention(2, 4)
    both = fn.Model([ids_in, m2_in], attn(h, h, key_mask=m2_in), seed=2)
    both.build()
    ids = rng.integers(1, 10, (3, 6)).astype(np.float32)
    ids[1, 3:] = 0
    e = next(lay for lay in both.layers if isinstance(lay, L.Embedding)).forward(ids)
    np.testing.assert_allclose(both.predict([ids, keep]), attn.forward(e, mask=keep * (ids != 0)),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"key_mask must be \(N, Tk\)"):
        L.MultiHeadAttention(2, 4)(x_in, key_mask=fn.Input((5,)))
