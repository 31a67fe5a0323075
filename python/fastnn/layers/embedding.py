"""Embedding layers: Embedding (Keras) and PositionalEmbedding (token + position, as
Keras-NLP's TokenAndPositionEmbedding, with a learned or sinusoidal position table)."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops.embedding import as_ids
from .base import Layer, register
from .quantized import QuantKernels

_INIT_ALIASES = {"uniform": "random_uniform", "normal": "random_normal"}


def _init(name):
    return _INIT_ALIASES.get(name, name) if isinstance(name, str) else name


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    return int(v)


def _ids2(layer, x) -> np.ndarray:
    """Token ids of a batch as (N, T) int32 (the model hands them over as float32)."""
    ids = as_ids(x, layer.name, "x")
    if ids.ndim == 1:
        return ids.reshape(-1, 1)
    return ids if ids.ndim == 2 else ids.reshape(ids.shape[0], -1)


def _padding_mask(x) -> np.ndarray:
    """(N, T) uint8 mask of a batch of ids: 1 for a real token, 0 for padding (id 0)."""
    return np.not_equal(x, 0).view(np.uint8)


def sinusoidal_table(length: int, dim: int, max_wavelength: float = 10000.0) -> np.ndarray:
    """The fixed position table of "Attention is all you need" (length, dim), float32:
    even columns sin(p / w**(2i/dim)), odd columns cos(p / w**(2i/dim)) (as Keras-NLP's
    SinePositionEncoding)."""
    p = np.arange(length, dtype=np.float64)[:, None]
    i = np.arange(dim)
    angles = p * np.power(max_wavelength, -(2 * (i // 2)) / dim)[None, :]
    return np.where(i % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)


@register
class Embedding(QuantKernels, Layer):
    """Turns token ids (N, T) into vectors (N, T, output_dim): row ``id`` of a trainable
    table (input_dim, output_dim).

    Ids must lie in [0, input_dim) (checked). mask_zero=True makes id 0 padding: the layer
    then emits a padding mask (N, T) that later layers (MultiHeadAttention,
    TransformerEncoder, GlobalAveragePooling1D) use to ignore padded steps; input_dim must
    then count the padding id 0.
    """

    quantizable_kernels = ("embeddings",)
    weight_only = True

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform",
                 mask_zero: bool = False, **kw):
        super().__init__(**kw)
        self.input_dim = _positive_int(input_dim, "Embedding: input_dim")
        self.output_dim = _positive_int(output_dim, "Embedding: output_dim")
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape):
        self.add_kernel("embeddings", (self.input_dim, self.output_dim),
                        _init(self.embeddings_initializer))
        return tuple(input_shape) + (self.output_dim,)

    def compute_mask(self, x, mask):
        return _padding_mask(x) if self.mask_zero else None

    def creates_mask(self) -> bool:
        return bool(self.mask_zero)

    def forward(self, x, training=False):
        ids = _ids2(self, x)
        n, t = ids.shape
        shape = (n, t, self.output_dim)
        y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
        if self.quantization is not None:
            self.check_inference(training)
            self.gather_int8(y, ids, "embeddings")
            return y.reshape(tuple(x.shape) + (self.output_dim,))
        _core.embedding_forward(y, ids, self.embeddings, None)
        if training:
            self._ids = ids
        return y.reshape(tuple(x.shape) + (self.output_dim,))

    def backward(self, dy):
        if self.trainable:
            ids = self._ids
            _core.embedding_backward(self.dembeddings, None,
                                     dy.reshape(ids.shape + (self.output_dim,)), ids)
        return None  # token ids have no gradient

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "embeddings_initializer": self.embeddings_initializer,
                "mask_zero": self.mask_zero}


@register
class PositionalEmbedding(QuantKernels, Layer):
    """Token + position embedding: y[n, t] = token_table[ids[n, t]] + position_table[t].

    Args:
        maxlen: the longest sequence (rows of the position table); inputs have T <= maxlen.
        output_dim: the embedding size C.
        input_dim: the vocabulary size V (ids in [0, V)). None: the input is already a
            float sequence (N, T, C) and only the position term is added.
        positional: "learned" (a trainable (maxlen, C) table, as Keras-NLP's
            TokenAndPositionEmbedding) or "sinusoidal" (the fixed sin/cos table).
        mask_zero: id 0 is padding; emit a padding mask (see Embedding).

    One kernel call does the gather and the add; its backward scatters into the token
    table and sums over the batch into the position table.
    """

    weight_only = True

    @property
    def quantizable_kernels(self):
        return ("token_embeddings",) if self.input_dim is not None else ()

    def can_quantize(self) -> bool:
        return self.input_dim is not None

    def __init__(self, maxlen: int, output_dim: int, input_dim: int | None = None,
                 positional: str = "learned", mask_zero: bool = False,
                 embeddings_initializer="uniform", position_initializer="uniform", **kw):
        super().__init__(**kw)
        self.maxlen = _positive_int(maxlen, "PositionalEmbedding: maxlen")
        self.output_dim = _positive_int(output_dim, "PositionalEmbedding: output_dim")
        self.input_dim = None if input_dim is None else _positive_int(
            input_dim, "PositionalEmbedding: input_dim")
        if positional not in ("learned", "sinusoidal"):
            raise ValueError(f"PositionalEmbedding: positional must be 'learned' or "
                             f"'sinusoidal', got {positional!r}")
        if mask_zero and self.input_dim is None:
            raise ValueError("PositionalEmbedding: mask_zero needs token ids (input_dim)")
        self.positional = positional
        self.mask_zero = bool(mask_zero)
        self.embeddings_initializer = embeddings_initializer
        self.position_initializer = position_initializer
        self.supports_masking = self.input_dim is None  # float input: pass its mask on

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.input_dim is not None:
            if len(input_shape) != 1:
                raise ValueError(f"{self.name}: expects token ids of shape (T,) per sample, "
                                 f"got {input_shape}")
            out = input_shape + (self.output_dim,)
            self.add_kernel("token_embeddings", (self.input_dim, self.output_dim),
                            _init(self.embeddings_initializer))
        else:
            if len(input_shape) != 2 or input_shape[1] != self.output_dim:
                raise ValueError(f"{self.name}: expects (T, {self.output_dim}) vectors per "
                                 f"sample (input_dim=None), got {input_shape}")
            out = input_shape
        if out[0] > self.maxlen:
            raise ValueError(f"{self.name}: sequences of length {out[0]} exceed maxlen "
                             f"{self.maxlen}")
        if self.positional == "learned":
            self.add_weight("position_embeddings", (self.maxlen, self.output_dim),
                            _init(self.position_initializer))
        else:
            self._table = sinusoidal_table(self.maxlen, self.output_dim)
        return out

    def _pos(self):
        return self.position_embeddings if self.positional == "learned" else self._table

    def compute_mask(self, x, mask):
        if self.input_dim is None:
            return mask
        return _padding_mask(x) if self.mask_zero else None

    def creates_mask(self) -> bool:
        return self.input_dim is not None and bool(self.mask_zero)

    def forward(self, x, training=False):
        if self.input_dim is None:
            t = x.shape[1]
            y = self.buffer("y", x.shape) if training else np.empty(x.shape, np.float32)
            np.add(x, self._pos()[:t], out=y)
            if training:
                self._t = t
            return y
        ids = _ids2(self, x)
        n, t = ids.shape
        if t > self.maxlen:
            raise ValueError(f"{self.name}: sequences of length {t} exceed maxlen {self.maxlen}")
        shape = (n, t, self.output_dim)
        y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
        if self.quantization is not None:
            self.check_inference(training)
            self.gather_int8(y, ids, "token_embeddings")
            y += self._pos()[:t]
            return y
        _core.embedding_forward(y, ids, self.token_embeddings, self._pos()[:t])
        if training:
            self._ids = ids
        return y

    def backward(self, dy):
        learned = self.trainable and self.positional == "learned"
        if self.input_dim is None:
            if learned:
                self.dposition_embeddings[:self._t] += dy.sum(axis=0)
            return dy if self.need_input_grad else None
        if self.trainable:
            ids = self._ids
            _core.embedding_backward(self.dtoken_embeddings,
                                     self.dposition_embeddings[:ids.shape[1]] if learned else None,
                                     dy, ids)
        return None

    def get_config(self):
        return {**super().get_config(), "maxlen": self.maxlen, "output_dim": self.output_dim,
                "input_dim": self.input_dim, "positional": self.positional,
                "mask_zero": self.mask_zero,
                "embeddings_initializer": self.embeddings_initializer,
                "position_initializer": self.position_initializer}
