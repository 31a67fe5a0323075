"""Command line.

``python -m fastnn train mnist-mlp [--hidden 128,64] [--epochs N] [--batch-size B] [--threads T]``
(every ``train`` also takes ``--lr`` and ``--schedule constant|cosine``)
``python -m fastnn train mnist-cnn [--small] [--epochs N] [--batch-size B] [--threads T]``
``python -m fastnn train imdb-transformer [--epochs N] [--maxlen 80] [--blocks 1] [--save DIR]``
``python -m fastnn train imdb-cnn1d [--epochs N] [--maxlen 400] [--filters 128] [--save DIR]``
``python -m fastnn train imdb-lstm [--epochs N] [--maxlen 200] [--units 64] [--save DIR]``
``python -m fastnn predict imdb MODEL_DIR "some review text" [...]``
(the imdb options --maxlen, --vocab and --embed-dim default per model; see --help)
"""
from __future__ import annotations

import argparse
import sys
import time


def mnist_mlp_model(hidden, seed=None, classes=10):
    """Flatten (28, 28) -> Dense(h, relu) for h in hidden -> Dense(classes, softmax)."""
    import fastnn as fn

    L = fn.layers
    return fn.Sequential([L.Flatten(input_shape=(28, 28))]
                         + [L.Dense(h, activation="relu") for h in hidden]
                         + [L.Dense(classes, activation="softmax")], seed=seed)


def mnist_cnn_model(small=False, seed=None):
    """The Keras MNIST CNN: Conv2D(32, 3) -> MaxPool(2) -> Conv2D(64, 3) -> MaxPool(2) ->
    [Conv2D(64, 3) -> Flatten -> Dense(64) | small: Flatten] -> Dense(10, softmax)."""
    import fastnn as fn

    L = fn.layers
    if small:
        body = [L.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten()]
    else:
        body = [L.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.Flatten(), L.Dense(64, activation="relu")]
    return fn.Sequential(body + [L.Dense(10, activation="softmax")], seed=seed)


def _mnist_mlp(args):
    import fastnn as fn

    (x_train, y_train), (x_test, y_test) = fn.datasets.mnist.load_data(args.data)
    x_train, x_test = x_train / 255.0, x_test / 255.0
    hidden = [int(h) for h in args.hidden.split(",") if h]
    return mnist_mlp_model(hidden, args.seed), (x_train, y_train), (x_test, y_test)


def _mnist_cnn(args):
    import fastnn as fn

    (x_train, y_train), (x_test, y_test) = fn.datasets.mnist.load_data(args.data)
    x_train = (x_train / 255.0).reshape(-1, 28, 28, 1)
    x_test = (x_test / 255.0).reshape(-1, 28, 28, 1)
    return mnist_cnn_model(args.small, args.seed), (x_train, y_train), (x_test, y_test)


def _imdb_data(args):
    """The IMDB reviews as id sequences (N, maxlen): the tokenizer (kept in args.tokenizer
    for --save) is fitted on the training texts only."""
    import numpy as np

    import fastnn as fn
    from fastnn.data import pad_sequences
    from fastnn.text import Tokenizer

    t0 = time.perf_counter()
    (train, y_train), (test, y_test) = fn.datasets.imdb.load_texts(args.data)
    tok = Tokenizer(num_words=args.vocab)
    train_words = [tok.tokenize(t) for t in train]
    tok.fit_on_texts(train_words)
    x_train = pad_sequences(tok.texts_to_sequences(train_words), maxlen=args.maxlen)
    x_test = pad_sequences(tok.texts_to_sequences(test), maxlen=args.maxlen)
    print(f"imdb: {len(x_train)} train / {len(x_test)} test reviews, vocabulary "
          f"{tok.vocabulary_size}, maxlen {args.maxlen} (prepared in "
          f"{time.perf_counter() - t0:.1f} s)")
    args.tokenizer = tok
    return tok, (x_train, np.asarray(y_train)), (x_test, np.asarray(y_test))


def _imdb_transformer(args):
    """Token + position embedding, transformer encoder block(s), masked average pooling,
    dropout, Dense(20, relu), Dense(2, softmax) (the Keras text-classification example,
    with a padding mask)."""
    import fastnn as fn

    L = fn.layers
    tok, train, test = _imdb_data(args)
    c = args.embed_dim
    layers = [L.PositionalEmbedding(args.maxlen, c, input_dim=tok.vocabulary_size,
                                    positional=args.positional, mask_zero=not args.no_mask,
                                    input_shape=(args.maxlen,))]
    layers += [L.TransformerEncoder(args.heads, args.key_dim or c // args.heads, args.ff_dim,
                                    dropout=args.dropout, norm_first=args.norm_first)
               for _ in range(args.blocks)]
    layers += [L.GlobalAveragePooling1D(), L.Dropout(args.dropout),
               L.Dense(20, activation="relu"), L.Dropout(args.dropout),
               L.Dense(2, activation="softmax")]
    return fn.Sequential(layers, seed=args.seed), train, test


