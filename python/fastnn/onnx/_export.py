"""fastnn model -> ONNX graph: one converter per layer class, standard ONNX operators only.

The model's inference plan (the graph fastnn itself runs) is walked in order; each step's
layer (or fastnn.ops function of a subclassed model) becomes a few ONNX nodes. fastnn is
channels-last: a convolution or pooling is wrapped in Transposes to ONNX's NCHW (ONNX
Runtime's optimizer fuses adjacent pairs away). Padding masks (Embedding(mask_zero=True))
become tensors of their own, computed from the token ids, and reach the layers that use
them (attention keys, masked average pooling) as they do in fastnn.
"""
from __future__ import annotations

import numpy as np

from ..layers import base as layers_base

_F32 = np.float32


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError("fastnn.onnx needs the onnx package: pip install \"fastnn[onnx]\" "
                          "(or pip install onnx onnxruntime)") from None
    return onnx, helper, numpy_helper


class Builder:
    """Collects nodes and initializers with fresh names."""

    def __init__(self, opset: int):
        self.onnx, self.helper, self.nh = _onnx()
        self.opset = opset
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint.replace('/', '_')}_{self._n}"

    def const(self, value, hint="c", dtype=_F32) -> str:
        n = self.name(hint)
        a = np.array(value, dtype=dtype, order="C")  # 0-d stays 0-d (a scalar)
        self.inits.append(self.nh.from_array(a, n))
        return n

    def ints(self, values, hint="shape") -> str:
        return self.const(np.asarray(values, np.int64), hint, np.int64)

    def op(self, op_type: str, inputs, hint=None, n_out=1, **attrs):
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs


# --- small helpers ---------------------------------------------------------------------
def _matmul_bias(b, x, w, bias, hint):
    y = b.op("MatMul", [x, b.const(w, hint + "_kernel")], hint)
    if bias is not None:
        y = b.op("Add", [y, b.const(bias, hint + "_bias")], hint)
    return y


def _kernel_product(b, l, x, kname, bias, hint):
    """x @ l.<kname> + bias: MatMul, or for an int8 layer (fastnn.layers.quantized) the
    integer form ONNX Runtime runs: the input quantized per tensor to uint8
    (DynamicQuantizeLinear, or QuantizeLinear with the calibrated scale and zero point),
    MatMulInteger with the int8 kernel, then float32 (acc · (x_scale · w_scale[o])) + bias,
    the operations of fastnn's epilogue in its order."""
    if getattr(l, "quantization", None) is None:
        return _matmul_bias(b, x, getattr(l, kname), bias, hint)
    xq, xs, xz = _quantize_input(b, l, x, kname, hint)
    wq = l._q[kname]["int8"]
    acc = b.op("MatMulInteger", [xq, b.const(wq, hint + "_kernel_int8", np.int8), xz], hint)
    return _dequantize(b, l, acc, xs, kname, bias, hint, (-1,))


def _quantize_input(b, l, x, kname, hint):
    if l.quantization == "dynamic":
        return b.op("DynamicQuantizeLinear", [x], hint + "_x", n_out=3)
    scale, zp = l.qinput(kname)
    xs = b.const(np.float32(scale), hint + "_x_scale")
    xz = b.const(np.uint8(zp), hint + "_x_zero_point", np.uint8)
    return b.op("QuantizeLinear", [x, xs, xz], hint + "_x"), xs, xz


def _dequantize(b, l, acc, xs, kname, bias, hint, shape):
    """float(acc) · (x_scale · w_scale) + bias, with w_scale and bias shaped to broadcast
    over acc's output-channel axis."""
    ws = l._q[kname]["scale"].reshape(shape)
    scale = b.op("Mul", [xs, b.const(ws, hint + "_kernel_scale")], hint + "_scale")
    y = b.op("Mul", [b.op("Cast", [acc], hint, to=b.onnx.TensorProto.FLOAT), scale], hint)
    if bias is not None:
        y = b.op("Add", [y, b.const(np.asarray(bias).reshape(shape), hint + "_bias")], hint)
    return y


