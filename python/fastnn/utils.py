"""Keras' utils: to_categorical, pad_sequences, set_random_seed."""
from __future__ import annotations

import random

import numpy as np

from .data import pad_sequences


def to_categorical(y, num_classes: int | None = None) -> np.ndarray:
    """One-hot float32 rows for integer labels of any shape (a last axis is added)."""
    y = np.asarray(y)
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError("to_categorical: labels must be integers")
    y = y.astype(np.int64)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes}), got "
                         f"{int(y.min())}..{int(y.max())}")
    out = np.zeros(y.shape + (num_classes,), np.float32)
    np.put_along_axis(out, y[..., None], 1.0, axis=-1)
    return out


def set_random_seed(seed: int) -> None:
    """Seed fastnn's weight initialisation and unseeded fits, NumPy's global generator and
    Python's random module (as Keras does)."""
    from .models import set_random_seed as seed_models
    seed_models(seed)
    np.random.seed(seed)
    random.seed(seed)


__all__ = ["to_categorical", "pad_sequences", "set_random_seed"]
