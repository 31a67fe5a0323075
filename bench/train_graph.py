"""The three ways to build a model, timed side by side: the seed jobs written as a
Sequential stack, with the Functional API and as a subclassed Model, trained in one run.

    FASTNN_DATA=/path/to/data python bench/train_graph.py [--jobs mlp,cnn,imdb] \\
        [--epochs 3] [--threads 2] [--train-subset N] [--markdown]

Jobs: ``mlp`` (MNIST 784-128-10, batch 32), ``cnn`` (the Keras MNIST CNN, batch 64) and
``imdb`` (the transformer of ``python -m fastnn train imdb-transformer``: maxlen 80,
C=32, 2 heads, ff 32, batch 32). The Sequential model is the one the command line builds;
the other two are built from the same layers. All three get the same seed, so they start
from the same weights and see the same batches: the script checks that they end with
bitwise-identical weights, which shows they did the same arithmetic, and only then
compares times. Epochs are interleaved (one epoch of each form in turn), so a change in
the machine's load falls on all three alike. The ratios are a form's median (and minimum)
epoch time over Sequential's: on a shared machine the minimum is the steadier figure.

``--op-overhead`` instead times a subclassed layer whose ``call`` chains K cheap
``fn.ops`` functions on a (32, 16) tensor, for two values of K: the slope of the train
step time per op, minus what the same NumPy forward and backward arithmetic costs when
run directly, is the Python overhead per op call (forward and backward of one step).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import fastnn as fn
from fastnn import cli

L = fn.layers


# ---- the jobs: (sequential factory, layer factory, input shape, batch, data loader) ----

def mlp_layers():
    return [L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10, activation="softmax")]


def cnn_layers():
    return [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(64, 3, activation="relu"), L.Flatten(), L.Dense(64, activation="relu"),
            L.Dense(10, activation="softmax")]


IMDB_MAXLEN, IMDB_VOCAB, IMDB_C = 80, 10000, 32


def imdb_layers(vocab):
    return [L.PositionalEmbedding(IMDB_MAXLEN, IMDB_C, input_dim=vocab, mask_zero=True),
            L.TransformerEncoder(2, IMDB_C // 2, 32, dropout=0.2),
            L.GlobalAveragePooling1D(), L.Dropout(0.2), L.Dense(20, activation="relu"),
            L.Dropout(0.2), L.Dense(2, activation="softmax")]


def load_mnist(subset, cnn):
    (x, y), _ = fn.datasets.mnist.load_data()
    x, y = x[:subset] / 255.0, y[:subset]
    return (x.reshape(-1, 28, 28, 1) if cnn else x).astype(np.float32), y


def load_imdb(subset):
    from fastnn.data import pad_sequences
    from fastnn.text import Tokenizer

    (train, y), _ = fn.datasets.imdb.load_texts()
    tok = Tokenizer(num_words=IMDB_VOCAB)
    words = [tok.tokenize(t) for t in train[:subset]]
    tok.fit_on_texts(words)
    return pad_sequences(tok.texts_to_sequences(words), maxlen=IMDB_MAXLEN), \
        np.asarray(y[:subset]), tok.vocabulary_size


class Chain(fn.Model):
    """A subclassed model: its layers are attributes, `call` applies them in order."""

    def __init__(self, layers, seed):
        super().__init__(seed=seed)
        self.stack = layers

    def call(self, x, training=False):
        for layer in self.stack:
            x = layer(x, training=training)
        return x


def forms(layers_fn, input_shape, seq_model, seed):
    """{form: uncompiled model}: the three spellings of one model."""
    inp = fn.Input(shape=input_shape)
    x = inp
    for layer in layers_fn():
        x = layer(x)
    sub = Chain(layers_fn(), seed)
    sub.build((None,) + tuple(input_shape))
    return {"sequential": seq_model, "functional": fn.Model(inp, x, seed=seed), "subclassed": sub}


def job(name, args):
    seed = args.seed
    if name == "mlp":
        x, y = load_mnist(args.train_subset, cnn=False)
        return forms(mlp_layers, (28, 28), cli.mnist_mlp_model([128], seed), seed), x, y, 32
    if name == "cnn":
        x, y = load_mnist(args.train_subset, cnn=True)
        return forms(cnn_layers, (28, 28, 1), cli.mnist_cnn_model(False, seed), seed), x, y, 64
    if name == "imdb":
        x, y, vocab = load_imdb(args.train_subset)
        seq = fn.Sequential([L.Input(shape=(IMDB_MAXLEN,))] + imdb_layers(vocab), seed=seed)
        return forms(lambda: imdb_layers(vocab), (IMDB_MAXLEN,), seq, seed), x, y, 32
    raise SystemExit(f"unknown job {name!r}: choose from mlp, cnn, imdb")


def run_job(name, args):
    models, x, y, batch = job(name, args)
    for m in models.values():
        m.compile(optimizer=fn.optim.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    times = {k: [] for k in models}
    for epoch in range(args.epochs):
        for form, m in models.items():
            h = m.fit(x, y, batch_size=batch, epochs=1, seed=args.seed + epoch, verbose=0)
            times[form].append(h.history["epoch_time"][0])
    ref = models["sequential"].get_weights()
    for form, m in models.items():
        same = all(np.array_equal(a, b) for a, b in zip(ref, m.get_weights()))
        if not same:
            raise SystemExit(f"{name}: the {form} model did not train like the Sequential one")
    base, base_min = statistics.median(times["sequential"]), min(times["sequential"])
    rows = []
    for form, t in times.items():
        med = statistics.median(t)
        rows.append((name, form, len(x), batch, med, min(t), max(t), med / base, min(t) / base_min))
    return rows


# ---- Python overhead per fn.ops call ------------------------------------------------

class OpChain(L.Layer):
    """k rounds of four elementwise fn.ops on its input, plus a learned scale."""

    def __init__(self, k, **kw):
        super().__init__(**kw)
        self.k = k

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        x = fn.ops.multiply(x, self.scale)
        for _ in range(self.k):
            x = fn.ops.tanh(fn.ops.add(fn.ops.multiply(x, 0.5), fn.ops.square(x)))
        return x


def _numpy_chain(x, s, k):
    """The same arithmetic in plain NumPy (forward and backward), for the baseline."""
    h = x * s
    saved = []
    for _ in range(k):
        a = h * 0.5
        q = np.square(h)
        t = np.tanh(a + q)
        saved.append((h, t))
        h = t
    g = np.ones_like(h)
    for hh, t in reversed(saved):
        g = g * (1 - t * t)
        g = g * 0.5 + g * (2 * hh)
    return (g * x).sum(axis=0)


def op_overhead(args):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * 50, 16)).astype(np.float32)
    y = rng.normal(size=(32 * 50, 16)).astype(np.float32)
    ks, per_step = (5, 25), {}
    for k in ks:
        inp = fn.Input(shape=(16,))
        m = fn.Model(inp, OpChain(k)(inp), seed=0)
        m.compile(optimizer="sgd", loss="mse")
        m.fit(x, y, batch_size=32, epochs=1, verbose=0)
        best = min(m.fit(x, y, batch_size=32, epochs=1, verbose=0).history["epoch_time"][0]
                   for _ in range(args.epochs + 2))
        per_step[k] = best / 50
    xb, s = x[:32], np.ones(16, np.float32)
    np_step = {}
    for k in ks:
        t0 = time.perf_counter()
        for _ in range(200):
            _numpy_chain(xb, s, k)
        np_step[k] = (time.perf_counter() - t0) / 200
    n_ops = (ks[1] - ks[0]) * 4
    slope = (per_step[ks[1]] - per_step[ks[0]]) / n_ops
    np_slope = (np_step[ks[1]] - np_step[ks[0]]) / n_ops
    print(f"train step with {ks[0] * 4 + 1} / {ks[1] * 4 + 1} fn.ops calls: "
          f"{per_step[ks[0]] * 1e6:.1f} / {per_step[ks[1]] * 1e6:.1f} us")
    print(f"per op call (forward + backward): {slope * 1e6:.2f} us, of which the NumPy "
          f"arithmetic itself {np_slope * 1e6:.2f} us: Python overhead "
          f"{(slope - np_slope) * 1e6:.2f} us per op call per step")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default="mlp,cnn,imdb")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=None, help="first N training samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--op-overhead", action="store_true")
    args = p.parse_args(argv)
    fn.set_num_threads(args.threads)
    info = fn.build_info()
    print(f"fastnn {info['version'] or '(source tree)'}  isa {info['isa']}  threads "
          f"{info['num_threads']}  epochs {args.epochs} (interleaved)")
    if args.op_overhead:
        op_overhead(args)
        return 0
    rows = []
    for name in args.jobs.split(","):
        rows += run_job(name.strip(), args)
        for r in rows[-3:]:
            print(f"  {r[0]:5s} {r[1]:11s} median {r[4]:.3f} s/epoch "
                  f"(min {r[5]:.3f}, max {r[6]:.3f})  x{r[7]:.3f} of Sequential (min: x{r[8]:.3f})",
                  flush=True)
    if args.markdown:
        print("\n| job | form | samples | batch | s/epoch (median) | min | max | median / Sequential "
              "| min / Sequential |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]} | {r[4]:.3f} | {r[5]:.3f} | "
                  f"{r[6]:.3f} | {r[7]:.3f} | {r[8]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