def _activation(b, x, act, hint):
    if act in (None, "linear"):
        return x
    if act == "relu":
        return b.op("Relu", [x], hint)
    if act == "sigmoid":
        return b.op("Sigmoid", [x], hint)
    if act == "tanh":
        return b.op("Tanh", [x], hint)
    if act == "softmax":
        return b.op("Softmax", [x], hint, axis=-1)
    if act == "gelu":  # exact GELU x·Φ(x) = x·(1 + erf(x/√2))/2
        e = b.op("Erf", [b.op("Mul", [x, b.const(np.float32(1 / np.sqrt(2)))])])
        return b.op("Mul", [b.op("Mul", [x, b.op("Add", [e, b.const(np.float32(1))])]),
                            b.const(np.float32(0.5))], hint)
    raise NotImplementedError(f"activation {act!r}")


def _nhwc_to_nchw(b, x):
    return b.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])


def _nchw_to_nhwc(b, x):
    return b.op("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])


def _same_pads(size, k, s, d=1):
    ek = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + ek - size, 0)
    return total // 2, total - total // 2


def _mask_f32(b, mask, hint="mask"):
    return b.op("Cast", [mask], hint, to=b.onnx.TensorProto.FLOAT)


# --- converters: (builder, layer, input names, input mask) -> (outputs, output mask) ----
def _dense(b, l, xs, m):
    y = _kernel_product(b, l, xs[0], "kernel", l.bias if l.use_bias else None, l.name)
    return [_activation(b, y, l.activation, l.name)], m if l.supports_masking else None


def _ffn(b, l, x):
    """The feed-forward pair of a TransformerEncoder."""
    return _dense(b, l.ffn2, _dense(b, l.ffn1, [x], None)[0], None)[0][0]


def _activation_layer(b, l, xs, m):
    return [_activation(b, xs[0], l.activation, l.name)], m


def _identity(b, l, xs, m):
    return [xs[0]], m if l.supports_masking else None


def _reshape_to(b, x, shape, hint):
    return b.op("Reshape", [x, b.ints([-1] + [int(s) for s in shape])], hint)


def _flatten(b, l, xs, m):
    return [b.op("Flatten", [xs[0]], l.name, axis=1)], None


def _reshape(b, l, xs, m):
    return [_reshape_to(b, xs[0], l.output_shape, l.name)], None


def _conv_nchw(b, l, x, kernel4, geo, groups):
    """Conv over an NHWC tensor x with a (KH, KW, C/g, F) kernel, back to NHWC; an int8
    layer as ConvInteger (its input quantized as in _kernel_product)."""
    w = np.transpose(kernel4, (3, 2, 0, 1))  # (F, C/g, KH, KW)
    attrs = dict(strides=[geo.stride_h, geo.stride_w],
                 pads=[geo.pad_top, geo.pad_left, geo.pad_bottom, geo.pad_right],
                 dilations=[geo.dil_h, geo.dil_w], group=groups,
                 kernel_shape=list(kernel4.shape[:2]))
    if getattr(l, "quantization", None) is not None:
        xq, xs, xz = _quantize_input(b, l, _nhwc_to_nchw(b, x), "kernel", l.name)
        acc = b.op("ConvInteger", [xq, b.const(w, l.name + "_kernel_int8", np.int8), xz],
                   l.name, **attrs)
        y = _dequantize(b, l, acc, xs, "kernel", l.bias if l.use_bias else None, l.name,
                        (1, -1, 1, 1))
        return _activation(b, _nchw_to_nhwc(b, y), l.activation, l.name)
    ins = [_nhwc_to_nchw(b, x), b.const(w, l.name + "_kernel")]
    if l.use_bias:
        ins.append(b.const(l.bias, l.name + "_bias"))
    y = b.op("Conv", ins, l.name, **attrs)
    return _activation(b, _nchw_to_nhwc(b, y), l.activation, l.name)


def _conv_kernel(l):
    """The layer's (KH, KW, C/g, F) kernel: float32, or int8 for a quantized layer."""
    return l.kernel if getattr(l, "quantization", None) is None else l._q["kernel"]["int8"]


