"""IMDB sentiment transformer: fastnn vs the same model in PyTorch (when importable).

    python bench/train_imdb.py [--epochs 2] [--maxlen 80] [--embed-dim 32] [--ff-dim 32]
                               [--blocks 1] [--threads 2] [--impl fastnn,torch]

Both get the same token ids (fastnn.text.Tokenizer fitted on the training texts,
pad_sequences with pre-padding and pre-truncation), the same architecture (token +
learned position embedding, post-norm transformer encoder block(s) with a padding mask,
masked average pooling, dropout, Dense(20, relu), dropout, Dense(2)), Adam(1e-3), batch 32,
the same epochs and thread count. Prints one table row per implementation: median
seconds per training epoch, test accuracy after each epoch, and the final one.
Data: $FASTNN_DATA/imdb (or the cache).

Measured on the 2-core development machine (shared with other jobs, so times are noisy;
OMP_WAIT_POLICY=passive, see below), fastnn vs torch 2.13.0 in one run:

    OMP_WAIT_POLICY=passive python bench/train_imdb.py --epochs 2 --dropout 0.1
    | fastnn  |  4.49 s/epoch | test acc 0.8330 0.8298 |
    | torch   | 18.43 s/epoch | test acc 0.7697 0.8102 |

Longer configuration (>= 87%): --maxlen 400 --vocab 20000 --dropout 0.1 reached 0.8732
after one epoch (25-65 s/epoch with 2 threads, depending on the machine's load); later
epochs overfit (0.8516, 0.8672). --embed-dim 64 --ff-dim 64 did not help (0.8658).

On a machine busy with other processes, OpenMP's default spin-waiting makes 2-thread runs
10-30x slower (each parallel region waits for a descheduled thread); set
OMP_WAIT_POLICY=passive there, or use --threads 1.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def prepare(maxlen, vocab, data=None):
    import fastnn as fn
    from fastnn.data import pad_sequences
    from fastnn.text import Tokenizer

    (train, y_train), (test, y_test) = fn.datasets.imdb.load_texts(data)
    tok = Tokenizer(num_words=vocab)
    words = [tok.tokenize(t) for t in train]
    tok.fit_on_texts(words)
    x_train = pad_sequences(tok.texts_to_sequences(words), maxlen=maxlen)
    x_test = pad_sequences(tok.texts_to_sequences(test), maxlen=maxlen)
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64)), tok.vocabulary_size


def run_fastnn(args, data, vocab):
    import fastnn as fn

    L = fn.layers
    (x, y), (xt, yt) = data
    c = args.embed_dim
    model = fn.Sequential(
        [L.PositionalEmbedding(args.maxlen, c, input_dim=vocab, mask_zero=True,
                               input_shape=(args.maxlen,))]
        + [L.TransformerEncoder(args.heads, c // args.heads, args.ff_dim, dropout=args.dropout)
           for _ in range(args.blocks)]
        + [L.GlobalAveragePooling1D(), L.Dropout(args.dropout), L.Dense(20, activation="relu"),
           L.Dropout(args.dropout), L.Dense(2, activation="softmax")], seed=args.seed)
    model.compile(optimizer=fn.optim.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    times, accs = [], []
    for epoch in range(args.epochs):
        h = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0,
                      seed=args.seed + epoch)
        times.append(h.history["epoch_time"][0])
        accs.append(model.evaluate(xt, yt, batch_size=256, verbose=0)[1])
        print(f"  fastnn epoch {epoch + 1}: {times[-1]:.2f} s, test acc {accs[-1]:.4f}", flush=True)
    return times, accs


def run_torch(args, data, vocab):
    import torch
    from torch import nn

    import torch_transformer

    torch.manual_seed(args.seed)
    (x, y), (xt, yt) = data
    net = torch_transformer.build_model(vocab, args.maxlen, args.embed_dim, args.heads,
                                        args.ff_dim, args.blocks, args.dropout)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    lossf = nn.CrossEntropyLoss()
    xtr, ytr = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y)
    xte, yte = torch.from_numpy(xt.astype(np.int64)), torch.from_numpy(yt)
    g = torch.Generator().manual_seed(args.seed)
    times, accs = [], []
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g)
        t0 = time.perf_counter()
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = lossf(net(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(xte[i:i + 256]).argmax(1) == yte[i:i + 256]).sum())
                          for i in range(0, len(xte), 256))
        accs.append(correct / len(xte))
        print(f"  torch  epoch {epoch + 1}: {times[-1]:.2f} s, test acc {accs[-1]:.4f}", flush=True)
    return times, accs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--maxlen", type=int, default=80)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--ff-dim", type=int, default=32)
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--impl", default="fastnn,torch")
    p.add_argument("--data", default=None)
    args = p.parse_args(argv)

    import fastnn as fn

    fn.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train, test, vocab = prepare(args.maxlen, args.vocab, args.data)
    print(f"data: {len(train[0])} train / {len(test[0])} test, vocab {vocab}, maxlen "
          f"{args.maxlen} ({time.perf_counter() - t0:.1f} s)  threads {args.threads}  "
          f"build: {fn.build_info()['isa']}", flush=True)
    rows = []
    for impl in args.impl.split(","):
        if impl == "torch":
            try:
                import torch
            except ImportError:
                print("torch not importable: skipped")
                continue
            torch.set_num_threads(args.threads)
            times, accs = run_torch(args, (train, test), vocab)
            name = f"torch {torch.__version__}"
        else:
            times, accs = run_fastnn(args, (train, test), vocab)
            name = f"fastnn {fn.__version__}"
        rows.append((name, float(np.median(times)), accs))
    cfg = (f"maxlen {args.maxlen}, embed {args.embed_dim}, heads {args.heads}, ff "
           f"{args.ff_dim}, blocks {args.blocks}, batch {args.batch_size}, {args.epochs} epochs")
    print(f"\n{cfg}")
    print(f"| {'implementation':<22} | s/epoch (median) | test acc per epoch | final |")
    print(f"|{'-' * 24}|------------------|--------------------|-------|")
    for name, sec, accs in rows:
        per = " ".join(f"{a:.4f}" for a in accs)
        print(f"| {name:<22} | {sec:16.2f} | {per:<18} | {accs[-1]:.4f} |")


if __name__ == "__main__":
    main()
