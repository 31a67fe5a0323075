"""IMDB Large Movie Review Dataset v1.0 (Maas et al., ACL 2011): 25,000 + 25,000 labelled
reviews, positive (1) or negative (0).

Files: ``train.csv.gz`` and ``test.csv.gz`` (UTF-8 CSV, header ``text,label``; rows are
``neg`` reviews by id, then ``pos`` reviews by id; the text is the review file's exact
contents). They are looked for in ``path``, else ``$FASTNN_DATA/imdb``, else the user
cache ``~/.cache/fastnn/imdb``. When missing there, the canonical Stanford archive is
downloaded into the cache, checked by size and md5, and converted to the two CSV files
(byte-identical to the published copies). Each CSV's uncompressed contents are checked
by sha256 once per process.

* :func:`load_texts` — the raw texts and labels.
* :func:`load_data` — as ``keras.datasets.imdb.load_data``: word-id sequences.
* :func:`get_word_index` — word -> rank (1 = most frequent in the training texts).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from . import _files
from ._files import ChecksumMismatchError, DatasetNotFoundError, cache_dir, search_dirs

__all__ = ["load_data", "load_texts", "get_word_index", "convert_archive", "FILES",
           "ARCHIVE_URL", "ARCHIVE_MD5"]

NAME = "imdb"

#: The two files and the sha256 of their *uncompressed* contents (the gzip container may
#: differ between compressors; the CSV text may not).
FILES = {
    "train.csv.gz": "c324c54e17ffceb54230d53ed26c7c43530fc5fe7374990773ce9871c2bf27ed",
    "test.csv.gz": "9c724df13b97942ce5d40e5df5d6832a522312f601e26de41cd1e7906744cf16",
}
#: The canonical archive and its published md5 and size.
ARCHIVE_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ARCHIVE_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
ARCHIVE_SIZE = 84125825

_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(neg|pos)/(\d+)_(\d+)\.txt$")
_verified: dict[tuple, str] = {}
_lock = threading.Lock()


# ---------------------------------------------------------------- finding the files

def _folder(path) -> Path:
    """The folder holding both CSV files: path, else $FASTNN_DATA/imdb or the cache
    (downloading and converting the archive into the cache when neither has them)."""
    if path is not None:
        folder = Path(path).expanduser()
        if folder.is_file():
            raise NotADirectoryError(f"{NAME}: path must be the folder holding "
                                     f"{', '.join(FILES)}; {folder} is a file")
        missing = [f for f in FILES if not (folder / f).is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{NAME}: missing dataset file(s): {', '.join(missing)}.\nLooked in the folder "
                f"given as path: {folder}\nPut the files there, or call without path= to use "
                f"${_files.DATA_ENV}/{NAME} or the cache {cache_dir(NAME)} (downloaded and "
                "converted automatically when online).")
        return folder
    dirs = search_dirs(NAME)
    for d in dirs:
        if all((d / f).is_file() for f in FILES):
            return d
    target = cache_dir(NAME)
    try:
        _download_and_convert(target)
    except (OSError, ValueError, tarfile.TarError) as e:  # offline, checksum, bad archive
        raise DatasetNotFoundError(
            f"{NAME}: missing dataset files {', '.join(FILES)}.\nLooked in: "
            + "; ".join(str(d) for d in dirs) + f"\nDownload failed:\n  {ARCHIVE_URL}: {e}\n"
            f"Put the files in {target}, or in <dir>/{NAME}/ and set {_files.DATA_ENV}=<dir>, "
            f"or pass path=<folder holding them>; or put {ARCHIVE_URL.rsplit('/', 1)[1]} "
            f"in {target} to have it converted.") from e
    return target


def _download_and_convert(target: Path) -> None:
    """Get the archive into `target` (unless already there), check it, convert it."""
    archive = target / ARCHIVE_URL.rsplit("/", 1)[1]
    if not archive.is_file():
        print(f"fastnn: downloading {ARCHIVE_URL} -> {archive}", file=sys.stderr)
        _files._download(ARCHIVE_URL, archive, ARCHIVE_MD5, algorithm="md5")
    else:
        _check_md5(archive, ARCHIVE_MD5)
    convert_archive(archive, target)


def _check_md5(path: Path, md5: str) -> None:
    got = _files.hash_file(path, "md5")
    if got != md5:
        raise ChecksumMismatchError(f"{path}: md5 is {got}, expected {md5}; delete "
                                    "it so it can be downloaded again")


def _csv_bytes(rows) -> bytes:
    """RFC 4180 CSV (minimal quoting, \\n line ends) with the header text,label."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["text", "label"])
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_gz(path: Path, data: bytes) -> None:
    """gzip level 9, mtime 0, no stored name (reproducible bytes), written atomically."""
    with atomic_write(path) as f:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=f, mtime=0) as g:
            g.write(data)


def convert_archive(archive, folder) -> dict[str, Path]:
    """Convert ``aclImdb_v1.tar.gz`` (or a tarball with the same layout) to the two CSV
    files in `folder`; returns {file name: path}.

    Only ``aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` are read; each folder's ids
    must be exactly 0..n-1. Rows: neg by id, then pos by id; label 0 / 1.
    """
    folder = Path(folder)
    texts: dict[tuple[str, str], dict[int, str]] = {}
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar:
            m = _MEMBER.match(member.name)
            if not m or not member.isfile():
                continue
            split, label, idx = m.group(1), m.group(2), int(m.group(3))
            data = tar.extractfile(member).read()
            texts.setdefault((split, label), {})[idx] = data.decode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        rows = []
        for label, y in (("neg", 0), ("pos", 1)):
            d = texts.get((split, label), {})
            if not d or sorted(d) != list(range(len(d))):
                raise ValueError(f"{archive}: not the aclImdb layout: {split}/{label} holds "
                                 f"{len(d)} reviews whose ids are not 0..{len(d) - 1}")
            rows.extend((d[i], y) for i in range(len(d)))
        path = folder / f"{split}.csv.gz"
        _write_gz(path, _csv_bytes(rows))
        out[path.name] = path
    return out


