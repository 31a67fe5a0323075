"""The same MLP trained with PyTorch (CPU), the PyTorch baseline in bench/train_mnist.py.

Model and training match bench/numpy_mlp.py and the fastnn Keras-style model:

- ``nn.Sequential(Linear, ReLU, ..., Linear)`` with Glorot-uniform weights and zero biases
  (Keras's Dense defaults; torch's own default init differs), float32.
- ``nn.CrossEntropyLoss`` on the logits (the fused log-softmax + NLL; the softmax of the
  Keras model's output layer is folded into the loss, as fastnn folds it too).
- ``torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-7)``: Keras's eps value. Torch
  adds eps to the bias-corrected √v̂ where Keras adds it to √v; with eps this small the
  difference does not show in accuracy or time. ``fused=True`` (one C++ kernel for the
  whole step; the fastest CPU Adam torch ships) unless ``fused=False`` is asked for.
- Same data pipeline: the training set as one float32 tensor, a seeded random
  permutation per epoch, each batch gathered with ``index_select`` from it; training loss
  and accuracy accumulated every step (as Keras's ``fit(metrics=["accuracy"])`` does).
- ``torch.set_num_threads(threads)``; train_mnist.py runs 1 and 2 threads and reports the
  faster.

Run alone:  FASTNN_DATA=... python bench/torch_mlp.py --threads 2 --epochs 5
"""
from __future__ import annotations

import time


def build_model(sizes, seed=0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(i, o)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_optimizer(model, lr=1e-3, eps=1e-7, fused=True):
    """Adam with Keras's eps; lr a number or a function of the 0-based step (then the
    optimizer carries a LambdaLR scheduler as .lr_scheduler, stepped by fit)."""
    import torch

    lr_fn = lr if callable(lr) else None
    kw = dict(lr=lr_fn(0) if lr_fn else lr, betas=(0.9, 0.999), eps=eps)
    opt = _adam(model, kw, fused)
    base = kw["lr"]
    opt.lr_scheduler = (torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_fn(k) / base)
                        if lr_fn else None)
    return opt


def _adam(model, kw, fused):
    import torch

    if fused:
        try:
            return torch.optim.Adam(model.parameters(), fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):
            pass  # an old torch without CPU fused Adam: fall back to the default
    return torch.optim.Adam(model.parameters(), **kw)


def fit(model, opt, x, y, epochs, batch_size, seed=0, verbose=False):
    """x: (N, in) float32 tensor, y: (N,) int64 tensor. Returns per-epoch records."""
    import torch

    import _common

    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    N = x.shape[0]
    history = []
    model.train()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(N, generator=gen)
        loss_sum, correct = 0.0, 0
        for s in range(0, N, batch_size):
            idx = perm[s:s + batch_size]
            xb = x.index_select(0, idx)
            yb = y.index_select(0, idx)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if opt.lr_scheduler is not None:
                opt.lr_scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        dt = time.perf_counter() - t0
        _common.end_epoch(history, epoch, epochs, dt, loss_sum, correct, N, verbose)
    return history


def evaluate(model, x, y, batch_size=1000):
    import torch

    model.eval()
    loss, correct = 0.0, 0
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            logits = model(x[s:s + batch_size])
            yb = y[s:s + batch_size]
            loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return loss / x.shape[0], correct / x.shape[0]


def train(sizes=(784, 128, 10), epochs=5, batch_size=32, threads=2, seed=0, data=None,
          fused=True, verbose=False, lr=1e-3, schedule="constant"):
    """Train on MNIST and return a result dict (what bench/train_mnist.py prints)."""
    import torch

    import _common

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = data if data is not None else _common.mnist_float32()
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    load_s = time.perf_counter() - t0
    model = build_model(sizes, seed)
    steps = _common.total_steps(int(xtr.shape[0]), batch_size, epochs)
    opt = make_optimizer(model, lr=_common.lr_at(lr, schedule, steps), fused=fused)
    hist = fit(model, opt, xtr, ytr, epochs, batch_size, seed, verbose)
    test = evaluate(model, xte, yte)
    return _common.result_record(
        "torch", torch.__version__, torch.get_num_threads(), hist, test,
        n_train=int(xtr.shape[0]), num_params=sum(p.numel() for p in model.parameters()),
        load_s=load_s, adam="fused" if opt.defaults.get("fused") else "default")


def main(argv=None):
    import _common

    def run(a, verbose):
        return train(_common.parse_sizes(a.model), a.epochs, a.batch_size, a.threads, a.seed,
                     fused=not a.no_fused, verbose=verbose, lr=a.lr, schedule=a.schedule)

    ap = _common.trainer_parser(__doc__, model="784-128-10", epochs=5, batch_size=32)
    ap.add_argument("--no-fused", action="store_true", help="torch's default (unfused) Adam")
    _common.run_trainer_main(ap, argv, run, label="torch {version}, {threads} threads, {adam} Adam")


if __name__ == "__main__":
    main()