def _conv2d(b, l, xs, m):
    return [_conv_nchw(b, l, xs[0], _conv_kernel(l), l._geo, l.groups)], None


def _conv1d(b, l, xs, m):
    x4 = b.op("Unsqueeze", [xs[0], b.ints([1])], l.name)  # (N, 1, T, C)
    y4 = _conv_nchw(b, l, x4, _conv_kernel(l)[None], l._geo, l.groups)
    return [b.op("Squeeze", [y4, b.ints([1])], l.name)], None


def _pool_nchw(b, l, x, pool, step, hw):
    if l.padding == "same":
        (pt, pb), (pl, pr) = (_same_pads(hw[i], pool[i], step[i]) for i in range(2))
    else:
        pt = pb = pl = pr = 0
    kind = "MaxPool" if "Max" in type(l).__name__ else "AveragePool"
    attrs = dict(kernel_shape=list(pool), strides=list(step), pads=[pt, pl, pb, pr])
    if kind == "AveragePool":
        attrs["count_include_pad"] = 0
    return _nchw_to_nhwc(b, b.op(kind, [_nhwc_to_nchw(b, x)], l.name, **attrs))


def _pool2d(b, l, xs, m):
    return [_pool_nchw(b, l, xs[0], l.pool_size, l.strides, l.input_shape[:2])], None


def _pool1d(b, l, xs, m):
    x4 = b.op("Unsqueeze", [xs[0], b.ints([1])], l.name)
    k, s = _single(l.pool_size), _single(l.strides)
    y4 = _pool_nchw(b, l, x4, (1, k), (1, s), (1, l.input_shape[0]))
    return [b.op("Squeeze", [y4, b.ints([1])], l.name)], None


def _single(v):
    return int(v[-1]) if isinstance(v, (tuple, list)) else int(v)


def _reduce(b, op_type, x, axes, keepdims, hint=None):
    """ReduceSum takes its axes as an input from opset 13, the others from opset 18."""
    if op_type == "ReduceSum" or b.opset >= 18:
        return b.op(op_type, [x, b.ints(axes)], hint, keepdims=int(keepdims))
    return b.op(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))


def _global_avg2d(b, l, xs, m):
    return [_reduce(b, "ReduceMean", xs[0], [1, 2], l.keepdims, l.name)], None


def _global_max(b, l, xs, m):
    axes = [1, 2] if len(l.input_shape) == 3 else [1]
    return [_reduce(b, "ReduceMax", xs[0], axes, getattr(l, "keepdims", False), l.name)], None


def _global_avg1d(b, l, xs, m):
    x = xs[0]
    if m is None:
        return [_reduce(b, "ReduceMean", x, [1], l.keepdims, l.name)], None
    w = b.op("Unsqueeze", [_mask_f32(b, m), b.ints([2])])  # (N, T, 1)
    s = _reduce(b, "ReduceSum", b.op("Mul", [x, w]), [1], l.keepdims, l.name)
    cnt = b.op("Max", [_reduce(b, "ReduceSum", w, [1], l.keepdims, l.name),
                       b.const(np.float32(1))])
    return [b.op("Div", [s, cnt], l.name)], None


def _batch_norm(b, l, xs, m):
    """Inference form folded into one scale and shift over the channel axis."""
    gamma = l.gamma if l.scale else np.ones_like(l.moving_mean)
    beta = l.beta if l.center else np.zeros_like(l.moving_mean)
    scale = (gamma / np.sqrt(l.moving_variance.astype(np.float64) + l.epsilon)).astype(_F32)
    shift = (beta - l.moving_mean * scale).astype(_F32)
    rank = len(l.input_shape) + 1
    axis = l.axis % rank
    shape = [1] * rank
    shape[axis] = -1
    shape = shape[1:]  # broadcasting skips the batch axis
    y = b.op("Mul", [xs[0], b.const(scale.reshape(shape), l.name + "_scale")])
    return [b.op("Add", [y, b.const(shift.reshape(shape), l.name + "_shift")], l.name)], m


