"""End-to-end MNIST comparison: fastnn vs a fair NumPy trainer vs PyTorch.

    FASTNN_DATA=/path/with/mnist python bench/train_mnist.py \\
        [--model 784-128-10 | cnn | cnn-small] [--epochs 5] [--batch-size 32] \\
        [--threads 2] [--train-subset N] [--impls fastnn,numpy,torch] [--markdown] \\
        [--lr 1e-3] [--schedule constant|cosine] \\
        [--json results.json]

Every implementation trains the same model with the same batch size, epochs and thread
cap, each in its own fresh subprocess so that its peak RSS (ru_maxrss, read in the
child) is its own. The models: an MLP given by its layer sizes (ReLU hidden layers;
numpy_mlp.py, torch_mlp.py), or the Keras MNIST CNNs ``cnn`` (Conv2D(32, 3, relu) →
MaxPooling2D(2) → Conv2D(64, 3, relu) → MaxPooling2D(2) → Conv2D(64, 3, relu) → Flatten →
Dense(64, relu) → Dense(10)) and ``cnn-small`` (the first two conv blocks → Flatten →
Dense(10)), fed channels-last (N, 28, 28, 1) images (numpy_cnn.py, torch_cnn.py; fastnn
builds them as ``python -m fastnn train mnist-cnn [--small]`` does). All of them: softmax
output, sparse categorical cross-entropy, Adam eps 1e-7 with learning rate --lr (1e-3)
held constant or, with --schedule cosine, decayed every step along half a cosine to 0
at the end of the run (fastnn.optim.schedules.CosineDecay), Glorot-uniform weights,
zero biases, shuffled each epoch; batch 32 for the MLP and 64 for the CNNs unless
--batch-size says otherwise. --train-subset N trains on the first N training images
(epoch times are then per N images; test accuracy is always on the 10,000 test images).

By default each implementation also runs with 1 thread when --threads > 1 and the
faster run is the one compared (--no-thread-sweep turns that off). The table gives the median seconds per epoch (and the first epoch,
which holds warm-up), samples/s, test accuracy and peak RSS, then the time ratios
fastnn/numpy and fastnn/torch, the time of `import fastnn` in a fresh interpreter and
the size of the installed package.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import _common

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_IMPLS = ("fastnn", "numpy", "torch")
CNN_MODELS = ("cnn", "cnn-small")


# --no-zero-pixels: the shift that leaves no pixel at 0. In MNIST 41% of the pixel columns
# of a random batch of 32 are all zero (29% at batch 256), and fastnn's first Dense layer
# skips them.
NO_ZERO_SHIFT = 0.05


def parse_model(spec):
    """'cnn' / 'cnn-small' -> that name; '784-128-10' -> [784, 128, 10]."""
    return spec if spec in CNN_MODELS else _common.parse_sizes(spec)


def is_cnn(model):
    return isinstance(model, str)


# ---- child side: train one implementation, print one JSON line ---------------------

def fastnn_model(model, seed):
    """The fastnn Sequential for `model` (layer sizes, or a CNN name), not yet compiled:
    built by the same functions as `python -m fastnn train mnist-mlp|mnist-cnn`."""
    from fastnn.cli import mnist_cnn_model, mnist_mlp_model

    if is_cnn(model):
        return mnist_cnn_model(small=model == "cnn-small", seed=seed)
    if model[0] != 784:
        raise SystemExit("fastnn MNIST model: the first size must be 784 (28x28 images)")
    return mnist_mlp_model(model[1:-1], seed=seed, classes=model[-1])


def load_data(impl, model, train_subset=None, no_zero_pixels=False):
    """MNIST as the implementation wants it: (N, 28, 28) float32 for fastnn's MLP,
    (N, 784) for the NumPy and torch MLPs, (N, 28, 28, 1) for every CNN (the NumPy and
    torch trainers reshape further themselves); the first train_subset training images
    when given. no_zero_pixels: every pixel raised by NO_ZERO_SHIFT (see --no-zero-pixels)."""
    (xtr, ytr), (xte, yte) = _common.mnist_float32(
        flatten=not is_cnn(model) and impl != "fastnn", use_fastnn=impl == "fastnn")
    if is_cnn(model):
        xtr, xte = xtr.reshape(-1, 28, 28, 1), xte.reshape(-1, 28, 28, 1)
    if train_subset:
        xtr, ytr = xtr[:train_subset], ytr[:train_subset]
    if no_zero_pixels:
        xtr, xte = xtr + NO_ZERO_SHIFT, xte + NO_ZERO_SHIFT
    return (xtr, ytr), (xte, yte)


def train_fastnn(model_spec, epochs, batch_size, threads, seed, data, lr=1e-3,
                 schedule="constant"):
    import fastnn as fn

    fn.set_num_threads(threads)
    (xtr, ytr), (xte, yte) = data
    model = fastnn_model(model_spec, seed)
    if schedule == "cosine":
        lr = fn.optim.schedules.CosineDecay(lr, _common.total_steps(len(xtr), batch_size, epochs))
    elif schedule != "constant":
        raise SystemExit(f"unknown schedule {schedule!r}")
    model.compile(optimizer=fn.optim.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(xtr, ytr, epochs=epochs, batch_size=batch_size, shuffle=True,
                     seed=seed, verbose=0)
    test_loss, test_acc = model.evaluate(xte, yte, verbose=0)
    h = hist.history
    return {
        "impl": "fastnn",
        "version": fn.__version__,
        "threads": fn.get_num_threads(),
        "build_info": fn.build_info(),
        "epoch_times": [float(t) for t in h["epoch_time"]],
        "train_loss": [float(v) for v in h.get("loss", [])],
        "train_acc": [float(v) for v in h.get("accuracy", [])],
        "test_loss": float(test_loss),
        "test_acc": float(test_acc),
        "n_train": len(xtr),
        "peak_rss_mb": _common.peak_rss_mb(),
    }


def run_child(impl, model, epochs, batch_size, threads, seed, train_subset=None, lr=1e-3,
              schedule="constant", no_zero_pixels=False):
    if impl not in ALL_IMPLS:
        raise SystemExit(f"unknown implementation {impl!r}")
    t0 = time.perf_counter()
    data = load_data(impl, model, train_subset, no_zero_pixels)
    load_s = time.perf_counter() - t0
    kw = {"lr": lr, "schedule": schedule}
    if impl == "fastnn":
        r = train_fastnn(model, epochs, batch_size, threads, seed, data, **kw)
    elif impl == "numpy":
        if is_cnn(model):
            import numpy_cnn
            r = numpy_cnn.train(model, epochs, batch_size, threads, seed, data=data, **kw)
        else:
            import numpy_mlp
            r = numpy_mlp.train(model, epochs, batch_size, threads, seed, data=data, **kw)
    else:
        if is_cnn(model):
            import torch_cnn
            r = torch_cnn.train(model, epochs, batch_size, threads, seed, data=data, **kw)
        else:
            import torch_mlp
            r = torch_mlp.train(model, epochs, batch_size, threads, seed, data=data, **kw)
    r["lr"], r["schedule"] = lr, schedule
    r["model"] = model if is_cnn(model) else "-".join(map(str, model))
    r["load_s"] = load_s
    r["peak_rss_mb"] = _common.peak_rss_mb()  # after evaluation too
    print("RESULT " + json.dumps(r), flush=True)


# ---- parent side ----------------------------------------------------------------------

def spawn(impl, args, threads):
    """Run one implementation in a fresh interpreter; returns its result dict or an error."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl,
           "--model", args.model, "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--threads", str(threads),
           "--seed", str(args.seed), "--lr", repr(args.lr), "--schedule", args.schedule]
    if args.train_subset:
        cmd += ["--train-subset", str(args.train_subset)]
    if args.no_zero_pixels:
        cmd += ["--no-zero-pixels"]
    env = dict(os.environ, **_common.thread_env(threads))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE,
                           timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "threads": threads,
                "error": f"timed out after {args.timeout:g} s (--timeout)"}
    wall = time.perf_counter() - t0
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            r["wall_s"] = wall
            return r
    err = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])[-1]
    return {"impl": impl, "threads": threads, "error": f"exit {p.returncode}: {err}"}


