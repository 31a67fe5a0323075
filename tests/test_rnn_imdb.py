"""Recurrent models learn on real IMDB reviews (a subset, so that the test stays short):
a GRU, and a bidirectional LSTM over a padding mask (Embedding(mask_zero=True)).
Skipped when the data is not available (set FASTNN_DATA)."""
import os
from pathlib import Path

import numpy as np
import pytest

import fastnn as fn
from fastnn.datasets import imdb

L = fn.layers
DATA = os.environ.get("FASTNN_DATA")
HAVE = bool(DATA) and all((Path(DATA) / "imdb" / f).is_file() for f in imdb.FILES)


@pytest.fixture(scope="module")
def reviews():
    if not HAVE:
        pytest.skip("set FASTNN_DATA to a folder holding imdb/train.csv.gz and imdb/test.csv.gz")
    (x, y), _ = fn.datasets.imdb.load_data(Path(DATA) / "imdb", num_words=5000)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(x))[:1536]
    # post-padding, so that the mask has padded steps after the real ones
    ids = fn.utils.pad_sequences([x[i] for i in pick], maxlen=80, padding="post",
                                 truncating="post")
    return ids, np.asarray(y)[pick]


@pytest.mark.parametrize("name,core", [
    ("gru", lambda: L.GRU(32)),
    ("masked_bilstm", lambda: L.Bidirectional(L.LSTM(16))),
])
def test_loss_falls_on_real_reviews(reviews, name, core):
    ids, y = reviews
    model = fn.Sequential([L.Embedding(5000, 32, mask_zero=name.startswith("masked"),
                                       input_shape=(80,)), core(),
                           L.Dense(1, activation="sigmoid")], seed=0)
    model.compile(optimizer=fn.optim.Adam(3e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(ids, y, epochs=3, batch_size=32, verbose=0, seed=0)
    loss = hist.history["loss"]
    assert loss[-1] < 0.85 * loss[0], loss
    assert hist.history["accuracy"][-1] > 0.65