# ---------------------------------------------------------------- reading

def _read_csv(path: Path, sha256: str):
    """(texts, labels) of one CSV file, its uncompressed contents checked by sha256."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file: {e}") from e
    st = os.stat(path)
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        known = _verified.get(key)
    if known != sha256:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise ChecksumMismatchError(
                f"dataset file {path} is corrupt or not the expected file: the sha256 of its "
                f"uncompressed contents is {digest}, expected {sha256}. Delete it so it can "
                "be made again, or replace it with a good copy.")
        with _lock:
            _verified[key] = digest
    reader = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""))
    header = next(reader, None)
    if header != ["text", "label"]:
        raise ValueError(f"{path}: expected the header text,label, got {header}")
    texts, labels = [], []
    for i, row in enumerate(reader):
        if len(row) != 2 or row[1] not in ("0", "1"):
            raise ValueError(f"{path}: row {i + 1} is not (text, 0|1): {row[:2]!r}"[:300])
        texts.append(row[0])
        labels.append(row[1] == "1")
    return texts, np.array(labels, dtype=np.int64)


def load_texts(path=None):
    """The raw reviews: ``((train_texts, y_train), (test_texts, y_test))``.

    Texts are str (the review files' exact contents, with IMDb's ``<br />`` tags); labels
    int64 arrays, 1 = positive. Order as in the files: negative reviews by id, then
    positive ones (shuffle before training). `path`: a folder holding both CSV files
    (nothing is downloaded then); None searches $FASTNN_DATA/imdb and the cache.
    """
    folder = _folder(path)
    return tuple(_read_csv(folder / f, FILES[f]) for f in ("train.csv.gz", "test.csv.gz"))


def get_word_index(path=None) -> dict[str, int]:
    """word -> rank (1 = the most frequent word of the training texts; ties by first
    appearance), the ranks :func:`load_data` builds its ids from (id = rank + index_from).
    Words are split as :class:`fastnn.text.Tokenizer` does."""
    from ..text import tokenize

    (train, _), _ = load_texts(path)
    return _word_index([tokenize(t) for t in train])


def _word_index(train_words):
    from ..text import Tokenizer

    tok = Tokenizer(num_words=None).fit_on_texts(train_words)
    return {w: i - 1 for w, i in tok.word_index.items()}


def load_data(path=None, num_words=10000, maxlen=None, skip_top=0, seed=113, start_char=1,
              oov_char=2, index_from=3):
    """IMDB as word-id sequences, like ``keras.datasets.imdb.load_data``.

    Each review becomes ``[start_char] + [rank(w) + index_from for w in words]``, ranks
    from :func:`get_word_index` (built on the training texts only). Then, as Keras:
    train and test are shuffled with ``numpy.random.RandomState(seed)``; reviews longer
    than ``maxlen`` are dropped (not truncated: use fastnn.data.pad_sequences for that);
    ids outside [skip_top, num_words) become ``oov_char`` (or are removed when oov_char
    is None). num_words=None keeps every word (Keras' default; 10000 here).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: x object arrays of lists of int, y
        int64 arrays (1 = positive).
    """
    from ..text import tokenize

    (train, y_train), (test, y_test) = load_texts(path)
    train = [tokenize(t) for t in train]
    test = [tokenize(t) for t in test]
    index = _word_index(train)
    get = index.get
    x_train = [[get(w, 0) for w in ws] for ws in train]
    x_test = [[get(w, 0) for w in ws] for ws in test]
    rng = np.random.RandomState(seed)
    idx = np.arange(len(x_train))
    rng.shuffle(idx)
    x_train, y_train = [x_train[i] for i in idx], y_train[idx]
    idx = np.arange(len(x_test))
    rng.shuffle(idx)
    x_test, y_test = [x_test[i] for i in idx], y_test[idx]

    def shift(xs):
        # Words never seen in training (rank 0 above) are out of vocabulary.
        if start_char is not None:
            return [[start_char] + [w + index_from if w else -1 for w in x] for x in xs]
        return [[w + index_from if w else -1 for w in x] for x in xs]

    x_train, x_test = shift(x_train), shift(x_test)
    if maxlen:
        keep = [i for i, x in enumerate(x_train) if len(x) < maxlen]
        x_train, y_train = [x_train[i] for i in keep], y_train[keep]
        keep = [i for i, x in enumerate(x_test) if len(x) < maxlen]
        x_test, y_test = [x_test[i] for i in keep], y_test[keep]
        if not x_train or not x_test:
            raise ValueError(f"imdb.load_data: after filtering for sequences shorter than "
                             f"maxlen={maxlen}, no sequence was kept; raise maxlen")
    top = num_words if num_words else max(max((max(x, default=0) for x in xs), default=0)
                                          for xs in (x_train, x_test)) + 1

    def limit(xs):
        if oov_char is not None:
            return [[w if skip_top <= w < top else oov_char for w in x] for x in xs]
        return [[w for w in x if skip_top <= w < top] for x in xs]

    x_train, x_test = limit(x_train), limit(x_test)
    return ((_objects(x_train), y_train), (_objects(x_test), y_test))


def _objects(lists):
    a = np.empty(len(lists), dtype=object)
    a[:] = lists
    return a
