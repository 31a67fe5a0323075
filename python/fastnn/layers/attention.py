"""Attention layers: MultiHeadAttention and TransformerEncoder (Keras / Keras-NLP names).

MultiHeadAttention projects its inputs with dense kernels to (N, T, num_heads·key_dim),
which the fused attention core reads as (N, T, NH, D) without any transpose, runs the core
(scores, key-padding mask, online softmax, weighted sum in one pass), and projects the
result back. TransformerEncoder composes it with LayerNormalization, a two-layer
feed-forward network, dropout and residual connections.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .base import Layer, register
from .core import Dense, Dropout
from .normalization_layer import LayerNormalization
from .quantized import QuantKernels, observe

_LINEAR = _core.Act.linear


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    return int(v)


def _dropouts(layer: Layer):
    """Every layer with a dropout seed stream (Dropout, a recurrent layer) below `layer`
    (depth first, in build order)."""
    for child in layer._children:
        if isinstance(child, Dropout) or hasattr(type(child), "_next_seed"):
            yield child
        yield from _dropouts(child)


class _SeedsDropouts:
    """A composite layer with dropout inside: ``Sequential.fit(seed=...)`` sets
    ``_base_seed`` and ``_calls`` on its top-level layers; these properties hand each inner
    Dropout a seed derived from it, so a seeded fit is reproducible."""

    @property
    def _base_seed(self):
        return self.__dict__.get("_seed_base")

    @_base_seed.setter
    def _base_seed(self, s):
        self.__dict__["_seed_base"] = s
        for i, d in enumerate(_dropouts(self)):
            d._base_seed = None if s is None else (int(s) * 1_000_003 + 7_919 * (i + 1)) % 2**63

    @property
    def _calls(self):
        return 0

    @_calls.setter
    def _calls(self, v):
        for d in _dropouts(self):
            d._calls = v


def _mask_u8(mask, n: int, t: int, where: str):
    """Key padding mask as C-contiguous uint8 (N, Tk), nonzero = attend; None stays None."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != (n, t):
        raise ValueError(f"{where}: mask must have shape (N, Tk) = {(n, t)}, got {m.shape}")
    if m.dtype == np.uint8 and m.flags.c_contiguous:
        return m
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m).view(np.uint8)
    return np.not_equal(m, 0).view(np.uint8)


def _standalone(layer: Layer, shape) -> None:
    """Build a layer used on its own, with parameter buffers of its own."""
    layer._build(tuple(shape))
    n = layer.param_count
    layer.bind(np.empty(n, np.float32), np.zeros(n, np.float32), 0)
    layer.initialize(np.random.default_rng())


