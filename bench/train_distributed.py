"""Data-parallel training on one machine: K ranks x T threads against 1 process x K·T
threads, and the measured cost of the gradient fold (the allreduce) per step.

    FASTNN_DATA=/path/to/data python bench/train_distributed.py [--model cnn|mlp]
        [--samples 12800] [--batch 64] [--rounds 3] [--markdown]
    python bench/train_distributed.py --allreduce [--ranks 2]

The first form trains the seed model (bench/../python/fastnn/cli.py's mnist_cnn_model or
mnist_mlp_model) on the first --samples MNIST images for one warm-up epoch and one timed
epoch, in two settings, interleaved over --rounds rounds:

  * ``1x2``: one process, 2 kernel threads, a plain fit of the whole batch;
  * ``2x1``: ``mpiexec -n 2``, one thread per rank, fastnn.distribute.DataParallel (each
    rank runs half of every batch).

For the distributed setting each rank times the parts of a step (DataParallel.timings:
its shards' forward and backward, the gradient fold over the ranks, the gather of losses
and batch statistics, the optimizer step); the table gives rank 0's seconds per step and
the fold's fraction of the step. (That K ranks end with the weights of one process
running the same shards is tests/test_distributed.py's business, not timed here.)

``--allreduce`` times DataParallel.reduce_shards alone on gradient buffers of 1 K to 16 M
floats with --ranks ranks and fits t(P) = a + P·4 bytes / bw, the latency and bandwidth
that docs/distributed.md's cost model uses.

``--predict`` times one training step per sample of each seed model in this process
(--threads threads) and prints what the cost model predicts for K ranks on a network of
--gbps Gb/s with --latency-us of latency per message: per step, each rank computes its
B/K samples and the fold costs 2(K-1)·latency + 2(K-1)/K · 4P bytes / bandwidth.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

def _mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def _launch(ranks: int, threads: int, args: list[str], timeout: float = 900):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    if ranks > 1:
        exe = _mpiexec()
        if exe is None:
            sys.exit("train_distributed: mpiexec not found (pip install '.[mpi]')")
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        flags = ["--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version else []
        cmd = [exe, *flags, "-n", str(ranks), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode:
        sys.exit(f"train_distributed: {' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return r


# --- worker: one training run ---------------------------------------------------------
def _worker_train(a) -> None:
    import fastnn as fn
    from fastnn.cli import mnist_cnn_model, mnist_mlp_model

    dist = None
    if a.shards:
        dist = fn.distribute.DataParallel(num_shards=a.shards)
        fn.distribute.set_distribution(dist)
    (x, y), _ = fn.datasets.mnist.load_data()
    x, y = x[:a.samples] / np.float32(255.0), y[:a.samples]
    if a.model == "cnn":
        model, x = mnist_cnn_model(seed=0), x.reshape(-1, 28, 28, 1)
    else:
        model = mnist_mlp_model([128], seed=0)
    model.compile(optimizer=fn.optim.Adam(1e-3), loss="sparse_categorical_crossentropy")
    steps = -(-len(x) // a.batch)
    model.fit(x, y, batch_size=a.batch, epochs=1, seed=1, verbose=0)  # warm-up
    if dist is not None:
        dist.reset_timings()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=a.batch, epochs=1, seed=2, verbose=0)
    wall = time.perf_counter() - t0
    out = {"wall": wall, "steps": steps, "params": int(model._params.size)}
    if dist is not None:
        out["timings"] = dict(dist.timings)
    if fn.distribute.rank() == 0:
        with open(a.out, "w") as f:
            json.dump(out, f)


def _train_table(a) -> None:
    rows = {"1x2": [], "2x1": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for name, (ranks, threads) in (("1x2", (1, 2)), ("2x1", (2, 1))):
                out = os.path.join(tmp, f"{name}.{r}.json")
                _launch(ranks, threads, ["--worker", "--out", out, "--model", a.model,
                                         "--samples", str(a.samples), "--batch", str(a.batch),
                                         "--shards", str(ranks if ranks > 1 else 0)])
                with open(out) as f:
                    rows[name].append(json.load(f))
    one, two = rows["1x2"], rows["2x1"]
    steps = one[0]["steps"]
    ms = lambda s: 1e3 * s / steps  # noqa: E731
    w1 = [ms(r["wall"]) for r in one]
    w2 = [ms(r["wall"]) for r in two]
    parts = {k: [ms(r["timings"][k]) for r in two] for k in two[0]["timings"]}
    frac = [r["timings"]["reduce"] / r["wall"] for r in two]
    if a.markdown:
        print(f"MNIST {a.model.upper()}, {a.samples} images, batch {a.batch}, {steps} steps, "
              f"{one[0]['params']} parameters, median of {a.rounds} interleaved rounds "
              "(min-max)\n")
        print("| setting | ms/step | compute | fold (allreduce) | gather | optimizer | fold / step |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| 1 process x 2 threads | {np.median(w1):.2f} ({min(w1):.2f}-{max(w1):.2f}) "
              "| | | | | |")
        print(f"| 2 ranks x 1 thread | {np.median(w2):.2f} ({min(w2):.2f}-{max(w2):.2f}) | "
              + " | ".join(f"{np.median(parts[k]):.2f}" for k in ("compute", "reduce", "gather",
                                                                   "step"))
              + f" | {np.median(frac):.1%} |")
        print(f"\n2x1 / 1x2 time ratio: {np.median(w2) / np.median(w1):.2f}")
    else:
        print(json.dumps({"1x2_ms": w1, "2x1_ms": w2, "parts_ms": parts,
                          "fold_fraction": frac}, indent=1))


# --- worker: allreduce timing -----------------------------------------------------------
def _worker_allreduce(a) -> None:
    import fastnn as fn

    dist = fn.distribute.DataParallel()
    out = {}
    for p in [1 << e for e in range(10, 25, 2)]:
        grads = np.full((1, p), 1.0 + dist.rank, np.float32)
        res = np.empty(p, np.float32)
        live = [True] * dist.num_shards
        reps = max(3, min(200, (1 << 22) // p))
        for _ in range(2):
            dist.reduce_shards(grads, res, live)
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            dist.reduce_shards(grads, res, live)
        dist.barrier()
        out[p] = (time.perf_counter() - t0) / reps
        assert res[0] == sum(1.0 + r for r in range(dist.size))
    if dist.rank == 0:
        with open(a.out, "w") as f:
            json.dump(out, f)


def _allreduce_table(a) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ar.json")
        _launch(a.ranks, 1, ["--worker-allreduce", "--out", out])
        with open(out) as f:
            t = {int(k): v for k, v in json.load(f).items()}
    p = np.array(sorted(t), np.float64)
    s = np.array([t[k] for k in sorted(t)])
    # least squares t = lat + bytes / bw, weighted so that small and large sizes count alike
    A = np.stack([np.ones_like(p), 4 * p], 1) / s[:, None]
    lat, inv_bw = np.linalg.lstsq(A, np.ones_like(s), rcond=None)[0]
    print(f"reduce_shards on {a.ranks} ranks (Alltoallv + Allgatherv, one machine):\n")
    print("| floats | MB | us | GB/s of buffer |")
    print("|---:|---:|---:|---:|")
    for k, v in zip(p, s):
        print(f"| {int(k)} | {4 * k / 1e6:.3f} | {1e6 * v:.1f} | {4 * k / v / 1e9:.2f} |")
    print(f"\nfit: t = {1e6 * lat:.1f} us + bytes / {1e-9 / inv_bw:.2f} GB/s")


# --- the cost model ----------------------------------------------------------------------
def _seed_models():
    """(name, model, one batch of inputs, labels, batch size) of each seed model, on
    random data of the real shapes (timing only)."""
    import fastnn as fn
    from fastnn.cli import mnist_cnn_model, mnist_mlp_model

    rng = np.random.default_rng(0)
    L = fn.layers
    imdb = fn.Sequential([L.PositionalEmbedding(80, 32, input_dim=10000, mask_zero=True,
                                                input_shape=(80,)),
                          L.TransformerEncoder(2, 16, 32, dropout=0.2),
                          L.GlobalAveragePooling1D(), L.Dropout(0.2),
                          L.Dense(20, activation="relu"), L.Dropout(0.2),
                          L.Dense(2, activation="softmax")], seed=0)
    img = rng.random((2048, 28, 28), dtype=np.float32)
    return [("MNIST MLP", mnist_mlp_model([128], seed=0), img, 32),
            ("MNIST CNN", mnist_cnn_model(seed=0), img.reshape(-1, 28, 28, 1), 64),
            ("IMDB transformer", imdb, rng.integers(1, 10000, (2048, 80)).astype(np.int32), 32)]


def _predict_table(a) -> None:
    import fastnn as fn

    fn.set_num_threads(a.threads)
    lat, bw = a.latency_us * 1e-6, a.gbps * 1e9 / 8
    print(f"Cost model: {a.gbps:g} Gb/s, {a.latency_us:g} us per message; compute per "
          f"sample measured here ({a.threads} threads per rank)\n")
    print("| model | parameters | us/sample | ranks K | fold ms/step | batch/rank where "
          "fold = compute | efficiency at batch/rank 32 | at 256 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, model, x, b in _seed_models():
        y = np.random.default_rng(1).integers(0, 2, len(x)).astype(np.int32)
        model.compile(optimizer=fn.optim.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=b, epochs=1, verbose=0, seed=0)
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=b, epochs=1, verbose=0, seed=0)
            best = min(best, time.perf_counter() - t0)
        ts = best / len(x)
        p = int(model._params.size)
        for k in (8, 64, 512):
            fold = 2 * (k - 1) * lat + 2 * (k - 1) / k * 4 * p / bw
            eff = lambda n: n * ts / (n * ts + fold)  # noqa: E731
            print(f"| {name} | {p} | {1e6 * ts:.1f} | {k} | {1e3 * fold:.2f} | "
                  f"{fold / ts:.0f} | {eff(32):.0%} | {eff(256):.0%} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn")
    p.add_argument("--samples", type=int, default=12800)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--allreduce", action="store_true")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--predict", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gbps", type=float, default=25.0)
    p.add_argument("--latency-us", type=float, default=20.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-allreduce", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shards", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker_train(a)
    elif a.worker_allreduce:
        _worker_allreduce(a)
    elif a.allreduce:
        _allreduce_table(a)
    elif a.predict:
        _predict_table(a)
    else:
        _train_table(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
