"""Integer ONNX subgraphs -> fastnn int8 layers (fastnn.layers.quantized), for fn.onnx.load.

Before the import proper, the graph is rewritten: each quantized product becomes one node
"QDense" or "QConv" of domain DOMAIN (internal to the importer, never written to a file)
that Importer.run turns into a Dense or Conv2D quantized as fastnn.quantization does.
Three forms are recognised:

* integer operators, as fastnn.onnx.export writes them and as ONNX Runtime's
  quantize_dynamic does: ``DynamicQuantizeLinear(x)`` (mode "dynamic") or
  ``QuantizeLinear(x, s, z)`` with constant scalar s, z (mode "static"), then
  ``MatMulInteger`` / ``ConvInteger`` with a constant int8 (or uint8) weight and its zero
  point, ``Cast`` to float, ``Mul`` by ``Mul(x_scale, w_scale)``, and an optional ``Add``
  of a constant bias. This is exactly fastnn's int8 product: uint8 activations with a
  zero point, int32 sums, then float(acc) · (x_scale · w_scale) + bias in float32, in
  that order; so the imported layer gives the file's results bit for bit (up to the
  activation that follows, a separate layer here).
* QDQ (ONNX Runtime's quantize_static, default format): ``MatMul`` / ``Conv`` whose input
  is ``DequantizeLinear(QuantizeLinear(x, s, z), s, z)`` and whose weight is
  ``DequantizeLinear`` of a constant int8 tensor: a static int8 layer with input scale s
  and zero point z. The other QuantizeLinear -> DequantizeLinear pairs (on the products'
  outputs, the bias sums, the softmax) become a Clip to the range the quantization can
  represent: fastnn keeps those tensors in float32, so its outputs differ from ONNX
  Runtime's by those roundings (a few output quantization steps), but the saturation
  stays (ONNX Runtime removes a Relu whose range a zero point clips). Other
  DequantizeLinear of constants (biases) are folded into float constants.
* QOperator (quantize_static with quant_format=QuantFormat.QOperator): ``QLinearMatMul``
  (with the ``QLinearAdd`` of its bias), ``QLinearConv`` and ``QGemm`` become static int8
  layers with their input scale and zero point; ``QLinearAdd`` / ``QLinearMul`` of two
  tensors, ``QLinearSigmoid``, ``QLinearSoftmax``, ``QLinearAveragePool`` and
  ``QLinearGlobalAveragePool`` become float operators, and MaxPool, Transpose, Flatten,
  ... of quantized tensors run on their float tensors. Each requantized output stays
  float32 (see _QOperator): its rounding is left out (a few output steps of difference),
  its saturation is kept.

Weights map exactly when ``q - zero_point`` fits int8 ([-128, 127]; fastnn's kernels
take symmetric int8 weights, per output channel; a per-tensor scale is repeated per
channel). Anything else that is quantized (uint8 weights with a zero point too far from
the middle, QOperator nodes outside the list above, a product whose input is not
quantized per tensor, a quantized tensor read with another scale than it was made with,
...) raises a ValueError naming the nodes and the reason.
"""
from __future__ import annotations

import numpy as np

DOMAIN = "fastnn.int8"
NODES = ("QDense", "QConv")
#: operators that take part in a quantized product; the importer has no float meaning
#: for them outside the forms above
INTEGER_OPS = ("DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear",
               "MatMulInteger", "ConvInteger")