def _layer_norm_node(b, l, x):
    c = l.input_shape[-1]
    gamma = l.gamma if l.scale else np.ones(c, _F32)
    beta = l.beta if l.center else np.zeros(c, _F32)
    return b.op("LayerNormalization", [x, b.const(gamma, l.name + "_gamma"),
                                       b.const(beta, l.name + "_beta")], l.name, axis=-1,
                epsilon=float(l.epsilon))


def _layer_norm(b, l, xs, m):
    return [_layer_norm_node(b, l, xs[0])], m


def _ids_int64(b, x):
    return b.op("Cast", [x], "ids", to=b.onnx.TensorProto.INT64)


def _padding_mask(b, ids):
    return b.op("Not", [b.op("Equal", [ids, b.const(np.int64(0), "zero", np.int64)])], "mask")


def _gather_table(b, l, kname, ids):
    """Rows ids of an embedding table; an int8 table (fastnn.layers.quantized) as Gather,
    Cast and Mul by its per-channel scale, the order of fastnn's gather_int8."""
    if getattr(l, "quantization", None) is None:
        return b.op("Gather", [b.const(getattr(l, kname), l.name + "_table"), ids], l.name, axis=0)
    a = l._q[kname]
    rows = b.op("Gather", [b.const(a["int8"], l.name + "_table_int8", np.int8), ids], l.name, axis=0)
    rows = b.op("Cast", [rows], l.name, to=b.onnx.TensorProto.FLOAT)
    return b.op("Mul", [rows, b.const(a["scale"], l.name + "_table_scale")], l.name)


def _embedding(b, l, xs, m):
    ids = _ids_int64(b, xs[0])
    y = _gather_table(b, l, "embeddings", ids)
    return [y], (_padding_mask(b, ids) if l.mask_zero else None)


def _positional_embedding(b, l, xs, m):
    t = l.output_shape[0]
    pos = b.const(l._pos()[:t], l.name + "_positions")
    if l.input_dim is None:
        return [b.op("Add", [xs[0], pos], l.name)], m
    ids = _ids_int64(b, xs[0])
    y = _gather_table(b, l, "token_embeddings", ids)
    return [b.op("Add", [y, pos], l.name)], (_padding_mask(b, ids) if l.mask_zero else None)


def _heads(b, x, nh, d, hint):
    """(N, T, NH·D) -> (N, NH, T, D)"""
    r = b.op("Reshape", [x, b.ints([0, 0, nh, d])], hint)
    return b.op("Transpose", [r], hint, perm=[0, 2, 1, 3])


def _mha_node(b, l, xq, xk, xv, mask, causal):
    nh, d = l.num_heads, l.key_dim
    bias = (lambda n: getattr(l, n + "_bias")) if l.use_bias else (lambda n: None)  # noqa: E731
    q = _heads(b, _kernel_product(b, l, xq, "query_kernel", bias("query"), l.name + "_q"), nh, d, "q")
    k = _heads(b, _kernel_product(b, l, xk, "key_kernel", bias("key"), l.name + "_k"), nh, d, "k")
    v = _heads(b, _kernel_product(b, l, xv, "value_kernel", bias("value"), l.name + "_v"), nh, d, "v")
    kt = b.op("Transpose", [k], "kt", perm=[0, 1, 3, 2])
    s = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(np.float32(1.0 / np.sqrt(d)))], "scores")
    big = np.float32(-1e30)
    keep = None
    if mask is not None:  # key padding: (N, Tk) -> (N, 1, 1, Tk)
        keep = b.op("Unsqueeze", [mask, b.ints([1, 2])], "keep")
        s = b.op("Where", [keep, s, b.const(big)], "scores")
    if causal:
        tq, tk = l.output_shape[0], l.output_shape[0]
        tri = np.tril(np.ones((tq, tk), bool))
        s = b.op("Where", [b.const(tri, "causal", np.bool_), s, b.const(big)], "scores")
    p = b.op("Softmax", [s], "probs", axis=-1)
    o = b.op("MatMul", [p, v], "attn")
    if mask is not None:  # a query without any real key gets a zero output, as in fastnn
        anyk = _reduce(b, "ReduceMax", _mask_f32(b, keep), [3], True, "any_key")
        o = b.op("Mul", [o, anyk], "attn")
    o = b.op("Reshape", [b.op("Transpose", [o], "attn", perm=[0, 2, 1, 3]), b.ints([0, 0, nh * d])])
    return _kernel_product(b, l, o, "output_kernel", bias("output"), l.name + "_out")


