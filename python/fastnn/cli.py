"""Command line: ``python -m fastnn train mnist-mlp [--epochs N] [--batch-size B] [--threads T]``."""
from __future__ import annotations

import argparse
import sys
import time


def _mnist_mlp(args):
    import fastnn as fn

    (x_train, y_train), (x_test, y_test) = fn.datasets.mnist.load_data(args.data)
    x_train, x_test = x_train / 255.0, x_test / 255.0
    hidden = [int(h) for h in args.hidden.split(",") if h]
    model = fn.Sequential([fn.layers.Flatten(input_shape=(28, 28))]
                          + [fn.layers.Dense(h, activation="relu") for h in hidden]
                          + [fn.layers.Dense(10, activation="softmax")], seed=args.seed)
    model.compile(optimizer=fn.optim.Adam(learning_rate=args.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, (x_train, y_train), (x_test, y_test)


def _mnist_cnn(args):
    import fastnn as fn

    (x_train, y_train), (x_test, y_test) = fn.datasets.mnist.load_data(args.data)
    x_train = (x_train / 255.0).reshape(-1, 28, 28, 1)
    x_test = (x_test / 255.0).reshape(-1, 28, 28, 1)
    L = fn.layers
    if args.small:
        body = [L.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten()]
    else:
        body = [L.Conv2D(32, 3, activation="relu", input_shape=(28, 28, 1)), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.Flatten(), L.Dense(64, activation="relu")]
    model = fn.Sequential(body + [L.Dense(10, activation="softmax")], seed=args.seed)
    model.compile(optimizer=fn.optim.Adam(learning_rate=args.lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, (x_train, y_train), (x_test, y_test)


MODELS = {"mnist-mlp": _mnist_mlp, "mnist-cnn": _mnist_cnn}


def train(args) -> int:
    import numpy as np

    import fastnn as fn

    if args.threads:
        fn.set_num_threads(args.threads)
    model, (x, y), (xt, yt) = MODELS[args.model](args)
    model.summary()
    hist = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                     validation_data=(xt, yt) if args.validate else None,
                     verbose=args.verbose)
    t = time.perf_counter()
    loss, acc = model.evaluate(xt, yt, batch_size=256, verbose=0)
    eval_s = time.perf_counter() - t
    times = hist.history["epoch_time"]
    per_epoch = float(np.median(times))
    info = fn.build_info()
    print(f"model: {args.model}  threads: {info['num_threads']}  isa: {info['isa']}  "
          f"batch: {args.batch_size}  epochs: {len(times)}")
    print(f"test accuracy: {acc:.4f}  test loss: {loss:.4f}")
    print(f"seconds per epoch: {per_epoch:.3f} (median; first {times[0]:.3f})  "
          f"samples/s: {len(x) / per_epoch:,.0f}  evaluate: {eval_s:.3f} s")
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastnn", description="fastnn command line")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a built-in model on its dataset")
    t.add_argument("model", choices=sorted(MODELS))
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=None,
                   help="default: 32 for mnist-mlp, 64 for mnist-cnn")
    t.add_argument("--threads", type=int, default=0, help="0 = OpenMP default")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--hidden", default="128", help="mnist-mlp hidden layer sizes, e.g. 128,64")
    t.add_argument("--small", action="store_true", help="mnist-cnn: the smaller CNN (two conv layers)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", default=None, help="dataset directory (default: $FASTNN_DATA/<name> or the cache)")
    t.add_argument("--validate", action="store_true", help="evaluate on the test set after every epoch")
    t.add_argument("--save", default=None, help="save the trained model to this file")
    t.add_argument("--verbose", type=int, default=1)
    args = p.parse_args(argv)
    if args.command == "train":
        if args.batch_size is None:
            args.batch_size = 64 if args.model == "mnist-cnn" else 32
        return train(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

