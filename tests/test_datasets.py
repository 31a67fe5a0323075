"""fastnn.datasets: file lookup order, checksums, downloads from a local mirror, IDX parsing,
and the real MNIST files (found through $FASTNN_DATA)."""
import gzip
import hashlib
import io
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from fastnn.datasets import ChecksumMismatchError, DatasetNotFoundError, _files, mnist

REPO = Path(__file__).resolve().parents[1]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _real_data_root():
    """The folder holding mnist/ with the four real files: $FASTNN_DATA, else <repo>/shared/data."""
    cands = [os.environ.get("FASTNN_DATA"), str(REPO / "shared" / "data")]
    for c in cands:
        if c and all((Path(c) / "mnist" / f).is_file() for f in mnist.FILES):
            return Path(c)
    return None


REAL_ROOT = _real_data_root()
needs_real = pytest.mark.skipif(
    REAL_ROOT is None,
    reason="real MNIST files not found: set FASTNN_DATA to a folder holding mnist/ with the "
           "four IDX .gz files (e.g. FASTNN_DATA=/work/shared/data)")


class _Offline:
    """Stand-in for the URL opener: records every URL and fails like a machine with no network."""

    def __init__(self):
        self.urls = []

    def __call__(self, url, timeout):
        self.urls.append(url)
        raise urllib.error.URLError("network disabled in tests")


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch):
    """No network, no real cache: HOME and XDG_CACHE_HOME point into tmp, FASTNN_DATA unset."""
    offline = _Offline()
    monkeypatch.setattr(_files, "_open_url", offline)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    return offline


# ---------------------------------------------------------------- tiny fake IDX datasets

def idx_bytes(arr, code=0x08):
    """An IDX file's bytes for `arr` (big-endian header and data)."""
    arr = np.asarray(arr)
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    return head + arr.astype(dt).tobytes()


def gz(b):
    return gzip.compress(b, mtime=0)