def import_time_s(module, repeats=7):
    """Time to import `module` in a fresh interpreter, in seconds: (importtime, wall).

    importtime: min over runs of the cumulative time `python -X importtime` reports for
    the top-level `import module` (what the import itself costs, insensitive to
    interpreter start-up noise; None if start-up already imported it). wall: min wall
    time of `python -c "import module"` minus min wall time of `python -c "pass"`.
    (None, None) where the import fails.
    """
    def run(args):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=HERE)
        return time.perf_counter() - t0, p

    best_it, best_wall, best_base = float("inf"), float("inf"), float("inf")
    for _ in range(repeats):
        best_base = min(best_base, run(["-c", "pass"])[0])
        dt, p = run(["-X", "importtime", "-c", f"import {module}"])
        if p.returncode != 0:
            return None, None
        best_wall = min(best_wall, dt)
        for line in p.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].rstrip() == " " + module:
                best_it = min(best_it, int(parts[1]) / 1e6)
    it = None if best_it == float("inf") else best_it
    return it, max(best_wall - best_base, 0.0)


def package_size_mb(module):
    """Size on disk of the files under the module's package directory, in MB (1e6)."""
    try:
        import importlib.util
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None, None
    if spec is None or not spec.submodule_search_locations:
        return None, None
    root = list(spec.submodule_search_locations)[0]
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_size
            except OSError:
                pass
    return total / 1e6, root


