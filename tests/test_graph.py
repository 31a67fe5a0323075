"""The layer graph: Functional models, subclassed models and layers, fastnn.ops on
symbolic tensors, custom training steps, saving, and the errors of bad graphs.

Gradients are checked against central finite differences: the model runs in float32, the
difference quotient is formed in float64 from losses summed in float64, with a step and
tolerance that fit float32 rounding (step 2e-3: about 1e-4 relative error from rounding,
well below the O(1) errors a wrong graph rule gives)."""
from __future__ import annotations

import numpy as np
import pytest

import fastnn as fn
from gradcheck import check_model_grads as check_grads

L = fn.layers


def _data(rng, n, *shapes):
    return [rng.normal(size=(n,) + s).astype(np.float32) for s in shapes]


def test_fanout_shared_layer_and_residual_gradients(rng):
    inp = fn.Input(shape=(6,))
    h = L.Dense(8, activation="tanh")(inp)
    shared = L.Dense(8, activation="tanh")
    a = shared(h)
    b = shared(a)                       # the same weights twice: gradients add
    s = L.Add()([h, b])                 # h fans out to `shared` and to the merge
    out = L.Dense(3)(L.Multiply()([s, a]))
    model = fn.Model(inp, out, seed=1)
    x, y = _data(rng, 5, (6,), (3,))
    check_grads(model, x, y)


def test_merges_and_ops_gradients(rng):
    a_in, b_in = fn.Input(shape=(4,), name="a"), fn.Input(shape=(4,), name="b")
    da = L.Dense(5, activation="tanh")(a_in)
    db = L.Dense(5, activation="sigmoid")(b_in)
    parts = [L.Subtract()([da, db]), L.Average()([da, db]), L.Maximum()([da, db]),
             L.Minimum()([da, db]), L.Concatenate()([da, db]),
             fn.ops.mean(fn.ops.square(da - db), axis=-1, keepdims=True),
             fn.ops.exp(fn.ops.negative(fn.ops.abs(da))) / (1.0 + fn.ops.square(db))]
    out = L.Dense(2)(fn.ops.concatenate(parts, axis=-1))
    model = fn.Model([a_in, b_in], out, seed=2)
    xa, xb, y = _data(rng, 4, (4,), (4,), (2,))
    check_grads(model, [xa, xb], y, n_checks=60)


def test_nested_model_and_multiple_outputs_gradients(rng):
    enc_in = fn.Input(shape=(5,))
    encoder = fn.Model(enc_in, L.Dense(6, activation="tanh")(enc_in), name="encoder")
    x1, x2 = fn.Input(shape=(5,)), fn.Input(shape=(5,))
    e1, e2 = encoder(x1), encoder(x2)    # a nested model called twice shares its weights
    joined = L.Concatenate()([e1, e2])
    out_a = L.Dense(2, name="out_a")(joined)
    out_b = L.Dense(1, name="out_b")(L.Add()([e1, e2]))
    model = fn.Model([x1, x2], [out_a, out_b], seed=3)
    model.compile(optimizer="sgd", loss=["mse", "mse"], loss_weights=[1.0, 0.5])
    xa, xb, ya, yb = _data(rng, 6, (5,), (5,), (2,), (1,))
    xs = model._prepare_x([xa, xb], "t")
    ys = model._prepare_y([ya, yb], "t", 6)
    model._configure_output()
    model._loss_and_grads(xs, ys)
    g = model._grads[:model._n_trainable].copy()
    p, h = model._params, 2e-3
    for i in np.random.default_rng(0).choice(p.size, 30, replace=False):
        old = p[i]
        p[i] = old + h
        lp, _ = model._eval_batch(xs, ys)
        p[i] = old - h
        lm, _ = model._eval_batch(xs, ys)
        p[i] = old
        num = (lp - lm) / (2 * h) / 6
        assert abs(num - g[i]) <= 3e-3 * max(1.0, abs(num)) + 2e-2 * abs(num)
    assert encoder.count_params() == 36  # its weights are the outer model's, shared