def fake_mnist(n_train=3, n_test=2, seed=0):
    """{file name: gz bytes} of a tiny MNIST-shaped dataset."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        out[f"{split}-images-idx3-ubyte.gz"] = gz(idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        out[f"{split}-labels-idx1-ubyte.gz"] = gz(idx_bytes(rng.integers(0, 10, n)))
    return out


def sha(b):
    return hashlib.sha256(b).hexdigest()


def write_files(folder, contents):
    folder.mkdir(parents=True, exist_ok=True)
    for name, b in contents.items():
        (folder / name).write_bytes(b)
    return folder


@pytest.fixture
def tiny(monkeypatch):
    """A tiny MNIST whose checksums replace the real ones in mnist.FILES."""
    contents = fake_mnist()
    monkeypatch.setattr(mnist, "FILES", {k: sha(v) for k, v in contents.items()})
    return contents


# ---------------------------------------------------------------- real MNIST

@pytest.fixture(scope="module")
def real_mnist():
    if REAL_ROOT is None:
        pytest.skip("real MNIST files not found (set FASTNN_DATA)")
    return mnist.load_data(path=REAL_ROOT / "mnist")


@needs_real
def test_real_mnist_shapes_dtypes_and_label_counts(real_mnist):
    (x_train, y_train), (x_test, y_test) = real_mnist
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (60000,) and y_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_test.shape == (10000,) and y_test.dtype == np.uint8
    assert np.bincount(y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == TEST_COUNTS
    assert x_train.min() == 0 and x_train.max() == 255
    assert x_train.mean() == pytest.approx(33.318, abs=1e-3)
    assert x_test.mean() == pytest.approx(33.791, abs=1e-3)
    assert x_train.flags.writeable and x_train.flags.c_contiguous


@needs_real
def test_real_mnist_through_fastnn_data_env(monkeypatch, real_mnist, sandbox):
    monkeypatch.setenv("FASTNN_DATA", str(REAL_ROOT))
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    np.testing.assert_array_equal(y_train, real_mnist[0][1])
    np.testing.assert_array_equal(x_test, real_mnist[1][0])
    assert sandbox.urls == []  # nothing downloaded


@needs_real
def test_real_file_corrupted_copy_is_named(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for f in mnist.FILES:
        os.symlink(REAL_ROOT / "mnist" / f, folder / f)
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray((REAL_ROOT / "mnist" / bad.name).read_bytes())
    data[100] ^= 0xFF
    bad.unlink()
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt"):
        mnist.load_data(path=folder)


# ---------------------------------------------------------------- lookup order

def test_explicit_path_wins_over_env_and_cache(tmp_path, monkeypatch, tiny):
    mine = write_files(tmp_path / "mine", tiny)
    write_files(tmp_path / "env" / "mnist", tiny)
    write_files(tmp_path / "xdg" / "fastnn" / "mnist", tiny)
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "env"))
    paths = _files.fetch("mnist", mnist.FILES, (), mine)
    assert {p.parent for p in paths.values()} == {mine}
    (x, y), (xt, yt) = mnist.load_data(path=mine)
    assert x.shape == (3, 28, 28) and y.shape == (3,) and xt.shape == (2, 28, 28)


def test_fastnn_data_wins_over_cache(tmp_path, monkeypatch, tiny):
    write_files(tmp_path / "env" / "mnist", tiny)
    write_files(tmp_path / "xdg" / "fastnn" / "mnist", tiny)
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "env"))
    paths = _files.fetch("mnist", mnist.FILES, ())
    assert {p.parent for p in paths.values()} == {tmp_path / "env" / "mnist"}


def test_cache_respects_xdg_cache_home_and_home(tmp_path, monkeypatch, tiny):
    write_files(tmp_path / "xdg" / "fastnn" / "mnist", tiny)
    paths = _files.fetch("mnist", mnist.FILES, ())
    assert {p.parent for p in paths.values()} == {tmp_path / "xdg" / "fastnn" / "mnist"}
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _files.cache_dir("mnist") == tmp_path / "home" / ".cache" / "fastnn" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    assert _files.cache_dir("mnist") == tmp_path / "home" / ".cache" / "fastnn" / "mnist"


def test_files_may_be_split_between_fastnn_data_and_cache(tmp_path, monkeypatch, tiny):
    names = list(tiny)
    write_files(tmp_path / "env" / "mnist", {n: tiny[n] for n in names[:2]})
    write_files(tmp_path / "xdg" / "fastnn" / "mnist", {n: tiny[n] for n in names[2:]})
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "env"))
    (x, y), _ = mnist.load_data()
    assert x.shape == (3, 28, 28)


# ---------------------------------------------------------------- missing files

def test_explicit_path_missing_files_raises_without_downloading(tmp_path, sandbox, tiny):
    folder = write_files(tmp_path / "partial", {"train-labels-idx1-ubyte.gz":
                                                tiny["train-labels-idx1-ubyte.gz"]})
    with pytest.raises(DatasetNotFoundError) as ei:
        mnist.load_data(path=folder)
    msg = str(ei.value)
    for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
              "t10k-labels-idx1-ubyte.gz"):
        assert f in msg
    assert "train-labels-idx1-ubyte.gz" not in msg.split("\n")[0]
    assert str(folder) in msg
    assert sandbox.urls == []
    assert not (tmp_path / "xdg").exists()


def test_explicit_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "mnist.npz"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"path must be the folder holding "
                                                 r"train-images-idx3-ubyte\.gz.*is a file"):
        mnist.load_data(path=f)


def test_offline_missing_files_message_names_files_and_folders(tmp_path, monkeypatch, sandbox):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as ei:
        mnist.load_data()
    msg = str(ei.value)
    for f in mnist.FILES:
        assert f in msg
    cache = tmp_path / "xdg" / "fastnn" / "mnist"
    assert str(tmp_path / "data" / "mnist") in msg
    assert str(cache) in msg
    assert "FASTNN_DATA" in msg
    assert "network disabled in tests" in msg
    # each mirror was tried once, in order (an unreachable mirror is not retried for the
    # other files), and nothing was left behind
    assert len(sandbox.urls) == len(mnist.MIRRORS)
    assert sandbox.urls[0] == mnist.MIRRORS[0] + "train-images-idx3-ubyte.gz"
    assert sandbox.urls[1] == mnist.MIRRORS[1] + "train-images-idx3-ubyte.gz"
    assert not (tmp_path / "xdg").exists()  # not even an empty cache folder


def test_download_false_raises_without_network(tmp_path, sandbox, tiny):
    with pytest.raises(DatasetNotFoundError, match="missing dataset file"):
        _files.fetch("mnist", mnist.FILES, mnist.MIRRORS, download=False)
    assert sandbox.urls == []


# ---------------------------------------------------------------- checksums

def test_corrupt_file_raises_naming_it(tmp_path, tiny):
    folder = write_files(tmp_path / "m", tiny)
    bad = folder / "train-images-idx3-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[-10] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"train-images-idx3-ubyte\.gz is corrupt"):
        mnist.load_data(path=folder)


def test_checksum_verified_once_per_file_until_it_changes(tmp_path, monkeypatch):
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    calls = []
    real = _files.sha256_file
    monkeypatch.setattr(_files, "sha256_file", lambda p: calls.append(p) or real(p))
    _files.verify_file(f, sha(b"hello"))
    _files.verify_file(f, sha(b"hello"))
    assert len(calls) == 1
    f.write_bytes(b"jello")  # same size: only the mtime tells
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ChecksumMismatchError, match="a.bin"):
        _files.verify_file(f, sha(b"hello"))
    assert len(calls) == 2


# ---------------------------------------------------------------- downloads

@pytest.fixture
def real_opener(monkeypatch):
    """Undo the offline stand-in: file:// mirrors go through urllib for real."""
    monkeypatch.setattr(_files, "_open_url", lambda url, timeout: __import__(
        "urllib.request").request.urlopen(url, timeout=timeout))


