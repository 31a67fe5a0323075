"""Data-parallel training over MPI (through mpi4py), with the results of one process.

Start the same program on K processes (``mpirun -np K python train.py``) and turn the
distribution on before ``fit``, as Keras 3 does::

    import fastnn as fn
    fn.distribute.set_distribution(fn.distribute.DataParallel())
    model.fit(x, y, batch_size=64, seed=0)

How a step runs. Every global batch of B samples (the same shuffle on every rank: the
fit seed is rank 0's) is cut into ``num_shards`` S contiguous shards of near-equal size;
rank r owns shards r·S/K ... (r+1)·S/K - 1, takes only their rows from x and y, and runs
forward and backward once per shard, each shard's gradient in a buffer of its own and
scaled so that the sum is the gradient of the mean loss over the global batch. The
gradient of the step is then the sum of the S shard gradients folded in shard order,
((g0 + g1) + g2) + ..., whatever K is: the flat gradient buffer is cut into K segments,
rank d receives segment d of every shard gradient (MPI_Alltoallv), folds it in shard
order and the folded segments are gathered back on every rank (MPI_Allgatherv). That is
the bandwidth of a ring allreduce (2·(K-1)/K of the buffer per rank) with a fixed order
of additions. Then each rank makes the same optimizer step.

What is the same for any K. With a fixed fit seed and a fixed ``num_shards`` S, the
weights, optimizer state, BatchNormalization statistics, History and metrics after
``fit`` are bitwise identical for every K that divides S, K = 1 included (one process
runs the S shards one after another, no MPI needed). S defaults to K, so
``DataParallel(num_shards=4)`` is the setting to compare 1, 2 and 4 processes with; a
plain ``fit`` without a distribution is S = 1. Dropout masks depend on (step, shard),
not on the rank.

BatchNormalization normalises each shard with the shard's own statistics (per rank, the
Keras and PyTorch default); its moving statistics are updated once per step from the
statistics of the whole global batch, combined in shard order on every rank. With
``BatchNormalization(synchronized=True)`` (one shard per process) every shard is
normalised with the global batch's statistics instead, gathered in the forward pass, and
the backward pass uses the global sums too (PyTorch's SyncBatchNorm); the results are the
same for every run with the same process count, not across process counts.

Callbacks run on every rank with the same logs (so EarlyStopping stops every rank at the
same epoch); files are written by rank 0 only (ModelCheckpoint, the others wait for it),
and only rank 0 prints progress. A rank that raises prints the error with its rank and
ends the whole job (MPI_Abort), so no rank waits forever in a collective.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

import numpy as np

__all__ = ["DataParallel", "set_distribution", "distribution", "rank", "size",
           "is_writer", "barrier", "launched_by_mpi"]

# Environment variables that MPI launchers set in every process they start.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


def launched_by_mpi() -> bool:
    """True when this process was started by an MPI launcher with more than one process."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        v = os.environ.get(var)
        if v is not None and v.isdigit() and int(v) > 1:
            return True
    return False


def _world():
    """MPI.COMM_WORLD, or None when this is a single process not started by MPI (then
    mpi4py is not imported at all)."""
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("fastnn.distribute: this process was started by an MPI launcher "
                          "but mpi4py is not installed; pip install 'fastnn[mpi]'") from None
    return MPI.COMM_WORLD


