"""fastnn.datasets.imdb: the loader on tiny generated CSV files and archives (no network),
the Keras-style load_data, and — when $FASTNN_DATA holds imdb/ — the real files and a
short training run on a subset."""
import csv
import gzip
import hashlib
import io
import os
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import fastnn as fn
from fastnn.datasets import ChecksumMismatchError, DatasetNotFoundError, _files, imdb

REAL = os.environ.get("FASTNN_DATA")
REAL_ROOT = Path(REAL) if REAL and all((Path(REAL) / "imdb" / f).is_file() for f in imdb.FILES) else None
needs_real = pytest.mark.skipif(REAL_ROOT is None, reason="set FASTNN_DATA to a folder holding "
                                "imdb/train.csv.gz and imdb/test.csv.gz")

REVIEWS = {  # (split, label) -> texts by id
    ("train", "neg"): ["Bad, \"awful\" film.<br /><br />No.", "boring boring", "bad plot"],
    ("train", "pos"): ["Great film, great cast!", "Loved it; café ✓"],
    ("test", "neg"): ["Awful.", "bad, unseen"],
    ("test", "pos"): ["great great", "loved the film"],
}


class _Opener:
    """Stand-in for the URL opener: serves `payload` (or fails offline) and counts calls."""

    def __init__(self, payload=None):
        self.payload, self.urls = payload, []

    def __call__(self, url, timeout):
        self.urls.append(url)
        if self.payload is None:
            raise urllib.error.URLError("network disabled in tests")
        return io.BytesIO(self.payload)


@pytest.fixture(autouse=True)
def sandbox(tmp_path, monkeypatch):
    """No network and a private cache (FASTNN_DATA kept for the real-data tests)."""
    opener = _Opener()
    monkeypatch.setattr(_files, "_open_url", opener)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return opener