def summarise(r):
    ts = r["epoch_times"]
    med = statistics.median(ts)
    r["median_s"] = med
    r["first_s"] = ts[0]
    r["samples_per_s"] = r["n_train"] / med if med > 0 else float("nan")
    return r


def fmt_table(rows, markdown):
    headers = ["impl", "version", "threads", "s/epoch (median)", "1st epoch s", "samples/s",
               "train acc", "test acc", "peak RSS MB"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["impl"], "", str(r["threads"]), "failed (see below)", "", "", "",
                         "", ""])
            continue
        first = f"{r['first_s']:.3f}"
        if abs(r["first_s"] - r["median_s"]) > 0.2 * r["median_s"]:
            first += " (!)"
        train_acc = f"{r['train_acc'][-1]:.4f}" if r.get("train_acc") else "-"
        body.append([
            r["impl"] + (" *" if r.get("best") else ""), str(r.get("version", "")),
            str(r["threads"]), f"{r['median_s']:.3f}", first, f"{r['samples_per_s']:,.0f}",
            train_acc, f"{r['test_acc']:.4f}", f"{r['peak_rss_mb']:.0f}"])
    if markdown:
        out = ["| " + " | ".join(headers) + " |",
               "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in body])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="784-128-10",
                    help="MLP layer sizes, e.g. 784-128-64-10, or a CNN: "
                         + " or ".join(CNN_MODELS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default 32 for an MLP, 64 for a CNN")
    ap.add_argument("--train-subset", type=int, default=None, metavar="N",
                    help="train on the first N training images only (quick runs; test "
                         "accuracy still on the full test set)")
    ap.add_argument("--no-zero-pixels", action="store_true",
                    help=f"add {NO_ZERO_SHIFT} to every pixel: MNIST's task with no all-zero "
                         "pixel columns in a batch (as Fashion-MNIST), so that fastnn's "
                         "skipping of zero input columns never applies")
    ap.add_argument("--threads", type=int, default=2, help="thread cap for every library")
    ap.add_argument("--impls", default=",".join(ALL_IMPLS))
    ap.add_argument("--seed", type=int, default=0)
    _common.add_lr_options(ap)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--json", metavar="PATH", help="also write every result to PATH")
    ap.add_argument("--no-thread-sweep", action="store_true",
                    help="run only at --threads (default: also 1 thread, report the faster)")
    ap.add_argument("--timeout", type=float, default=None, metavar="S",
                    help="give up on one implementation/thread-count run after S seconds "
                         "(a 2-thread pool on a busy 2-core machine can stall for minutes)")
    ap.add_argument("--no-import-time", action="store_true",
                    help="skip the import-time and package-size measurements")
    ap.add_argument("--child", choices=ALL_IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        model = parse_model(args.model)
    except ValueError as e:
        ap.error(f"--model: {e}; or one of {', '.join(CNN_MODELS)}")
    if args.batch_size is None:
        args.batch_size = 64 if is_cnn(model) else 32
    if args.train_subset is not None and not 0 < args.train_subset <= 60000:
        ap.error("--train-subset must be between 1 and 60000")
    if args.child:
        return run_child(args.child, model, args.epochs, args.batch_size, args.threads,
                         args.seed, args.train_subset, args.lr, args.schedule,
                         args.no_zero_pixels)

    impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    bad = [i for i in impls if i not in ALL_IMPLS]
    if bad:
        ap.error(f"unknown --impls {bad}; choose from {','.join(ALL_IMPLS)}")
    thread_list = [args.threads] if args.no_thread_sweep or args.threads <= 1 \
        else sorted({1, args.threads})

    notes, rows = [], []
    load0 = os.getloadavg()
    for impl in impls:
        if not _common.have_module(impl):
            notes.append(f"{impl}: not importable, skipped")
            continue
        runs = []
        for t in thread_list:
            print(f"... {impl} with {t} thread(s)", file=sys.stderr, flush=True)
            r = spawn(impl, args, t)
            if "error" not in r:
                summarise(r)
            runs.append(r)
        ok = [r for r in runs if "error" not in r]
        if ok:
            min(ok, key=lambda r: r["median_s"])["best"] = len(runs) > 1
        rows += runs
    load1 = os.getloadavg()

    best = {r["impl"]: r for r in rows if "error" not in r and (r.get("best") or
                                                                  len(thread_list) == 1)}
    sys.stderr.flush()
    subset = f", first {args.train_subset} training images" if args.train_subset else ""
    if args.no_zero_pixels:
        subset += f", every pixel + {NO_ZERO_SHIFT} (no all-zero pixel columns)"
    sched = "" if args.schedule == "constant" else f" with {args.schedule} decay"
    print(f"MNIST {args.model}, {args.epochs} epochs, batch {args.batch_size}{subset}, "
          f"Adam lr {args.lr:g}{sched}, "
          f"thread cap {args.threads}; {_common.cpu_name()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"load average {load0[0]:.2f} before, {load1[0]:.2f} after"
          + ("  (machine busy: timings unreliable)" if max(load0[0], load1[0]) > 0.5 + (os.cpu_count() or 1) else ""))
    print()
    print(fmt_table(rows, args.markdown))
    if len(thread_list) > 1:
        print("* = the faster thread count of that implementation, used in the ratios")
    print()
    f = best.get("fastnn")
    for other in ("numpy", "torch"):
        o = best.get(other)
        if f and o:
            ratio = f["median_s"] / o["median_s"]
            verdict = (f"fastnn {1 / ratio:.2f}x faster" if ratio < 1
                       else f"fastnn {ratio:.2f}x slower")
            print(f"time ratio fastnn/{other}: {ratio:.3f}  ({verdict}; "
                  f"test acc {f['test_acc']:.4f} vs {o['test_acc']:.4f}; "
                  f"peak RSS {f['peak_rss_mb']:.0f} vs {o['peak_rss_mb']:.0f} MB)")
    if f and f.get("build_info"):
        print(f"fastnn build_info: {f['build_info']}")

    extras = {}
    if not args.no_import_time:
        print()
        for mod in ["fastnn"] + [m for m in ("numpy", "torch") if m in impls]:
            if not _common.have_module(mod):
                continue
            it, wall = import_time_s(mod)
            size, root = package_size_mb(mod)
            extras[mod] = {"import_s": it, "import_wall_s": wall, "package_mb": size,
                           "package_dir": root}
            it_s = (f"{it * 1000:.1f} ms" if it is not None else
                    "import failed" if wall is None else "n/a (already imported at start-up)")
            wall_s = f"{wall * 1000:.0f} ms" if wall is not None else "failed"
            size_s = f"{size:.1f} MB" if size is not None else "?"
            print(f"import {mod}: {it_s} (-X importtime), {wall_s} (wall minus bare "
                  f"interpreter); package dir {size_s} ({root})")
    for r in rows:
        if "error" in r:
            notes.append(f"{r['impl']} with {r['threads']} thread(s) failed: {r['error']}")
    for n in notes:
        print("note: " + n)

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "cpu": _common.cpu_name(), "load_avg": [load0, load1],
                       "results": rows, "import": extras, "notes": notes}, fh, indent=1)


if __name__ == "__main__":
    main()