def test_subclassed_layer_from_ops_gradients(rng):
    class Gated(L.Layer):
        def __init__(self, units, **kw):
            super().__init__(**kw)
            self.units = units
            self.proj = L.Dense(units)

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
            self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

        def call(self, x):
            gate = fn.ops.sigmoid(fn.ops.matmul(x, self.w) + self.b)
            return gate * fn.ops.tanh(self.proj(x)) + fn.ops.dense(x, self.w, None, "tanh")

    inp = fn.Input(shape=(7,))
    model = fn.Model(inp, L.Dense(2)(Gated(4)(inp)), seed=4)
    x, y = _data(rng, 5, (7,), (2,))
    check_grads(model, x, y, n_checks=60)


def test_sequence_ops_gradients(rng):
    class Attend(L.Layer):
        def build(self, input_shape):
            c = input_shape[-1]
            self.wq = self.add_weight(shape=(c, c), name="wq")
            self.g = self.add_weight(shape=(c,), initializer="ones", name="g")

        def call(self, x):
            q = fn.ops.reshape(fn.ops.matmul(x, self.wq), (-1, 5, 2, 2))
            k = fn.ops.reshape(x, (-1, 5, 2, 2))
            o = fn.ops.reshape(fn.ops.dot_product_attention(q, k, k), (-1, 5, 4))
            y = fn.ops.layer_normalization(o + x, self.g, None)
            return fn.ops.softmax(fn.ops.transpose(y, (0, 2, 1)), axis=-1)

    inp = fn.Input(shape=(5, 4))
    out = L.Dense(2)(L.Flatten()(Attend()(inp)))
    model = fn.Model(inp, out, seed=5)
    x, y = _data(rng, 3, (5, 4), (2,))
    check_grads(model, x, y, n_checks=40)


def test_shared_layer_gradient_is_sum_of_uses(rng):
    # y = W(W x): analytic gradient of sum(y) through two uses of one Dense.
    inp = fn.Input(shape=(3,))
    d = L.Dense(3, use_bias=False)
    model = fn.Model(inp, d(d(inp)), seed=6)
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(2, 3)).astype(np.float32)
    w = model.get_weights()[0].astype(np.float64)
    model._configure_output()
    model._loss_and_grads([x], [np.zeros((2, 3), np.float32)])
    out = x.astype(np.float64) @ w @ w
    dout = 2 * out / out.size
    h1 = x.astype(np.float64) @ w
    want = h1.T @ dout + x.T @ (dout @ w.T)
    np.testing.assert_allclose(model._grads.reshape(3, 3), want, rtol=1e-5, atol=1e-6)


# --- training ------------------------------------------------------------------------
def _toy(rng, n=256):
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int32) + 2 * (x[:, 4] > 0)
    return x, y


def test_functional_subclassed_and_sequential_train_identically(rng):
    x, y = _toy(rng)

    def seq():
        return fn.Sequential([L.Dense(16, activation="relu", input_shape=(8,)),
                              L.Dense(4, activation="softmax")], seed=7)

    def functional():
        inp = fn.Input(shape=(8,))
        return fn.Model(inp, L.Dense(4, activation="softmax")(L.Dense(16, activation="relu")(inp)),
                        seed=7)

    class Net(fn.Model):
        def __init__(self):
            super().__init__(seed=7)
            self.h = L.Dense(16, activation="relu")
            self.o = L.Dense(4, activation="softmax")

        def call(self, x):
            return self.o(self.h(x))

    results = []
    for make in (seq, functional, Net):
        m = make()
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        h = m.fit(x, y, epochs=3, batch_size=32, seed=3, verbose=0)
        results.append((h.history["loss"], m.predict(x)))
    for loss, pred in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(pred, results[0][1])
    assert results[0][0][-1] < results[0][0][0]


