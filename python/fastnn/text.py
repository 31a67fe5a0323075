"""Text to token ids: ``Tokenizer`` (in the spirit of Keras' Tokenizer).

A Tokenizer splits text into words (lower-cased, IMDb's ``<br />`` line breaks removed,
words = runs of letters and digits, with inner apostrophes kept: "don't"), builds its
vocabulary on training texts only — most frequent word first, ties broken by first
appearance, so the same texts always give the same ids — and maps texts to lists of ids.

Reserved ids: 0 = padding (never given to a word), 1 = unknown (``oov_token``). Words get
ids 2, 3, ... by rank; only ids below ``num_words`` are emitted, rarer words become 1.
So ``num_words`` is the size of the id range, the ``input_dim`` of an Embedding.
"""
from __future__ import annotations

import json
import os
import re
import string
from collections import Counter

from ._atomic import atomic_write

__all__ = ["Tokenizer", "tokenize", "WORD_PATTERN"]

#: A word: letters/digits, with inner apostrophes ("don't", "rock'n'roll").
WORD_PATTERN = r"[^\W_]+(?:['’][^\W_]+)*"
_WORD_RE = re.compile(WORD_PATTERN)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_FORMAT = "fastnn.text.Tokenizer"

# The fast path for ASCII text (most reviews): bytes.translate maps every byte that is not
# a letter, digit or apostrophe to a space (and upper case to lower case), then apostrophes
# not between two word characters become spaces. Same words as WORD_PATTERN (tested).
_KEEP = frozenset((string.ascii_letters + string.digits + "'").encode())
_TABLE_LOWER = bytes((c | 0x20 if 65 <= c <= 90 else c) if c in _KEEP else 32 for c in range(256))
_TABLE_CASE = bytes(c if c in _KEEP else 32 for c in range(256))


def _ascii_words(text: str, lower: bool) -> list[str]:
    b = (" " + text + " ").encode("ascii").translate(_TABLE_LOWER if lower else _TABLE_CASE)
    if b"'" in b:
        b = b.replace(b"''", b"  ").replace(b" '", b"  ").replace(b"' ", b"  ")
    return b.decode("ascii").split()


def tokenize(text: str, lower: bool = True, pattern: str = WORD_PATTERN) -> list[str]:
    """The words of one text: ``<br />`` tags removed, lower-cased (if lower), and split
    with the word pattern (default: runs of letters/digits with inner apostrophes)."""
    text = _BR.sub(" ", text)
    if pattern == WORD_PATTERN:
        if text.isascii():
            return _ascii_words(text, lower)
        return _WORD_RE.findall(text.lower() if lower else text)
    return re.findall(pattern, text.lower() if lower else text)


class Tokenizer:
    """Maps texts to lists of token ids; see the module docstring.

    Args:
        num_words: ids emitted are < num_words (the vocabulary keeps the num_words - 2
            most frequent words); None keeps every word.
        lower: lower-case texts first.
        oov_token: the name of id 1 (unknown words); it never collides with a word.
        pattern: the regular expression of a word.
    """

    PAD_ID = 0
    OOV_ID = 1

    def __init__(self, num_words: int | None = 10000, lower: bool = True,
                 oov_token: str = "[UNK]", pattern: str = WORD_PATTERN):
        if num_words is not None and (isinstance(num_words, bool) or int(num_words) < 2):
            raise ValueError(f"Tokenizer: num_words must be >= 2 (ids 0 and 1 are reserved) "
                             f"or None, got {num_words!r}")
        self.num_words = None if num_words is None else int(num_words)
        self.lower = bool(lower)
        self.oov_token = str(oov_token)
        self.pattern = pattern
        re.compile(pattern)  # fail early on a bad pattern
        self._emit = None
        self.word_counts: dict[str, int] = {}
        self.word_index: dict[str, int] = {}  # every word seen -> its id (rank + 1)
        self.index_word: dict[int, str] = {}

    # --- vocabulary -----------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """The words of one text (see :func:`tokenize`)."""
        return tokenize(text, self.lower, self.pattern)

    def _words(self, text):
        """A text's words; a list/tuple is taken as already split (as Keras allows)."""
        return text if isinstance(text, (list, tuple)) else self.tokenize(text)

    def fit_on_texts(self, texts) -> "Tokenizer":
        """Count the words of `texts` (added to any earlier counts) and rebuild the ids:
        most frequent first, ties by first appearance. Each text is a string or an
        already split list of words (tokenize once, then fit and map). Returns self."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.fit_on_texts: expected a list of texts, got one string")
        counts = Counter(self.word_counts)  # insertion order = first appearance
        for text in texts:
            counts.update(self._words(text))
        # sorted() is stable: equal counts keep their first-appearance order.
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        self.word_counts = dict(counts)
        self._set_words([w for w, _ in ranked])
        return self

    def _set_words(self, words):
        self.word_index = {w: i + 2 for i, w in enumerate(words)}
        self._emit = None  # the words below num_words, made on first use
        self.index_word = {i: w for w, i in self.word_index.items()}
        self.index_word[self.PAD_ID] = ""
        self.index_word[self.OOV_ID] = self.oov_token

    @property
    def vocabulary_size(self) -> int:
        """The number of ids emitted (padding and unknown included): an Embedding's
        input_dim."""
        n = len(self.word_index) + 2
        return n if self.num_words is None else min(n, self.num_words)

    # --- mapping --------------------------------------------------------------------
    def texts_to_sequences(self, texts) -> list[list[int]]:
        """Each text (a string, or a list of words) as a list of ids; unknown words and
        words ranked past num_words give 1."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.texts_to_sequences: expected a list of texts, got one string")
        if not self.word_index:
            raise ValueError("Tokenizer: call fit_on_texts (or Tokenizer.load) first")
        if self._emit is None:
            limit = self.vocabulary_size
            self._emit = {w: i for w, i in self.word_index.items() if i < limit}
        get = self._emit.get
        oov = self.OOV_ID
        return [[get(w, oov) for w in self._words(text)] for text in texts]

    def sequences_to_texts(self, sequences) -> list[str]:
        """Ids back to words joined by spaces (padding dropped)."""
        return [" ".join(self.index_word.get(int(i), self.oov_token) for i in seq if int(i) != 0)
                for seq in sequences]

    # --- files ----------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"num_words": self.num_words, "lower": self.lower, "oov_token": self.oov_token,
                "pattern": self.pattern}

    def save(self, path) -> None:
        """Write the tokenizer as JSON (settings and the words that can be emitted, in id
        order). The file is replaced atomically: a failed save leaves any old file intact."""
        path = os.fspath(path)
        limit = self.vocabulary_size - 2
        words = sorted(self.word_index, key=self.word_index.get)[:limit]
        data = {"format": _FORMAT, "version": 1, "config": self.get_config(), "words": words}
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"Tokenizer.load: {path!r} is not a tokenizer file ({e})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"Tokenizer.load: {path!r} is not a fastnn tokenizer file")
        tok = cls(**data["config"])
        tok._set_words(data["words"])
        return tok

    def __repr__(self):
        return (f"Tokenizer(num_words={self.num_words}, lower={self.lower}, "
                f"oov_token={self.oov_token!r}, words={len(self.word_index)})")
