"""Model files in the safetensors layout, read and written with NumPy alone.

Layout (https://github.com/huggingface/safetensors):

- 8 bytes: N, the header length, unsigned 64-bit little-endian;
- N bytes: a UTF-8 JSON object ``{"<name>": {"dtype": "F32", "shape": [...],
  "data_offsets": [begin, end]}, ..., "__metadata__": {"<key>": "<value>"}}``, padded
  with spaces so the data starts 8-byte aligned;
- the tensors' raw little-endian bytes, back to back; offsets are relative to the end of
  the header, and the tensors tile the data region exactly with no gaps.

Files written here load with the ``safetensors`` package and the other way round (for
the dtypes listed in :data:`DTYPES`). Writes are atomic: the bytes go to a temporary file
in the target's folder, are fsynced, and replace the target with ``os.replace``, so a
crash leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import numpy as np

from ._atomic import atomic_write

__all__ = ["save_safetensors", "load_safetensors", "DTYPES"]

#: safetensors dtype name -> little-endian NumPy dtype.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}

# safetensors refuses headers above 100 MB; so do we (a corrupt length must not allocate).
_MAX_HEADER = 100_000_000
_META = "__metadata__"


def _dtype_name(arr: np.ndarray, key: str) -> str:
    name = _NAMES.get((arr.dtype.kind, arr.dtype.itemsize))
    if name is None:
        raise TypeError(f"save_safetensors: tensor {key!r} has dtype {arr.dtype}, which the "
                        f"format cannot hold (supported: {', '.join(DTYPES)})")
    return name


def _write_array(f, arr: np.ndarray) -> None:
    """Write one C-contiguous little-endian array's bytes to ``f``."""
    if arr.size:
        f.write(memoryview(arr.reshape(-1)).cast("B"))


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) and string ``metadata`` to a safetensors file.

    Arrays are stored C-contiguous and little-endian in their own dtype (F64, F32, F16,
    I64, I32, I16, I8, U64, U32, U16, U8, BOOL); 0-d and empty arrays are allowed. The
    tensors are laid out by decreasing item size (so every tensor is aligned), keeping
    the given order among tensors of the same item size.

    The write is atomic: a temporary file in the same folder is written, fsynced and
    renamed over ``path``; on any error it is removed and an existing file is untouched.

    Raises:
        TypeError: a name or metadata key/value is not a str, or a dtype is unsupported.
        ValueError: a tensor is named ``"__metadata__"``.
    """
    path = os.fspath(path)
    arrays = []
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"save_safetensors: tensor names must be str, got {key!r}")
        if key == _META:
            raise ValueError(f"save_safetensors: {_META!r} is reserved for metadata, "
                             f"not a tensor name")
        arr = np.asarray(value)
        name = _dtype_name(arr, key)
        arrays.append((key, name, np.asarray(arr, dtype=DTYPES[name], order="C")))
    meta = {}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"save_safetensors: metadata must map str to str, got "
                            f"{k!r}: {type(v).__name__}")
        meta[k] = v

    arrays.sort(key=lambda t: -t[2].dtype.itemsize)  # stable: same-size order is kept
    header: dict = {}
    if meta:
        header[_META] = meta
    offset = 0
    for key, name, arr in arrays:
        header[key] = {"dtype": name, "shape": list(arr.shape),
                       "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    hbytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)

    with atomic_write(path) as f:
        f.write(len(hbytes).to_bytes(8, "little"))
        f.write(hbytes)
        for _, _, arr in arrays:
            _write_array(f, arr)


def _bad(path, msg: str) -> ValueError:
    return ValueError(f"{path}: not a valid safetensors file: {msg}")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise KeyError(k)
        out[k] = v
    return out


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file; return ``(tensors, metadata)``.

    ``tensors`` maps names to writeable, native-endian arrays in file (data offset)
    order; ``metadata`` is the ``__metadata__`` dict (empty when absent).

    Everything is checked before any array is returned: the header length against the
    file size, the JSON, every entry's keys, dtype, shape and offsets, that the tensors
    tile the data region exactly (contiguous, in range, no overlap or gap, nothing after
    the last one), that shape x item size equals the byte length, and that BOOL bytes
    are 0 or 1.

    Raises:
        ValueError: naming the file and the problem, for a truncated, corrupt or
            inconsistent file (including an unsupported dtype).
        OSError: the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"file is {size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise _bad(path, f"header length {n} runs past the end of the file "
                             f"({size} bytes): truncated or corrupt")
        if n > _MAX_HEADER:
            raise _bad(path, f"header length {n} exceeds the {_MAX_HEADER}-byte limit")
        hbytes = f.read(n)
        data_len = size - 8 - n
        data = np.empty(data_len, dtype=np.uint8)
        got = f.readinto(memoryview(data)) if data_len else 0
        if len(hbytes) != n or got != data_len:
            raise _bad(path, "file changed size while being read")

    try:
        header = json.loads(hbytes.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise _bad(path, f"header is not UTF-8 ({e})") from None
    except KeyError as e:
        raise _bad(path, f"header has a duplicate key {e.args[0]!r}") from None
    except ValueError as e:
        raise _bad(path, f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _bad(path, f"header is a JSON {type(header).__name__}, expected an object")

    meta = header.pop(_META, {})
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _bad(path, f"{_META} must be an object mapping strings to strings")

    entries = []
    for key, info in header.items():
        where = f"tensor {key!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _bad(path, f"{where}: entry must be an object with exactly the keys "
                             f"dtype, shape, data_offsets; got {info!r}")
        dname, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dname not in DTYPES:
            raise _bad(path, f"{where}: unsupported dtype {dname!r} "
                             f"(supported: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(
                type(d) is int and d >= 0 for d in shape):
            raise _bad(path, f"{where}: shape must be a list of non-negative ints, "
                             f"got {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2
                and all(type(o) is int and o >= 0 for o in offs)):
            raise _bad(path, f"{where}: data_offsets must be [begin, end] non-negative "
                             f"ints, got {offs!r}")
        begin, end = offs
        if end < begin:
            raise _bad(path, f"{where}: data_offsets {offs} end before they begin")
        nbytes = math.prod(shape) * DTYPES[dname].itemsize
        if end - begin != nbytes:
            raise _bad(path, f"{where}: shape {shape} x {DTYPES[dname].itemsize}-byte "
                             f"{dname} is {nbytes} bytes but data_offsets {offs} span "
                             f"{end - begin}")
        entries.append((begin, end, key, dname, shape))

    entries.sort(key=lambda e: (e[0], e[1]))
    pos = 0
    for begin, end, key, _, _ in entries:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else "leaves a gap"
            raise _bad(path, f"tensor {key!r}: data_offsets start at {begin}, expected "
                             f"{pos} (tensors must be contiguous; this {what})")
        pos = end
    if pos != data_len:
        if pos > data_len:
            raise _bad(path, f"tensors need {pos} data bytes but the file holds {data_len} "
                             f"after the header: truncated")
        raise _bad(path, f"{data_len - pos} unexplained bytes after the last tensor")

    tensors = {}
    for begin, end, key, dname, shape in entries:
        dt = DTYPES[dname]
        arr = data[begin:end].view(dt) if end > begin else np.empty(0, dt)
        if dname == "BOOL" and arr.size and data[begin:end].max() > 1:
            raise _bad(path, f"tensor {key!r}: BOOL bytes must be 0 or 1")
        arr = arr.reshape(tuple(shape))
        if not arr.flags.aligned:  # offsets not a multiple of the item size (foreign files)
            arr = arr.copy()
        if not arr.dtype.isnative:
            arr = arr.astype(dt.newbyteorder("="))
        tensors[key] = arr
    return tensors, dict(meta)
