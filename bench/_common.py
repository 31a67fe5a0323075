"""Helpers shared by the benchmarks and the MNIST comparison trainers.

Nothing here imports fastnn or torch at module level: the baseline trainers run in
subprocesses that must not pay for (or count the memory of) a library they do not use.
"""
from __future__ import annotations

import ctypes
import gzip
import math
import importlib.util
import os
import platform
import resource
import struct
import sys

import numpy as np

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def have_module(name: str) -> bool:
    """True when `name` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def thread_env(n: int) -> dict:
    """Environment variables that cap OpenMP/OpenBLAS/MKL pools at n threads.

    They must be set before the libraries load, so use them for subprocesses; in a
    running process call pin_threads() instead.
    """
    return {k: str(int(n)) for k in THREAD_ENV_VARS}


# ---- NumPy's BLAS thread count, set at run time ------------------------------------

def _loaded_openblas_libs():
    """Paths of the OpenBLAS shared libraries mapped into this process (Linux)."""
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and "openblas" in os.path.basename(parts[5]).lower():
                    paths.add(parts[5])
    except OSError:
        pass
    return sorted(paths)


_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_", "openblas_get_num_threads")


def _blas_call(names, *args):
    results = []
    for path in _loaded_openblas_libs():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                results.append(fn(*args))
                break
    return results


def set_blas_threads(n: int) -> bool:
    """Set the thread count of the OpenBLAS that NumPy uses. Returns False if not found.

    Falls back to threadpoolctl when it is installed and no OpenBLAS is mapped (e.g. a
    NumPy built on MKL or Accelerate).
    """
    import numpy  # noqa: F401  (makes sure numpy's BLAS is loaded)

    if _blas_call(_SETTERS, ctypes.c_int(int(n))):
        return True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=int(n), user_api="blas")
    return True


def blas_threads():
    """Thread count of NumPy's OpenBLAS, or None when it cannot be read."""
    import numpy  # noqa: F401

    r = _blas_call(_GETTERS)
    return int(r[0]) if r else None


def pin_threads(n: int, fastnn: bool = True, torch: bool = True) -> dict:
    """Use n threads in NumPy's BLAS and, when asked and importable, fastnn and torch.

    Returns what was set, for logs.
    """
    n = int(n)
    os.environ.update(thread_env(n))
    done = {"blas": n if set_blas_threads(n) else None}
    if fastnn and have_module("fastnn"):
        import fastnn as fn
        fn.set_num_threads(n)
        done["fastnn"] = fn.get_num_threads()
    if torch and have_module("torch"):
        import torch as _torch
        _torch.set_num_threads(n)
        done["torch"] = _torch.get_num_threads()
    return done


# ---- memory -------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()



# ---- MNIST --------------------------------------------------------------------------

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def mnist_dir() -> str:
    root = os.environ.get("FASTNN_DATA")
    if not root:
        raise RuntimeError(
            "MNIST: set FASTNN_DATA to the folder that holds mnist/ with the four IDX .gz "
            "files (train-images-idx3-ubyte.gz, ...)")
    return os.path.join(root, "mnist")


def read_idx(path: str) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes into a uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {dims} values, found {arr.size}")
    return arr.reshape(dims)


def load_mnist_idx():
    """((x_train, y_train), (x_test, y_test)) as uint8, images (N, 28, 28), from IDX files."""
    d = mnist_dir()
    a = {k: read_idx(os.path.join(d, f)) for k, f in MNIST_FILES.items()}
    return (a["x_train"], a["y_train"]), (a["x_test"], a["y_test"])


def load_mnist(use_fastnn: bool = False):
    """MNIST as Keras returns it: uint8 images (N, 28, 28) and uint8 labels.

    With use_fastnn, read it through fastnn.datasets.mnist.load_data() when that exists;
    the baseline trainers read the same IDX files directly so that they never import
    fastnn.
    """
    if use_fastnn:
        try:
            from fastnn.datasets import mnist
        except ImportError:
            pass
        else:
            return mnist.load_data()
    return load_mnist_idx()


def mnist_float32(flatten: bool = True, use_fastnn: bool = False):
    """MNIST scaled to [0, 1] float32, images flattened to (N, 784) unless flatten=False.

    Labels are int64 (what torch's cross-entropy wants; NumPy indexes with anything).
    """
    (xtr, ytr), (xte, yte) = load_mnist(use_fastnn=use_fastnn)

    def prep(x):
        x = np.asarray(x, dtype=np.float32)
        x /= np.float32(255.0)
        return x.reshape(len(x), -1) if flatten else x

    return (prep(xtr), np.asarray(ytr, dtype=np.int64)), (prep(xte), np.asarray(yte, dtype=np.int64))


