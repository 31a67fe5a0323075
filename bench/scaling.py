"""Scaling tables: training time per step and peak memory of fastnn against PyTorch (and
the NumPy trainer where one exists) as models grow.

    python bench/scaling.py [--table mlp,cnn,transformer] [--threads 1,2] [--markdown]
                            [--impls fastnn,torch,numpy] [--rows SUBSTRING] [--json PATH]

Tables (every row is one model at one thread count; random data of the model's shape,
so no row gets MNIST's all-zero pixels for free):

- mlp: 784 -> W -> W -> 10 (ReLU, softmax cross-entropy), W = 128, 512, 2048, batch 32
  and 256; fastnn, torch and bench/numpy_mlp.py.
- cnn: Conv2D(C, 3, relu) -> MaxPool(2) -> Conv2D(2C, 3, relu) -> MaxPool(2) -> Flatten
  -> Dense(10), C = 32, 64, 128, on 28x28x1 and 32x32x3 images, batch 64; torch in
  channels_last memory format.
- transformer: token + position embedding, N post-norm encoder blocks (C/32 heads of 32,
  feed-forward 2C, dropout 0.1), average pooling, Dense(20, relu), Dense(2) (the IMDB
  model of bench/train_imdb.py, which is C = 64, T = 80, 1 block); C = 32 ... 512,
  T = 80, 256, 512, N = 1, 4; batch 32 at T = 80, 16 at 256, 8 at 512.

Adam(1e-3) everywhere (torch's fused CPU Adam). Each (implementation, row) runs in its
own subprocess with every thread pool capped (OMP_NUM_THREADS, ...) and the library's
setter called. A run trains one warm-up epoch of 2 steps, sizes its epochs to about
--epoch-s seconds from that, trains 3 such epochs and reports the median time per step
(one epoch = gathering the shuffled batches, forward, backward, update, fit's
bookkeeping). `peak MB` is the growth of the resident set from just before the model is
built to the peak (ru_maxrss): weights, optimizer state, activations, workspaces, and
the library's allocator caches; the random data is already resident at the baseline.

Ratios are fastnn's time over the peer's, from the same run (below 1: fastnn faster).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np

import _common

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 10000
LR = 1e-3


# ---- rows ---------------------------------------------------------------------------

def rows(table):
    """The rows of one table: dicts with 'table', 'name' and the model's parameters."""
    out = []
    if table == "mlp":
        for w in (128, 512, 2048):
            for batch in (32, 256):
                out.append(dict(table=table, name=f"784-{w}-{w}-10 b{batch}", width=w,
                                batch=batch))
    elif table == "cnn":
        for shape in ((28, 28, 1), (32, 32, 3)):
            for c in (32, 64, 128):
                out.append(dict(table=table, name=f"C={c} {shape[0]}x{shape[1]}x{shape[2]} b64",
                                channels=c, shape=shape, batch=64))
    elif table == "transformer":
        for t, batch in ((80, 32), (256, 16), (512, 8)):
            for blocks in (1, 4):
                for c in (32, 64, 128, 256, 512):
                    out.append(dict(table=table, name=f"C={c} T={t} N={blocks} b{batch}",
                                    channels=c, maxlen=t, blocks=blocks, batch=batch))
    else:
        raise ValueError(f"unknown table {table!r}; choose mlp, cnn or transformer")
    return out


def impls_for(row):
    return ("fastnn", "torch", "numpy") if row["table"] == "mlp" else ("fastnn", "torch")


def make_data(row, n):
    """n random samples of the row's input (float32 or token ids) and integer labels."""
    rng = np.random.default_rng(0)
    if row["table"] == "mlp":
        x = rng.standard_normal((n, 784), dtype=np.float32)
        return x, rng.integers(0, 10, n)
    if row["table"] == "cnn":
        x = rng.random((n, *row["shape"]), dtype=np.float32)
        return x, rng.integers(0, 10, n)
    x = rng.integers(1, VOCAB, (n, row["maxlen"])).astype(np.int32)
    return x, rng.integers(0, 2, n)


# ---- fastnn -------------------------------------------------------------------------

