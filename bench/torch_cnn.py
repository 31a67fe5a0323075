"""The same MNIST CNNs trained with PyTorch (CPU), the PyTorch baseline in
bench/train_mnist.py (``--model cnn`` / ``--model cnn-small``).

Model and training match bench/numpy_cnn.py and the fastnn Keras-style model:

- ``cnn``: Conv2d(1→32, 3) → ReLU → MaxPool2d(2) → Conv2d(32→64, 3) → ReLU → MaxPool2d(2)
  → Conv2d(64→64, 3) → ReLU → Flatten → Linear(576→64) → ReLU → Linear(64→10);
  ``cnn-small``: the first two conv blocks → Flatten → Linear(1600→10). 'valid'
  convolutions with stride 1, float32.
- Tensors are NCHW as torch wants them: the images are converted to (N, 1, 28, 28) once,
  up front, outside the timed epochs (with one channel it is the same memory as NHWC).
  By default model and data use ``torch.channels_last`` memory format (NHWC in
  memory); in short runs on the development machine it took 18-42% less time per epoch
  than contiguous NCHW (``--nchw``, kept for comparison). Torch flattens in (C, H, W)
  order where Keras flattens (H, W, C): a fixed permutation of the first Dense layer's
  inputs, which changes nothing in the model's capacity or the distribution of its
  Glorot init.
- Glorot-uniform weights (``xavier_uniform_``: fan_in = C·KH·KW, fan_out = OC·KH·KW for
  convolutions, as Keras) and zero biases, instead of torch's default init.
- Loss, optimizer and the training loop are torch_mlp.py's (imported, not copied):
  ``nn.CrossEntropyLoss`` on the logits, ``Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-7,
  fused=True)``, a seeded permutation per epoch, batches gathered with ``index_select``,
  training loss and accuracy accumulated every step.
- ``torch.set_num_threads(threads)``; train_mnist.py runs 1 and 2 threads and reports the
  faster.

Run alone:  FASTNN_DATA=... python bench/torch_cnn.py --model cnn --threads 2 --epochs 1
"""
from __future__ import annotations

import time

from torch_mlp import evaluate, fit, make_optimizer

MODELS = ("cnn", "cnn-small")


def build_model(model="cnn", seed=0):
    import torch
    from torch import nn

    if model not in MODELS:
        raise ValueError(f"unknown CNN {model!r}; choose from {list(MODELS)}")
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2)]
    if model == "cnn":
        layers += [nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
                   nn.Linear(3 * 3 * 64, 64), nn.ReLU(), nn.Linear(64, 10)]
    else:
        layers += [nn.Flatten(), nn.Linear(5 * 5 * 64, 10)]
    for m in layers:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def images_nchw(x, channels_last=True):
    """(N, 28, 28) / (N, 784) / (N, 28, 28, 1) float32 images as a (N, 1, 28, 28) tensor
    (channels_last memory format unless asked otherwise; with C = 1 both are one copy of
    the same bytes)."""
    import numpy as np
    import torch

    x = np.ascontiguousarray(x, dtype=np.float32)
    t = torch.from_numpy(x.reshape(len(x), 1, 28, 28))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


def train(model="cnn", epochs=1, batch_size=64, threads=2, seed=0, data=None, fused=True,
          channels_last=True, verbose=False, lr=1e-3, schedule="constant"):
    """Train on MNIST and return a result dict (what bench/train_mnist.py prints)."""
    import torch

    import _common

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    (xtr, ytr), (xte, yte) = data if data is not None else _common.mnist_float32(flatten=False)
    xtr, xte = images_nchw(xtr, channels_last), images_nchw(xte, channels_last)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    load_s = time.perf_counter() - t0
    net = build_model(model, seed)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    steps = _common.total_steps(int(xtr.shape[0]), batch_size, epochs)
    opt = make_optimizer(net, lr=_common.lr_at(lr, schedule, steps), fused=fused)
    hist = fit(net, opt, xtr, ytr, epochs, batch_size, seed, verbose)
    test = evaluate(net, xte, yte)
    return _common.result_record(
        "torch", torch.__version__, torch.get_num_threads(), hist, test,
        n_train=int(xtr.shape[0]), num_params=sum(p.numel() for p in net.parameters()),
        load_s=load_s, adam="fused" if opt.defaults.get("fused") else "default",
        memory_format="channels_last" if channels_last else "nchw")


def main(argv=None):
    import _common

    def run(a, verbose):
        return train(a.model, a.epochs, a.batch_size, a.threads, a.seed, fused=not a.no_fused,
                     channels_last=not a.nchw, verbose=verbose, lr=a.lr, schedule=a.schedule)

    ap = _common.trainer_parser(__doc__, model="cnn", epochs=1, batch_size=64, models=MODELS)
    ap.add_argument("--no-fused", action="store_true", help="torch's default (unfused) Adam")
    ap.add_argument("--nchw", action="store_true",
                    help="contiguous NCHW tensors instead of channels_last memory format")
    _common.run_trainer_main(ap, argv, run,
                             label="torch {version}, {threads} threads, {adam} Adam, "
                                   "{memory_format}")


if __name__ == "__main__":
    main()