def parse_sizes(spec: str) -> list:
    """'784-128-10' -> [784, 128, 10]."""
    try:
        sizes = [int(s) for s in spec.split("-")]
    except ValueError:
        raise ValueError(f"model sizes must look like 784-128-10, got {spec!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"model sizes must look like 784-128-10, got {spec!r}")
    return sizes


# ---- the stand-alone MNIST trainers (numpy_mlp, numpy_cnn, torch_mlp, torch_cnn) --------

def end_epoch(history, epoch, epochs, dt, loss_sum, correct, n, verbose=False):
    """Append one epoch's record {"epoch", "time", "loss", "accuracy"} (mean loss and
    accuracy over the n training samples) to history; with verbose, print it."""
    rec = {"epoch": epoch, "time": dt, "loss": loss_sum / n, "accuracy": correct / n}
    history.append(rec)
    if verbose:
        print(f"epoch {epoch + 1}/{epochs}: {dt:.3f} s  loss {rec['loss']:.4f}  "
              f"acc {rec['accuracy']:.4f}", flush=True)
    return rec


def result_record(impl, version, threads, history, test, *, n_train, num_params, load_s,
                  **extra) -> dict:
    """The result dict a trainer's train() returns (bench/train_mnist.py parses it).

    history: fit()'s per-epoch records ({"time", "loss", "accuracy", ...});
    test: (test_loss, test_acc). The extra, implementation-specific fields (blas_threads,
    adam, memory_format, ...) come right after "threads", in the order given. Peak RSS is
    read now, so call this after training and evaluation.
    """
    test_loss, test_acc = test
    return {
        "impl": impl,
        "version": version,
        "threads": threads,
        **extra,
        "epoch_times": [h["time"] for h in history],
        "train_loss": [h["loss"] for h in history],
        "train_acc": [h["accuracy"] for h in history],
        "test_loss": test_loss,
        "test_acc": test_acc,
        "n_train": n_train,
        "num_params": num_params,
        "load_s": load_s,
        "peak_rss_mb": peak_rss_mb(),
    }


SCHEDULES = ("constant", "cosine")


def lr_at(lr: float, schedule: str, total_steps: int):
    """The learning rate: the number lr ("constant"), or as a function of the 0-based step
    k, ``fastnn.optim.schedules.CosineDecay(lr, total_steps)`` ("cosine": half a cosine
    from lr down to 0 over the run's total_steps steps). Every trainer uses this one."""
    if schedule == "constant":
        return float(lr)
    if schedule == "cosine":
        return lambda k: lr * 0.5 * (1.0 + math.cos(math.pi * min(k, total_steps) / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def total_steps(n_train: int, batch_size: int, epochs: int) -> int:
    return epochs * ((n_train + batch_size - 1) // batch_size)


def trainer_parser(doc: str, model: str, epochs: int, batch_size: int, models=None):
    """argparse parser with the options every trainer's main() takes (--model, --epochs,
    --batch-size, --threads, --seed, --lr, --schedule); the description is the first
    paragraph of doc. Add trainer-specific options, then hand it to run_trainer_main()."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default=model, choices=models)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_lr_options(ap)
    return ap


def add_lr_options(ap) -> None:
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    ap.add_argument("--schedule", choices=SCHEDULES, default="constant",
                    help="learning rate per step: constant, or cosine decay to 0 over the run")


def run_trainer_main(ap, argv, train, label: str) -> dict:
    """A trainer's stand-alone main(): parse argv (adds --json), run train(args, verbose)
    and print its result, as one JSON line with --json, else a one-line summary that
    starts with label.format(**result), e.g. "numpy {version}, {threads} BLAS threads"."""
    import json
    import statistics

    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args(argv)
    r = train(args, verbose=not args.json)
    if args.json:
        print(json.dumps(r))
    else:
        med = statistics.median(r["epoch_times"])
        print(f"{label.format(**r)}: median {med:.3f} s/epoch, "
              f"test accuracy {r['test_acc']:.4f}, peak RSS {r['peak_rss_mb']:.0f} MB")
    return r


# ---- pytest-benchmark helpers -------------------------------------------------------

def kernel(impl: str, name: str):
    """fastnn.ops.<name> for impl 'fastnn', its NumPy twin fastnn.reference.<name> for
    'numpy'; skips the test (with the reason) when that function is not available."""
    import importlib

    import pytest

    pkg = {"fastnn": "fastnn.ops", "numpy": "fastnn.reference"}[impl]
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:
        pytest.skip(f"{pkg} not importable: {e}")
    fn = getattr(mod, name, None)
    if fn is None:
        pytest.skip(f"{pkg}.{name} does not exist in this build")
    return fn


def record_rate(benchmark, flops=None, nbytes=None, **extra):
    """Store GFLOP/s (flops per call) and/or GB/s (bytes moved per call), computed from
    the median time, plus any extra fields, in benchmark.extra_info."""
    benchmark.extra_info.update(extra)
    if flops is not None:
        benchmark.extra_info["flops"] = int(flops)
    if nbytes is not None:
        benchmark.extra_info["bytes"] = int(nbytes)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    med = getattr(stats, "median", None)
    if not med:
        return  # benchmarking disabled (--benchmark-disable): nothing was timed
    if flops is not None:
        benchmark.extra_info["gflops"] = round(flops / med / 1e9, 3)
    if nbytes is not None:
        benchmark.extra_info["gb_per_s"] = round(nbytes / med / 1e9, 3)
