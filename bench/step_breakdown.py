"""Where a training step's time goes: per layer (forward and backward), the loss, the
optimizer, and the rest (Python between the kernels: batching, the fit loop, metrics).

    FASTNN_DATA=/path/to/data python bench/step_breakdown.py [--job mlp|cnn|imdb]
        [--steps 300] [--threads 2]
    python bench/step_breakdown.py --row "784-2048-2048-10 b32" [--steps 50]

Two tables: per layer (a composite layer such as TransformerEncoder also gets a row per
sublayer, indented under it), and per C++ kernel (every fastnn._core function, with its
calls per step); what the kernels do not account for is Python: the layers' wrappers,
the fit loop, batching and metrics.

The model is one of bench/train_graph.py's seed jobs (the Sequential form), or with --row
a row of bench/scaling.py's tables (its model, batch and random data; the row names are
those the tables print, e.g. "C=64 28x28x1 b64", "C=256 T=256 N=4 b16"). Each step of
the model's plan is wrapped in a timer, as are the loss and the optimizer; the timers cost
about 0.3 us a call, which lands in the layers' rows. Times are per training step,
averaged over --steps steps after a warm-up of 20. Rows of sublayers and kernels are
included in their parents' rows.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import fastnn as fn

import scaling
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


def _timed_method(obj, attr, row, k):
    """Replace obj.attr (a bound method) by one that adds its time to row[k]."""
    inner = getattr(obj, attr)

    def timed(*a, **kw):
        t = _clock()
        try:
            return inner(*a, **kw)
        finally:
            row[k] += _clock() - t
    setattr(obj, attr, timed)


def _instrument_sublayers(layer, table, depth=1):
    """Time the forward and backward of a composite layer's sublayers, recursively."""
    for sub in getattr(layer, "_children", None) or ():
        row = table["  " * depth + _row_name_of(sub)]
        _timed_method(sub, "forward", row, 0)
        _timed_method(sub, "backward", row, 1)
        _instrument_sublayers(sub, table, depth + 1)


def _row_name_of(layer):
    """"name (Type)"; a sublayer's name without its parent's prefix."""
    name = getattr(layer, "name", None) or type(layer).__name__
    return f"{name.split('/')[-1]} ({type(layer).__name__})"


def instrument(model, table):
    """Wrap the training plan's steps, the losses and the optimizer in timers."""
    plan = model._plan_train
    wrapped = {}
    for st in plan.steps:
        wrapped[id(st)] = _Timed(st, _row_name_of(st.layer), table)
        table[_row_name_of(st.layer)]  # the layer's row comes before its sublayers' rows
        _instrument_sublayers(st.layer, table)
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


def instrument_kernels(kernels):
    """Wrap every function of fastnn._core in a timer: kernels[name] = [calls, seconds]."""
    from fastnn import _core

    for name in dir(_core):
        f = getattr(_core, name)
        if name.startswith("_") or isinstance(f, type) or not callable(f):
            continue

        def timed(*a, _f=f, _cell=kernels[name], **k):
            t = _clock()
            try:
                return _f(*a, **k)
            finally:
                _cell[0] += 1
                _cell[1] += _clock() - t
        setattr(_core, name, timed)


def scaling_row(name, steps):
    """(model, x, y, batch) of the bench/scaling.py row called name: enough random data
    for `steps` steps."""
    found = [r for t in ("mlp", "cnn", "transformer") for r in scaling.rows(t)
             if r["name"] == name]
    if not found:
        raise SystemExit(f"no bench/scaling.py row is called {name!r}")
    row = found[0]
    x, y = scaling.make_data(row, steps * row["batch"])
    return scaling.fastnn_model(row), x, y, row["batch"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--job", default="mlp", choices=["mlp", "cnn", "imdb"])
    p.add_argument("--row", default=None, help="a bench/scaling.py row name instead of --job")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    fn.set_num_threads(args.threads)
    if args.row:
        model, x, y, batch = scaling_row(args.row, args.steps + 20)
        name = args.row
    else:
        opts = argparse.Namespace(seed=0, train_subset=None)
        models, x, y, batch = train_graph.job(args.job, opts)
        model, name = models["sequential"], args.job
        model.compile(optimizer=fn.optim.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    warm, n = 20 * batch, args.steps * batch
    model.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, verbose=0)
    table = defaultdict(lambda: [0.0, 0.0])
    kernels = defaultdict(lambda: [0, 0.0])
    instrument(model, table)
    instrument_kernels(kernels)
    xs, ys = x[warm:warm + n], y[warm:warm + n]
    steps = len(xs) // batch
    t = _clock()
    model.fit(xs[:steps * batch], ys[:steps * batch], batch_size=batch, epochs=1, verbose=0)
    total = (_clock() - t) / steps
    info = fn.build_info()
    print(f"{name}: batch {batch}, {steps} steps, isa {info['isa']}, threads "
          f"{info['num_threads']}: {total * 1e6:.0f} us per training step")
    print(f"\n{'layer':44s} {'forward us':>11s} {'backward us':>12s} {'share':>7s}")
    accounted = 0.0
    for row, (f, b) in table.items():
        f, b = f / steps, b / steps
        if not row.startswith(" "):
            accounted += f + b
        print(f"{row:44s} {f * 1e6:11.1f} {b * 1e6:12.1f} {(f + b) / total:7.1%}")
    rest = total - accounted
    print(f"{'rest (fit loop, batching, metrics, Python)':44s} {rest * 1e6:11.1f} {'':12s} "
          f"{rest / total:7.1%}")
    print(f"\n{'kernel (fastnn._core)':44s} {'calls/step':>11s} {'us/step':>12s} {'share':>7s}")
    in_kernels = 0.0
    for k, (calls, sec) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
        in_kernels += sec / steps
        if calls >= steps / 10:  # not the build-information getters fit calls once
            print(f"{k:44s} {calls / steps:11.1f} {sec / steps * 1e6:12.1f} "
                  f"{sec / steps / total:7.1%}")
    py = total - in_kernels
    print(f"{'Python (all but the kernels)':44s} {'':11s} {py * 1e6:12.1f} {py / total:7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