#: ONNX Runtime's QOperator format (outputs requantized to uint8 or int8 after every
#: operator) and its other quantized operators (com.microsoft domain); see _QOperator
QOPERATOR_OPS = ("QLinearMatMul", "QLinearConv", "QLinearAdd", "QLinearMul", "QLinearSoftmax",
                 "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QGemm", "QAttention",
                 "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "DynamicQuantizeLSTM")
_CONV_ATTRS = ("strides", "pads", "dilations", "group", "kernel_shape", "auto_pad")


class _Graph:
    def __init__(self, proto, helper, nh):
        self.helper, self.nh = helper, nh
        self.nodes = list(proto.graph.node)
        self.consts = {t.name: nh.to_array(t) for t in proto.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
                if "value" in a:
                    self.consts[n.output[0]] = nh.to_array(a["value"])
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        for o in proto.graph.output:
            self.consumers.setdefault(o.name, []).append(None)  # a graph output: a use
        self.new_inits: dict[str, np.ndarray] = {}
        self._n = 0

    def attrs(self, node):
        return {a.name: self.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name):
        return self.consts.get(name) if name else None

    def sole(self, name):
        """The one node that uses `name` (None if it has several uses or is an output)."""
        cs = self.consumers.get(name, [])
        return cs[0] if len(cs) == 1 else None

    def fresh(self, hint):
        """A tensor name of the rewritten graph that the file does not use."""
        self._n += 1
        return f"{DOMAIN}/{hint}_{self._n}"

    def add_const(self, hint, value):
        name = self.fresh(hint)
        self.new_inits[name] = value
        self.consts[name] = value
        return name


def _name(node):
    return repr(node.name or node.output[0])


def _where(node):
    return f"fastnn.onnx.load: {node.op_type} node {_name(node)}"


def _scalar(g, name, what, node, default=None):
    v = g.const(name)
    if v is None:
        if not name and default is not None:
            return default
        raise ValueError(f"{_where(node)}: its {what} must be a constant")
    if v.size != 1:
        raise ValueError(f"{_where(node)}: its {what} has shape {list(v.shape)}; fastnn "
                         "quantizes activations per tensor (one scale and zero point)")
    return v.reshape(())


def _weight_int8(g, node, w_name, zp_name, axis):
    """(q - zero_point) as int8, exactly, of a constant int8/uint8 weight; the zero point is
    a scalar or one per output channel (along `axis` of the weight)."""
    w = g.const(w_name)
    if w is None or w.dtype not in (np.int8, np.uint8):
        raise ValueError(f"{_where(node)}: its weight {w_name!r} must be a constant int8 or "
                         "uint8 tensor")
    zp = g.const(zp_name)
    if zp_name and zp is None:
        raise ValueError(f"{_where(node)}: its weight zero point must be a constant")
    q = w.astype(np.int32)
    if zp is not None and np.any(zp):
        if zp.size != 1:
            shape = [1] * w.ndim
            shape[axis] = -1
            zp = zp.reshape(shape)
        q = q - zp.astype(np.int32)
    if q.min(initial=0) < -128 or q.max(initial=0) > 127:
        raise ValueError(f"{_where(node)}: its weight minus its zero point spans "
                         f"[{q.min()}, {q.max()}], outside int8; fastnn's int8 kernels take "
                         "symmetric int8 weights (quantize with weight_type=QInt8)")
    return q.astype(np.int8)


def _channel_scale(node, ws, n):
    ws = np.asarray(ws, np.float32)
    if ws.size == 1:
        return np.full(n, ws.reshape(()), np.float32)
    if ws.size != n:
        raise ValueError(f"{_where(node)}: its weight scale has {ws.size} values for {n} "
                         "output channels")
    return ws.reshape(-1).copy()


def _bias_after(g, out, n, conv):
    """(Add node, bias (n,)) if `out`'s only use adds a constant per-channel vector."""
    add = g.sole(out)
    if add is None or add.op_type != "Add":
        return None, None
    other = add.input[1] if add.input[0] == out else add.input[0]
    b = g.const(other)
    if b is None or b.size != n or b.dtype != np.float32:
        return None, None
    ok = b.ndim == 1 or (conv and b.shape == (1, n, 1, 1)) or (not conv and b.shape[-1] == n)
    return (add, b.reshape(-1).astype(np.float32)) if ok else (None, None)


def _integer_product(g, m):
    """The QDense / QConv node of an integer product (MatMulInteger / ConvInteger node m)
    and the name of its float output, or a ValueError saying what does not fit."""
    conv = m.op_type == "ConvInteger"
    ins = list(m.input) + [""] * (4 - len(m.input))
    p = g.producer.get(ins[0])
    if p is None or p.op_type not in ("DynamicQuantizeLinear", "QuantizeLinear"):
        raise ValueError(f"{_where(m)}: its input must come from DynamicQuantizeLinear or "
                         "QuantizeLinear (fastnn quantizes a float input per tensor)")
    x = p.input[0]
    if p.op_type == "DynamicQuantizeLinear":
        mode, xs_name, xs, xz = "dynamic", p.output[1], None, None
        if ins[2] != p.output[2]:
            raise ValueError(f"{_where(m)}: its input zero point is not the one "
                             "DynamicQuantizeLinear computed")
    else:
        mode, xs_name = "static", p.input[1]
        xs = np.float32(_scalar(g, p.input[1], "input scale", p))
        zq = _scalar(g, p.input[2] if len(p.input) > 2 else "", "input zero point", p,
                     default=np.uint8(0))
        mz = _scalar(g, ins[2], "input zero point", m, default=np.uint8(0))
        if int(mz) != int(zq) or mz.dtype != zq.dtype:
            raise ValueError(f"{_where(m)}: its input zero point {int(mz)} differs from "
                             f"QuantizeLinear's {int(zq)}")
        xz = _u8_zero_point(p, zq)
    q = _weight_int8(g, m, ins[1], ins[3], 0 if conv else -1)
    n = q.shape[0] if conv else q.shape[-1]
    if not conv and q.ndim != 2:
        raise ValueError(f"{_where(m)}: the weight must be a 2-D (in, out) matrix")
    if conv:
        if q.ndim != 4:
            raise ValueError(f"{_where(m)}: fastnn imports 2-D integer convolutions only")
        if int(g.attrs(m).get("group", 1)) != 1:
            raise ValueError(f"{_where(m)}: grouped integer convolutions are not supported "
                             "(fastnn's int8 Conv2D has groups=1)")
    cast = g.sole(m.output[0])
    if cast is None or cast.op_type != "Cast" or g.attrs(cast).get("to") != 1:
        raise ValueError(f"{_where(m)}: its int32 output must go to one Cast to float")
    mul = g.sole(cast.output[0])
    if mul is None or mul.op_type != "Mul":
        raise ValueError(f"{_where(m)}: its float output must be multiplied by "
                         "Mul(input scale, weight scale)")
    s_name = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
    smul = g.producer.get(s_name)
    ws = None
    if smul is not None and smul.op_type == "Mul" and xs_name in smul.input:
        ws = g.const(smul.input[1] if smul.input[0] == xs_name else smul.input[0])
    if ws is None:
        raise ValueError(f"{_where(mul)}: the scale of {m.op_type} node {_name(m)} must be "
                         "Mul(input scale, constant weight scale)")
    ws = _channel_scale(smul, ws, n)
    add, bias = _bias_after(g, mul.output[0], n, conv)
    out = (add or mul).output[0]
    return _node(g, m, "QConv" if conv else "QDense", x, q, ws, bias, mode, xs, xz, out), out


def _dq_const(g, name):
    """(q, scale, zero point, node) when `name` is DequantizeLinear of a constant."""
    d = g.producer.get(name)
    if d is None or d.op_type != "DequantizeLinear" or g.const(d.input[0]) is None:
        return None
    return d


def _qdq_input(g, name):
    """(x, scale, zero point) when `name` is DequantizeLinear(QuantizeLinear(x, s, z), s, z)
    with constant scalar s, z (uint8)."""
    d = g.producer.get(name)
    if d is None or d.op_type != "DequantizeLinear":
        return None
    q = g.producer.get(d.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    sq, sd = g.const(q.input[1]), g.const(d.input[1])
    zq = g.const(q.input[2]) if len(q.input) > 2 and q.input[2] else np.uint8(0)
    zd = g.const(d.input[2]) if len(d.input) > 2 and d.input[2] else np.uint8(0)
    if any(v is None or np.size(v) != 1 for v in (sq, sd, zq, zd)):
        return None
    zq, zd = np.asarray(zq), np.asarray(zd)
    if zq.dtype not in (np.uint8, np.int8) or zq.dtype != zd.dtype or \
            float(sq) != float(sd) or int(zq) != int(zd):
        return None
    return q.input[0], np.float32(np.asarray(sq).reshape(())), _u8_zero_point(q, zq)


def _saturation_clip(g, x, s, zu8, out, name=""):
    """Clip(x) -> out to [(0 - zu8)·s, (255 - zu8)·s]: the values a uint8 quantization
    with scale s and zero point zu8 (an int8 one with zero point zu8 - 128) can give."""
    lo, hi = (np.float32((q - zu8) * np.float64(s)) for q in (0, 255))
    return g.helper.make_node("Clip", [x, g.add_const("lo", lo), g.add_const("hi", hi)],
                              [out], name=name)


def _u8_zero_point(node, z):
    """The uint8 zero point of an activation quantized to uint8 or int8 with zero point z:
    int8 q = clip(rint(x/s) + z, -128, 127) is the uint8 clip(rint(x/s) + z + 128, 0, 255)
    minus 128, and q - z is the same, so int8 activations are uint8 ones with z + 128."""
    if z.dtype == np.uint8:
        return int(z)
    if z.dtype == np.int8:
        return int(z) + 128
    raise ValueError(f"{_where(node)}: activations quantized to {z.dtype}; fastnn takes "
                     "uint8 or int8")


def _qdq_product(g, node):
    """The QDense / QConv node of a MatMul / Conv in QDQ form, or None if it is not one."""
    conv = node.op_type == "Conv"
    xin = _qdq_input(g, node.input[0])
    wd = _dq_const(g, node.input[1])
    if xin is None or wd is None:
        return None
    x, xs, xz = xin
    if g.const(wd.input[0]).dtype not in (np.int8, np.uint8):
        return None
    if conv and (g.const(wd.input[0]).ndim != 4 or int(g.attrs(node).get("group", 1)) != 1):
        return None
    if not conv and g.const(wd.input[0]).ndim != 2:
        return None
    axis = int(g.attrs(wd).get("axis", 1))
    q = _weight_int8(g, wd, wd.input[0], wd.input[2] if len(wd.input) > 2 else "", axis)
    n = q.shape[0] if conv else q.shape[-1]
    ws = _channel_scale(wd, g.const(wd.input[1]), n)
    bias, out = None, node.output[0]
    if conv and len(node.input) > 2 and node.input[2]:
        bias = _float_const(g, node.input[2])
        if bias is None:
            return None
    else:  # the bias Add, maybe after a QuantizeLinear -> DequantizeLinear of the product
        y = out
        ql = g.sole(y)
        if ql is not None and ql.op_type == "QuantizeLinear":
            dl = g.sole(ql.output[0])
            if dl is not None and dl.op_type == "DequantizeLinear":
                y = dl.output[0]
        add = g.sole(y)
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == y else add.input[0]
            b = _float_const(g, other)
            if b is not None and b.size == n and (b.ndim == 1 or b.shape[-1] == n):
                bias, out = b.reshape(-1), add.output[0]
    mode = "static"
    return _node(g, node, "QConv" if conv else "QDense", x, q, ws, bias, mode, xs, xz, out), out


def _float_const(g, name):
    """A float constant, or DequantizeLinear of a constant computed in float32."""
    c = g.const(name)
    if c is not None:
        return c.astype(np.float32) if c.dtype == np.float32 else None
    d = _dq_const(g, name)
    return None if d is None else _dequantize(g, d)


def _dequantize(g, d):
    s = g.const(d.input[1])
    z = g.const(d.input[2]) if len(d.input) > 2 and d.input[2] else None
    if s is None or (len(d.input) > 2 and d.input[2] and z is None):
        raise ValueError(f"{_where(d)}: scale and zero point must be constants")
    return _dequantize_values(g.const(d.input[0]), s, z, int(g.attrs(d).get("axis", 1)))


def _dequantize_values(q, s, z, axis):
    """(q - z) · s in float32, with s and z scalars or one per index of `axis`."""
    q = q.astype(np.float32)
    s = np.asarray(s, np.float32)
    if s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s = s.reshape(shape)
        z = None if z is None else z.reshape(shape)
    z = np.float32(0) if z is None else z.astype(np.float32)
    return ((q - z) * s).astype(np.float32)


def _node(g, src, op, x, q, ws, bias, mode, xs, xz, out):
    hint = (src.name or src.output[0]).replace("/", "_")
    ins = [x, g.add_const(hint + "_int8", q), g.add_const(hint + "_scale", ws),
           g.add_const(hint + "_bias", bias) if bias is not None else ""]
    if mode == "static":
        ins += [g.add_const(hint + "_x_scale", np.float32(xs)),
                g.add_const(hint + "_x_zero_point", np.uint8(xz))]
    attrs = {"mode": mode}
    if op == "QConv":
        a = g.attrs(src)
        attrs.update({k: a[k] for k in _CONV_ATTRS if k in a and k != "group"})
    return g.helper.make_node(op, ins, [out], name=src.name, domain=DOMAIN, **attrs)


# --- ONNX Runtime's QOperator format -----------------------------------------------------
# Every tensor between QuantizeLinear and DequantizeLinear is uint8 (or int8) with a
# per-tensor scale and zero point. The rewrite gives each of those tensor names the float
# tensor it stands for, in float32: a QLinearMatMul / QLinearConv / QGemm becomes a static
# int8 QDense / QConv that quantizes its float input with the node's input scale and zero
# point (what ONNX Runtime's QuantizeLinear or the previous node's requantization did:
# the same uint8 values), and the other QLinear operators become their float operators.
# Of each output's requantization, the rounding to its scale is left out (a few steps of
# difference), and its saturation to the representable range [(qmin - z)·s, (qmax - z)·s]
# is kept: by the next product's input quantization, which saturates the same way, or by
# a Clip where anything else reads the tensor (ONNX Runtime folds a Relu into that range,
# a zero point at the type's minimum, and drops the Relu node).

#: QOperator nodes the rewrite imports
QOPERATOR_IMPORTED = ("QLinearMatMul", "QLinearConv", "QGemm", "QLinearAdd", "QLinearMul",
                      "QLinearSigmoid", "QLinearSoftmax", "QLinearAveragePool",
                      "QLinearGlobalAveragePool")
_PRODUCTS = ("QLinearMatMul", "QLinearConv", "QGemm")
#: float operators ONNX Runtime runs on quantized tensors as they are: they move or select
#: values (quantization is monotonic), so on the float tensor they give the same values
_QUANTIZED_PASS = ("MaxPool", "GlobalMaxPool", "Transpose", "Flatten", "Reshape", "Squeeze",
                   "Unsqueeze", "Identity")
#: QLinear operator -> (float operator, positions k of its quantized inputs (x, scale and
#: zero point at k, k + 1, k + 2), position of the output scale)
_QLINEAR_FLOAT = {"QLinearAdd": ("Add", (0, 3), 6), "QLinearMul": ("Mul", (0, 3), 6),
                  "QLinearSigmoid": ("Sigmoid", (0,), 3),
                  "QLinearSoftmax": ("Softmax", (0,), 3),
                  "QLinearAveragePool": ("AveragePool", (0,), 3),
                  "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), 3)}


def _act_params(g, node, s_name, z_name):
    """(scale, zero point) of an activation: constant scalars (per tensor)."""
    s = np.float32(_scalar(g, s_name, "activation scale", node))
    z = _scalar(g, z_name, "activation zero point", node, default=np.uint8(0))
    _u8_zero_point(node, z)  # uint8 or int8
    return s, z


class _QOperator:
    """The rewrite of one QOperator graph (see above), node by node in graph order."""

    def __init__(self, g):
        self.g = g
        self.qp: dict[str, tuple | None] = {}  # quantized tensor -> (scale, zero point);
        # None: an output of a node that is not imported
        self.folded: list = []  # QLinearAdd nodes that are a QDense node's bias

    def input(self, node, k):
        """(name, scale, uint8 zero point) of the quantized input of a QLinear node with x,
        scale and zero point at positions k, k + 1, k + 2, checked against the scale and
        zero point it was quantized with."""
        ins = list(node.input) + [""] * 3
        x = ins[k]
        s, z = _act_params(self.g, node, ins[k + 1], ins[k + 2])
        if x not in self.qp:
            raise ValueError(f"{_where(node)}: its input {x!r} must be quantized by "
                             "QuantizeLinear or another QLinear node")
        s0, z0 = self.qp[x]
        if float(s) != float(s0) or int(z) != int(z0) or z.dtype != z0.dtype:
            raise ValueError(f"{_where(node)}: reads {x!r} with scale {float(s)} and zero "
                             f"point {int(z)}, but it was quantized with {float(s0)} and "
                             f"{int(z0)}")
        return x, s, _u8_zero_point(node, z)

    def output(self, node, k, name):
        """Record tensor `name`, quantized by `node` with the scale and zero point at input
        positions k, k + 1. Returns the name the float operator writes: `name` itself, or
        a new one when a Clip to the range (the saturation) must follow it."""
        ins = list(node.input) + [""] * 2
        s, z = _act_params(self.g, node, ins[k], ins[k + 1])
        self.qp[name] = (s, z)
        return name if self.read_by_products(name) else self.g.fresh("unsaturated")

    def read_by_products(self, name):
        """Whether every use of `name`, through the operators that pass quantized values
        on, is the input of a product (whose input quantization saturates it)."""
        for c in self.g.consumers.get(name, []):
            if c is None or c.input[0] != name:
                return False
            if c.op_type in _PRODUCTS:
                continue
            if c.op_type not in _QUANTIZED_PASS or not self.read_by_products(c.output[0]):
                return False
        return True

    def run(self, node):
        """The nodes that replace `node` (a list), or None when it is not quantized."""
        g, op = self.g, node.op_type
        if any(node is add for add in self.folded):
            return []
        if op == "QuantizeLinear" and node.input[0] not in self.qp:
            if g.const(node.input[0]) is not None:
                raise ValueError(f"{_where(node)}: quantizes a constant where fastnn expects "
                                 "an activation")
            return self.finish(node, "Identity", [node.input[0]], 1, {})
        if op == "DequantizeLinear" and node.input[0] in self.qp:
            x, _, _ = self.input(node, 0)
            return [g.helper.make_node("Identity", [x], [node.output[0]], name=node.name)]
        if op in _QUANTIZED_PASS and node.input[0] in self.qp:
            self.qp[node.output[0]] = self.qp[node.input[0]]
            return [node]
        if op in _PRODUCTS:
            return self.product(node)
        if op in _QLINEAR_FLOAT:
            return self.float_op(node)
        if op in QOPERATOR_OPS:
            raise ValueError(f"{_where(node)}: not supported (fastnn imports "
                             f"{', '.join(QOPERATOR_IMPORTED)} and DequantizeLinear of "
                             "their outputs)")
        quantized = [i for i in node.input if i in self.qp]
        if quantized:
            raise ValueError(f"{_where(node)}: takes the quantized tensor {quantized[0]!r}; "
                             f"fastnn imports quantized tensors into "
                             f"{', '.join(QOPERATOR_IMPORTED)}, DequantizeLinear and "
                             f"{', '.join(_QUANTIZED_PASS)} only")
        return None

    def finish(self, node, op, ins, k, attrs):
        """[the float operator `op` of `node`, and the Clip of its saturation if needed]."""
        out = node.output[0]
        y = self.output(node, k, out)
        nodes = [self.g.helper.make_node(op, ins, [y], name=node.name, **attrs)]
        return nodes + self.clip(y, out)

    def clip(self, y, out):
        """[Clip(y) -> out] to the range `out` is quantized to, when output() gave a new name
        y for the unsaturated tensor."""
        if y == out:
            return []
        s, z = self.qp[out]
        return [_saturation_clip(self.g, y, s, _u8_zero_point(None, z), out)]

    def product(self, node):
        """[the QDense / QConv node of a QLinearMatMul, QLinearConv or QGemm, its Clip]."""
        g, op = self.g, node.op_type
        ins = list(node.input) + [""] * 9
        a = g.attrs(node)
        x, xs, xz = self.input(node, 0)
        conv = op == "QLinearConv"
        w = g.const(ins[3])
        if conv:
            if w is None or w.ndim != 4 or int(a.get("group", 1)) != 1:
                raise ValueError(f"{_where(node)}: fastnn imports 2-D convolutions with a "
                                 "constant weight and group 1")
            q = _weight_int8(g, node, ins[3], ins[5], 0)
        elif op == "QGemm":
            if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0:
                raise ValueError(f"{_where(node)}: QGemm with transA or alpha != 1 is not "
                                 "supported")
            if w is None or w.ndim != 2:
                raise ValueError(f"{_where(node)}: its weight must be a constant matrix")
            tb = bool(a.get("transB", 0))
            q = _weight_int8(g, node, ins[3], ins[5], 0 if tb else 1)
            q = np.ascontiguousarray(q.T) if tb else q
        else:
            if w is None or w.ndim != 2:
                raise ValueError(f"{_where(node)}: its second input must be a constant "
                                 "(in, out) weight")
            q = _weight_int8(g, node, ins[3], ins[5], 1)
        n = q.shape[0] if conv else q.shape[1]
        ws = _channel_scale(node, g.const(ins[4]), n)
        # the int32 bias of QLinearConv / QGemm is quantized with scale x_scale · w_scale
        bias_name = ins[8] if conv else (ins[6] if op == "QGemm" else "")
        bias = None
        if bias_name:
            b = g.const(bias_name)
            if b is None or b.dtype != np.int32 or b.size != n:
                raise ValueError(f"{_where(node)}: its bias must be a constant int32 vector "
                                 f"of {n} values")
            bias = (b.reshape(-1) * (np.float64(xs) * ws)).astype(np.float32)
        out = node.output[0]
        k = 7 if op == "QGemm" else 6  # the output's scale and zero point
        if op == "QGemm" and not ins[k]:  # no output scale: QGemm gives float32
            y = out
        else:
            self.qp[out] = _act_params(g, node, ins[k], ins[k + 1])
            add, b = (None, None) if bias is not None else self.bias_add(out, n)
            if add is not None:  # a QLinearMatMul's bias: QLinearAdd of a constant vector
                self.folded.append(add)
                out, bias = add.output[0], b
                y = self.output(add, 6, out)
            else:
                y = self.output(node, k, out)
        qnode = _node(g, node, "QConv" if conv else "QDense", x, q, ws, bias, "static", xs,
                      xz, y)
        return [qnode] + self.clip(y, out)

    def bias_add(self, out, n):
        """(QLinearAdd node, float bias (n,)) when `out`'s only use adds a constant vector
        to it (read with the scale and zero point it was quantized with)."""
        g = self.g
        add = g.sole(out)
        if add is None or add.op_type != "QLinearAdd":
            return None, None
        k = 3 if add.input[0] == out else 0
        b = self.constant(add, k)
        if b is None or b.size != n or not (b.ndim == 1 or b.shape[-1] == n):
            return None, None
        self.input(add, 3 - k)
        return add, b.reshape(-1)

    def constant(self, node, k):
        """The float values of a quantized constant input (x, scale and zero point at k,
        k + 1, k + 2) of a QLinear node, or None when x is not a constant."""
        g = self.g
        ins = list(node.input) + [""] * 3
        c = g.const(ins[k])
        if c is None:
            return None
        s, z = g.const(ins[k + 1]), g.const(ins[k + 2]) if ins[k + 2] else None
        if s is None or s.size != 1 or (ins[k + 2] and z is None):
            raise ValueError(f"{_where(node)}: the scale and zero point of its constant input "
                             f"{ins[k]!r} must be constant scalars")
        return _dequantize_values(c, s.reshape(()), z, 0)

    def float_op(self, node):
        """[the float operator of a QLinear operator that is not a product, its Clip]."""
        g = self.g
        fop, positions, k = _QLINEAR_FLOAT[node.op_type]
        a = g.attrs(node)
        if a.pop("channels_last", 0):
            raise ValueError(f"{_where(node)}: channels_last=1 is not supported")
        if fop == "Softmax" and int(a.pop("opset", 13)) < 13 and int(a.get("axis", 1)) != -1:
            raise ValueError(f"{_where(node)}: softmax over the flattened axes from "
                             f"{a.get('axis', 1)} (before opset 13) is not supported")
        ins = []
        for i in positions:
            c = self.constant(node, i)
            ins.append(self.input(node, i)[0] if c is None else g.add_const("operand", c))
        return self.finish(node, fop, ins, k, a)


def _qoperator(g):
    """{id(node): the nodes that replace it} for a QOperator graph; raises ValueError
    listing every quantized node fastnn cannot import."""
    conv = _QOperator(g)
    replace, errors = {}, []
    for node in g.nodes:
        if any(i in conv.qp and conv.qp[i] is None for i in node.input):
            conv.qp.update((o, None) for o in node.output)  # after a failed node
            continue
        try:
            new = conv.run(node)
        except ValueError as e:
            errors.append(str(e).replace("fastnn.onnx.load: ", "", 1))
            conv.qp.update((o, None) for o in node.output)  # one error per chain
            continue
        if new is not None:
            replace[id(node)] = new
        for o in node.output:  # fastnn's outputs are float32, never uint8 / int8
            if conv.qp.get(o) is not None and None in g.consumers.get(o, []):
                errors.append(f"{node.op_type} node {_name(node)}: its output {o!r} is a "
                              "quantized graph output (fastnn imports float outputs, after "
                              "DequantizeLinear)")
    for add in conv.folded:  # a product's bias: part of its QDense node
        replace[id(add)] = []
    if errors:
        raise ValueError("fastnn.onnx.load: quantized nodes (ONNX Runtime's QOperator format) "
                         "fastnn cannot import: " + "; ".join(errors[:8])
                         + (f" and {len(errors) - 8} more" if len(errors) > 8 else "")
                         + ". Quantize with quant_format=QuantFormat.QDQ or quantize_dynamic, "
                         "or import the float model and use fn.quantization.quantize")
    return replace


def rewrite(proto, helper, nh):
    """A copy of `proto` whose quantized products are QDense / QConv nodes (see the module
    docstring), or `proto` itself when it has no quantized operators. Raises ValueError
    listing the quantized nodes fastnn cannot import."""
    ops = {n.op_type for n in proto.graph.node}
    if not ops & set(INTEGER_OPS + QOPERATOR_OPS):
        return proto
    g = _Graph(proto, helper, nh)
    replace: dict[int, list] = {}  # id(node) -> the nodes that take its place
    errors: dict[int, str] = {}  # id(integer product node) -> why it is not imported
    if ops & set(QOPERATOR_OPS):
        replace = _qoperator(g)
    for node in g.nodes:
        if id(node) in replace:
            continue
        if node.op_type in ("MatMulInteger", "ConvInteger"):
            try:
                replace[id(node)] = [_integer_product(g, node)[0]]
            except ValueError as e:
                errors[id(node)] = str(e).replace("fastnn.onnx.load: ", "", 1)
        elif node.op_type in ("MatMul", "Conv"):
            try:
                r = _qdq_product(g, node)
            except ValueError:  # not an exact int8 product: imported in float32
                r = None
            if r is not None:
                replace[id(node)] = [r[0]]
    # each new node takes the place of its product; the last node of its chain (the Mul
    # or bias Add that made its output) goes, and the rest of the chain is then unused
    made = {new.output[0] for news in replace.values() for new in news}
    nodes = []
    for node in g.nodes:
        new = replace.get(id(node))
        if new is not None:
            nodes.extend(new)
        elif node.output and node.output[0] in made:
            continue
        elif node.op_type == "DequantizeLinear" and g.const(node.input[0]) is not None:
            g.consts[node.output[0]] = g.new_inits[node.output[0]] = _dequantize(g, node)
        elif node.op_type == "DequantizeLinear" and _qdq_input(g, node.output[0]) is not None:
            # a fake-quantized activation: kept float, without the rounding but with the
            # saturation (ONNX Runtime drops a Relu whose range the zero point already
            # clips; Conv -> Relu -> GlobalAveragePool lost its Relu without this Clip)
            x, xs, xz = _qdq_input(g, node.output[0])
            nodes.append(_saturation_clip(g, x, xs, xz, node.output[0], node.name))
        else:
            nodes.append(node)
    nodes = _live(nodes, proto.graph.output)
    left = [n for n in nodes if n.op_type in INTEGER_OPS]
    if left:
        why = [errors[id(n)] for n in left if id(n) in errors]
        others = [n for n in left if id(n) not in errors]
        if others:
            why.append("not part of a quantized product fastnn imports: " + ", ".join(
                f"{n.op_type} {_name(n)}" for n in others[:8])
                + (f" and {len(others) - 8} more" if len(others) > 8 else ""))
        raise ValueError(f"fastnn.onnx.load: quantized nodes fastnn cannot import "
                         f"({', '.join(sorted({n.op_type for n in left}))}): "
                         + "; ".join(why) + ". fastnn imports DynamicQuantizeLinear or "
                         "QuantizeLinear -> MatMulInteger/ConvInteger -> Cast -> "
                         "Mul(x_scale · w_scale) [-> Add bias] with int8 weights, and QDQ "
                         "MatMul/Conv (see docs/interop.md)")
    out = type(proto)()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    out.graph.initializer.extend(nh.from_array(np.asarray(v), k)
                                 for k, v in g.new_inits.items() if k in used)
    return out


def _live(nodes, outputs):
    live = {o.name for o in outputs}
    keep = []
    for node in reversed(nodes):
        if any(o in live for o in node.output):
            keep.insert(0, node)
            live.update(i for i in node.input if i)
    return keep


def build(imp, node, a, ins):
    """The fastnn int8 layer of a QDense / QConv node, on the Importer `imp`; its int8
    state is recorded in imp.qlayers and set once the model is built (set_int8)."""
    from ._import import NCHW, Value, L

    mode = a["mode"]
    mode = mode.decode() if isinstance(mode, bytes) else mode
    q, ws = imp.const(ins[1]), imp.const(ins[2])
    bias = imp.const(ins[3]) if ins[3] else None
    arrs = {"int8": None, "scale": ws, "input": None}
    if mode == "static":
        arrs["input"] = np.array([imp.const(ins[4]), imp.const(ins[5])], np.float32)
    if node.op_type == "QDense":
        layer = L.Dense(q.shape[1], use_bias=bias is not None)
        arrs["int8"] = q
        y, perm = layer(imp.tensor(ins[0])), None
    else:
        layer = imp.conv_layer(a, q.shape, bias is not None)
        arrs["int8"] = np.ascontiguousarray(np.transpose(q, (2, 3, 1, 0)))
        y, perm = layer(imp.nhwc(ins[0])), NCHW
    if bias is not None:
        imp.weights.append((layer, {"bias": bias}))
    imp.qlayers.append((layer, mode, arrs))
    return Value(t=y, perm=perm)


def set_int8(model, qlayers):
    """Quantize the built model's imported layers with the file's int8 weights and scales."""
    for layer, mode, arrs in qlayers:
        layer.to_int8(mode, fill=False)
        st = layer._q["kernel"]
        st["int8"][...] = arrs["int8"].reshape(st["int8"].shape)
        st["scale"][...] = arrs["scale"]
        if mode == "static":
            st["input"][...] = arrs["input"]
    model._finalize()