def fake_archive(reviews=REVIEWS, extra=True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for (split, label), texts in reviews.items():
            for i, t in enumerate(texts):
                add(f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt", t.encode())
        if extra:  # ignored members, as in the real archive
            add("aclImdb/README", b"readme")
            add("aclImdb/train/unsup/0_0.txt", b"unlabelled")
            add("aclImdb/train/labeledBow.feat", b"0 0:1")
    return buf.getvalue()


def csv_sha(path):
    return hashlib.sha256(gzip.open(path).read()).hexdigest()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A folder with the two CSV files converted from the fake archive; FILES patched."""
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(fake_archive())
    out = imdb.convert_archive(arc, tmp_path / "csv")
    monkeypatch.setattr(imdb, "FILES", {k: csv_sha(p) for k, p in out.items()})
    return tmp_path / "csv"


def test_convert_archive_rows_and_format(tiny):
    rows = list(csv.reader(io.StringIO(gzip.open(tiny / "train.csv.gz").read().decode(), newline="")))
    assert rows[0] == ["text", "label"]
    expect = [[t, "0"] for t in REVIEWS[("train", "neg")]] + [[t, "1"] for t in REVIEWS[("train", "pos")]]
    assert rows[1:] == expect
    raw = gzip.open(tiny / "train.csv.gz").read()
    assert b'"Bad, ""awful"" film.<br /><br />No.",0\n' in raw  # RFC 4180 quoting, \n ends
    head = (tiny / "train.csv.gz").read_bytes()[:10]
    assert head[4:8] == b"\0\0\0\0" and head[9] == 255  # mtime 0, OS unknown: reproducible


def test_load_texts_from_path(tiny):
    (tr, ytr), (te, yte) = imdb.load_texts(tiny)
    assert tr == REVIEWS[("train", "neg")] + REVIEWS[("train", "pos")]
    np.testing.assert_array_equal(ytr, [0, 0, 0, 1, 1])
    assert te[0] == "Awful." and list(yte) == [0, 0, 1, 1]


def test_download_convert_and_cache(tmp_path, monkeypatch, sandbox):
    payload = fake_archive()
    sandbox.payload = payload
    monkeypatch.setattr(imdb, "ARCHIVE_MD5", hashlib.md5(payload).hexdigest())
    ref = tmp_path / "ref"
    (ref / "a.tgz").parent.mkdir()
    (ref / "a.tgz").write_bytes(payload)
    monkeypatch.setattr(imdb, "FILES", {k: csv_sha(p) for k, p in imdb.convert_archive(ref / "a.tgz", ref).items()})
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    (tr, ytr), _ = imdb.load_texts()
    assert sandbox.urls == [imdb.ARCHIVE_URL]
    cache = tmp_path / "xdg" / "fastnn" / "imdb"
    assert sorted(p.name for p in cache.iterdir()) == ["aclImdb_v1.tar.gz", "test.csv.gz", "train.csv.gz"]
    assert len(tr) == 5 and ytr.sum() == 2
    imdb.load_texts()  # found in the cache: no second download
    assert len(sandbox.urls) == 1
    # A cached archive is converted again without a download when the CSVs are gone.
    (cache / "train.csv.gz").unlink()
    imdb.load_texts()
    assert len(sandbox.urls) == 1


def test_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch, sandbox):
    sandbox.payload = fake_archive()
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"md5 .* expected 7c2ac02c03563afcf9b574c7e56c153a"):
        imdb.load_texts()
    cache = tmp_path / "xdg" / "fastnn" / "imdb"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_message_and_explicit_path(tmp_path, monkeypatch, sandbox):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as e:
        imdb.load_texts()
    msg = str(e.value)
    assert "train.csv.gz" in msg and str(tmp_path / "data" / "imdb") in msg
    assert "network disabled" in msg and "FASTNN_DATA" in msg
    sandbox.urls.clear()
    with pytest.raises(DatasetNotFoundError, match="Looked in the folder given as path"):
        imdb.load_texts(tmp_path / "nowhere")
    assert sandbox.urls == []  # an explicit path never downloads


def test_bad_archive_layout(tmp_path):
    arc = tmp_path / "a.tar.gz"
    broken = dict(REVIEWS)
    broken[("test", "pos")] = []
    arc.write_bytes(fake_archive(broken))
    with pytest.raises(ValueError, match="test/pos holds 0 reviews"):
        imdb.convert_archive(arc, tmp_path / "out")


def test_corrupt_csv_is_named(tiny):
    path = tiny / "test.csv.gz"
    path.write_bytes(gzip.compress(b"text,label\nx,1\n"))
    with pytest.raises(ChecksumMismatchError, match="test.csv.gz"):
        imdb.load_texts(tiny)


def test_load_data_keras_semantics(tiny):
    (x, y), (xt, yt) = imdb.load_data(tiny, num_words=None, seed=1)
    index = imdb.get_word_index(tiny)
    # ranks: "bad", "film", "boring", "great" twice each, in order of first appearance
    assert [w for w, r in sorted(index.items(), key=lambda kv: kv[1])][:4] == ["bad", "film", "boring", "great"]
    inv = {r + 3: w for w, r in index.items()}
    got = sorted(" ".join(inv.get(i, "?") for i in s[1:]) for s in x)
    assert "bad plot" in got and "loved it café" in got
    assert all(s[0] == 1 for s in x)  # start_char
    for s, label in zip(x, y):  # labels follow their reviews through the shuffle
        assert label == (index["bad"] + 3 not in s and index["boring"] + 3 not in s)
    # "unseen" and "the" are not training words: oov_char 2
    assert sum(list(s).count(2) for s in xt) == 2
    # num_words / skip_top / oov_char / maxlen / index_from as Keras
    (x2, _), _ = imdb.load_data(tiny, num_words=5, seed=1)
    assert all(all(w < 5 for w in s) for s in x2)
    (x3, _), _ = imdb.load_data(tiny, num_words=None, skip_top=5, oov_char=None, seed=1)
    assert all(all(w >= 5 for w in s) for s in x3)
    (x4, y4), _ = imdb.load_data(tiny, maxlen=4, seed=1)
    assert len(x4) == len(y4) == 2 and all(len(s) < 4 for s in x4)
    (x5, _), _ = imdb.load_data(tiny, start_char=None, index_from=0, num_words=None, seed=1)
    assert min(min(s) for s in x5) >= 1
    (a, ya), _ = imdb.load_data(tiny, seed=7)
    (b, yb), _ = imdb.load_data(tiny, seed=7)
    assert list(a) == list(b) and list(ya) == list(yb)
    with pytest.raises(ValueError, match="maxlen"):
        imdb.load_data(tiny, maxlen=1)


# ---------------------------------------------------------------- the real files

@pytest.fixture(scope="module")
def real_texts():
    return imdb.load_texts(REAL_ROOT / "imdb")


@needs_real
def test_real_imdb_counts_and_first_rows(real_texts):
    (tr, ytr), (te, yte) = real_texts
    assert len(tr) == len(ytr) == 25000 and len(te) == len(yte) == 25000
    assert int(ytr.sum()) == 12500 and int(yte.sum()) == 12500
    assert list(ytr[:12500]) == [0] * 12500  # neg rows first
    assert tr[0].startswith("Story of a man who has unnatural feelings for a pig")
    assert te[0].startswith("Once again Mr. Costner has dragged out a movie")


@needs_real
def test_real_imdb_through_fastnn_data(monkeypatch):
    monkeypatch.setenv("FASTNN_DATA", str(REAL_ROOT))
    assert imdb._folder(None) == REAL_ROOT / "imdb"


@needs_real
def test_short_training_on_a_subset_lowers_the_loss(real_texts, num_threads):
    from fastnn.data import pad_sequences
    from fastnn.text import Tokenizer

    num_threads(1)  # fast on a busy machine (the result does not depend on it)
    (tr, ytr), _ = real_texts
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(tr))[:2000]
    texts, y = [tr[i] for i in idx], ytr[idx]
    tok = Tokenizer(num_words=5000)
    words = [tok.tokenize(t) for t in texts]
    tok.fit_on_texts(words)
    x = pad_sequences(tok.texts_to_sequences(words), maxlen=80)
    L = fn.layers
    model = fn.Sequential([
        L.PositionalEmbedding(80, 32, input_dim=tok.vocabulary_size, mask_zero=True, input_shape=(80,)),
        L.TransformerEncoder(2, 16, 32), L.GlobalAveragePooling1D(),
        L.Dense(2, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, seed=0)
    after, acc = model.evaluate(x, y, verbose=0)
    assert after < before - 0.05, (before, after)
    assert acc > 0.6
