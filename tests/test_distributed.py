"""fastnn.distribute: data-parallel fit with the results of one process.

The single-process tests always run. The MPI tests start tests/dp_worker.py under
mpiexec (mpi4py and an MPI launcher from the test extra) and are skipped, with the
reason shown, when either is missing."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fn
from fastnn import distribute

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "dp_worker.py")


def _mpiexec():
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def _have_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return _mpiexec() is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="mpi4py or mpiexec missing "
                                                      "(pip install '.[mpi]')")


def _env():
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(fn.__file__)))
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("OMP_NUM_THREADS", None)
    return env


def _launch(np_, out, *args, timeout=120):
    cmd = [sys.executable, WORKER, str(out), *map(str, args)]
    if np_:
        exe = _mpiexec()
        flags = []
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        if "Open MPI" in version or "OpenRTE" in version:  # a container: root, 2 cores
            flags = ["--allow-run-as-root", "--oversubscribe"]
        cmd = [exe, *flags, "-n", str(np_), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k != "size":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture
def no_distribution():
    yield
    distribute.set_distribution(None)


def _data(n=100):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _model(bn=True):
    layers = [fn.layers.Dense(8, activation="relu", input_shape=(6,))]
    if bn:
        layers.append(fn.layers.BatchNormalization())
    layers += [fn.layers.Dropout(0.3), fn.layers.Dense(2)]
    m = fn.Sequential(layers, seed=5)
    m.compile(optimizer="adam", loss=fn.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m


def _train(shards, epochs=2, batch=24, bn=True):
    distribute.set_distribution(None if shards is None else distribute.DataParallel(num_shards=shards))
    x, y = _data()
    m = _model(bn)
    h = m.fit(x, y, batch_size=batch, epochs=epochs, seed=2, verbose=0)
    distribute.set_distribution(None)
    return m.get_weights(), h.history


# --- one process ------------------------------------------------------------------------
def test_one_shard_is_plain_fit(no_distribution):
    w0, h0 = _train(None)
    w1, h1 = _train(1)
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    assert h0["loss"] == h1["loss"] and h0["accuracy"] == h1["accuracy"]


def test_shards_are_deterministic_and_close_to_plain_fit(no_distribution):
    wa, ha = _train(4)
    wb, hb = _train(4)
    for a, b in zip(wa, wb):
        np.testing.assert_array_equal(a, b)
    assert ha == {**hb, "epoch_time": ha["epoch_time"]}
    # without dropout and batch norm the 4 shard gradients sum to the batch's gradient
    x, y = _data()
    distribute.set_distribution(distribute.DataParallel(num_shards=4))
    m = _model(bn=False)
    m.layers[1].rate = 0.0
    m.fit(x, y, batch_size=24, epochs=1, seed=2, verbose=0)
    distribute.set_distribution(None)
    m2 = _model(bn=False)
    m2.layers[1].rate = 0.0
    m2.fit(x, y, batch_size=24, epochs=1, seed=2, verbose=0)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_shard_bounds_cover_the_batch():
    d = distribute.DataParallel(num_shards=4)
    assert d.shard_bounds(10).tolist() == [0, 3, 6, 8, 10]
    assert d.shard_bounds(2).tolist() == [0, 1, 2, 2, 2]  # empty shards at the end
    assert list(d.local_shards) == [0, 1, 2, 3] and d.size == 1 and d.rank == 0


def test_fold_is_in_shard_order_and_skips_empty_shards():
    d = distribute.DataParallel(num_shards=3)
    g = np.array([[1e8, 0.0], [1.0, 2.0], [-1e8, 5.0]], np.float32)
    out = np.empty(2, np.float32)
    d.reduce_shards(g, out, [True, True, True])
    expect = (np.float32(1e8) + np.float32(1.0)) + np.float32(-1e8)  # 0, not 1
    assert out[0] == expect and out[1] == 7.0
    d.reduce_shards(g, out, [True, False, True])
    assert out.tolist() == [0.0, 5.0]


def test_batch_norm_moving_statistics_follow_the_global_batch(no_distribution):
    x, y = _data(64)
    distribute.set_distribution(distribute.DataParallel(num_shards=4))
    m = _model()
    m.build((None, 6))
    k0, b0 = m.layers[0].kernel.copy(), m.layers[0].bias.copy()
    m.fit(x, y, batch_size=64, epochs=1, verbose=0)  # one step
    distribute.set_distribution(None)
    # 0.99·initial + 0.01·(statistics of the whole batch before the step), not of a shard
    h = np.maximum(x.astype(np.float64) @ k0 + b0, 0)
    bn = m.layers[1]
    np.testing.assert_allclose(bn.moving_mean, 0.01 * h.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance, 0.99 + 0.01 * h.var(0), rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_shards must be a positive int"):
        distribute.DataParallel(num_shards=0)
    with pytest.raises(ValueError, match="num_shards must be a positive int"):
        distribute.DataParallel(num_shards=2.5)
    with pytest.raises(TypeError, match="set_distribution: argument 'value' must be a DataParallel"):
        distribute.set_distribution("mpi")


def test_custom_train_step_is_refused(no_distribution):
    class Custom(fn.Model):
        def train_step(self, data):
            return super().train_step(data)

    inp = fn.Input((6,))
    m = Custom(inp, fn.layers.Dense(2)(inp))
    m.compile(optimizer="sgd", loss=fn.losses.SparseCategoricalCrossentropy(from_logits=True))
    distribute.set_distribution(distribute.DataParallel())
    x, y = _data()
    with pytest.raises(NotImplementedError, match="custom train_step"):
        m.fit(x, y, verbose=0)


def test_not_started_by_mpi(monkeypatch):
    for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    assert not distribute.launched_by_mpi()
    assert distribute.DataParallel().comm is None
    monkeypatch.setenv("PMI_SIZE", "2")
    assert distribute.launched_by_mpi()


# --- several processes ------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("samples,batch", [(200, 36), (120, 24)])  # 200: an uneven last batch
def test_ranks_give_the_weights_of_one_process(tmp_path, samples, batch):
    ref = _launch(0, tmp_path / "one", "--shards", 6, "--samples", samples, "--batch", batch)
    assert ref.returncode == 0, ref.stderr
    one = _load(tmp_path / "one.0.npz")
    for k in (2, 3):
        r = _launch(k, tmp_path / f"k{k}", "--shards", 6, "--samples", samples, "--batch", batch)
        assert r.returncode == 0, r.stderr
        for rank in range(k):
            got = _load(tmp_path / f"k{k}.{rank}.npz")
            assert int(got["size"]) == k
            _same(one, got)  # weights, optimizer state, history (incl. validation)


@needs_mpi
def test_checkpoint_written_by_rank_zero(tmp_path):
    ckpt = tmp_path / "ckpt" / "m-{epoch}.fastnn"
    r = _launch(2, tmp_path / "c", "--shards", 2, "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    saved = fn.load_model(str(tmp_path / "ckpt" / "m-2.fastnn"))
    w = _load(tmp_path / "c.1.npz")
    for i, a in enumerate(saved.get_weights()):
        np.testing.assert_array_equal(a, w[f"w{i}"])


@needs_mpi
def test_a_failing_rank_ends_the_job(tmp_path):
    r = _launch(2, tmp_path / "f", "--shards", 2, "--fail-rank", 1, "--epochs", 200, timeout=60)
    assert r.returncode != 0
    assert "fastnn.distribute: rank 1 of 2 failed" in r.stderr
    assert "a failure on purpose" in r.stderr
    assert not (tmp_path / "f.0.npz").exists()


@needs_mpi
@pytest.mark.parametrize("samples", [200, 181])  # 181 = 5·36 + 1: a last batch of one row
def test_synchronized_batch_norm_computes_the_global_batch(tmp_path, samples):
    """With synchronized=True, 2 ranks of half a batch compute what one process computes on
    the whole batch (plain BatchNormalization): the same weights up to the order of float
    additions; also when one rank's shard of the last batch is empty."""
    args = ("--samples", samples, "--sync-bn", "--no-dropout")
    one = _launch(0, tmp_path / "one", "--shards", 0, *args)
    assert one.returncode == 0, one.stderr
    two = _launch(2, tmp_path / "two", "--shards", 2, *args)
    assert two.returncode == 0, two.stderr
    a = _load(tmp_path / "one.0.npz")
    for r in (0, 1):
        b = _load(tmp_path / f"two.{r}.npz")
        for k in a:
            if k.startswith("w") or k.startswith("log.loss"):
                np.testing.assert_allclose(b[k], a[k], rtol=2e-4, atol=2e-5, err_msg=k)
    # without synchronisation each rank normalises with its half: visibly different
    plain = _launch(2, tmp_path / "plain", "--shards", 2, "--samples", samples, "--no-dropout")
    assert plain.returncode == 0, plain.stderr
    c = _load(tmp_path / "plain.0.npz")
    assert max(np.abs(c[k] - a[k]).max() for k in a if k.startswith("w")) > 1e-3


@needs_mpi
def test_synchronized_batch_norm_needs_one_shard_per_process(tmp_path):
    r = _launch(2, tmp_path / "x", "--shards", 4, "--sync-bn")
    assert r.returncode != 0
    assert "one shard per process" in r.stderr
