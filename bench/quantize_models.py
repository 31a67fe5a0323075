"""Int8 quantization of the seed models on the real data: test accuracy of the float
model and of its dynamic and static int8 copies, and the sizes of their files.

    FASTNN_DATA=/path/to/data python bench/quantize_models.py [--models mlp,cnn,imdb]
        [--epochs-mlp 5] [--epochs-cnn 3] [--epochs-imdb 2] [--calibration 1000] [--markdown]
    python bench/quantize_models.py --models imdb-lstm,imdb-gru [--rnn-units 32]
        [--rnn-embed 32] [--rnn-maxlen 200] [--rnn-vocab 10000] [--epochs-rnn 2]

imdb-lstm is ``python -m fastnn train imdb-lstm``'s model (Embedding, Bidirectional(LSTM,
return_sequences), Bidirectional(LSTM), Dense(2, softmax)), by default at smaller sizes
than the command's (units 64, embed 128, vocabulary 20000) to train in minutes on two
cores; imdb-gru is Embedding, Bidirectional(GRU) (reset_after, Keras's default), Dense.

Each model is trained as ``python -m fastnn train`` trains it (Adam 1e-3, the CLI's
batch sizes, seed 0), saved, then quantized: dynamic, and static from the first
--calibration training inputs (min-max and 99.99th percentile). Speed is in
bench/test_onnx_bench.py and bench/test_quant_bench.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types

import numpy as np

import fastnn as fn
from fastnn import cli


def _mnist(kind):
    (x, y), (xt, yt) = fn.datasets.mnist.load_data()
    x, xt = x / np.float32(255.0), xt / np.float32(255.0)
    if kind == "cnn":
        x, xt = x.reshape(-1, 28, 28, 1), xt.reshape(-1, 28, 28, 1)
    return (x, y), (xt, yt)


def _models(a):
    if "mlp" in a.models:
        yield "MNIST MLP 784-128-10", cli.mnist_mlp_model([128], seed=0), _mnist("mlp"), a.epochs_mlp, 32
    if "cnn" in a.models:
        yield "MNIST CNN", cli.mnist_cnn_model(seed=0), _mnist("cnn"), a.epochs_cnn, 64
    if "imdb" in a.models.split(","):
        args = types.SimpleNamespace(data=None, vocab=10000, maxlen=80, embed_dim=32, heads=2,
                                     key_dim=0, ff_dim=32, blocks=1, dropout=0.2,
                                     positional="learned", no_mask=False, norm_first=False,
                                     seed=0)
        model, train, test = cli._imdb_transformer(args)
        yield "IMDB transformer (C=32, T=80)", model, (train, test), a.epochs_imdb, 32
    for kind in ("imdb-lstm", "imdb-gru"):
        if kind not in a.models.split(","):
            continue
        args = types.SimpleNamespace(data=None, vocab=a.rnn_vocab, maxlen=a.rnn_maxlen,
                                     embed_dim=a.rnn_embed, units=a.rnn_units, seed=0)
        if kind == "imdb-lstm":
            model, train, test = cli._imdb_lstm(args)
            name = f"IMDB BiLSTM x2 (U={a.rnn_units}, T={a.rnn_maxlen})"
        else:
            L = fn.layers
            tok, train, test = cli._imdb_data(args)
            model = fn.Sequential([L.Embedding(tok.vocabulary_size, a.rnn_embed,
                                               input_shape=(a.rnn_maxlen,)),
                                   L.Bidirectional(L.GRU(a.rnn_units)),
                                   L.Dense(2, activation="softmax")], seed=0)
            name = f"IMDB BiGRU (U={a.rnn_units}, T={a.rnn_maxlen})"
        yield name, model, (train, test), a.epochs_rnn, 32


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,cnn,imdb")
    p.add_argument("--epochs-mlp", type=int, default=5)
    p.add_argument("--epochs-cnn", type=int, default=3)
    p.add_argument("--epochs-imdb", type=int, default=2)
    p.add_argument("--epochs-rnn", type=int, default=2)
    p.add_argument("--rnn-units", type=int, default=32)
    p.add_argument("--rnn-embed", type=int, default=32)
    p.add_argument("--rnn-maxlen", type=int, default=200)
    p.add_argument("--rnn-vocab", type=int, default=10000)
    p.add_argument("--calibration", type=int, default=1000)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    rows = []
    tmp = tempfile.mkdtemp()
    for name, model, ((x, y), (xt, yt)), epochs, batch in _models(a):
        y, yt = np.asarray(y, np.int32), np.asarray(yt, np.int32)
        t0 = time.perf_counter()
        model.compile(optimizer=fn.optim.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=batch, epochs=epochs, seed=0, verbose=0)
        print(f"{name}: trained {epochs} epochs in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        fpath = os.path.join(tmp, "float.fastnn")
        model.save(fpath, include_optimizer=False)  # weights only, as the int8 files
        acc = {"float32": model.evaluate(xt, yt, verbose=0)[1]}
        size = {"float32": os.path.getsize(fpath)}
        cal = x[:a.calibration]
        variants = {"int8 dynamic": dict(mode="dynamic"),
                    "int8 static (min-max)": dict(mode="static", calibration_data=cal),
                    "int8 static (percentile)": dict(mode="static", calibration_data=cal,
                                                     method="percentile")}
        for label, kw in variants.items():
            q = fn.quantization.quantize(model, **kw)
            qpath = os.path.join(tmp, "q.fastnn")
            q.save(qpath)
            acc[label] = fn.models.load_model(qpath).evaluate(xt, yt, verbose=0)[1]
            size[label] = os.path.getsize(qpath)
        rows.append((name, acc, size))
    if a.markdown:
        print("| model | variant | test accuracy | change (points) | file bytes | / float |")
        print("|---|---|---:|---:|---:|---:|")
        for name, acc, size in rows:
            for label in acc:
                d = 100 * (acc[label] - acc["float32"])
                print(f"| {name} | {label} | {acc[label]:.4f} | {d:+.2f} | {size[label]:,} | "
                      f"{size[label] / size['float32']:.3f} |")
    else:
        for name, acc, size in rows:
            print(name, {k: round(v, 4) for k, v in acc.items()}, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