def fastnn_model(row):
    import fastnn as fn

    L = fn.layers
    if row["table"] == "mlp":
        w = row["width"]
        layers = [L.Dense(w, activation="relu", input_shape=(784,)),
                  L.Dense(w, activation="relu"), L.Dense(10, activation="softmax")]
    elif row["table"] == "cnn":
        c = row["channels"]
        layers = [L.Conv2D(c, 3, activation="relu", input_shape=row["shape"]),
                  L.MaxPooling2D(2), L.Conv2D(2 * c, 3, activation="relu"), L.MaxPooling2D(2),
                  L.Flatten(), L.Dense(10, activation="softmax")]
    else:
        c = row["channels"]
        layers = ([L.PositionalEmbedding(row["maxlen"], c, input_dim=VOCAB, mask_zero=True,
                                         input_shape=(row["maxlen"],))]
                  + [L.TransformerEncoder(max(1, c // 32), 32, 2 * c, dropout=0.1)
                     for _ in range(row["blocks"])]
                  + [L.GlobalAveragePooling1D(), L.Dropout(0.1), L.Dense(20, activation="relu"),
                     L.Dropout(0.1), L.Dense(2, activation="softmax")])
    model = fn.Sequential(layers, seed=0)
    model.compile(optimizer=fn.optim.Adam(LR), loss="sparse_categorical_crossentropy")
    return model


def fastnn_epoch(row, threads):
    """A function (x, y) -> seconds for one training epoch; fastnn builds its model now."""
    import fastnn as fn

    fn.set_num_threads(threads)
    model = fastnn_model(row)

    def epoch(x, y):
        h = model.fit(x, y, batch_size=row["batch"], epochs=1, verbose=0)
        return h.history["epoch_time"][0]
    return epoch, fn.__version__


# ---- torch --------------------------------------------------------------------------

def torch_model(row):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if row["table"] == "mlp":
        w = row["width"]
        return nn.Sequential(nn.Linear(784, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                             nn.Linear(w, 10))
    if row["table"] == "cnn":
        c, (h, wd, cin) = row["channels"], row["shape"]
        side = ((h - 2) // 2 - 2) // 2, ((wd - 2) // 2 - 2) // 2
        net = nn.Sequential(nn.Conv2d(cin, c, 3), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(c, 2 * c, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(2 * c * side[0] * side[1], 10))
        return net.to(memory_format=torch.channels_last)
    import torch_transformer

    c = row["channels"]
    return torch_transformer.build_model(VOCAB, row["maxlen"], c, max(1, c // 32), 2 * c,
                                         row["blocks"], 0.1)


def torch_epoch(row, threads):
    import torch

    torch.set_num_threads(threads)
    import torch_mlp

    net = torch_model(row)
    opt = torch_mlp.make_optimizer(net, lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)

    def to_torch(x):
        t = torch.from_numpy(x)
        if row["table"] == "cnn":  # NHWC bytes as an NCHW tensor in channels_last format
            t = t.permute(0, 3, 1, 2)
        elif row["table"] == "transformer":
            t = t.long()
        return t

    def epoch(x, y):
        xt, yt = to_torch(x), torch.from_numpy(y)
        net.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(xt), row["batch"]):
            idx = perm[s:s + row["batch"]]
            xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)
            if row["table"] == "cnn":
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0
    return epoch, torch.__version__


# ---- numpy (MLP only) ---------------------------------------------------------------

def numpy_epoch(row, threads):
    import numpy_mlp

    _common.set_blas_threads(threads)
    w = row["width"]
    net = numpy_mlp.NumpyMLP((784, w, w, 10), batch_size=row["batch"], lr=LR)

    def epoch(x, y):
        return net.fit(x, y, epochs=1)[0]["time"]
    return epoch, np.__version__


RUNNERS = {"fastnn": fastnn_epoch, "torch": torch_epoch, "numpy": numpy_epoch}
MODULES = {"fastnn": "fastnn", "torch": "torch", "numpy": "numpy_mlp"}


def resident_mb():
    """The resident set size of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(impl, row, threads, epoch_s):
    """Times one implementation on one row (in this process); returns the result dict."""
    batch = row["batch"]
    importlib.import_module(MODULES[impl])  # the library is not part of the growth
    x, y = make_data(row, 2 * batch)
    base_mb = resident_mb()
    epoch, version = RUNNERS[impl](row, threads)
    warm = epoch(x, y)  # 2 steps: first-call costs (allocation, thread start, packing)
    steps = int(min(200, max(3, epoch_s / max(warm / 2, 1e-6))))
    x, y = make_data(row, steps * batch)
    times = sorted(epoch(x, y) / steps for _ in range(3))
    return dict(impl=impl, version=version, threads=threads, row=row["name"],
                step_s=times[1], steps=steps, peak_mb=_common.peak_rss_mb() - base_mb)


# ---- driver -------------------------------------------------------------------------

def spawn(impl, row, threads, epoch_s, timeout):
    env = dict(os.environ, **_common.thread_env(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--row-json",
           json.dumps(row), "--threads", str(threads), "--epoch-s", str(epoch_s)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                           cwd=HERE)
    except subprocess.TimeoutExpired:
        return dict(impl=impl, error=f"timeout {timeout:.0f} s")
    if p.returncode != 0:
        return dict(impl=impl, error=(p.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(p.stdout.strip().splitlines()[-1])


def fmt_ms(r):
    return f"{r['step_s'] * 1e3:.2f}" if r and "step_s" in r else (r or {}).get("error", "-")


def table_header(table, impls, markdown):
    peers = [i for i in impls if i != "fastnn"]
    head = (["row", "threads"] + [f"{i} ms/step" for i in impls]
            + [f"fastnn/{p}" for p in peers] + [f"{i} peak MB" for i in impls])
    print(f"\n### {table}\n" if markdown else f"\n{table}")
    print_cells(head, markdown)
    if markdown:
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")


def print_cells(cells, markdown):
    if markdown:
        print("| " + " | ".join(cells) + " |", flush=True)
    else:
        print("  ".join(cells), flush=True)


def table_row(name, threads, by, impls, markdown):
    """One row: each implementation's time per step, fastnn's ratio to each peer, and
    each implementation's peak memory growth."""
    f = by.get("fastnn") or {}
    cells = [name, str(threads)] + [fmt_ms(by.get(i)) for i in impls]
    for p in impls[1:]:
        q = by.get(p) or {}
        cells.append(f"{f['step_s'] / q['step_s']:.2f}" if "step_s" in f and "step_s" in q
                     else "-")
    cells += [f"{by[i]['peak_mb']:.0f}" if "peak_mb" in (by.get(i) or {}) else "-"
              for i in impls]
    print_cells(cells, markdown)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default="mlp,cnn,transformer")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--impls", default="fastnn,torch,numpy")
    ap.add_argument("--rows", default=None, metavar="SUBSTRING",
                    help="only rows whose name contains SUBSTRING")
    ap.add_argument("--epoch-s", type=float, default=0.5,
                    help="about how long each timed epoch runs (3 per row)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per run, in seconds")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", metavar="PATH", help="also write every result to PATH")
    ap.add_argument("--child", choices=list(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--row-json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    if a.child:
        print(json.dumps(child(a.child, json.loads(a.row_json), threads[0], a.epoch_s)))
        return 0

    impls = [i for i in a.impls.split(",") if i != "torch" or _common.have_module("torch")]
    print(f"{_common.cpu_name()}, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.1f}")
    everything = []
    for table in a.table.split(","):
        table_rows = [r for r in rows(table) if not a.rows or a.rows in r["name"]]
        cols = [i for i in impls if any(i in impls_for(r) for r in table_rows)]
        if "fastnn" not in cols or not table_rows:
            continue
        cols = ["fastnn"] + [i for i in cols if i != "fastnn"]
        table_header(table, cols, a.markdown)
        for row in table_rows:
            for n in threads:
                by = {i: spawn(i, row, n, a.epoch_s, a.timeout) for i in cols
                      if i in impls_for(row)}
                everything += [dict(r, table=table, threads=n) for r in by.values()]
                table_row(row["name"], n, by, cols, a.markdown)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(everything, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