def _imdb_cnn1d(args):
    """Embedding, dropout, Conv1D(filters, 5, relu), GlobalMaxPooling1D, Dense(64, relu),
    dropout, Dense(2, softmax): a 1-D convolutional review classifier (no padding mask:
    the max over time rarely picks the padding's response)."""
    import fastnn as fn

    L = fn.layers
    tok, train, test = _imdb_data(args)
    layers = [L.Embedding(tok.vocabulary_size, args.embed_dim, input_shape=(args.maxlen,)),
              L.Dropout(args.dropout),
              L.Conv1D(args.filters, 5, activation="relu"),
              L.GlobalMaxPooling1D(),
              L.Dense(64, activation="relu"), L.Dropout(args.dropout),
              L.Dense(2, activation="softmax")]
    return fn.Sequential(layers, seed=args.seed), train, test


def _imdb_lstm(args):
    """The Keras bidirectional-LSTM recipe: Embedding, Bidirectional(LSTM(units,
    return_sequences=True)), Bidirectional(LSTM(units)), Dense(2, softmax) (Keras's
    example ends in one sigmoid unit; two softmax units are the same model for the
    command's sparse cross-entropy)."""
    import fastnn as fn

    L = fn.layers
    tok, train, test = _imdb_data(args)
    layers = [L.Embedding(tok.vocabulary_size, args.embed_dim, input_shape=(args.maxlen,)),
              L.Bidirectional(L.LSTM(args.units, return_sequences=True)),
              L.Bidirectional(L.LSTM(args.units)),
              L.Dense(2, activation="softmax")]
    return fn.Sequential(layers, seed=args.seed), train, test


def _save_imdb(model, args):
    """DIR/model.fastnn and DIR/tokenizer.json, read back by ``predict imdb DIR``."""
    import os

    os.makedirs(args.save, exist_ok=True)
    model.save(os.path.join(args.save, "model.fastnn"))
    args.tokenizer.save(os.path.join(args.save, "tokenizer.json"))
    print(f"saved model and tokenizer to {args.save}")


MODELS = {"mnist-mlp": _mnist_mlp, "mnist-cnn": _mnist_cnn, "imdb-transformer": _imdb_transformer,
          "imdb-cnn1d": _imdb_cnn1d, "imdb-lstm": _imdb_lstm}
SAVERS = {m: _save_imdb for m in ("imdb-transformer", "imdb-cnn1d", "imdb-lstm")}  # two files
# defaults per model (imdb: later epochs overfit)
EPOCHS = {"mnist-mlp": 5, "mnist-cnn": 5, "imdb-transformer": 1, "imdb-cnn1d": 2,
          "imdb-lstm": 2}
BATCH = {"mnist-mlp": 32, "mnist-cnn": 64, "imdb-transformer": 32, "imdb-cnn1d": 32,
         "imdb-lstm": 32}
# the imdb models' text options: --maxlen, --vocab, --embed-dim
IMDB_DEFAULTS = {"imdb-transformer": {"maxlen": 80, "vocab": 10000, "embed_dim": 32},
                 "imdb-cnn1d": {"maxlen": 400, "vocab": 20000, "embed_dim": 128},
                 "imdb-lstm": {"maxlen": 200, "vocab": 20000, "embed_dim": 128}}


def predict(args) -> int:
    """Print the positive-review probability of each text with a model saved by
    ``train imdb-transformer|imdb-cnn1d|imdb-lstm --save DIR``."""
    import os

    import fastnn as fn
    from fastnn.data import pad_sequences
    from fastnn.text import Tokenizer

    model = fn.load_model(os.path.join(args.model_dir, "model.fastnn"))
    tok = Tokenizer.load(os.path.join(args.model_dir, "tokenizer.json"))
    maxlen = model.input_shape[0]
    x = pad_sequences(tok.texts_to_sequences(args.texts), maxlen=maxlen)
    out = model.predict(x)
    pos = out[:, 1] if out.shape[1] == 2 else out[:, 0]
    for p, text in zip(pos, args.texts):
        short = text if len(text) <= 60 else text[:57] + "..."
        print(f"{p:.4f}\t{short}")
    return 0


