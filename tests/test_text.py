"""fastnn.text.Tokenizer and fastnn.data.pad_sequences on small hand-made cases."""
import json
import random
import re

import numpy as np
import pytest

from fastnn import text as text_mod
from fastnn.data import pad_sequences
from fastnn.text import WORD_PATTERN, Tokenizer, tokenize


# ---------------------------------------------------------------- tokenize

@pytest.mark.parametrize("s,words", [
    ("Great movie!<br /><br />Loved it.", ["great", "movie", "loved", "it"]),
    ("A<br/>B<BR>c", ["a", "b", "c"]),
    ("Don't stop, 'quoted' words''", ["don't", "stop", "quoted", "words"]),
    ("rock'n'roll a''b '''", ["rock'n'roll", "a", "b"]),
    ("snake_case 10/10 3.5", ["snake", "case", "10", "10", "3", "5"]),
    ("Café déjà-vu — naïve’s", ["café", "déjà", "vu", "naïve’s"]),
    ("", []),
])
def test_tokenize(s, words):
    assert tokenize(s) == words


def test_tokenize_fast_path_matches_the_pattern():
    rng = random.Random(0)
    alphabet = "aZ9' _-.,\"<>/!''"
    word = re.compile(WORD_PATTERN)
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert tokenize(s) == word.findall(text_mod._BR.sub(" ", s).lower()), s
        assert tokenize(s, lower=False) == word.findall(text_mod._BR.sub(" ", s)), s


# ---------------------------------------------------------------- Tokenizer

def test_vocabulary_by_frequency_then_first_appearance():
    tok = Tokenizer(num_words=None).fit_on_texts(["b a c", "a c d", "e"])
    # a, c: 2 each (a seen first after b... but b has 1); b, d, e: 1 each in first-seen order
    assert tok.word_index == {"a": 2, "c": 3, "b": 4, "d": 5, "e": 6}
    assert tok.texts_to_sequences(["a b zzz", "e"]) == [[2, 4, 1], [6]]
    assert tok.vocabulary_size == 7
    assert tok.sequences_to_texts([[0, 2, 1, 6]]) == ["a [UNK] e"]


def test_num_words_limits_ids_and_oov():
    tok = Tokenizer(num_words=4).fit_on_texts(["x y y z z z", "w"])
    assert tok.word_index["z"] == 2 and tok.word_index["y"] == 3 and tok.word_index["x"] == 4
    # ids < num_words only: x (4) and w (5) become the unknown id 1
    assert tok.texts_to_sequences(["z y x w unseen"]) == [[2, 3, 1, 1, 1]]
    assert tok.vocabulary_size == 4


def test_lists_of_words_and_case():
    tok = Tokenizer(lower=False).fit_on_texts([["The", "the"], "The"])
    assert tok.word_index == {"The": 2, "the": 3}
    assert tok.texts_to_sequences([["the", "THE"]]) == [[3, 1]]


def test_fit_only_on_training_texts_is_deterministic():
    train = ["good good film", "bad film", "film"]
    a = Tokenizer().fit_on_texts(train)
    b = Tokenizer().fit_on_texts(list(train))
    assert a.word_index == b.word_index
    assert a.texts_to_sequences(["unseen good"]) == [[1, a.word_index["good"]]]


def test_save_load_round_trip(tmp_path):
    tok = Tokenizer(num_words=5, oov_token="<oov>").fit_on_texts(["a a a b b c d e", "f"])
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text())
    assert data["words"] == ["a", "b", "c"]  # only the words that can be emitted
    back = Tokenizer.load(path)
    texts = ["a b c d e f g", "<br />c"]
    assert back.texts_to_sequences(texts) == tok.texts_to_sequences(texts)
    assert back.get_config() == tok.get_config()
    assert back.index_word[1] == "<oov>"


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "tok.json"
    Tokenizer().fit_on_texts(["old words"]).save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(text_mod.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        Tokenizer().fit_on_texts(["new"]).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]  # no temporary left


def test_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="fit_on_texts"):
        Tokenizer().texts_to_sequences(["a"])
    with pytest.raises(TypeError, match="list of texts"):
        Tokenizer().fit_on_texts("one string")
    with pytest.raises(ValueError, match="num_words"):
        Tokenizer(num_words=1)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a fastnn tokenizer"):
        Tokenizer.load(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        Tokenizer.load(bad)


# ---------------------------------------------------------------- pad_sequences

SEQS = [[1, 2, 3], [4, 5], [6], []]


def test_pad_default_pre_to_longest():
    x = pad_sequences(SEQS)
    assert x.dtype == np.int32
    np.testing.assert_array_equal(x, [[1, 2, 3], [0, 4, 5], [0, 0, 6], [0, 0, 0]])


@pytest.mark.parametrize("padding,truncating,expect", [
    ("pre", "pre", [[2, 3], [4, 5], [0, 6], [0, 0]]),
    ("pre", "post", [[1, 2], [4, 5], [0, 6], [0, 0]]),
    ("post", "pre", [[2, 3], [4, 5], [6, 0], [0, 0]]),
    ("post", "post", [[1, 2], [4, 5], [6, 0], [0, 0]]),
])
def test_pad_and_truncate(padding, truncating, expect):
    x = pad_sequences(SEQS, maxlen=2, padding=padding, truncating=truncating)
    np.testing.assert_array_equal(x, expect)


def test_pad_value_dtype_longer_maxlen_and_arrays():
    x = pad_sequences([[1.5], np.array([2, 3])], maxlen=4, dtype="float32", value=-1.0,
                      padding="post")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1.5, -1, -1, -1], [2, 3, -1, -1]])
    v = pad_sequences([[[1, 2]], [[3, 4], [5, 6]]])  # items are vectors
    assert v.shape == (2, 2, 2)
    np.testing.assert_array_equal(v[0], [[0, 0], [1, 2]])
    assert pad_sequences([[1, 2]], maxlen=0).shape == (1, 0)
    np.testing.assert_array_equal(pad_sequences(np.array([[7, 8, 9]]), maxlen=2), [[8, 9]])


def test_pad_errors():
    with pytest.raises(ValueError, match='padding type "mid"'):
        pad_sequences(SEQS, padding="mid")
    with pytest.raises(ValueError, match='truncating type "x"'):
        pad_sequences(SEQS, truncating="x")
    with pytest.raises(ValueError, match="non-iterable"):
        pad_sequences([[1], 2])
    with pytest.raises(ValueError, match="string"):
        pad_sequences([[1]], value="pad")
    with pytest.raises(ValueError, match="must be iterable"):
        pad_sequences(5)
    with pytest.raises(ValueError, match="items of shape"):
        pad_sequences([[[1, 2]], [[1, 2, 3]]])