def _mha(b, l, xs, m, kwargs):
    xq = xs[0]
    xv = xs[1] if len(xs) > 1 else xq
    xk = xs[2] if len(xs) > 2 else xv
    km = m
    if len(xs) > 3:  # a key_mask tensor (nonzero = attend), with the padding mask if any
        km = b.op("Cast", [xs[3]], "key_mask", to=b.onnx.TensorProto.BOOL)
        km = km if m is None else b.op("And", [m, km], "key_mask")
    return [_mha_node(b, l, xq, xk, xv, km, bool(kwargs.get("use_causal_mask")))], m


def _transformer(b, l, xs, m):
    x = xs[0]
    if not l.norm_first:
        x1 = _layer_norm_node(b, l.ln1, b.op("Add", [x, _mha_node(b, l.attn, x, x, x, m, False)]))
        f = _ffn(b, l, x1)
        return [_layer_norm_node(b, l.ln2, b.op("Add", [x1, f]))], m
    h = _layer_norm_node(b, l.ln1, x)
    s1 = b.op("Add", [x, _mha_node(b, l.attn, h, h, h, m, False)])
    f = _ffn(b, l, _layer_norm_node(b, l.ln2, s1))
    return [b.op("Add", [s1, f], l.name)], m


def _merge(b, l, xs, m):
    kind = type(l).__name__
    if kind == "Concatenate":
        return [b.op("Concat", xs, l.name, axis=int(l.axis))], None
    op = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Maximum": "Max",
          "Minimum": "Min", "Average": "Add"}[kind]
    if op in ("Max", "Min"):
        y = b.op(op, xs, l.name)
    else:
        y = xs[0]
        for x in xs[1:]:
            y = b.op(op, [y, x], l.name)
    if kind == "Average":
        y = b.op("Mul", [y, b.const(np.float32(1.0 / len(xs)))], l.name)
    return [y], m


def _rescaling(b, l, xs, m):
    y = b.op("Mul", [xs[0], b.const(np.float32(l.scale))], l.name)
    if l.offset:
        y = b.op("Add", [y, b.const(np.float32(l.offset))], l.name)
    return [y], m


def _zero_padding(b, l, xs, m):
    (t, bo), (le, r) = l.padding
    return [b.op("Pad", [xs[0], b.ints([0, t, le, 0, 0, bo, r, 0])], l.name)], None


def _upsampling(b, l, xs, m):
    sh, sw = l.size
    scales = b.const(np.array([1, sh, sw, 1], _F32), "scales")
    return [b.op("Resize", [xs[0], "", scales], l.name, mode="nearest",
                 nearest_mode="floor", coordinate_transformation_mode="asymmetric")], None


# --- recurrent layers --------------------------------------------------------------------
_IFGO_TO_IOFC = [0, 3, 1, 2]  # fastnn/Keras LSTM gate blocks i, f, c, o -> ONNX i, o, f, c


def _rnn_weights(l):
    """(W, R, B) of one direction in ONNX's layout: W (G·U, C), R (G·U, U), B (2·G·U)."""
    if getattr(l, "quantization", None) is not None:
        raise ValueError(f"onnx.export: {l.name} is an int8 {type(l).__name__} "
                         f"({l.quantization}); ONNX has no int8 recurrent operator to export it "
                         "to: export the float model instead")
    u, g = l.units, l._gates
    w, r = l.kernel.T, l.recurrent_kernel.T
    zeros = np.zeros(g * u, _F32)
    if type(l).__name__ == "GRU" and l.reset_after:
        bias = np.concatenate([l.bias[0], l.bias[1]]) if l.use_bias else np.zeros(2 * g * u, _F32)
    else:
        bias = np.concatenate([l.bias if l.use_bias else zeros, zeros])
    if type(l).__name__ == "LSTM":
        order = np.concatenate([np.arange(u) + k * u for k in _IFGO_TO_IOFC])
        w, r = w[order], r[order]
        bias = np.concatenate([bias[:4 * u][order], bias[4 * u:]])
    return w, r, bias