def train(args) -> int:
    import numpy as np

    import fastnn as fn

    if args.threads:
        fn.set_num_threads(args.threads)
    if args.distributed or fn.distribute.launched_by_mpi():
        fn.distribute.set_distribution(fn.distribute.DataParallel(num_shards=args.shards))
    writer = fn.distribute.is_writer()
    if args.epochs is None:
        args.epochs = EPOCHS[args.model]
    model, (x, y), (xt, yt) = MODELS[args.model](args)
    lr = args.lr
    if args.schedule == "cosine":  # down to 0 at the last step
        steps = args.epochs * ((len(x) + args.batch_size - 1) // args.batch_size)
        lr = fn.optim.schedules.CosineDecay(args.lr, steps)
    model.compile(optimizer=fn.optim.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if writer:
        model.summary()
    hist = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     validation_data=(xt, yt) if args.validate else None,
                     verbose=args.verbose)
    t = time.perf_counter()
    loss, acc = model.evaluate(xt, yt, batch_size=256, verbose=0)
    eval_s = time.perf_counter() - t
    times = hist.history["epoch_time"]
    per_epoch = float(np.median(times))
    if not writer:
        return 0
    info = fn.build_info()
    ranks = fn.distribute.size()
    print(f"model: {args.model}  threads: {info['num_threads']}  isa: {info['isa']}  "
          f"batch: {args.batch_size}  epochs: {len(times)}"
          + (f"  ranks: {ranks} (data parallel, {fn.distribute.distribution().num_shards} shards)"
             if fn.distribute.distribution() is not None else ""))
    print(f"test accuracy: {acc:.4f}  test loss: {loss:.4f}")
    print(f"seconds per epoch: {per_epoch:.3f} (median; first {times[0]:.3f})  "
          f"samples/s: {len(x) / per_epoch:,.0f}  evaluate: {eval_s:.3f} s")
    if args.save and args.model in SAVERS:
        SAVERS[args.model](model, args)
    elif args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnn", description="fastnn command line")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a built-in model on its dataset")
    t.add_argument("model", choices=sorted(MODELS))
    t.add_argument("--epochs", type=int, default=None,
                   help=f"default: {', '.join(f'{m} {e}' for m, e in EPOCHS.items())}")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"default: {', '.join(f'{m} {b}' for m, b in BATCH.items())}")
    t.add_argument("--threads", type=int, default=0, help="0 = OpenMP default")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: decay the learning rate every step along half a cosine, "
                        "to 0 at the end of training")
    t.add_argument("--hidden", default="128", help="mnist-mlp hidden layer sizes, e.g. 128,64")
    t.add_argument("--small", action="store_true", help="mnist-cnn: the smaller CNN (two conv layers)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", default=None, help="dataset directory (default: $FASTNN_DATA/<name> or the cache)")
    t.add_argument("--validate", action="store_true", help="evaluate on the test set after every epoch")
    t.add_argument("--save", default=None, help="save the trained model to this file")
    t.add_argument("--verbose", type=int, default=1)
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of an MPI job (on by itself under "
                        "mpirun); each rank gets cores/ranks threads unless --threads is given")
    t.add_argument("--shards", type=int, default=None,
                   help="--distributed: shards per global batch (default: the process count); "
                        "runs with the same shards give the same weights for any process count")
    g = t.add_argument_group("imdb-transformer, imdb-cnn1d and imdb-lstm")
    per_model = {k: ", ".join(f"{m} {d[k]}" for m, d in IMDB_DEFAULTS.items())
                 for k in ("maxlen", "vocab", "embed_dim")}
    g.add_argument("--maxlen", type=int, default=None,
                   help=f"tokens kept per review (the last ones); default: {per_model['maxlen']}")
    g.add_argument("--vocab", type=int, default=None,
                   help=f"vocabulary size (ids 0 and 1 reserved); default: {per_model['vocab']}")
    g.add_argument("--embed-dim", type=int, default=None,
                   help=f"default: {per_model['embed_dim']}")
    g.add_argument("--dropout", type=float, default=0.2)
    g = t.add_argument_group("imdb-transformer")
    g.add_argument("--heads", type=int, default=2)
    g.add_argument("--key-dim", type=int, default=0, help="head size; 0 = embed-dim / heads")
    g.add_argument("--ff-dim", type=int, default=32)
    g.add_argument("--blocks", type=int, default=1, help="transformer encoder blocks")
    g.add_argument("--positional", choices=["learned", "sinusoidal"], default="learned")
    g.add_argument("--norm-first", action="store_true", help="pre-norm encoder blocks")
    g.add_argument("--no-mask", action="store_true", help="do not mask padding")
    g = t.add_argument_group("imdb-cnn1d")
    g.add_argument("--filters", type=int, default=128, help="Conv1D filters (kernel size 5)")
    g = t.add_argument_group("imdb-lstm")
    g.add_argument("--units", type=int, default=64, help="LSTM units per direction")
    pr = sub.add_parser("predict", help="classify texts with a saved model")
    pr.add_argument("task", choices=["imdb"])
    pr.add_argument("model_dir", help="the folder given to train imdb-... --save")
    pr.add_argument("texts", nargs="+", help="review texts")
    args = p.parse_args(argv)
    if args.command == "train":
        if args.batch_size is None:
            args.batch_size = BATCH[args.model]
        for k, v in IMDB_DEFAULTS.get(args.model, {}).items():
            if getattr(args, k) is None:
                setattr(args, k, v)
        return train(args)
    if args.command == "predict":
        return predict(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