def test_download_from_local_mirrors_verifies_and_lands_atomically(tmp_path, tiny, real_opener):
    absent = (tmp_path / "absent").as_uri() + "/"
    corrupt = {k: v[:-1] + bytes([v[-1] ^ 1]) for k, v in tiny.items()}
    bad_mirror = write_files(tmp_path / "bad", corrupt).as_uri() + "/"
    good_mirror = write_files(tmp_path / "good", tiny).as_uri()  # no trailing slash
    paths = _files.fetch("mnist", mnist.FILES, [absent, bad_mirror, good_mirror],
                         verbose=False)
    cache = tmp_path / "xdg" / "fastnn" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(tiny)  # no temporary files left
    for name, p in paths.items():
        assert p == cache / name
        assert p.read_bytes() == tiny[name]  # the corrupt mirror's bytes were rejected
    # now cached: a second call downloads nothing
    (x, y), _ = mnist.load_data()
    assert x.shape == (3, 28, 28)


def test_download_checksum_failure_everywhere_leaves_nothing(tmp_path, tiny, real_opener):
    corrupt = {k: b"not the file" for k in tiny}
    bad_mirror = write_files(tmp_path / "bad", corrupt).as_uri() + "/"
    with pytest.raises(DatasetNotFoundError, match="has sha256") as ei:
        _files.fetch("mnist", mnist.FILES, [bad_mirror], verbose=False)
    assert "train-images-idx3-ubyte.gz" in str(ei.value)
    cache = tmp_path / "xdg" / "fastnn" / "mnist"
    assert list(cache.iterdir()) == []


def test_download_interrupted_mid_stream_leaves_no_partial_file(tmp_path, monkeypatch, tiny):
    name = "train-labels-idx1-ubyte.gz"

    class Dying(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection dropped")
            return super().read(4)

        def __exit__(self, *a):
            self.close()

    monkeypatch.setattr(_files, "_open_url", lambda url, timeout: Dying(tiny[name]))
    cache = tmp_path / "xdg" / "fastnn" / "mnist"
    with pytest.raises(DatasetNotFoundError, match="connection dropped"):
        _files.fetch("mnist", {name: mnist.FILES[name]}, ["https://example.invalid/m/"],
                     verbose=False)
    assert list(cache.iterdir()) == []


def test_existing_good_file_is_kept_when_download_fails(tmp_path, monkeypatch, tiny):
    dest = tmp_path / "d" / "f.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"old good bytes")
    monkeypatch.setattr(_files, "_open_url", lambda url, timeout: io.BytesIO(b"wrong"))
    with pytest.raises(ChecksumMismatchError):
        _files._download("file:///x", dest, sha(b"right"))
    assert dest.read_bytes() == b"old good bytes"
    assert os.listdir(dest.parent) == ["f.gz"]


# ---------------------------------------------------------------- IDX parsing

def test_read_idx_plain_and_gzip_and_big_endian(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a, 0x0C))
    (tmp_path / "a.idx.gz").write_bytes(gz(idx_bytes(a, 0x0C)))
    for p in ("a.idx", "a.idx.gz"):
        got = mnist.read_idx(tmp_path / p)
        assert got.dtype == np.int32 and got.dtype.isnative
        np.testing.assert_array_equal(got, a)
    f = np.array([1.5, -2.25], dtype=np.float64)
    (tmp_path / "f.idx").write_bytes(idx_bytes(f, 0x0E))
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "f.idx"), f)


