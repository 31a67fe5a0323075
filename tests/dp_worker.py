"""Trains a small model under fastnn.distribute; started by test_distributed.py, alone or
by mpiexec. Writes OUT.<rank>.npz: the weights, the optimizer state and the history."""
import argparse
import os
import sys

import numpy as np

import fastnn as fn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--shards", type=int, default=0, help="0: no distribution (plain fit)")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--batch", type=int, default=36)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--sync-bn", action="store_true", help="BatchNormalization(synchronized=True)")
    p.add_argument("--no-dropout", action="store_true")
    args = p.parse_args()
    if args.shards:
        fn.distribute.set_distribution(fn.distribute.DataParallel(num_shards=args.shards))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 12)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    xv, yv = x[:50], y[:50]
    model = fn.Sequential([fn.layers.Dense(16, activation="relu", input_shape=(12,)),
                           fn.layers.BatchNormalization(synchronized=args.sync_bn),
                           fn.layers.Dropout(0.0 if args.no_dropout else 0.25),
                           fn.layers.Dense(2)], seed=1)
    model.compile(optimizer=fn.optim.Adam(1e-2),
                  loss=fn.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    callbacks = []
    if args.checkpoint:
        callbacks.append(fn.callbacks.ModelCheckpoint(args.checkpoint))

    class Fail(fn.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if fn.distribute.rank() == args.fail_rank and batch == 2:
                raise RuntimeError("a failure on purpose")

    if args.fail_rank >= 0:
        callbacks.append(Fail())
    hist = model.fit(x, y, batch_size=args.batch, epochs=args.epochs, seed=3, verbose=0,
                     validation_data=(xv, yv), callbacks=callbacks)
    logs = {k: np.array(v, np.float64) for k, v in hist.history.items() if k != "epoch_time"}
    opt = {f"opt.{k}": v for k, v in model.optimizer.state().items()}
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(f"{args.out}.{fn.distribute.rank()}.npz", size=fn.distribute.size(),
             **weights, **opt, **{f"log.{k}": v for k, v in logs.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