class DataParallel:
    """Data parallelism over the processes of an MPI job (one model replica per rank).

    Args:
        num_shards: how many shards each global batch is cut into; a multiple of the
            number of processes (default: the number of processes). Runs with the same
            num_shards give the same weights for any process count dividing it.
        comm: an mpi4py communicator (default: MPI.COMM_WORLD when started by mpirun,
            else none: a single process).
        threads: kernel threads per rank. Default: the cores of this machine shared out
            between the ranks on it, unless OMP_NUM_THREADS or a set_num_threads call
            already chose.

    Attributes: ``rank``, ``size`` (processes), ``num_shards``.
    """

    def __init__(self, num_shards: int | None = None, comm=None, threads: int | None = None):
        self.comm = comm if comm is not None else _world()
        if self.comm is not None and self.comm.Get_size() == 1:
            self.comm = None
        self.rank = 0 if self.comm is None else self.comm.Get_rank()
        self.size = 1 if self.comm is None else self.comm.Get_size()
        if num_shards is None:
            num_shards = self.size
        if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
            raise ValueError(f"DataParallel: num_shards must be a positive int, got {num_shards!r}")
        if num_shards % self.size:
            raise ValueError(f"DataParallel: num_shards ({num_shards}) must be a multiple of the "
                             f"number of processes ({self.size})")
        self.num_shards = int(num_shards)
        self._threads = threads
        self._bufs: dict = {}
        #: seconds spent, summed over steps: "compute" (this rank's shards forward and
        #: backward), "reduce" (the gradient fold), "gather" (losses, predictions and batch
        #: statistics of every shard), "step" (optimizer); reset with reset_timings()
        self.timings = dict.fromkeys(("compute", "reduce", "gather", "step"), 0.0)

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, size={self.size}, num_shards={self.num_shards})"

    def reset_timings(self) -> None:
        for k in self.timings:
            self.timings[k] = 0.0

    # --- the shards of a global batch -------------------------------------------------
    def shard_bounds(self, n: int) -> np.ndarray:
        """Start offsets of the num_shards shards of a batch of n rows, and n: shard s is
        rows [b[s], b[s+1]). Sizes differ by at most one (the larger shards first)."""
        s = self.num_shards
        sizes = np.full(s, n // s, np.int64)
        sizes[:n % s] += 1
        return np.concatenate([[0], np.cumsum(sizes)])

    @property
    def local_shards(self) -> range:
        q = self.num_shards // self.size
        return range(self.rank * q, (self.rank + 1) * q)

    # --- collectives ------------------------------------------------------------------
    def _buf(self, key, shape, dtype=np.float32):
        b = self._bufs.get(key)
        if b is None or b.shape != tuple(shape):
            b = self._bufs[key] = np.empty(shape, dtype)
        return b

    def _segments(self, p: int) -> np.ndarray:
        k = self.size
        return np.array([p * d // k for d in range(k + 1)], np.int64)

    def reduce_shards(self, grads: np.ndarray, out: np.ndarray, live: list[bool]) -> None:
        """out = the fold, in shard order, of the shard gradients over all ranks.

        grads: (q, P) float32, row j the gradient of local shard j. live: for every one of
        the num_shards shards, whether it had rows (empty shards are left out of the
        fold). Every rank gets the same out.
        """
        q, p = grads.shape
        if self.comm is None:
            _fold(out, [grads[j] for j in range(q) if live[j]])
            return
        from mpi4py import MPI
        k, seg = self.size, self._segments(p)
        lens = np.diff(seg)
        # send block d: rows 0..q-1 of segment d, one after another
        send = self._buf("send", (q * p,))
        off = 0
        for d in range(k):
            block = send[off:off + q * lens[d]].reshape(q, lens[d])
            block[...] = grads[:, seg[d]:seg[d + 1]]
            off += q * lens[d]
        mine = lens[self.rank]
        recv = self._buf("recv", (k, q, mine))
        scounts = q * lens
        sdispls = np.concatenate([[0], np.cumsum(scounts)[:-1]])
        rcounts = np.full(k, q * mine)
        rdispls = np.arange(k) * q * mine
        self.comm.Alltoallv([send, (scounts, sdispls), MPI.FLOAT],
                            [recv, (rcounts, rdispls), MPI.FLOAT])
        folded = self._buf("folded", (mine,))
        rows = recv.reshape(k * q, mine)
        _fold(folded, [rows[s] for s in range(k * q) if live[s]])
        self.comm.Allgatherv([folded, MPI.FLOAT], [out, (lens, seg[:-1]), MPI.FLOAT])

    # --- synchronised BatchNormalization ---------------------------------------------
    def global_moments(self, mean: np.ndarray, var: np.ndarray, x: np.ndarray) -> None:
        """mean, var (C,) = the per-channel mean and biased variance of the rows of x (M, C)
        over every rank's x: float64 sums of each rank, added in rank order."""
        parts = self.comm.allgather((x.shape[0], x.sum(0, dtype=np.float64),
                                     np.square(x, dtype=np.float64).sum(0)))
        n, s, ss = _rank_order_sum(parts)
        m = s / n
        mean[...] = m
        var[...] = np.maximum(ss / n - m * m, 0.0)

    def global_sums(self, dy: np.ndarray, xhat: np.ndarray):
        """(Σ dy, Σ dy·x̂ per channel, rows) over every rank's rows, in rank order."""
        parts = self.comm.allgather((dy.shape[0], dy.sum(0, dtype=np.float64),
                                     np.einsum("mc,mc->c", dy, xhat, dtype=np.float64)))
        n, s1, s2 = _rank_order_sum(parts)
        return s1, s2, n

    def _idle_sync(self, norms: list) -> None:
        """A rank whose shard of this batch is empty still takes part in the gathers the
        synchronised BatchNormalization layers make (forward in order, backward in
        reverse), with nothing to add."""
        for layer in norms:
            c = layer.moving_mean.shape[0]
            self.comm.allgather((0, np.zeros(c), np.zeros(c)))
        for layer in reversed(norms):
            if layer.need_input_grad:
                c = layer.moving_mean.shape[0]
                self.comm.allgather((0, np.zeros(c), np.zeros(c)))

    def allgather(self, obj) -> list:
        """Every rank's obj, in rank order (pickled; for small things)."""
        return [obj] if self.comm is None else self.comm.allgather(obj)

    def bcast(self, obj):
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def bcast_array(self, a: np.ndarray) -> None:
        """Overwrite a (C-contiguous) on every rank with rank 0's values."""
        if self.comm is not None and a.size:
            self.comm.Bcast(a, root=0)

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def abort(self, exc: BaseException) -> None:
        """Print exc with this rank named and end every rank of the job."""
        msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"fastnn.distribute: rank {self.rank} of {self.size} failed; "
                         f"ending the job on every rank.\n{msg}")
        sys.stderr.flush()
        self.comm.Abort(1)

    def apply_threads(self) -> None:
        """Share this machine's cores between the ranks on it (see ``threads``)."""
        from . import _runtime
        n = self._threads
        if n is None:
            if self.size == 1 or "OMP_NUM_THREADS" in os.environ or _runtime._threads_set[0]:
                return
            local = next((int(os.environ[v]) for v in _LOCAL_SIZE_VARS
                          if os.environ.get(v, "").isdigit()), self.size)
            n = max(1, (os.cpu_count() or 1) // max(1, local))
        _runtime.set_num_threads(int(n))


    # --- one training step ------------------------------------------------------------
    def sync_model(self, model) -> None:
        """Give every rank rank 0's weights, layer state and optimizer state."""
        if self.comm is None:
            return
        self.bcast_array(model._params)
        for a in model._state_arrays().values():
            self.bcast_array(a)
        opt = model.optimizer
        opt.iterations = self.bcast(opt.iterations)
        for a in opt.state().values():
            self.bcast_array(a)

    def train_batch(self, model, xs: list, ys: list, idx: np.ndarray, step: int, seeded: list):
        """One optimizer step on the global batch ``idx`` (rows of xs/ys): this rank's
        shards forward and backward, the gradients folded over all ranks, the moving
        statistics updated, then the step. Returns (sum of losses, predictions of the
        whole batch in row order), the same on every rank."""
        s_count = self.num_shards
        bounds = self.shard_bounds(len(idx))
        live = [bool(bounds[s + 1] > bounds[s]) for s in range(s_count)]
        n_tr = model._n_trainable
        grads = self._buf("grads", (len(self.local_shards), n_tr))
        norms = _batch_norms(model) if s_count > 1 else []
        synced = [la for la in norms if la.synchronized] if self.comm is not None else []
        if synced and s_count != self.size:
            raise ValueError(f"fastnn.distribute: BatchNormalization(synchronized=True) needs one "
                             f"shard per process; num_shards is {s_count} for {self.size} "
                             "processes")
        local = {}
        t0 = time.perf_counter()
        for j, s in enumerate(self.local_shards):
            if not live[s]:
                if synced:
                    self._idle_sync(synced)
                continue
            rows = idx[bounds[s]:bounds[s + 1]]
            xb = [np.take(a, rows, axis=0) for a in xs]
            yb = [a[rows] for a in ys]
            for layer in seeded:  # dropout masks from (step, shard), not from the rank
                layer._calls = step * s_count + s
            for layer in norms:
                layer._shard_stats = []
            try:
                loss_sum, preds = model._loss_and_grads(xb, yb, scale=len(rows) / len(idx))
            finally:
                stats = [layer.__dict__.pop("_shard_stats", None) for layer in norms]
            np.copyto(grads[j], model._grads[:n_tr])
            preds = [p.copy() for p in (preds if isinstance(preds, list) else [preds])]
            local[s] = (loss_sum, preds, stats)
        for layer in seeded:
            layer._calls = (step + 1) * s_count
        t1 = time.perf_counter()
        self.reduce_shards(grads, model._grads[:n_tr], live)
        t2 = time.perf_counter()
        shards = {}
        for part in self.allgather(local):
            shards.update(part)
        order = sorted(shards)
        total = 0.0
        for s in order:
            total += shards[s][0]
        for i, layer in enumerate(norms):
            _update_moving(layer, [st for s in order for st in shards[s][2][i]])
        t3 = time.perf_counter()
        model.optimizer._step(model._params[:n_tr], model._grads[:n_tr])
        t4 = time.perf_counter()
        tm = self.timings
        tm["compute"] += t1 - t0
        tm["reduce"] += t2 - t1
        tm["gather"] += t3 - t2
        tm["step"] += t4 - t3
        outs = [np.concatenate([shards[s][1][k] for s in order]) for k in range(len(shards[order[0]][1]))]
        return total, (outs[0] if len(outs) == 1 else outs)


def _rank_order_sum(parts):
    """(rows, Σ a, Σ b) of [(rows, a, b), ...] from every rank, added in rank order."""
    n, a, b = parts[0]
    a, b = a.copy(), b.copy()
    for m, pa, pb in parts[1:]:
        n += m
        a += pa
        b += pb
    return n, a, b


def _batch_norms(model) -> list:
    """The model's BatchNormalization layers that use batch statistics when training."""
    from .layers.normalization import BatchNormalization
    return [l for l in model._leaf_layers if isinstance(l, BatchNormalization) and l.trainable]


def _update_moving(layer, stats: list) -> None:
    """moving = momentum·moving + (1 - momentum)·(statistic of the global batch), from each
    shard's (rows, mean, 1/sqrt(var + eps)) in shard order, in float64."""
    n = np.array([st[0] for st in stats], np.float64)[:, None]
    mean = np.stack([st[1] for st in stats]).astype(np.float64)
    var = 1.0 / np.square(np.stack([st[2] for st in stats]).astype(np.float64)) - layer.epsilon
    total = n.sum()
    g_mean = (n * mean).sum(axis=0) / total
    g_var = (n * (np.maximum(var, 0.0) + np.square(mean - g_mean))).sum(axis=0) / total
    m = float(layer.momentum)
    layer.moving_mean[...] = m * layer.moving_mean.astype(np.float64) + (1.0 - m) * g_mean
    layer.moving_variance[...] = m * layer.moving_variance.astype(np.float64) + (1.0 - m) * g_var


def _fold(out: np.ndarray, rows: list) -> None:
    """out = ((rows[0] + rows[1]) + rows[2]) + ... ; zeros when there are none."""
    if not rows:
        out.fill(0.0)
        return
    np.copyto(out, rows[0])
    for r in rows[1:]:
        np.add(out, r, out=out)


@contextlib.contextmanager
def ending_job_on_error(dist: DataParallel | None):
    """Within it, an exception on one rank of a multi-process run ends every rank (they
    would otherwise wait for it in the next collective); a single process just raises."""
    if dist is None or dist.comm is None:
        yield
        return
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - every failure must end the job
        dist.abort(e)
        raise


_ACTIVE: list = [None]


def set_distribution(value: DataParallel | None) -> None:
    """Make ``fit`` train data-parallel with ``value`` (None: back to one process)."""
    if value is not None and not isinstance(value, DataParallel):
        raise TypeError(f"set_distribution: argument 'value' must be a DataParallel or None, "
                        f"got {type(value).__name__}")
    _ACTIVE[0] = value
    if value is not None:
        value.apply_threads()


def distribution() -> DataParallel | None:
    """The distribution set by set_distribution, or None."""
    return _ACTIVE[0]


def rank() -> int:
    """This process's rank in the active distribution (0 without one)."""
    d = _ACTIVE[0]
    return 0 if d is None else d.rank


def size() -> int:
    """Processes in the active distribution (1 without one)."""
    d = _ACTIVE[0]
    return 1 if d is None else d.size


def is_writer() -> bool:
    """Whether this process writes files and prints progress (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank of the active distribution (nothing without one)."""
    d = _ACTIVE[0]
    if d is not None:
        d.barrier()