def _rnn_node(b, layers, x, direction, hint):
    """The ONNX LSTM/GRU/RNN node over x (N, T, C): (Y (N, T, D, U), Y_h (D, N, U))."""
    l0 = layers[0]
    kind = type(l0).__name__
    ws = [_rnn_weights(l) for l in layers]
    W, R, B = (np.stack([w[i] for w in ws]) for i in range(3))
    xt = b.op("Transpose", [x], "time_major", perm=[1, 0, 2])
    attrs = dict(hidden_size=l0.units, direction=direction)
    if kind == "GRU":
        attrs["linear_before_reset"] = int(l0.reset_after)
    if kind == "SimpleRNN":
        attrs["activations"] = [{"tanh": "Tanh", "relu": "Relu"}[l0.activation]] * len(layers)
    op = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}[kind]
    n_out = 3 if kind == "LSTM" else 2
    outs = b.op(op, [xt, b.const(W, hint + "_W"), b.const(R, hint + "_R"), b.const(B, hint + "_B")],
                hint, n_out=n_out, **attrs)
    y = b.op("Transpose", [outs[0]], "batch_major", perm=[2, 0, 1, 3])  # (N, T, D, U)
    return y, outs[1], (outs[2] if kind == "LSTM" else None)


def _reverse_time(b, y):
    return b.op("Slice", [y, b.ints([-1]), b.ints([-(2 ** 62)]), b.ints([1]), b.ints([-1])],
                "reversed")


def _check_rnn(l, m, extra_inputs):
    if m is not None:
        raise NotImplementedError(f"{l.name}: a recurrent layer over a padding mask cannot be "
                                  "exported yet (ONNX's recurrent ops take sequence lengths, "
                                  "not masks)")
    if extra_inputs:
        raise NotImplementedError(f"{l.name}: initial_state inputs cannot be exported yet")


def _rnn(b, l, xs, m):
    _check_rnn(l, m, xs[1:])
    y, yh, yc = _rnn_node(b, [l], xs[0], "reverse" if l.go_backwards else "forward", l.name)
    u = l.units
    if l.return_sequences:
        out = b.op("Reshape", [y, b.ints([0, 0, u])], l.name)
        if l.go_backwards:
            out = _reverse_time(b, out)
    else:
        out = b.op("Squeeze", [yh, b.ints([0])], l.name)
    outs = [out]
    if l.return_state:
        outs.append(b.op("Squeeze", [yh, b.ints([0])], l.name + "_h"))
        if yc is not None:
            outs.append(b.op("Squeeze", [yc, b.ints([0])], l.name + "_c"))
    return outs, None


def _bidirectional(b, l, xs, m):
    f, bk = l.forward_layer, l.backward_layer
    _check_rnn(l, m, xs[1:])
    if f.go_backwards or not bk.go_backwards:
        raise NotImplementedError(f"{l.name}: only a forward layer with its go_backwards copy "
                                  "can be exported")
    y, yh, yc = _rnn_node(b, [f, bk], xs[0], "bidirectional", l.name)
    u = f.units
    states = []
    if l.return_state:  # forward h (and c), then backward ones, as fastnn returns them
        for i in range(2):
            states += [b.op("Gather", [s, b.const(np.int64(i), "dir", np.int64)], l.name + "_state",
                            axis=0) for s in (yh, yc) if s is not None]
    if l.return_sequences:
        if l.merge_mode == "concat":
            return [b.op("Reshape", [y, b.ints([0, 0, 2 * u])], l.name)] + states, m
        parts = [b.op("Gather", [y, b.const(np.int64(i), "dir", np.int64)], axis=2)
                 for i in range(2)]  # (N, T, U) each, both in time order
    else:
        parts = [b.op("Gather", [yh, b.const(np.int64(i), "dir", np.int64)], axis=0)
                 for i in range(2)]  # (N, U)
        if l.merge_mode == "concat":
            return [b.op("Concat", parts, l.name, axis=-1)] + states, None
    op = {"sum": "Add", "mul": "Mul", "ave": "Add"}[l.merge_mode]
    out = b.op(op, parts, l.name)
    if l.merge_mode == "ave":
        out = b.op("Mul", [out, b.const(np.float32(0.5))], l.name)
    return [out] + states, (m if l.return_sequences else None)


