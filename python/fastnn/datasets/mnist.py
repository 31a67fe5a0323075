"""MNIST handwritten digits (LeCun, Cortes, Burges): 60,000 train + 10,000 test images.

``load_data()`` returns the same arrays as ``keras.datasets.mnist.load_data()``. The four
original IDX ``.gz`` files are looked for in ``path``, else ``$FASTNN_DATA/mnist``, else
the user cache ``~/.cache/fastnn/mnist`` (``$XDG_CACHE_HOME/fastnn/mnist``), where missing
files are downloaded from the usual mirrors and checked by sha256.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ._files import fetch

__all__ = ["load_data", "read_idx", "FILES", "MIRRORS"]

#: The four original files and their sha256 digests.
FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Mirrors tried in order for missing files.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# IDX type code (third byte of the magic number) -> big-endian element dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path):
    """Open a file for reading, transparently gunzipping it when it starts with the gzip magic."""
    f = open(path, "rb")
    head = f.read(2)
    f.seek(0)
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _read_exact(f, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a native-endian NumPy array.

    Checks the magic number (two zero bytes, a known type code, 1..255 dimensions), that
    the data holds exactly prod(dims) elements (truncated or overlong files raise), and
    the gzip stream's integrity. Raises ``ValueError`` naming the file and the problem.
    """
    path = Path(path)
    raw, fh = _open(path)
    try:
        try:
            magic = _read_exact(raw, 4)
            if len(magic) < 4:
                raise ValueError(f"{path}: not an IDX file: {len(magic)} bytes, "
                                 f"too short for the 4-byte magic number")
            if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or magic[3] == 0:
                raise ValueError(f"{path}: not an IDX file: bad magic number 0x{magic.hex()} "
                                 f"(expected 0x0000TTNN with type TT in "
                                 f"{sorted(hex(t) for t in _IDX_DTYPES)} and NN >= 1 dims)")
            dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
            dims_raw = _read_exact(raw, 4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need "
                                 f"{4 * ndim} bytes after the magic number, got {len(dims_raw)}")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            count = math.prod(dims)
            nbytes = count * dtype.itemsize
            # Refuse impossible sizes before allocating: an uncompressed file must hold the
            # bytes; deflate expands at most ~1032:1, which bounds a gzip file's contents.
            size = os.fstat(fh.fileno()).st_size
            limit = size - 4 - 4 * ndim if raw is fh else 1032 * size + 1024
            if nbytes > limit:
                raise ValueError(f"{path}: truncated IDX data: header says shape {dims} "
                                 f"({nbytes} bytes of {dtype.str[1:]}), but the file is "
                                 f"only {size} bytes{' compressed' if raw is not fh else ''}")
            out = np.empty(dims, dtype=dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            got = 0
            while got < nbytes:
                n = raw.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < nbytes:
                raise ValueError(f"{path}: truncated IDX data: header says shape {dims} "
                                 f"({nbytes} bytes of {dtype.str[1:]}), file holds {got}")
            extra = raw.read(1)  # also reaches the gzip trailer, which checks the CRC
            if extra:
                raise ValueError(f"{path}: IDX file has trailing bytes after the "
                                 f"{nbytes} data bytes its header {dims} describes")
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip stream: {e}") from e
    finally:
        raw.close()
        fh.close()
    return out.astype(dtype.newbyteorder("="), copy=False)


def _check(path: Path, arr: np.ndarray, shape_tail: tuple[int, ...], kind: str) -> None:
    if arr.dtype != np.uint8 or arr.shape[1:] != shape_tail:
        want = ", ".join(["N", *map(str, shape_tail)])
        raise ValueError(f"{path}: expected MNIST {kind} of shape ({want}) uint8, "
                         f"got {arr.shape} {arr.dtype}")


def load_data(path: str | os.PathLike | None = None):
    """Load MNIST as ``((x_train, y_train), (x_test, y_test))``, like Keras.

    Args:
        path: a folder holding the four IDX ``.gz`` files. When given, the files must be
            there (nothing is downloaded). When None, ``$FASTNN_DATA/mnist`` and then the
            user cache ``~/.cache/fastnn/mnist`` are searched, and missing files are
            downloaded into the cache.

    Returns:
        ``x_train`` (60000, 28, 28) uint8, ``y_train`` (60000,) uint8 in 0..9,
        ``x_test`` (10000, 28, 28) uint8, ``y_test`` (10000,) uint8. Pixels 0 = background,
        255 = ink. The arrays are writeable and independent.

    Raises:
        fastnn.datasets.DatasetNotFoundError: files missing and not downloadable (the
            message names them and where to put them).
        fastnn.datasets.ChecksumMismatchError: a file has the wrong sha256.
        ValueError: a file is not a valid IDX file of the expected shape.
    """
    paths = fetch("mnist", FILES, MIRRORS, path)
    out = []
    for split in ("train", "t10k"):
        ip, lp = paths[f"{split}-images-idx3-ubyte.gz"], paths[f"{split}-labels-idx1-ubyte.gz"]
        x, y = read_idx(ip), read_idx(lp)
        _check(ip, x, (28, 28), "images")
        _check(lp, y, (), "labels")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{ip} has {x.shape[0]} images but {lp} has {y.shape[0]} labels")
        if y.size and y.max() > 9:
            raise ValueError(f"{lp}: label {int(y.max())} outside 0..9")
        out.append((x, y))
    return tuple(out)
