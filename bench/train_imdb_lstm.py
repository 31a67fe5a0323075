"""IMDB bidirectional LSTM (the Keras recipe): fastnn's training step vs the same model in
PyTorch, side by side in one run.

    python bench/train_imdb_lstm.py [--steps 40] [--rounds 3] [--threads 2]
                                    [--impl fastnn,torch]

Model (both): Embedding(20000, 128) -> Bidirectional(LSTM(64, return_sequences=True))
-> Bidirectional(LSTM(64)) -> Dense(1, sigmoid), binary cross-entropy, Adam(1e-3),
batch 32, reviews cut/padded to 200 tokens (fastnn.text.Tokenizer on the training texts).
torch: nn.Embedding, two nn.LSTM(bidirectional=True, batch_first=True), nn.Linear on the
two final hidden states, BCEWithLogitsLoss. Each round trains --steps batches (the same
token ids for both) with each implementation in turn; the table gives the median time
per step over the rounds, the epoch time it implies (782 steps of 32 of the 25,000
reviews) and the ratio fastnn / torch. A whole fastnn epoch with test accuracy is
``python -m fastnn train imdb-lstm``.

Data: $FASTNN_DATA/imdb (or the cache).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from train_imdb import prepare

STEPS_PER_EPOCH = (25000 + 31) // 32


def fastnn_trainer(vocab, maxlen, threads):
    import fastnn as fn

    fn.set_num_threads(threads)
    L = fn.layers
    model = fn.Sequential([L.Embedding(vocab, 128, input_shape=(maxlen,)),
                           L.Bidirectional(L.LSTM(64, return_sequences=True)),
                           L.Bidirectional(L.LSTM(64)),
                           L.Dense(1, activation="sigmoid")], seed=0)
    model.compile(optimizer=fn.optim.Adam(1e-3), loss="binary_crossentropy")

    def train(x, y):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    return train


def torch_trainer(vocab, maxlen, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class BiLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(vocab, 128)
            self.l1 = torch.nn.LSTM(128, 64, batch_first=True, bidirectional=True)
            self.l2 = torch.nn.LSTM(128, 64, batch_first=True, bidirectional=True)
            self.out = torch.nn.Linear(128, 1)

        def forward(self, ids):
            h, _ = self.l1(self.emb(ids))
            _, (hn, _) = self.l2(h)
            return self.out(torch.cat([hn[0], hn[1]], dim=1)).squeeze(1)

    model = BiLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def train(x, y):
        xs, ys = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.float32))
        for i in range(0, len(x), 32):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i:i + 32]), ys[i:i + 32])
            loss.backward()
            opt.step()
    return train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40, help="batches per implementation per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--impl", default="fastnn,torch")
    p.add_argument("--data", default=None)
    args = p.parse_args(argv)
    (x, y), _, vocab = prepare(200, 20000, args.data)
    n = args.steps * 32
    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    makers = {"fastnn": fastnn_trainer, "torch": torch_trainer}
    trainers = {}
    for name in impls:
        try:
            trainers[name] = makers[name](vocab, 200, args.threads)
        except ImportError:
            print(f"{name}: not importable, skipped")
    for tr in trainers.values():  # warm-up: buffers, packing, thread pools
        tr(x[:64], y[:64])
    times = {name: [] for name in trainers}
    for r in range(args.rounds):
        sl = slice((r * n) % (len(x) - n), (r * n) % (len(x) - n) + n)
        for name, tr in trainers.items():
            t = time.perf_counter()
            tr(x[sl], y[sl])
            times[name].append((time.perf_counter() - t) / args.steps)
    print(f"threads {args.threads}, batch 32, {args.steps} steps x {args.rounds} rounds")
    print("| impl | ms/step (median) | min | epoch (782 steps) |")
    print("|---|---|---|---|")
    med = {k: float(np.median(v)) for k, v in times.items()}
    for name, v in times.items():
        print(f"| {name} | {1e3 * med[name]:.1f} | {1e3 * min(v):.1f} | "
              f"{med[name] * STEPS_PER_EPOCH:.0f} s |")
    if "fastnn" in med and "torch" in med:
        print(f"fastnn / torch: {med['fastnn'] / med['torch']:.3f} (median step)")


if __name__ == "__main__":
    main()