CONVERTERS = {
    "Dense": _dense, "Activation": _activation_layer, "Dropout": _identity,
    "SpatialDropout1D": _identity, "SpatialDropout2D": _identity, "InputLayer": _identity,
    "Flatten": _flatten, "Reshape": _reshape, "Conv2D": _conv2d, "Conv1D": _conv1d,
    "MaxPooling2D": _pool2d, "AveragePooling2D": _pool2d, "MaxPooling1D": _pool1d,
    "AveragePooling1D": _pool1d, "GlobalAveragePooling2D": _global_avg2d,
    "GlobalMaxPooling2D": _global_max, "GlobalMaxPooling1D": _global_max,
    "GlobalAveragePooling1D": _global_avg1d, "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm, "Embedding": _embedding,
    "PositionalEmbedding": _positional_embedding, "MultiHeadAttention": _mha,
    "TransformerEncoder": _transformer,
    "Add": _merge, "Subtract": _merge, "Multiply": _merge, "Average": _merge,
    "Maximum": _merge, "Minimum": _merge, "Concatenate": _merge, "Rescaling": _rescaling,
    "ZeroPadding2D": _zero_padding, "UpSampling2D": _upsampling, "LSTM": _rnn, "GRU": _rnn,
    "SimpleRNN": _rnn, "Bidirectional": _bidirectional,
}


# --- fastnn.ops functions of subclassed models ------------------------------------------
def _op_step(b, op, xs, rank):
    """One fastnn.ops function of a traced call(); rank: its first input's rank."""
    kind = op.name
    simple = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div",
              "maximum": "Max", "minimum": "Min", "negative": "Neg", "sqrt": "Sqrt",
              "exp": "Exp", "log": "Log", "abs": "Abs", "relu": "Relu", "sigmoid": "Sigmoid",
              "tanh": "Tanh", "identity": "Identity", "matmul": "MatMul"}
    if kind in simple:
        return b.op(simple[kind], xs, kind)
    if kind == "gelu":
        return _activation(b, xs[0], "gelu", kind)
    if kind == "square":
        return b.op("Mul", [xs[0], xs[0]], kind)
    if kind == "logical_not":
        zero = b.op("Equal", [xs[0], b.const(np.float32(0))], kind)
        return b.op("Cast", [zero], kind, to=b.onnx.TensorProto.FLOAT)
    if kind == "power":
        return b.op("Pow", [xs[0], b.const(np.float32(op.p))], kind)
    if kind == "clip":
        return b.op("Clip", [xs[0], b.const(np.float32(op.lo)), b.const(np.float32(op.hi))], kind)
    if kind == "softmax":
        return b.op("Softmax", xs, kind, axis=int(getattr(op, "axis", -1)))
    if kind == "reshape":
        return b.op("Reshape", [xs[0], b.ints(op.new_shape)], kind)
    if kind == "transpose":
        return b.op("Transpose", xs, kind, perm=list(op._perm(rank)))
    if kind == "concatenate":
        return b.op("Concat", xs, kind, axis=int(op.axis))
    if kind in ("mean", "sum"):
        axes = list(range(rank)) if op.axis is None else (
            [op.axis] if isinstance(op.axis, int) else list(op.axis))
        return _reduce(b, "ReduceMean" if kind == "mean" else "ReduceSum", xs[0], axes,
                       op.keepdims, kind)
    raise NotImplementedError(kind)


