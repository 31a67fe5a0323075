"""Sequence utilities: ``pad_sequences`` (as ``keras.utils.pad_sequences``)."""
from __future__ import annotations

import numpy as np

__all__ = ["pad_sequences"]


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0):
    """Pad (and truncate) a list of sequences to one length: an array (N, maxlen).

    Exactly as Keras: sequences longer than ``maxlen`` lose values from the start
    (truncating="pre") or the end ("post"); shorter ones get ``value`` added before
    (padding="pre") or after ("post"). maxlen=None pads to the longest sequence. Each
    sequence may hold scalars or equal-shaped arrays (the result is then
    (N, maxlen) + that shape). Empty sequences become all ``value``.

    Args:
        sequences: a list (or other sized iterable) of sequences.
        maxlen: the length of the result; None = the longest sequence.
        dtype: of the result ("int32" by default, as Keras).
        padding / truncating: "pre" or "post".
        value: the padding value.

    Raises:
        ValueError: a non-iterable element, an unknown padding/truncating type, a string
            value for a non-string dtype, or sequences whose items differ in shape.
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError("pad_sequences: `sequences` must be iterable (a list of sequences)")
    if padding not in ("pre", "post"):
        raise ValueError(f'pad_sequences: padding type "{padding}" not understood '
                         '(expected "pre" or "post")')
    if truncating not in ("pre", "post"):
        raise ValueError(f'pad_sequences: truncating type "{truncating}" not understood '
                         '(expected "pre" or "post")')
    num_samples = len(sequences)
    lengths = []
    sample_shape = ()
    found = False
    for x in sequences:
        try:
            lengths.append(len(x))
        except TypeError as e:
            raise ValueError("pad_sequences: `sequences` must be a list of iterables. "
                             f"Found non-iterable: {x!r}") from e
        if not found and len(x):
            sample_shape = np.asarray(x).shape[1:]
            found = True
    if maxlen is None:
        maxlen = max(lengths) if lengths else 0
    maxlen = int(maxlen)
    if maxlen < 0:
        raise ValueError(f"pad_sequences: maxlen must be >= 0, got {maxlen}")
    is_str = np.issubdtype(np.dtype(dtype), np.str_)
    if isinstance(value, str) and np.dtype(dtype) != object and not is_str:
        raise ValueError(f"pad_sequences: dtype {dtype} is not compatible with the string "
                         f"padding value {value!r}; use dtype=object or a string dtype")
    x = np.full((num_samples, maxlen) + sample_shape, value, dtype=dtype)
    if maxlen == 0:
        return x
    for i, s in enumerate(sequences):
        if not len(s):
            continue
        trunc = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        trunc = np.asarray(trunc, dtype=dtype)
        if trunc.shape[1:] != sample_shape:
            raise ValueError(f"pad_sequences: sequence {i} has items of shape "
                             f"{trunc.shape[1:]}, different from the first sequence's "
                             f"{sample_shape}")
        if padding == "post":
            x[i, :len(trunc)] = trunc
        else:
            x[i, -len(trunc):] = trunc
    return x