@register
class MultiHeadAttention(QuantKernels, _SeedsDropouts, Layer):
    """Multi-head attention (Keras MultiHeadAttention).

    In a Sequential it is self-attention on (N, T, C). Called directly it also takes
    separate inputs: ``forward(query, value=None, key=None, key_mask=None, training=False,
    use_causal_mask=False, mask=None)`` with query (N, Tq, Cq), value (N, Tk, Cv), key
    (N, Tk, Ck) (key defaults to value, value to query).

    Args:
        num_heads: NH. key_dim: the head size D of queries and keys.
        value_dim: the head size of values; None or key_dim (the fused core uses one
            head size for q, k and v).
        dropout: rate of dropout while training. Keras drops attention probabilities; the
            fused core never materialises them, so here the attention output (before the
            output projection) is dropped instead.
        use_bias: biases on the four projections.
        output_shape: the last axis of the output; None = the query's.

    mask (N, Tk), nonzero = attend, marks the real keys (a padding mask from an
    Embedding(mask_zero=True) arrives here in a Sequential). In a model graph a key mask
    can also be given as a tensor, ``mha(query, value, key, key_mask=m)`` (Keras'
    key_mask: (N, Tk), nonzero = attend); with a padding mask from upstream too, a key is
    attended when both allow it. A query whose keys are all
    masked gets a zero attention output and zero gradients (no NaN). Padded queries are
    computed like the others (Keras also masks them; a mask-aware pooling afterwards
    removes them either way).

    Weights (Keras layout, heads flattened): query/key/value kernels (C, NH·D) and biases
    (NH·D,), output kernel (NH·D, Cout) and bias (Cout,).
    """

    supports_masking = True
    quantizable_kernels = ("query_kernel", "key_kernel", "value_kernel", "output_kernel")

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None,
                 dropout: float = 0.0, use_bias: bool = True, output_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 seed: int | None = None, **kw):
        super().__init__(**kw)
        self.num_heads = _positive_int(num_heads, "MultiHeadAttention: num_heads")
        self.key_dim = _positive_int(key_dim, "MultiHeadAttention: key_dim")
        if value_dim is not None and _positive_int(value_dim, "MultiHeadAttention: value_dim") != self.key_dim:
            raise ValueError(f"MultiHeadAttention: value_dim ({value_dim}) must equal key_dim "
                             f"({key_dim}) or be None: the fused attention core uses one head "
                             "size for queries, keys and values")
        self.value_dim = self.key_dim
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        if isinstance(output_shape, (tuple, list)):
            if len(output_shape) != 1:
                raise ValueError(f"MultiHeadAttention: output_shape must be an int or a 1-tuple, got {output_shape!r}")
            output_shape = output_shape[0]
        self.out_dim = None if output_shape is None else _positive_int(
            output_shape, "MultiHeadAttention: output_shape")
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        self.seed = seed
        self._kv_dims = None  # (value C, key C) when built for separate inputs

    # --- building -------------------------------------------------------------------
    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: expects (T, C) per sample, got {tuple(input_shape)}")
        t, cq = input_shape
        cv, ck = self._kv_dims or (cq, cq)
        h = self.num_heads * self.key_dim
        cout = self.out_dim or cq
        k_init, b_init = self.kernel_initializer, self.bias_initializer
        for name, cin in (("query", cq), ("key", ck), ("value", cv)):
            self.add_kernel(f"{name}_kernel", (cin, h), k_init)
            if self.use_bias:
                self.add_weight(f"{name}_bias", (h,), b_init)
        self.add_kernel("output_kernel", (h, cout), k_init)
        if self.use_bias:
            self.add_weight("output_bias", (cout,), b_init)
        self._drop = None
        if self.dropout:
            self._drop = Dropout(self.dropout, name=f"{self.name}/dropout")
            self.add_sublayer(self._drop, (t, h))
        return (t, cout)

    def _b(self, name):
        return getattr(self, name + "_bias") if self.use_bias else None

    def _db(self, name):
        return getattr(self, "d" + name + "_bias") if self.use_bias and self.trainable else None

    # --- running --------------------------------------------------------------------
    def _graph_inputs(self, args, kwargs):
        """mha(query, value=None, key=None, key_mask=None, use_causal_mask=False) on
        symbolic tensors: self-attention when value (and key) are the query itself."""
        kw = dict(kwargs)
        names = ("query", "value", "key", "key_mask")
        given = dict(zip(names, args))
        for n in names[len(args):]:
            if n in kw:
                given[n] = kw.pop(n)
        causal = bool(kw.pop("use_causal_mask", False))
        for n in ("attention_mask", "query_mask", "value_mask"):
            if kw.pop(n, None) is not None:
                raise TypeError(f"{self.name}: {n} is not supported in a model graph; padding "
                                "masks come from an Embedding(mask_zero=True) upstream or as "
                                "key_mask (N, Tk)")
        if kw or len(args) > 4:
            raise TypeError(f"{self.name}: unexpected arguments {sorted(kw) or args[4:]}")
        query, value, key = given.get("query"), given.get("value"), given.get("key")
        if query is None:
            raise TypeError(f"{self.name}: a query is required")
        key_mask = given.get("key_mask")
        if key_mask is not None:
            # the mask is a fourth tensor after all three inputs, so that forward gets it
            # as key_mask (value and key default as in forward)
            value = query if value is None else value
            key = value if key is None else key
            tk = value.shape[1] if len(value.shape) > 1 else None
            if tuple(key_mask.shape) != (None, tk):
                raise ValueError(f"{self.name}: key_mask must be (N, Tk) = (None, {tk}), got "
                                 f"{tuple(key_mask.shape)}")
            return ([query, value, key, key_mask], "args",
                    {"use_causal_mask": True} if causal else {})
        if value is query:
            value = None
        if key is None or key is value or (value is None and key is query):
            key = None
        elif value is None:
            raise TypeError(f"{self.name}: a key needs a value")
        tensors = [query] + [t for t in (value, key) if t is not None]
        kind = "args" if (len(tensors) > 1 or causal) else "single"
        return tensors, kind, ({"use_causal_mask": True} if causal else {})

    def _graph_build(self, tensors, shapes):
        if len(tensors) > 1:
            value = tensors[1]
            key = tensors[2] if len(tensors) > 2 else value
            self._kv_dims = (value.shape[-1], key.shape[-1])
        self._build(shapes)

    def _graph_check(self, tensors):
        if len(tensors) > 1:
            key = tensors[2] if len(tensors) > 2 else tensors[1]
            dims = (tensors[1].shape[-1], key.shape[-1])
            if dims != (self._kv_dims or (self.input_shape[-1],) * 2):
                raise ValueError(f"{self.name}: built for value/key channels {self._kv_dims}, "
                                 f"called with {dims}")

    def _call_eager(self, query, value=None, key=None, mask=None, use_causal_mask=False,
                    training=False):
        """Inference on its own (building on first use), with optional separate inputs."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        value = None if value is None else np.ascontiguousarray(value, dtype=np.float32)
        key = None if key is None else np.ascontiguousarray(key, dtype=np.float32)
        if not self.built:
            if value is not None:
                self._kv_dims = (value.shape[-1], (key if key is not None else value).shape[-1])
            _standalone(self, query.shape[1:])
        return self.forward(query, value, key, mask=mask, training=bool(training),
                            use_causal_mask=use_causal_mask)

    def _project(self, key, x, name, h, training):
        """x (N, T, C) @ kernel + bias → (N, T, h) scratch."""
        n, t, c = x.shape
        y = self.buffer(key, (n, t, h))
        self._dense(y.reshape(-1, h), x.reshape(-1, c), name, training)
        return y

    def _dense(self, y2, x2, name, training):
        """y2 = x2 @ <name>_kernel + <name>_bias, in float32 or through the int8 kernel."""
        if self.quantization is not None:
            self.check_inference(training)
            self.qdense_into(y2, x2, name + "_kernel", self._b(name), _LINEAR)
            return
        if not training:
            observe(self, name + "_kernel", x2)
        _core.dense_forward(y2, None, x2, getattr(self, name + "_kernel"), self._b(name), _LINEAR)

    def forward(self, query, value=None, key=None, key_mask=None, training=False,
                use_causal_mask=False, mask=None):
        """key_mask and mask (N, Tk), nonzero = attend: a mask given as a tensor in a model
        graph and the padding mask that arrives from upstream; a key is attended when both
        allow it (either may be None)."""
        if isinstance(value, (bool, np.bool_)):  # forward(x, training) as every layer
            training, value = bool(value), None
        xq = query
        xv = query if value is None else value
        xk = xv if key is None else key
        for nm, a in (("query", xq), ("value", xv), ("key", xk)):
            if a.ndim != 3:
                raise ValueError(f"{self.name}: {nm} must be (N, T, C), got shape {a.shape}")
        n, tq, _ = xq.shape
        tk = xv.shape[1]
        if xk.shape[:2] != (n, tk) or xv.shape[0] != n:
            raise ValueError(f"{self.name}: key {xk.shape} and value {xv.shape} must share N "
                             f"and T, and N must match the query {xq.shape}")
        nh, h = self.num_heads, self.num_heads * self.key_dim
        m = _mask_u8(mask, n, tk, self.name)
        if key_mask is not None:
            km = _mask_u8(key_mask, n, tk, self.name)
            m = km if m is None else np.logical_and(m, km).view(np.uint8)
        q = self._project("q", xq, "query", h, training)
        k = self._project("k", xk, "key", h, training)
        v = self._project("v", xv, "value", h, training)
        o = self.buffer("o", (n, tq, h))
        lse = self.buffer("lse", (n, nh, tq)) if training else None
        causal = bool(use_causal_mask)
        _core.attention_forward(o, lse, q, k, v, m, nh, causal, None)
        od = self._drop.forward(o, training) if self._drop is not None else o
        cout = self.out_dim or xq.shape[-1]
        y = self.buffer("y", (n, tq, cout)) if training else np.empty((n, tq, cout), np.float32)
        self._dense(y.reshape(-1, cout), od.reshape(-1, h), "output", training)
        if training:
            # (inputs, which inputs were separate, the core's operands and results)
            self._saved = (xq, xk, xv, value is not None, key is not None,
                           q, k, v, o, od, lse, m, causal)
        return y

    def backward(self, dy):
        xq, xk, xv, sep_v, sep_k, q, k, v, o, od, lse, m, causal = self._saved
        h = o.shape[-1]
        cout = self.output_kernel.shape[1]
        tr = self.trainable
        # The kernels overwrite the gradient buffers (accumulate=False) where they are first
        # written, so none is zeroed first; the weights' gradients are added into.
        dod = self.buffer("dod", o.shape)
        _core.dense_backward(dod.reshape(-1, h), self.doutput_kernel if tr else None,
                             self._db("output"), None, dy.reshape(-1, cout), od.reshape(-1, h),
                             self.output_kernel, None, None, _LINEAR, True, False)
        do = self._drop.backward(dod) if self._drop is not None else dod
        dq = self.buffer("dq", q.shape)
        dk = self.buffer("dk", k.shape)
        dv = self.buffer("dv", v.shape)
        _core.attention_backward(dq, dk, dv, do, o, lse, q, k, v, m, self.num_heads, causal, None,
                                 False)
        # Input gradients: one buffer per distinct input; the first projection of an input
        # writes its buffer, the others add into it.
        need = self.need_input_grad
        dxq = self.buffer("dxq", xq.shape) if need else None
        dxv = self.buffer("dxv", xv.shape) if need and sep_v else dxq
        dxk = self.buffer("dxk", xk.shape) if need and sep_k else dxv
        written = []
        for name, x, g, dx in (("query", xq, dq, dxq), ("key", xk, dk, dxk),
                               ("value", xv, dv, dxv)):
            c = x.shape[-1]
            first = dx is not None and not any(dx is w for w in written)
            if first:
                written.append(dx)
            _core.dense_backward(None if dx is None else dx.reshape(-1, c),
                                 getattr(self, "d" + name + "_kernel") if tr else None,
                                 self._db(name), None, g.reshape(-1, h), x.reshape(-1, c),
                                 getattr(self, name + "_kernel"), None, None, _LINEAR, True,
                                 not first)
        if not need:
            return None
        if not sep_v:
            return dxq
        return (dxq, dxv, dxk) if sep_k else (dxq, dxv)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "output_shape": self.out_dim, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer, "seed": self.seed}


@register
class TransformerEncoder(_SeedsDropouts, Layer):
    """One transformer encoder block on (N, T, C) (as Keras-NLP's TransformerEncoder).

    norm_first=False (post-norm, "Attention is all you need" and the Keras examples):
        x1 = LayerNorm(x + Dropout(MHA(x)));  y = LayerNorm(x1 + Dropout(FFN(x1)))
    norm_first=True (pre-norm):
        x1 = x + Dropout(MHA(LayerNorm(x)));  y = x1 + Dropout(FFN(LayerNorm(x1)))
    with FFN(x) = Dense(C)(Dense(ff_dim, activation)(x)).

    Args:
        num_heads, key_dim: of the MultiHeadAttention (its output has C channels again).
        ff_dim: the hidden size of the feed-forward network.
        dropout: rate of the two residual-branch dropouts (the attention itself has none).
        norm_first: pre-norm instead of post-norm.
        activation: of the feed-forward hidden layer ("relu" or "gelu", ...).
        epsilon: of both LayerNormalizations (Keras' default 1e-3).
    A padding mask (from Embedding(mask_zero=True)) masks the attention keys and is
    passed on unchanged.
    """

    supports_masking = True

    def __init__(self, num_heads: int, key_dim: int, ff_dim: int, dropout: float = 0.1,
                 norm_first: bool = False, activation="relu", epsilon: float = 1e-3,
                 seed: int | None = None, **kw):
        super().__init__(**kw)
        self.num_heads = _positive_int(num_heads, "TransformerEncoder: num_heads")
        self.key_dim = _positive_int(key_dim, "TransformerEncoder: key_dim")
        self.ff_dim = _positive_int(ff_dim, "TransformerEncoder: ff_dim")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"TransformerEncoder: dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.norm_first = bool(norm_first)
        self.activation = activation
        self.epsilon = float(epsilon)
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: expects (T, C) per sample, got {tuple(input_shape)}")
        t, c = input_shape
        p = self.name
        self.attn = MultiHeadAttention(self.num_heads, self.key_dim, name=f"{p}/attention")
        self.add_sublayer(self.attn, (t, c))
        self.ln1 = LayerNormalization(epsilon=self.epsilon, name=f"{p}/norm1")
        self.add_sublayer(self.ln1, (t, c))
        self.ffn1 = Dense(self.ff_dim, activation=self.activation, name=f"{p}/ffn1")
        self.add_sublayer(self.ffn1, (t, c))
        self.ffn2 = Dense(c, name=f"{p}/ffn2")
        self.add_sublayer(self.ffn2, (t, self.ff_dim))
        self.ln2 = LayerNormalization(epsilon=self.epsilon, name=f"{p}/norm2")
        self.add_sublayer(self.ln2, (t, c))
        self.drop1 = self.drop2 = None
        if self.dropout:
            self.drop1 = Dropout(self.dropout, name=f"{p}/dropout1")
            self.add_sublayer(self.drop1, (t, c))
            self.drop2 = Dropout(self.dropout, name=f"{p}/dropout2")
            self.add_sublayer(self.drop2, (t, c))
        return (t, c)

    def _call_eager(self, x, mask=None, training=False):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.built:
            _standalone(self, x.shape[1:])
        return self.forward(x, training=bool(training), mask=mask)

    @staticmethod
    def _drop(layer, x, training):
        return layer.forward(x, training) if layer is not None else x

    @staticmethod
    def _drop_back(layer, d):
        return layer.backward(d) if layer is not None else d

    def _ffn(self, x, training):
        return self._drop(self.drop2, self.ffn2.forward(self.ffn1.forward(x, training), training),
                          training)

    def _ffn_back(self, d):
        return self.ffn1.backward(self.ffn2.backward(self._drop_back(self.drop2, d)))

    def forward(self, x, training=False, mask=None):
        if x.ndim != 3:
            raise ValueError(f"{self.name}: expects (N, T, C), got shape {x.shape}")
        # The block's own sums live in buffers that are kept for backward when training;
        # the returned array is fresh outside training (as every layer's output).
        s1 = self.buffer("s1", x.shape)
        if not self.norm_first:
            a = self._drop(self.drop1, self.attn.forward(x, mask=mask, training=training), training)
            np.add(x, a, out=s1)
            x1 = self.ln1.forward(s1, training)
            s2 = self.buffer("s2", x.shape)
            np.add(x1, self._ffn(x1, training), out=s2)
            return self.ln2.forward(s2, training)
        h = self.ln1.forward(x, training)
        a = self._drop(self.drop1, self.attn.forward(h, mask=mask, training=training), training)
        np.add(x, a, out=s1)
        h2 = self.ln2.forward(s1, training)
        y = self.buffer("y", x.shape) if training else np.empty(x.shape, np.float32)
        np.add(s1, self._ffn(h2, training), out=y)
        return y

    def backward(self, dy):
        self.attn.need_input_grad = True
        if not self.norm_first:
            ds2 = self.ln2.backward(dy)              # d(x1 + ffn(x1))
            dx1 = self._ffn_back(ds2)                # ffn1's dx buffer
            dx1 += ds2                               # + the residual path
            ds1 = self.ln1.backward(dx1)             # d(x + attn(x))
            if not self.need_input_grad:
                self.attn.need_input_grad = False
                self.attn.backward(self._drop_back(self.drop1, ds1))
                return None
            dx = self.attn.backward(self._drop_back(self.drop1, ds1))
            dx += ds1
            return dx
        dx1 = self.ln2.backward(self._ffn_back(dy))  # ln2's dx buffer
        dx1 += dy                                    # d s1 = residual + ffn path
        dh = self.attn.backward(self._drop_back(self.drop1, dx1))
        if not self.need_input_grad:
            self.ln1.need_input_grad = False
            self.ln1.backward(dh)
            return None
        self.ln1.need_input_grad = True
        dx = self.ln1.backward(dh)
        dx += dx1
        return dx

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "ff_dim": self.ff_dim, "dropout": self.dropout, "norm_first": self.norm_first,
                "activation": self.activation, "epsilon": self.epsilon, "seed": self.seed}