def _class(layer) -> str:
    for cls in type(layer).__mro__:
        if cls.__name__ in CONVERTERS:
            return cls.__name__
    return type(layer).__name__


def export_model(model, path, opset: int = 17):
    """Write `model` as an ONNX file (see fastnn.onnx.export)."""
    b = Builder(opset)
    helper, onnx = b.helper, b.onnx
    if not model._ready:
        try:
            model.build()
        except (TypeError, ValueError) as e:
            raise ValueError(f"fastnn.onnx.export: {model.name} is not built: call it on data "
                             f"or build(input_shape) first ({e})") from None
    model._ensure_ready("export")
    plan = model._plan_infer
    names: dict[int, str] = {}
    masks: dict[int, str | None] = {}
    inputs = []
    for k, (s, t) in enumerate(zip(plan.in_slots, model.inputs)):
        nm = t.name or f"input_{k}"
        names[s], masks[s] = nm, None
        shape = ["N"] + [int(d) for d in t.shape[1:]]
        inputs.append(helper.make_tensor_value_info(nm, onnx.TensorProto.FLOAT, shape))
    for s, v in plan.params:
        names[s] = b.const(v.value, v.name)
    for s, c in plan.consts:
        names[s] = b.const(np.asarray(c, _F32), "const")
    shapes = {s: tuple(t.shape) for s, t in zip(plan.in_slots, model.inputs)}
    for s, v in plan.params:
        shapes[s] = tuple(v.value.shape)
    for s, c in plan.consts:
        shapes[s] = tuple(np.shape(c))
    unsupported = set()
    for st in plan.steps:
        ins = [st.i] if hasattr(st, "i") else list(st.ins)
        outs = list(getattr(st, "outs", None) or [st.o])
        if any(i not in names for i in ins):  # after a step with no converter
            continue
        xs = [names[i] for i in ins]
        m = masks.get(ins[0])
        layer = st.layer
        if isinstance(layer, layers_base.Layer):
            conv = CONVERTERS.get(_class(layer))
            if conv is None:
                unsupported.add(type(layer).__name__)
                continue
            try:
                if conv is _mha:
                    ys, om = conv(b, layer, xs, m, getattr(st, "kwargs", {}) or {})
                else:
                    ys, om = conv(b, layer, xs, m)
            except NotImplementedError as e:
                raise ValueError(f"fastnn.onnx.export: {e}") from None
        else:
            try:
                ys = [_op_step(b, layer, xs, len(shapes[ins[0]]))]
            except NotImplementedError:
                unsupported.add(f"fastnn.ops.{layer.name}")
                continue
            om = m if getattr(layer, "keeps_mask", False) else None
        if isinstance(layer, layers_base.Layer):
            out_shapes = getattr(layer, "output_shapes", None) if len(outs) > 1 else None
            out_shapes = out_shapes or [layer.output_shape]
            out_shapes = [(None,) + tuple(o) for o in out_shapes]
        else:
            out_shapes = [layer.shape(*[shapes[i] for i in ins])]
        for k, (o, y) in enumerate(zip(outs, ys)):
            names[o], shapes[o] = y, out_shapes[min(k, len(out_shapes) - 1)]
            masks[o] = om if k == 0 else None
    if unsupported:
        raise ValueError(f"fastnn.onnx.export: {model.name} uses layers or ops with no ONNX "
                         f"converter: {sorted(unsupported)}")
    outputs = []
    for k, (s, t) in enumerate(zip(plan.out_slots, model.outputs)):
        nm = f"output_{k}" if len(model.outputs) > 1 else "output"
        b.nodes.append(helper.make_node("Identity", [names[s]], [nm]))
        shape = ["N"] + [int(d) for d in t.shape[1:]]
        outputs.append(helper.make_tensor_value_info(nm, onnx.TensorProto.FLOAT, shape))
    g = helper.make_graph(b.nodes, model.name, inputs, outputs, b.inits)
    proto = helper.make_model(g, producer_name="fastnn",
                              opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, str(path))
    return proto