def test_two_outputs_fit_evaluate_predict(rng):
    x, y = _toy(rng)
    inp = fn.Input(shape=(8,))
    h = L.Dense(16, activation="relu")(inp)
    cls = L.Dense(4, activation="softmax", name="cls")(h)
    reg = L.Dense(1, name="reg")(h)
    m = fn.Model(inp, {"cls": cls, "reg": reg}, seed=1)
    m.compile(optimizer="adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
              loss_weights={"cls": 1.0, "reg": 0.1}, metrics={"cls": ["accuracy"]})
    target = {"cls": y, "reg": x[:, :1]}
    h = m.fit(x, target, epochs=4, verbose=0, seed=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    res = m.evaluate(x, target, verbose=0, return_dict=True)
    assert set(res) == {"loss", "cls_loss", "reg_loss", "cls_accuracy"}
    np.testing.assert_allclose(res["loss"], res["cls_loss"] + 0.1 * res["reg_loss"], rtol=1e-6)
    out = m.predict(x[:5])
    assert out["cls"].shape == (5, 4) and out["reg"].shape == (5, 1)
    np.testing.assert_allclose(out["cls"].sum(axis=1), 1.0, rtol=1e-5)


def test_on_batch_calls_and_custom_train_step(rng):
    x, y = _toy(rng, 64)

    class Net(fn.Model):
        def __init__(self):
            super().__init__(seed=2)
            self.h = L.Dense(8, activation="relu")
            self.o = L.Dense(4, activation="softmax")
            self.steps = 0

        def call(self, x):
            return self.o(self.h(x))

        def train_step(self, data):
            x, y = data
            with fn.GradientTape() as tape:
                pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=pred)
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.steps += 1
            return {"loss": loss, **self.compute_metrics(x, y, pred)}

    plain = fn.Sequential([L.Dense(8, activation="relu", input_shape=(8,)),
                           L.Dense(4, activation="softmax")], seed=2)
    custom = Net()
    for m in (plain, custom):
        m.compile(optimizer=fn.optim.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    first = plain.train_on_batch(x, y)
    assert isinstance(first, list) and len(first) == 2
    before = plain.test_on_batch(x, y, return_dict=True)["loss"]
    for _ in range(20):
        plain.train_on_batch(x, y)
    assert plain.test_on_batch(x, y, return_dict=True)["loss"] < before
    np.testing.assert_array_equal(plain.predict_on_batch(x[:3]), plain.predict(x[:3]))
    h = custom.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    assert custom.steps == 8 and set(h.history) >= {"loss", "accuracy"}
    # The tape loop with SGD is exactly the built-in step (softmax + cross-entropy, unfused).
    a = fn.Sequential([L.Dense(4, activation="softmax", input_shape=(8,))], seed=9)
    b = fn.Sequential([L.Dense(4, activation="softmax", input_shape=(8,))], seed=9)
    for m in (a, b):
        m.compile(optimizer=fn.optim.SGD(0.5), loss="sparse_categorical_crossentropy")
    a.train_on_batch(x, y)
    loss_fn = fn.losses.SparseCategoricalCrossentropy()
    with fn.GradientTape() as tape:
        loss = loss_fn(y, b(x, training=True))
    grads = tape.gradient(loss, b.trainable_weights)
    b.optimizer.apply_gradients(zip(grads, b.trainable_weights))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_apply_gradients_on_a_subset_leaves_the_rest(rng):
    x, y = _toy(rng, 32)
    m = fn.Sequential([L.Dense(8, activation="relu", input_shape=(8,)),
                       L.Dense(4, activation="softmax")], seed=3)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = m.get_weights()
    with fn.GradientTape() as tape:
        loss = m.compute_loss(y=y, y_pred=m(x, training=True))
    last = m.trainable_weights[2:]
    grads = tape.gradient(loss, last)
    m.optimizer.apply_gradients(zip(grads, last))
    after = m.get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.array_equal(after[2], before[2])


def test_custom_loss_and_metric_with_only_a_forward(rng):
    class Huber(fn.losses.Loss):
        name = "huber"

        def call(self, y_true, y_pred):
            err = fn.ops.abs(y_pred - y_true)
            quad = fn.ops.minimum(err, 1.0)
            return fn.ops.mean(0.5 * fn.ops.square(quad) + (err - quad), axis=-1)

    class MeanAbs(fn.metrics.Metric):
        def __init__(self, name="mean_abs"):
            super().__init__(name=name)
            self.total, self.count = 0.0, 0

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.total += float(np.abs(np.asarray(y_true) - y_pred).sum())
            self.count += np.asarray(y_pred).size

        def result(self):
            return self.total / max(self.count, 1)

        def reset_state(self):
            self.total, self.count = 0.0, 0

    x = rng.normal(size=(128, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)) * 3
    m = fn.Sequential([L.Dense(1, input_shape=(3,))], seed=0)
    m.compile(optimizer=fn.optim.Adam(0.05), loss=Huber(), metrics=[MeanAbs()])
    h = m.fit(x, y, epochs=20, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.3 * h.history["loss"][0]
    assert h.history["mean_abs"][-1] < h.history["mean_abs"][0]
    # its value and gradient against the formula
    pred = rng.normal(size=(4, 2)).astype(np.float32) * 2
    tgt = rng.normal(size=(4, 2)).astype(np.float32)
    d = np.zeros_like(pred)
    total = Huber().forward_backward(d, None, pred, tgt, False)
    e = np.abs(pred - tgt).astype(np.float64)
    want = np.where(e < 1, 0.5 * e**2, e - 0.5).mean(axis=1).sum()
    np.testing.assert_allclose(total, want, rtol=1e-5)
    np.testing.assert_allclose(d, np.clip(pred - tgt, -1, 1) / pred.size, rtol=1e-5, atol=1e-7)


def test_layer_called_on_constants_inside_call(rng):
    # The Keras transformer example's TokenAndPositionEmbedding: an Embedding of
    # ops.arange(T) (no batch axis) added to the token embeddings.
    class TokenAndPosition(L.Layer):
        def __init__(self, maxlen, vocab, dim, **kw):
            super().__init__(**kw)
            self.tok = L.Embedding(vocab, dim)
            self.pos = L.Embedding(maxlen, dim)

        def call(self, x):
            t = fn.ops.shape(x)[-1]
            return self.tok(x) + self.pos(fn.ops.arange(0, t, 1))

    layer = TokenAndPosition(6, 10, 4)
    ids = rng.integers(0, 10, size=(3, 6)).astype(np.float32)
    out = layer(ids)
    want = layer.tok.embeddings[ids.astype(int)] + layer.pos.embeddings[None, :, :]
    np.testing.assert_allclose(out, want, rtol=1e-6)


# --- saving --------------------------------------------------------------------------
@fn.saving.register_keras_serializable(package="tests")
class ScaledDense(L.Layer):
    def __init__(self, units, scale=2.0, **kw):
        super().__init__(**kw)
        self.units, self.scale = units, scale
        self.inner = L.Dense(units, activation="relu")

    def call(self, x):
        return self.inner(x) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


@fn.saving.register_keras_serializable(package="tests")
class SmallNet(fn.Model):
    def __init__(self, hidden=8, **kw):
        super().__init__(**kw)
        self.hidden = hidden
        self.block = ScaledDense(hidden)
        self.head = L.Dense(3, activation="softmax")

    def call(self, x, training=False):
        return self.head(self.block(x))

    def get_config(self):
        return {"hidden": self.hidden, "name": self.name}


def test_save_and_load_every_kind_of_model(rng, tmp_path):
    x, y = _toy(rng, 64)
    y = y % 3
    inp = fn.Input(shape=(8,))
    sub_in = fn.Input(shape=(8,))
    sub = fn.Model(sub_in, L.Dense(8, activation="tanh")(sub_in), name="sub")
    h = L.Add()([sub(inp), ScaledDense(8)(inp)])
    functional = fn.Model(inp, L.Dense(3, activation="softmax")(h * 0.5), seed=1)
    for m in (functional, SmallNet(seed=2)):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=2, verbose=0)
        path = tmp_path / f"{m.name}.fastnn"
        m.save(path)
        back = fn.load_model(path)
        np.testing.assert_array_equal(back.predict(x), m.predict(x))
        assert back.optimizer.iterations == m.optimizer.iterations
        back.fit(x, y, epochs=1, verbose=0)  # and it trains on


# --- bad graphs ----------------------------------------------------------------------
def test_bad_graphs_raise_clear_errors():
    a, b = fn.Input(shape=(3,), name="a"), fn.Input(shape=(4,), name="b")
    with pytest.raises(ValueError, match=r"add.*\(3,\).*\(4,\)|incompatible shapes"):
        L.Add()([a, b])
    d = L.Dense(2, name="reused")
    d(a)
    with pytest.raises(ValueError, match=r"reused: this layer was built for inputs of shape \(None, 3\)"):
        d(b)
    out = L.Dense(2)(L.Concatenate()([a, L.Dense(3)(b)]))
    with pytest.raises(ValueError, match=r"depends on the input 'b'.*disconnected"):
        fn.Model(a, out)
    with pytest.raises(TypeError, match="inputs must be tensors made by fastnn.Input"):
        fn.Model(L.Dense(2)(a), out)

    class Loop(L.Layer):
        def call(self, x):
            return self(x)

    with pytest.raises(ValueError, match="calls itself"):
        Loop(name="loop")(a)

    class Branchy(L.Layer):
        def call(self, x):
            if fn.ops.mean(x) > 0:
                return x
            return -x

    with pytest.raises(TypeError, match=r"branchy.call\(\): .*cannot decide a Python `if`"):
        Branchy(name="branchy")(a)

    class UsesNumPy(L.Layer):
        def call(self, x):
            return np.tanh(x)

    with pytest.raises(TypeError, match=r"numpyish.call\(\): .*use fastnn.ops functions"):
        UsesNumPy(name="numpyish")(a)


def test_a_cycle_in_the_graph_is_reported():
    a = fn.Input(shape=(3,))
    d1, d2 = L.Dense(3, name="first"), L.Dense(3, name="second")
    t1 = d1(a)
    t2 = d2(t1)
    t1.node.inputs[0] = t2   # wire first <- second <- first by hand
    with pytest.raises(ValueError, match="cycle: .*first.*second|cycle: .*second.*first"):
        fn.Model(a, t2)


def test_missing_or_misshapen_inputs_at_fit():
    a, b = fn.Input(shape=(3,), name="a"), fn.Input(shape=(2,), name="b")
    m = fn.Model({"a": a, "b": b}, L.Dense(1)(L.Concatenate()([a, b])))
    m.compile(optimizer="sgd", loss="mse")
    x = {"a": np.zeros((4, 3)), "b": np.zeros((4, 2))}
    y = np.zeros((4, 1))
    m.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="input 'b' is missing"):
        m.fit({"a": x["a"]}, y, verbose=0)
    with pytest.raises(ValueError, match=r"x\['b'\] must have shape \(N, 2\)"):
        m.fit({"a": x["a"], "b": np.zeros((4, 5))}, y, verbose=0)
    with pytest.raises(ValueError, match="has 2 inputs"):
        m.fit(x["a"], y, verbose=0)
    with pytest.raises(ValueError, match="different numbers of samples"):
        m.fit({"a": x["a"], "b": np.zeros((3, 2))}, y, verbose=0)


def test_loading_an_unregistered_subclass_says_how_to_register_it(rng, tmp_path):
    class Unregistered(fn.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    m = Unregistered()
    m.build((None, 3))
    m.save(tmp_path / "m.fastnn")
    with pytest.raises(ValueError, match="'Unregistered'.*register_keras_serializable"):
        fn.models.load_model(tmp_path / "m.fastnn")
