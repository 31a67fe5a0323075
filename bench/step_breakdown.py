"""Where a training step's time goes: per layer (forward and backward), the loss, the
optimizer, and the rest (Python between the kernels: batching, the fit loop, metrics).

    FASTNN_DATA=/path/to/data python bench/step_breakdown.py [--job mlp|cnn|imdb]
        [--steps 300] [--threads 2]

The model is one of bench/train_graph.py's seed jobs (the Sequential form). Each step of
the model's plan is wrapped in a timer, as are the loss and the optimizer; the timers cost
about 0.3 us a call, which lands in the layers' rows. Times are per training step,
averaged over --steps steps after a warm-up of 20.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import fastnn as fn

import train_graph

_clock = time.perf_counter


class _Timed:
    """A plan step whose forward and backward add their time to a table row."""

    def __init__(self, step, row, table):
        self.step, self.o, self.row, self.table = step, step.o, row, table

    def forward(self, vals, masks, training):
        t = _clock()
        self.step.forward(vals, masks, training)
        self.table[self.row][0] += _clock() - t

    def backward(self, grads):
        t = _clock()
        self.step.backward(grads)
        self.table[self.row][1] += _clock() - t


def _row_name(step):
    layer = step.layer
    name = getattr(layer, "name", None) or type(layer).__name__
    return f"{name} ({type(layer).__name__})"


def instrument(model, table):
    """Wrap the training plan's steps, the losses and the optimizer in timers."""
    plan = model._plan_train
    wrapped = {id(st): _Timed(st, _row_name(st), table) for st in plan.steps}
    plan.steps = [wrapped[id(st)] for st in plan.steps]
    plan.backward_steps = [wrapped[id(st)] for st in plan.backward_steps]
    plan.direct = None  # the plan's shortcut that calls layers directly would skip the timers
    for loss in model._losses:
        inner = loss.forward_backward

        def timed_loss(*a, _f=inner, **k):
            t = _clock()
            r = _f(*a, **k)
            table["loss (forward + backward)"][0] += _clock() - t
            return r
        loss.forward_backward = timed_loss
    opt = model.optimizer
    inner_step = opt.step

    def timed_step(*a, **k):
        t = _clock()
        r = inner_step(*a, **k)
        table["optimizer step"][0] += _clock() - t
        return r
    opt.step = timed_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--job", default="mlp", choices=["mlp", "cnn", "imdb"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    fn.set_num_threads(args.threads)
    opts = argparse.Namespace(seed=0, train_subset=None)
    models, x, y, batch = train_graph.job(args.job, opts)
    model = models["sequential"]
    model.compile(optimizer=fn.optim.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    warm, n = 20 * batch, args.steps * batch
    model.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, verbose=0)
    table = defaultdict(lambda: [0.0, 0.0])
    instrument(model, table)
    xs, ys = x[warm:warm + n], y[warm:warm + n]
    steps = len(xs) // batch
    t = _clock()
    model.fit(xs[:steps * batch], ys[:steps * batch], batch_size=batch, epochs=1, verbose=0)
    total = (_clock() - t) / steps
    info = fn.build_info()
    print(f"{args.job}: batch {batch}, {steps} steps, isa {info['isa']}, threads "
          f"{info['num_threads']}: {total * 1e6:.0f} us per training step")
    print(f"{'part':44s} {'forward us':>11s} {'backward us':>12s} {'share':>7s}")
    accounted = 0.0
    for row, (f, b) in table.items():
        f, b = f / steps, b / steps
        accounted += f + b
        print(f"{row:44s} {f * 1e6:11.1f} {b * 1e6:12.1f} {(f + b) / total:7.1%}")
    rest = total - accounted
    print(f"{'rest (fit loop, batching, metrics, Python)':44s} {rest * 1e6:11.1f} {'':12s} "
          f"{rest / total:7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