@pytest.mark.parametrize("data, match", [
    (b"", "too short for the 4-byte magic"),
    (b"\x00\x00\x08", "too short for the 4-byte magic"),
    (b"\x12\x34\x08\x01" + b"\x00" * 8, "bad magic number 0x12340801"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic number"),
    (b"\x00\x00\x08\x00", "bad magic number"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header: 3 dimensions"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"truncated IDX data: header says shape \(5,\)"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing bytes"),
    (b"\x00\x00\x08\x02\xff\xff\xff\xff\xff\xff\xff\xff", "truncated IDX data"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_malformed(tmp_path, data, match, compress):
    p = tmp_path / "bad.idx"
    p.write_bytes(gz(data) if compress else data)
    with pytest.raises(ValueError, match=match) as ei:
        mnist.read_idx(p)
    assert str(p) in str(ei.value)


def test_read_idx_rejects_truncated_or_damaged_gzip(tmp_path):
    good = gz(idx_bytes(np.arange(200, dtype=np.uint8)))
    p = tmp_path / "t.gz"
    p.write_bytes(good[:-12])  # cut inside the deflate stream / trailer
    with pytest.raises(ValueError, match=f"{p.name}: (corrupt or truncated gzip|truncated IDX)"):
        mnist.read_idx(p)
    crc = bytearray(good)
    crc[-6] ^= 0xFF  # CRC32 in the trailer
    p.write_bytes(bytes(crc))
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        mnist.read_idx(p)


def test_load_data_checks_shapes_labels_and_counts(tmp_path, monkeypatch):
    def setup(contents):
        folder = write_files(tmp_path / sha(b"".join(contents.values()))[:8], contents)
        monkeypatch.setattr(mnist, "FILES", {k: sha(v) for k, v in contents.items()})
        return folder

    c = fake_mnist()
    c["train-labels-idx1-ubyte.gz"] = gz(idx_bytes(np.array([1, 2, 10])))
    with pytest.raises(ValueError, match="label 10 outside 0..9"):
        mnist.load_data(path=setup(c))
    c = fake_mnist()
    c["t10k-labels-idx1-ubyte.gz"] = gz(idx_bytes(np.array([1, 2, 3])))
    with pytest.raises(ValueError, match="has 2 images but .* has 3 labels"):
        mnist.load_data(path=setup(c))
    c = fake_mnist()
    c["train-images-idx3-ubyte.gz"] = gz(idx_bytes(np.zeros((3, 28, 27))))
    with pytest.raises(ValueError, match=r"expected MNIST images of shape \(N, 28, 28\)"):
        mnist.load_data(path=setup(c))


def test_http_error_skips_one_file_but_unreachable_mirror_is_dropped(tmp_path, monkeypatch, tiny):
    urls = []

    def opener(url, timeout):
        urls.append(url)
        name = url.rsplit("/", 1)[1]
        if url.startswith("https://down.invalid/"):
            raise urllib.error.URLError("Name or service not known")
        if url.startswith("https://a.invalid/") and name == "train-images-idx3-ubyte.gz":
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(tiny[name])

    monkeypatch.setattr(_files, "_open_url", opener)
    mirrors = ["https://down.invalid/", "https://a.invalid/", "https://b.invalid/"]
    paths = _files.fetch("mnist", mnist.FILES, mirrors, verbose=False)
    assert urls == [
        "https://down.invalid/train-images-idx3-ubyte.gz",
        "https://a.invalid/train-images-idx3-ubyte.gz",   # 404: this file only
        "https://b.invalid/train-images-idx3-ubyte.gz",
        "https://a.invalid/train-labels-idx1-ubyte.gz",   # down.invalid not retried
        "https://a.invalid/t10k-images-idx3-ubyte.gz",
        "https://a.invalid/t10k-labels-idx1-ubyte.gz",
    ]
    assert all(p.read_bytes() == tiny[n] for n, p in paths.items())
