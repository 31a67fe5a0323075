"""fastnn.io: safetensors files written and read with NumPy (round trips, layout, validation of
corrupt/truncated files, atomic writes), cross-checked with the safetensors package when present."""
import json
import os
import stat

import numpy as np
import pytest

import fastnn.io as fio
from fastnn.io import load_safetensors, save_safetensors


def raw_file(path, header, data=b"", hlen=None):
    """Write a safetensors-shaped file by hand: header (dict or bytes), then data bytes."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(hb) if hlen is None else hlen).to_bytes(8, "little") + hb + data)
    return path


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "dense_1/kernel": rng.standard_normal((784, 13)).astype(np.float32),
        "dense_1/bias": np.arange(13, dtype=np.float32),
        "f64": rng.standard_normal((3, 1, 2)),
        "i32": np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32),
        "i64": np.array([[-(2**63)], [2**63 - 1]], dtype=np.int64),
        "u8": np.arange(7, dtype=np.uint8),
        "mask": np.array([[True, False, True]]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "f16": np.array([1.0, -0.5, 65504.0], dtype=np.float16),
    }


# ---------------------------------------------------------------- round trips and layout

def test_round_trip_all_dtypes_shapes_and_metadata(tmp_path):
    t = sample_tensors()
    meta = {"format": "fastnn", "config": json.dumps({"layers": [1, 2]}), "ünïcode": "✓"}
    p = tmp_path / "m.safetensors"
    save_safetensors(p, t, meta)
    got, gmeta = load_safetensors(p)
    assert gmeta == meta
    assert set(got) == set(t)
    for k, v in t.items():
        v = np.asarray(v)
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.writeable and got[k].flags.aligned and got[k].dtype.isnative


def test_no_metadata_round_trips_as_empty_dict(tmp_path):
    p = tmp_path / "m.safetensors"
    save_safetensors(p, {"a": np.ones(3, np.float32)})
    assert load_safetensors(p)[1] == {}
    save_safetensors(p, {})
    assert load_safetensors(p) == ({}, {})


def test_non_contiguous_and_big_endian_inputs_are_stored_little_endian(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    b = np.array([1.5, -2.0, 3.25], dtype=">f8")
    p = tmp_path / "m.safetensors"
    save_safetensors(p, {"a": a, "b": b})
    got, _ = load_safetensors(p)
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)
    assert got["b"].dtype == np.float64 and got["b"].dtype.isnative
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    beg, end = header["b"]["data_offsets"]
    assert raw[8 + n + beg:8 + n + end] == np.array([1.5, -2.0, 3.25], "<f8").tobytes()


def test_layout_header_aligned_and_tensors_ordered_by_item_size(tmp_path):
    t = {"z": np.ones(3, np.float32), "u": np.arange(5, dtype=np.uint8),
         "d": np.ones(2), "a": np.zeros(1, np.float32)}
    p = tmp_path / "m.safetensors"
    save_safetensors(p, t, {"k": "v"})
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n].decode())
    assert header["__metadata__"] == {"k": "v"}
    assert header["d"] == {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}
    assert header["z"] == {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]}
    assert header["a"] == {"dtype": "F32", "shape": [1], "data_offsets": [28, 32]}
    assert header["u"] == {"dtype": "U8", "shape": [5], "data_offsets": [32, 37]}
    assert len(raw) == 8 + n + 37
    # load order = data order; same-size tensors keep the order they were given in
    assert list(load_safetensors(p)[0]) == ["d", "z", "a", "u"]


def test_hand_written_file_with_unaligned_offsets_loads(tmp_path):
    data = b"\x01\x02\x03" + np.array([1.0, 2.0], "<f4").tobytes()
    p = raw_file(tmp_path / "h.safetensors",
                 {"b": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
                  "w": {"dtype": "F32", "shape": [2, 1], "data_offsets": [3, 11]}}, data)
    got, meta = load_safetensors(p)
    assert meta == {}
    np.testing.assert_array_equal(got["b"], [1, 2, 3])
    np.testing.assert_array_equal(got["w"], [[1.0], [2.0]])
    assert got["w"].flags.aligned


@pytest.mark.parametrize("bad, match", [
    (np.array([1 + 2j]), "complex128, which the format cannot hold"),
    (np.array(["a"]), "cannot hold"),
    (np.array([object()]), "cannot hold"),
])
def test_save_rejects_unsupported_dtypes(tmp_path, bad, match):
    with pytest.raises(TypeError, match=match):
        save_safetensors(tmp_path / "x", {"t": bad})
    assert os.listdir(tmp_path) == []


def test_save_rejects_bad_names_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved for metadata"):
        save_safetensors(tmp_path / "x", {"__metadata__": np.ones(1)})
    with pytest.raises(TypeError, match="tensor names must be str"):
        save_safetensors(tmp_path / "x", {1: np.ones(1)})
    with pytest.raises(TypeError, match="metadata must map str to str"):
        save_safetensors(tmp_path / "x", {"a": np.ones(1)}, {"epoch": 3})
    assert os.listdir(tmp_path) == []


def test_new_file_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        save_safetensors(tmp_path / "m", {"a": np.ones(1)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m").st_mode) == 0o640


# ---------------------------------------------------------------- truncated / corrupt files

@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.safetensors"
    save_safetensors(p, {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
                         "b": np.ones(3, np.float32)}, {"m": "x"})
    return p


def test_truncated_files_raise_naming_the_file(good, tmp_path):
    raw = good.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for cut, match in [(0, "shorter than the 8-byte header length"),
                       (5, "shorter than the 8-byte header length"),
                       (8, "runs past the end of the file"),
                       (8 + n // 2, "runs past the end of the file"),
                       (8 + n, "file holds 0 after the header: truncated"),
                       (len(raw) - 1, "truncated")]:
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=match) as ei:
            load_safetensors(p)
        assert str(p) in str(ei.value)


def test_huge_header_length_is_refused_without_allocating(tmp_path):
    p = raw_file(tmp_path / "h", b"{}", hlen=2**63)
    with pytest.raises(ValueError, match="runs past the end"):
        load_safetensors(p)


T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
D8 = np.array([1, 2], "<f4").tobytes()


@pytest.mark.parametrize("header, data, match", [
    (b"{not json", D8, "header is not valid JSON"),
    (b"\xff\xfe{}", b"", "header is not UTF-8"),
    (b"[1, 2]", b"", "header is a JSON list, expected an object"),
    (b'{"a": ' + json.dumps(T).encode() + b', "a": ' + json.dumps(T).encode() + b"}", D8,
     "duplicate key 'a'"),
    ({"__metadata__": {"epoch": 3}}, b"", "__metadata__ must be an object mapping strings"),
    ({"__metadata__": "x"}, b"", "__metadata__ must be an object"),
    ({"a": [1, 2]}, D8, "tensor 'a': entry must be an object with exactly the keys"),
    ({"a": {"dtype": "F32", "shape": [2]}}, D8, "exactly the keys"),
    ({"a": {**T, "extra": 1}}, D8, "exactly the keys"),
    ({"a": {**T, "dtype": "BF16"}}, D8, "unsupported dtype 'BF16'"),
    ({"a": {**T, "dtype": "f32"}}, D8, "unsupported dtype 'f32'"),
    ({"a": {**T, "shape": [-2]}}, D8, "shape must be a list of non-negative ints"),
    ({"a": {**T, "shape": [2.0]}}, D8, "shape must be a list"),
    ({"a": {**T, "shape": [True, 2]}}, D8, "shape must be a list"),
    ({"a": {**T, "shape": 2}}, D8, "shape must be a list"),
])
def test_corrupt_headers_raise_clear_errors(tmp_path, header, data, match):
    p = raw_file(tmp_path / "c.safetensors", header, data)
    with pytest.raises(ValueError, match=match) as ei:
        load_safetensors(p)
    assert str(p) in str(ei.value) and "not a valid safetensors file" in str(ei.value)


def F(offs, shape=(2,), dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


@pytest.mark.parametrize("header, nbytes, match", [
    ({"a": F([0, 8]), "b": F([12, 20])}, 20, "start at 12, expected 8 .*leaves a gap"),
    ({"a": F([0, 8]), "b": F([4, 12])}, 12, "start at 4, expected 8 .*overlaps"),
    ({"a": F([4, 12])}, 12, "start at 4, expected 0"),
    ({"a": F([0, 8]), "b": F([8, 16])}, 12, "tensors need 16 data bytes but the file holds 12"),
    ({"a": F([0, 8])}, 10, "2 unexplained bytes after the last tensor"),
    ({"a": F([0, 12])}, 12, r"shape \[2\] x 4-byte F32 is 8 bytes but data_offsets \[0, 12\]"),
    ({"a": F([0, 8], dtype="F64")}, 8, "is 16 bytes but data_offsets"),
    ({"a": F([8, 0])}, 8, "end before they begin"),
    ({"a": F([0])}, 8, "data_offsets must be"),
    ({"a": F([0, -8])}, 8, "data_offsets must be"),
    ({"a": F(["0", "8"])}, 8, "data_offsets must be"),
])
def test_wrong_offsets_raise_clear_errors(tmp_path, header, nbytes, match):
    p = raw_file(tmp_path / "o.safetensors", header, bytes(nbytes))
    with pytest.raises(ValueError, match=match) as ei:
        load_safetensors(p)
    assert str(p) in str(ei.value)


def test_bool_bytes_must_be_zero_or_one(tmp_path):
    p = raw_file(tmp_path / "b", {"m": F([0, 3], (3,), "BOOL")}, b"\x00\x01\x02")
    with pytest.raises(ValueError, match="BOOL bytes must be 0 or 1"):
        load_safetensors(p)


def test_zero_size_tensors_at_the_same_offset_are_fine(tmp_path):
    p = raw_file(tmp_path / "z", {"e": F([0, 0], (0, 3)), "a": F([0, 8]),
                                  "f": F([8, 8], (2, 0), "I64")}, D8)
    got, _ = load_safetensors(p)
    assert got["e"].shape == (0, 3) and got["f"].shape == (2, 0) and got["f"].dtype == np.int64
    np.testing.assert_array_equal(got["a"], [1, 2])


# ---------------------------------------------------------------- atomic writes

def test_failure_while_writing_keeps_old_file_and_leaves_no_temp(good, monkeypatch):
    before = good.read_bytes()
    calls = []

    def dying_write(f, arr):
        calls.append(arr.nbytes)
        f.write(memoryview(arr.reshape(-1)).cast("B")[: max(1, arr.nbytes // 2)])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio, "_write_array", dying_write)
    with pytest.raises(OSError, match="No space left"):
        save_safetensors(good, {"w": np.zeros((100, 100), np.float32)}, {"m": "new"})
    assert calls  # the failure really happened mid-write
    assert good.read_bytes() == before
    assert os.listdir(good.parent) == [good.name]
    assert load_safetensors(good)[1] == {"m": "x"}


@pytest.mark.parametrize("exc", [OSError(5, "Input/output error"), KeyboardInterrupt()])
def test_failure_at_fsync_or_interrupt_keeps_old_file(good, monkeypatch, exc):
    before = good.read_bytes()

    def boom(fd):
        raise exc

    monkeypatch.setattr(fio.os, "fsync", boom)
    with pytest.raises(type(exc)):
        save_safetensors(good, {"w": np.zeros(3, np.float32)})
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert os.listdir(good.parent) == [good.name]


def test_save_replaces_existing_file(good):
    save_safetensors(good, {"only": np.ones(2, np.int32)})
    got, meta = load_safetensors(good)
    assert list(got) == ["only"] and meta == {}
    assert os.listdir(good.parent) == [good.name]


# ---------------------------------------------------------------- compatibility

def test_compatible_with_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors package not installed")
    t = {k: np.asarray(v) for k, v in sample_tensors().items() if k != "scalar"}
    t["scalar"] = np.asarray(np.float32(2.5))
    meta = {"format": "np"}
    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, t, meta)
    theirs = st.load_file(str(ours))
    for k, v in t.items():
        np.testing.assert_array_equal(theirs[k], v)
        assert theirs[k].dtype == v.dtype
    other = tmp_path / "theirs.safetensors"
    st.save_file(t, str(other), metadata=meta)
    got, gmeta = load_safetensors(other)
    assert gmeta == meta
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
