"""ONNX graph -> fastnn Functional model, for a subset of the standard operators.

Each ONNX node becomes a fastnn layer (Conv -> Conv2D, Gemm/MatMul -> Dense, ...) or a
fastnn.ops function on symbolic tensors. ONNX images are NCHW and fastnn's are NHWC: a
tensor is kept as a fastnn tensor plus the permutation that turns it into the ONNX
tensor, so a chain of convolutions and pools runs channels-last with no transposes, and
a transpose is made only where a node needs the ONNX layout itself (Flatten, Reshape,
...). A MatMul by a constant followed by the addition of a constant vector is one Dense.

The recurrent operators (LSTM, GRU, RNN) become fastnn's LSTM, GRU, SimpleRNN or
Bidirectional layers. ONNX's recurrent tensors are time-major (T, N, C) and carry a
direction axis (Y (T, D, N, U), Y_h (D, N, U)); fastnn's are batch-major (N, T, U) with
the directions concatenated. So the permutation above may move the batch axis (a
time-major view of a batch-major fastnn tensor costs nothing until a node needs that
layout itself), an output with a direction axis is kept as one fastnn tensor per
direction (`Dirs`) until a Squeeze, Gather or Reshape takes the directions apart or
joins them, and a sequence read backwards (go_backwards) is kept with a `flip` mark that
a reversing Slice cancels. The zero initial states torch writes as ConstantOfShape of a
shape computed from the input's (Shape, Gather, Unsqueeze, Concat) are followed as shape
vectors with None for the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import fastnn as fn

from . import _quant_import
from ._export import _onnx, _same_pads

L = fn.layers
NCHW = (0, 3, 1, 2)  # the ONNX (NCHW) tensor is transpose(fastnn NHWC tensor, NCHW)

SUPPORTED = ("Identity", "Dropout", "Cast", "Relu", "Sigmoid", "Tanh", "Softmax", "Gemm",
             "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat",
             "BatchNormalization", "LayerNormalization", "Gather", "ReduceMean", "ReduceMax",
             "Constant", "LSTM", "GRU", "RNN", "Squeeze", "Unsqueeze", "Slice", "Shape",
             "ConstantOfShape", "Erf", "Where", "Equal", "Not", "ReduceSum", "Max", "Sqrt",
             "Mod", "Expand", "Clip", "And", "Trilu")
# ops imported only as part of a fused subgraph (see _fused): attention blocks (and the key
# masks added to their scores), GELU and masked average pooling, or in shape arithmetic;
# Equal and Not make padding masks
_FUSED_ONLY = ("Erf", "Where", "ReduceSum", "Max", "Sqrt", "Mod", "Expand", "And", "Trilu")
# ops that take recurrent outputs with a direction axis, reversed sequences or
# batch-sized constants as they are; every other op gets plain tensors (see Importer.plain)
_LAYOUT_OPS = ("Identity", "Dropout", "Cast", "Transpose", "Squeeze", "Gather", "Slice",
               "Reshape", "Concat", "Shape", "LSTM", "GRU", "RNN")
_IOFC_TO_IFCO = [0, 2, 3, 1]  # ONNX LSTM gate blocks i, o, f, c -> fastnn/Keras i, f, c, o
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}


@dataclass
class Value:
    """An ONNX value: a constant, or a fastnn tensor t with onnx = transpose(t, perm); or a
    pending MatMul by a constant (x · kernel), made a Dense when its consumer is known.

    perm may move the batch axis (a time-major view of a batch-major tensor); flip, an
    axis of t, says that the ONNX tensor reads t backwards along it (a go_backwards
    output in time order). A shape vector holds None for the batch size (an object
    array in const); fill = (shape with None for the batch, value) is ConstantOfShape of
    such a shape; dirs holds a recurrent output with a direction axis."""
    const: np.ndarray | None = None
    t: object = None
    perm: tuple | None = None
    matmul: tuple | None = None  # (fastnn tensor in ONNX layout, kernel)
    flip: int | None = None
    fill: tuple | None = None
    dirs: "Dirs | None" = None
    origin: tuple | None = None  # (Dirs.joined, k): direction k of a Bidirectional's states
    padding: tuple | None = None  # (token ids tensor, "eq" or "ne"): ids == 0 or ids != 0


@dataclass
class Dirs:
    """An ONNX recurrent output with a direction axis (Y, Y_h, Y_c): one batch-major Value
    per direction (None where only their concatenation exists, a Bidirectional's
    sequence); the ONNX tensor stacks transpose(part, perm) at `axis`. joined: the
    directions concatenated on the last axis, as fastnn's layers give them."""
    parts: list | None
    axis: int
    perm: tuple | None = None
    joined: Value | None = None


class Importer:
    def __init__(self, proto):
        self.onnx, self.helper, self.nh = _onnx()
        self.proto = proto
        self.g = proto.graph
        self.env: dict[str, Value] = {}
        self.weights: list[tuple] = []  # (layer, {attribute: array}) set after the build
        self.qlayers: list[tuple] = []  # (layer, mode, int8 state): see _quant_import
        live = {o.name for o in self.g.output}  # nodes that reach an output, in order
        self.nodes = []
        for node in reversed(self.g.node):
            if any(o in live for o in node.output):
                self.nodes.insert(0, node)
                live.update(node.input)
        self.uses: dict[str, int] = {}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for i in node.input:
                self.uses[i] = self.uses.get(i, 0) + 1
                self.consumers.setdefault(i, []).append(node)
        for o in self.g.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1

        producer = {o: n for n in self.nodes for o in n.output}
        self.root = lambda name: name if producer.get(name) is None or producer[name].op_type \
            not in ("Cast", "Identity") else self.root(producer[name].input[0])
        # token ids compared with 0: their embedding makes a padding mask (mask_zero)
        self.padded_ids = {self.root(i) for n in self.nodes if n.op_type == "Equal"
                           for i in n.input}
        self.regions: dict[int, object] = {}  # node index -> _fused.Region
        self.key_masks: dict[str, object] = {}  # ONNX value -> fastnn key mask
        self.masked_ids: list = []  # the token ids tensors of Embeddings with mask_zero

    # --- values -------------------------------------------------------------------------
    def tensor(self, name):
        """The fastnn tensor holding ONNX value `name` in ONNX layout."""
        v = self.plain(name)
        if v.const is not None:
            raise ValueError(f"fastnn.onnx.load: {name!r} is a constant where a tensor is needed")
        if v.perm is not None and v.perm[0] != 0:
            raise ValueError(f"fastnn.onnx.load: {name!r} has its batch axis at position "
                             f"{v.perm.index(0)}; fastnn tensors keep the batch first (only "
                             "recurrent operators take time-major tensors)")
        return v.t if v.perm is None else fn.ops.transpose(v.t, v.perm)

    def plain(self, name, node=None):
        """env[name] as a plain Value: a pending MatMul made a Dense, a reversed sequence
        put in order; a direction axis or a batch-sized constant is an error here."""
        v = self.env[name]
        where = f"{node.op_type} node {_node_name(node)}" if node is not None else repr(name)
        if v.dirs is not None:
            raise ValueError(f"fastnn.onnx.load: {where}: {name!r} is a recurrent output with "
                             "its direction axis; fastnn imports it after a Squeeze or Gather "
                             "of one direction, or a Reshape that concatenates them")
        if v.padding is not None:
            raise ValueError(f"fastnn.onnx.load: {where}: {name!r} is a padding mask (token "
                             "ids compared with 0); fastnn imports it as the key mask of "
                             "attention or of a masked average over time only")
        if v.fill is not None:
            raise ValueError(f"fastnn.onnx.load: {where}: ConstantOfShape of the batch size "
                             "is supported as a recurrent node's zero initial state only")
        if v.matmul is not None:
            x, k = v.matmul
            v = self.env[name] = Value(t=self.dense(x, k, None))
        if v.flip is not None:
            v = self.env[name] = Value(t=_reverse(v.t, v.flip), perm=v.perm)
        return v

    def nhwc(self, name):
        """The fastnn NHWC tensor of a 4-D ONNX (NCHW) value."""
        v = self.plain(name)
        if v.perm == NCHW:
            return v.t
        return fn.ops.transpose(self.tensor(name), (0, 2, 3, 1))

    def const(self, name):
        v = self.env.get(name)
        return None if v is None else v.const

    def dense(self, x, kernel, bias):
        layer = L.Dense(kernel.shape[1], use_bias=bias is not None)
        y = layer(x)
        w = {"kernel": kernel}
        if bias is not None:
            w["bias"] = bias
        self.weights.append((layer, w))
        return y

    def layer(self, layer, x, **weights):
        y = layer(x)
        if weights:
            self.weights.append((layer, weights))
        return y

    def key_mask(self, name, true_masks):
        """The key mask fastnn's attention takes (nonzero = attend) from graph input `name`
        (made once for all the blocks that read it): logical_not of it when a true
        (nonzero) value masks the key, as in torch's key_padding_mask, else the input."""
        if name not in self.key_masks:
            t = self.tensor(name)
            self.key_masks[name] = fn.ops.logical_not(t) if true_masks else t
        return self.key_masks[name]

    def attention_mask(self, name):
        """The key mask (nonzero = attend) for ONNX value `name`, which an attention block
        keeps true keys of (Where(mask, scores, -big)); None where it is the padding mask of
        token ids embedded with mask_zero, which reaches the layer with its input."""
        v = self.env[name]
        if v.padding is None:
            return self.tensor(name)
        ids, kind = v.padding
        if kind == "ne" and any(ids is t for t in self.masked_ids):
            return None
        if name not in self.key_masks:
            self.key_masks[name] = fn.ops.logical_not(ids) if kind == "eq" else ids
        return self.key_masks[name]

    # --- nodes --------------------------------------------------------------------------
    def run(self, node):
        op = node.op_type
        a = {x.name: self.helper.get_attribute_value(x) for x in node.attribute}
        ins = list(node.input)
        out = node.output[0]
        env = self.env
        if op in ("Equal", "Not"):
            env[out] = self.padding(node, ins)
            return
        if node.domain == _quant_import.DOMAIN:  # an int8 product (see _quant_import)
            for i in ins[:1]:
                self.plain(i, node)
            env[out] = _quant_import.build(self, node, a, ins)
            return
        if op in _FUSED_ONLY and not all(self.const(i) is not None for i in ins if i):
            raise ValueError(f"fastnn.onnx.load: {op} node {_node_name(node)} is imported "
                             "only inside an attention block, a GELU or a masked average "
                             "over time, which this one is not part of")
        if op not in _LAYOUT_OPS:
            for i in ins:
                if i:
                    self.plain(i, node)
        if op == "Constant":
            env[out] = Value(const=self.nh.to_array(a["value"]))
        elif op in ("Identity", "Dropout", "Cast"):  # ids stay float32 in fastnn
            env[out] = env[ins[0]]
        elif op in _FUSED_ONLY:  # arithmetic on constants (shapes)
            env[out] = Value(const=self.fold(op, [self.const(i) for i in ins]))
        elif op in ("Relu", "Sigmoid", "Tanh"):
            v = env[ins[0]]
            t = self.tensor(ins[0]) if v.matmul is not None else v.t
            env[out] = Value(t=L.Activation(op.lower())(t), perm=None if v.matmul else v.perm)
        elif op == "Clip":
            env[out] = self.clip(node, a, ins)
        elif op == "Softmax":
            self.last_axis(node, a.get("axis", -1), ins[0])
            env[out] = Value(t=L.Activation("softmax")(self.tensor(ins[0])))
        elif op == "Gemm":
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise ValueError("fastnn.onnx.load: Gemm with transA, alpha or beta is not supported")
            b = self.const(ins[1])
            k = b.T if a.get("transB", 0) else b
            bias = self.const(ins[2]) if len(ins) > 2 and ins[2] else None
            env[out] = Value(t=self.dense(self.tensor(ins[0]), k.astype(np.float32),
                                          None if bias is None else bias.reshape(-1).astype(np.float32)))
        elif op == "MatMul":
            b = self.const(ins[1])
            if b is not None and b.ndim == 2:
                env[out] = Value(matmul=(self.tensor(ins[0]), b.astype(np.float32)))
            else:
                env[out] = Value(t=fn.ops.matmul(self.tensor(ins[0]), self.tensor(ins[1])))
        elif op in ("Add", "Sub", "Mul", "Div"):
            env[out] = self.binary(op, ins)
        elif op == "Conv":
            env[out] = self.conv(a, ins)
        elif op in ("MaxPool", "AveragePool"):
            env[out] = self.pool(op, a, ins)
        elif op in ("GlobalAveragePool", "GlobalMaxPool"):
            cls = L.GlobalAveragePooling2D if op == "GlobalAveragePool" else L.GlobalMaxPooling2D
            env[out] = Value(t=cls(keepdims=True)(self.nhwc(ins[0])), perm=NCHW)
        elif op == "Flatten":
            if a.get("axis", 1) != 1:
                raise ValueError("fastnn.onnx.load: Flatten is supported with axis=1 only")
            env[out] = Value(t=L.Flatten()(self.tensor(ins[0])))
        elif op == "Reshape":
            env[out] = self.reshape(ins)
        elif op == "Transpose":
            env[out] = self.transpose(a, ins)
        elif op == "Concat":
            env[out] = self.concat(node, a, ins)
        elif op == "BatchNormalization":
            env[out] = self.batch_norm(a, ins)
        elif op == "LayerNormalization":
            self.last_axis(node, a.get("axis", -1), ins[0])
            gamma, beta = self.const(ins[1]), (self.const(ins[2]) if len(ins) > 2 else None)
            layer = L.LayerNormalization(epsilon=float(a.get("epsilon", 1e-5)),
                                         center=beta is not None)
            w = {"gamma": gamma} if beta is None else {"gamma": gamma, "beta": beta}
            env[out] = Value(t=self.layer(layer, self.tensor(ins[0]), **w))
        elif op == "Gather":
            env[out] = self.gather(node, a, ins)
        elif op in ("ReduceMean", "ReduceMax"):
            env[out] = self.reduce(op, a, ins)
        elif op in ("LSTM", "GRU", "RNN"):
            self.recurrent(node, a, ins)
        elif op == "Squeeze":
            env[out] = self.squeeze(node, a, ins)
        elif op == "Unsqueeze":
            env[out] = self.unsqueeze(node, a, ins)
        elif op == "Slice":
            env[out] = self.slice(node, ins)
        elif op == "Shape":
            shape = np.array(self.tensor_shape(ins[0]), dtype=object)  # None: the batch size
            env[out] = Value(const=shape[a.get("start", 0):a.get("end", len(shape))])
        elif op == "ConstantOfShape":
            shape = tuple(self.const(ins[0]))
            value = self.nh.to_array(a["value"]).reshape(-1)[0] if "value" in a else np.float32(0)
            if any(d is None for d in shape):
                env[out] = Value(fill=(shape, value))
            else:
                env[out] = Value(const=np.full([int(d) for d in shape], value))

    def padding(self, node, ins):
        """Equal(ids, 0) and Not of it: a padding mask, kept as the ids it is made from."""
        where = f"fastnn.onnx.load: {node.op_type} node {_node_name(node)}"
        if node.op_type == "Not":
            v = self.env[ins[0]]
            if v.padding is None:
                raise ValueError(f"{where}: Not is supported on a comparison of token ids "
                                 "with 0 only")
            return Value(padding=(v.padding[0], "ne" if v.padding[1] == "eq" else "eq"))
        cs = [self.const(i) for i in ins]
        k = 0 if cs[0] is not None else 1
        if cs[k] is None or cs[1 - k] is not None or cs[k].size != 1 or np.any(cs[k]):
            raise ValueError(f"{where}: Equal is supported as a comparison of token ids "
                             "with 0 (a padding mask) only")
        return Value(padding=(self.tensor(ins[1 - k]), "eq"))

    @staticmethod
    def fold(op, cs):
        if op == "Sqrt":
            return np.sqrt(cs[0])
        if op == "Mod":
            return np.mod(cs[0], cs[1])
        if op == "Max":
            return np.maximum.reduce([np.asarray(c) for c in cs])
        raise ValueError(f"fastnn.onnx.load: {op} of constants is not supported")

    def clip(self, node, a, ins):
        """Clip to constant bounds: inputs min and max (opset 11), or attributes (opset 6);
        a bound left out is float32's lowest or highest value, as in ONNX."""
        f32 = np.finfo(np.float32)
        bounds = []
        for k, attr, default in ((1, "min", f32.min), (2, "max", f32.max)):
            if len(ins) > k and ins[k]:
                c = self.const(ins[k])
                if c is None or c.size != 1:
                    raise ValueError(f"fastnn.onnx.load: Clip node {_node_name(node)}: its "
                                     f"{attr} must be a constant scalar")
                bounds.append(float(c.reshape(())))
            else:
                bounds.append(float(a.get(attr, default)))
        v = self.env[ins[0]]
        t = self.tensor(ins[0]) if v.matmul is not None else v.t
        return Value(t=fn.ops.clip(t, *bounds), perm=None if v.matmul else v.perm)

    def last_axis(self, node, axis, name):
        rank = len(self.tensor_shape(name))
        if axis not in (-1, rank - 1):
            raise ValueError(f"fastnn.onnx.load: {node.op_type} is supported on the last axis "
                             f"only, got axis={axis}")

    def tensor_shape(self, name):
        v = self.env[name]
        if v.const is not None:
            return tuple(v.const.shape)
        if v.fill is not None:
            return tuple(v.fill[0])
        if v.dirs is not None:
            d = v.dirs
            part = d.parts[0] if d.parts else d.joined
            s = list(part.t.shape)
            if not d.parts:
                s[-1] //= 2
            s = [s[p] for p in d.perm] if d.perm is not None else s
            return tuple(s[:d.axis] + [len(d.parts) if d.parts else 2] + s[d.axis:])
        if v.matmul is not None:
            return tuple(v.matmul[0].shape[:-1]) + (v.matmul[1].shape[1],)
        s = tuple(v.t.shape)
        return s if v.perm is None else tuple(s[p] for p in v.perm)

    def binary(self, op, ins):
        ca, cb = self.const(ins[0]), self.const(ins[1])
        va = self.env[ins[0]]
        if op == "Add" and ca is not None and cb is None:  # bias + MatMul: as MatMul + bias
            ins, ca, cb, va = [ins[1], ins[0]], None, ca, self.env[ins[1]]
        if op == "Add" and cb is not None and va.matmul is not None and cb.ndim == 1 \
                and cb.shape[0] == va.matmul[1].shape[1] and self.uses.get(ins[0], 0) == 1:
            x, k = va.matmul  # MatMul + bias: one Dense
            return Value(t=self.dense(x, k, cb.astype(np.float32)))
        f = {"Add": fn.ops.add, "Sub": fn.ops.subtract, "Mul": fn.ops.multiply,
             "Div": fn.ops.divide}[op]
        if ca is None and cb is None:
            vb = self.env[ins[1]]
            if va.perm == vb.perm and va.matmul is None and vb.matmul is None:
                return Value(t=f(va.t, vb.t), perm=va.perm)
            return Value(t=f(self.tensor(ins[0]), self.tensor(ins[1])))
        x = self.tensor(ins[1] if ca is not None else ins[0])
        c = np.asarray(ca if ca is not None else cb, np.float32)
        return Value(t=f(c, x) if ca is not None else f(x, c))

    def conv(self, a, ins):
        w = self.const(ins[1])
        if w is None or w.ndim != 4:
            raise ValueError("fastnn.onnx.load: Conv is supported in 2-D with a constant kernel")
        x = self.nhwc(ins[0])
        bias = self.const(ins[2]) if len(ins) > 2 and ins[2] else None
        layer = self.conv_layer(a, w.shape, bias is not None)
        wts = {"kernel": np.transpose(w, (2, 3, 1, 0)).astype(np.float32)}
        if bias is not None:
            wts["bias"] = bias.astype(np.float32)
        return Value(t=self.layer(layer, x, **wts), perm=NCHW)

    @staticmethod
    def conv_layer(a, shape, use_bias):
        """The Conv2D of an ONNX Conv's attributes and (F, C/g, KH, KW) kernel shape."""
        kh, kw = shape[2:]
        pads = a.get("pads", [0, 0, 0, 0])
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER",):
            padding = "same"
        elif auto in ("NOTSET", "VALID"):
            padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        else:
            raise ValueError(f"fastnn.onnx.load: Conv auto_pad={auto} is not supported")
        return L.Conv2D(shape[0], (kh, kw), strides=tuple(a.get("strides", [1, 1])),
                        padding=padding, dilation_rate=tuple(a.get("dilations", [1, 1])),
                        groups=int(a.get("group", 1)), use_bias=use_bias)

    def pool(self, op, a, ins):
        x = self.nhwc(ins[0])
        k = tuple(a["kernel_shape"])
        s = tuple(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise ValueError(f"fastnn.onnx.load: {op} with ceil_mode or dilations is not supported")
        h, w = x.shape[1:3]
        same = [*_same_pads(h, k[0], s[0]), *_same_pads(w, k[1], s[1])]
        if not any(pads):
            padding = "valid"
        elif pads == [same[0], same[2], same[1], same[3]] and (
                op == "MaxPool" or a.get("count_include_pad", 0) == 0):
            padding = "same"
        else:
            raise ValueError(f"fastnn.onnx.load: {op} pads {pads} are neither 'valid' nor "
                             "Keras's 'same'")
        cls = L.MaxPooling2D if op == "MaxPool" else L.AveragePooling2D
        return Value(t=cls(k, s, padding=padding)(x), perm=NCHW)

    def reshape(self, ins):
        if self.env[ins[0]].dirs is not None:
            return self.join_directions(ins)
        shape = [-1 if d is None and i == 0 else d for i, d in enumerate(self.const(ins[1]))]
        if any(d is None for d in shape):
            raise ValueError("fastnn.onnx.load: Reshape may take the batch size at the first "
                             "position only")
        shape = [int(d) for d in shape]
        if self.env[ins[0]].const is not None:
            return Value(const=self.const(ins[0]).reshape(shape))
        src = self.tensor_shape(ins[0])
        shape = [src[i] if d == 0 else d for i, d in enumerate(shape)]
        if shape[0] not in (-1, None) and src[0] is not None and shape[0] != src[0]:
            raise ValueError("fastnn.onnx.load: Reshape must keep the batch axis")
        rest = shape[1:]
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1]))
            rest[rest.index(-1)] = int(np.prod(src[1:])) // known
        return Value(t=L.Reshape(tuple(rest))(self.tensor(ins[0])))

    def transpose(self, a, ins):
        """Only the permutation changes; it may move the batch axis (time-major views)."""
        c = self.const(ins[0])
        perm = tuple(a["perm"])
        if c is not None:
            return Value(const=np.transpose(c, perm))
        v = self.env[ins[0]]
        if v.dirs is not None:  # the direction axis moves; the parts' permutation follows
            d = v.dirs
            rest = [o for o in range(len(perm)) if o != d.axis]  # ONNX axes of a part
            base = d.perm or tuple(range(len(rest)))
            new = tuple(base[rest.index(p)] for p in perm if p != d.axis)
            return Value(dirs=Dirs(d.parts, perm.index(d.axis), _perm_or_none(new), d.joined))
        if v.matmul is not None or v.fill is not None:
            v = self.plain(ins[0])
        base = v.perm or tuple(range(len(perm)))
        return Value(t=v.t, perm=_perm_or_none(tuple(base[p] for p in perm)), flip=v.flip)

    def batch_norm(self, a, ins):
        scale, bias, mean, var = (self.const(i) for i in ins[1:5])
        rank = len(self.tensor_shape(ins[0]))
        x = self.nhwc(ins[0]) if rank == 4 else self.tensor(ins[0])
        if rank not in (2, 4):
            raise ValueError("fastnn.onnx.load: BatchNormalization on 2-D or 4-D inputs only")
        layer = L.BatchNormalization(epsilon=float(a.get("epsilon", 1e-5)))
        y = self.layer(layer, x, gamma=scale, beta=bias)
        self.weights.append((layer, {"moving_mean": mean, "moving_variance": var}))
        return Value(t=y, perm=NCHW if rank == 4 else None)

    def concat(self, node, a, ins):
        axis = int(a["axis"])
        vs = [self.env[i] for i in ins]
        if all(v.const is not None for v in vs):  # shape vectors
            return Value(const=np.concatenate([v.const for v in vs], axis=axis))
        if all(v.dirs is not None for v in vs):  # final states of stacked recurrent nodes
            d0 = vs[0].dirs
            rank = len(self.tensor_shape(ins[0]))
            if axis % rank == d0.axis and all(v.dirs.parts and v.dirs.axis == d0.axis
                                               and v.dirs.perm == d0.perm for v in vs):
                return Value(dirs=Dirs([p for v in vs for p in v.dirs.parts], d0.axis, d0.perm))
        joined = vs[0].origin[0] if vs[0].origin else None
        if joined is not None and axis in (-1, len(self.tensor_shape(ins[0])) - 1) and \
                all(v.origin is not None and v.origin[0] is joined and v.origin[1] == k
                    for k, v in enumerate(vs)) and len(vs) == 2 and \
                all(v.perm is None for v in vs):  # the final states of both directions, in order
            return joined
        xs = [self.tensor(i) for i in ins]
        return Value(t=L.Concatenate(axis=axis)(xs))

    def gather(self, node, a, ins):
        table, idx = self.const(ins[0]), self.const(ins[1])
        axis = int(a.get("axis", 0))
        if table is not None and idx is not None:  # shape arithmetic
            return Value(const=np.asarray(np.take(table, idx.astype(np.int64), axis=axis),
                                          dtype=table.dtype))
        if table is not None:
            if table.ndim != 2 or axis != 0:
                raise ValueError("fastnn.onnx.load: Gather is supported as an embedding lookup "
                                 "(a constant 2-D table, axis 0) or as one index of a tensor")
            ids = self.tensor(ins[1])
            layer = L.Embedding(table.shape[0], table.shape[1],
                                mask_zero=self.root(ins[1]) in self.padded_ids)
            if layer.mask_zero:
                self.masked_ids.append(ids)
            return Value(t=self.layer(layer, ids, embeddings=table))
        if idx is None or idx.ndim != 0:
            raise ValueError(f"fastnn.onnx.load: Gather node {_node_name(node)}: a tensor is "
                             "indexed with one constant index only")
        v = self.env[ins[0]]
        axis %= len(self.tensor_shape(ins[0]))
        if v.dirs is not None and axis == v.dirs.axis:  # one direction
            return self.direction(node, ins[0], int(idx))
        return self.take(node, ins[0], axis, int(idx))

    def direction(self, node, name, i):
        d = self.env[name].dirs
        if d.parts is None:
            raise ValueError(f"fastnn.onnx.load: {node.op_type} node {_node_name(node)}: the "
                             f"directions of {name!r} (a Bidirectional's sequence) are only "
                             "imported concatenated")
        p = d.parts[i]
        return Value(t=p.t, perm=d.perm, flip=p.flip, origin=p.origin)

    def take(self, node, name, axis, i):
        """ONNX Gather of index i on a non-batch axis: the step moved to the last axis and
        picked by a product with a one-hot column (exact), e.g. a sequence's last step."""
        v = self.env[name]
        if v.flip is None or v.matmul is not None:
            v = self.plain(name, node)
        p = v.perm or tuple(range(len(v.t.shape)))
        ta = p[axis]
        if ta == 0:
            raise ValueError(f"fastnn.onnx.load: Gather node {_node_name(node)} indexes the "
                             "batch axis")
        size = v.t.shape[ta]
        i %= size
        t = v.t
        if v.flip == ta:  # the ONNX step i is step size-1-i of t
            i = size - 1 - i
        elif v.flip is not None:
            t = _reverse(t, v.flip)
        rank = len(t.shape)
        order = [k for k in range(rank) if k != ta] + [ta]
        if order != list(range(rank)):
            t = fn.ops.transpose(t, order)
        onehot = np.zeros((size, 1), np.float32)
        onehot[i] = 1.0
        y = fn.ops.reshape(fn.ops.matmul(t, onehot), (-1,) + tuple(t.shape[1:-1]))
        new = tuple(q - (q > ta) for k, q in enumerate(p) if k != axis)
        return Value(t=y, perm=_perm_or_none(new))

    def squeeze(self, node, a, ins):
        axes = a.get("axes")
        if axes is None and len(ins) > 1 and ins[1]:
            axes = [int(d) for d in self.const(ins[1])]
        c = self.const(ins[0])
        if c is not None:
            return Value(const=np.squeeze(c, axis=None if axes is None else tuple(axes)))
        shape = self.tensor_shape(ins[0])
        axes = [k for k, d in enumerate(shape) if d == 1] if axes is None else \
            sorted(k % len(shape) for k in axes)
        v = self.env[ins[0]]
        if v.dirs is not None:
            if axes == [v.dirs.axis] and v.dirs.parts and len(v.dirs.parts) == 1:
                return self.direction(node, ins[0], 0)
            raise ValueError(f"fastnn.onnx.load: Squeeze node {_node_name(node)}: only the "
                             "direction axis of a one-direction recurrent output is squeezed")
        v = self.plain(ins[0], node)
        p = v.perm or tuple(range(len(shape)))
        if any(shape[k] != 1 or p[k] == 0 for k in axes):
            raise ValueError(f"fastnn.onnx.load: Squeeze node {_node_name(node)}: axes {axes} "
                             f"of shape {shape} are not all of size 1 past the batch")
        gone = sorted(p[k] for k in axes)  # axes of t, all of size 1
        rest = [s for k, s in enumerate(v.t.shape) if k not in gone]
        y = fn.ops.reshape(v.t, (-1,) + tuple(rest[1:]))
        new = [q - sum(g < q for g in gone) for k, q in enumerate(p) if k not in axes]
        return Value(t=y, perm=_perm_or_none(tuple(new)))

    def unsqueeze(self, node, a, ins):
        axes = a.get("axes")
        if axes is None:
            axes = [int(d) for d in self.const(ins[1])]
        c = self.const(ins[0])
        if c is not None:
            return Value(const=np.expand_dims(c, tuple(axes)))
        rank = len(self.tensor_shape(ins[0])) + len(axes)
        axes = sorted(k % rank for k in axes)
        v = self.plain(ins[0], node)
        if v.perm is not None or 0 in axes:
            raise ValueError(f"fastnn.onnx.load: Unsqueeze node {_node_name(node)}: axes are "
                             "inserted after the batch axis of a batch-major tensor only")
        shape = list(v.t.shape[1:])
        for k in axes:
            shape.insert(k - 1, 1)
        return Value(t=fn.ops.reshape(v.t, (-1,) + tuple(shape)))

    def slice(self, node, ins):
        starts, ends = (self.const(i).astype(np.int64) for i in ins[1:3])
        shape = self.tensor_shape(ins[0])
        axes = self.const(ins[3]) if len(ins) > 3 and ins[3] else np.arange(len(starts))
        steps = self.const(ins[4]) if len(ins) > 4 and ins[4] else np.ones(len(starts), np.int64)
        cuts = {int(k) % len(shape): (int(s), int(e), int(st))
                for k, s, e, st in zip(axes, starts, ends, steps)}
        v = self.env[ins[0]]
        if v.const is not None:
            sl = tuple(slice(*cuts[k]) if k in cuts else slice(None) for k in range(len(shape)))
            return Value(const=v.const[sl])
        size = {k: len(range(*slice(*c).indices(shape[k]))) for k, c in cuts.items()
                if shape[k] is not None}
        whole = {k for k, c in cuts.items() if shape[k] is not None and c[2] == 1
                 and size[k] == shape[k]}
        where = f"fastnn.onnx.load: Slice node {_node_name(node)}"
        if set(cuts) == whole:
            return v
        if v.fill is not None:  # a zero initial state cut per layer or direction
            if any(shape[k] is None for k in cuts):
                raise ValueError(f"{where}: the batch axis of a ConstantOfShape is not cut")
            return Value(fill=(tuple(size.get(k, d) for k, d in enumerate(shape)), v.fill[1]))
        if v.dirs is not None:
            d = v.dirs
            if set(cuts) - whole == {d.axis} and d.parts and cuts[d.axis][2] == 1:
                return Value(dirs=Dirs(d.parts[slice(*cuts[d.axis][:2])], d.axis, d.perm))
            raise ValueError(f"{where}: a recurrent output with a direction axis is cut "
                             "along that axis only")
        rest = set(cuts) - whole
        if len(rest) == 1:
            k = rest.pop()
            s, e, st = cuts[k]
            if st == -1 and size[k] == shape[k]:  # the whole axis read backwards
                if v.matmul is not None:
                    v = self.plain(ins[0], node)
                ta = (v.perm or tuple(range(len(shape))))[k]
                if v.flip in (None, ta) and ta != 0:
                    return Value(t=v.t, perm=v.perm, flip=None if v.flip == ta else ta)
        raise ValueError(f"{where}: only whole axes, read forwards or backwards, are "
                         f"supported (got {cuts} on shape {shape})")

    def join_directions(self, ins):
        """Reshape (..., D, U) -> (..., D·U) of a recurrent output: its directions
        concatenated, as fastnn's layers give them."""
        d = self.env[ins[0]].dirs
        src = list(self.tensor_shape(ins[0]))
        rank = len(src)
        want = src[:d.axis] + ([src[d.axis] * src[-1]] if d.axis == rank - 2 else [])
        shape = list(self.const(ins[1]))
        ok = d.axis == rank - 2 and (d.perm is None or d.perm[-1] == rank - 2) and \
            len(shape) == len(want) and sum(1 for x in shape if x is not None and x == -1) <= 1
        ok = ok and all((x is None and w is None) or (x is not None and x in (w, -1)) or
                        (x == 0 and src[k] == w) for k, (x, w) in enumerate(zip(shape, want)))
        if not ok:
            raise ValueError("fastnn.onnx.load: a Reshape of a recurrent output with its "
                             f"direction axis must join the directions (shape {src} -> "
                             f"{shape}); other reshapes are not supported")
        if d.joined is None:  # one layer per direction: a Concatenate of their sequences
            ts = [p.t if p.flip is None else _reverse(p.t, p.flip) for p in d.parts]
            d.joined = d.parts[0] if len(ts) == 1 else Value(t=L.Concatenate(axis=-1)(ts))
        return Value(t=d.joined.t, perm=d.perm, flip=d.joined.flip)

    # --- recurrent operators --------------------------------------------------------------
    def recurrent(self, node, a, ins):
        """ONNX LSTM / GRU / RNN -> fastnn LSTM / GRU / SimpleRNN (direction forward or
        reverse: go_backwards) or Bidirectional (merge_mode concat), with return_sequences
        and return_state as the graph uses Y, Y_h and Y_c. Outputs keep ONNX's direction
        axis as Dirs until the graph squeezes, gathers or joins it."""
        op = node.op_type
        where = f"fastnn.onnx.load: {op} node {_node_name(node)}"
        direction = _text(a.get("direction", "forward"))
        layout = int(a.get("layout", 0))
        nd = 2 if direction == "bidirectional" else 1
        acts = self.recurrent_checks(node, a, ins, where, nd)
        u = int(a["hidden_size"])
        w, r = self.const(ins[1]), self.const(ins[2])
        bias = self.const(ins[3]) if len(ins) > 3 and ins[3] else None
        if w is None or r is None or (len(ins) > 3 and ins[3] and bias is None):
            raise ValueError(f"{where}: W, R and B must be constants")
        x = self.batch_major(node, ins[0], layout)
        outs = list(node.output) + [""] * 3
        need_seq, need_h, need_c = (bool(o) and self.uses.get(o, 0) > 0 for o in outs[:3])
        if not (need_seq or need_h or need_c):
            return
        kw = dict(use_bias=bias is not None)
        if op == "GRU":
            kw["reset_after"] = bool(a.get("linear_before_reset", 0))
        if op == "RNN":
            kw["activation"] = acts[0].lower()
        cls = {"LSTM": L.LSTM, "GRU": L.GRU, "RNN": L.SimpleRNN}[op]
        weights = [_recurrent_weights(op, w[k], r[k], None if bias is None else bias[k], u,
                                      kw.get("reset_after", False)) for k in range(nd)]
        n_states = 2 if op == "LSTM" else 1
        if nd == 2 and (not need_seq or not self.directions_apart(outs[0], layout)):
            # one Bidirectional: its sequence is the two directions concatenated
            state = need_h or need_c
            layer = L.Bidirectional(cls(u, return_sequences=need_seq, return_state=state, **kw))
            ys = layer(x)
            ys = ys if isinstance(ys, list) else [ys]
            for sub, wk in zip((layer.forward_layer, layer.backward_layer), weights):
                self.weights.append((sub, wk))
            seq = Dirs(None, 0, joined=Value(t=ys[0])) if need_seq else None
            states = [[Value(t=ys[1 + k * n_states + j]) for k in range(2)]
                      for j in range(n_states)] if state else None
            if state and not need_seq:  # the layer's output joins the final h of both
                joined = Value(t=ys[0])
                states[0] = [Value(t=p.t, origin=(joined, k)) for k, p in enumerate(states[0])]
        else:  # one layer per direction (a reverse one reads backwards: go_backwards)
            backwards = [direction == "reverse"] if nd == 1 else [False, True]
            state = need_c or need_h and need_seq
            seqs, states = [], [[] for _ in range(n_states)]
            for back, wk in zip(backwards, weights):
                layer = cls(u, return_sequences=need_seq, return_state=state, go_backwards=back, **kw)
                ys = self.layer(layer, x, **wk)
                ys = ys if isinstance(ys, list) else [ys]
                if need_seq:
                    seqs.append(Value(t=ys[0], flip=1 if back else None))
                for j in range(n_states):
                    if state:
                        states[j].append(Value(t=ys[1 + j]))
                    elif j == 0:  # no sequence: the layer's output is the final state
                        states[0].append(Value(t=ys[0]))
            seq = Dirs(seqs, 0) if need_seq else None
        # ONNX layouts: Y (T, D, N, U) or (N, T, D, U); Y_h, Y_c (D, N, U) or (N, D, U)
        if seq is not None:
            seq.axis, seq.perm = (1, (1, 0, 2)) if layout == 0 else (2, None)
            self.env[outs[0]] = Value(dirs=seq)
        for j, o in enumerate(outs[1:1 + n_states]):
            if o and states is not None and states[j]:
                self.env[o] = Value(dirs=Dirs(states[j], 0 if layout == 0 else 1))

    def recurrent_checks(self, node, a, ins, where, nd):
        """The attributes and inputs fastnn's layers can run; returns the activations."""
        op = node.op_type
        if "clip" in a:
            raise ValueError(f"{where}: clip is not supported (fastnn's cells do not clip)")
        if a.get("input_forget", 0):
            raise ValueError(f"{where}: input_forget=1 (coupled input and forget gates) is not "
                             "supported")
        if "activation_alpha" in a or "activation_beta" in a:
            raise ValueError(f"{where}: activation_alpha/activation_beta are not supported")
        if int(a.get("layout", 0)) not in (0, 1):
            raise ValueError(f"{where}: layout must be 0 or 1")
        acts = [_text(x) for x in a.get("activations", [])]
        default = _DEFAULT_ACTS.get(op, ["Tanh"])
        per = len(default)
        acts = acts or default * nd
        ok = (acts == default * nd) if op != "RNN" else (
            len(acts) == nd and acts[0] in ("Tanh", "Relu") and len(set(acts)) == 1)
        if not ok:
            raise ValueError(f"{where}: activations {acts} are not supported (fastnn runs "
                             f"{default if op != 'RNN' else 'Tanh or Relu'} per direction)")
        if len(ins) > 4 and ins[4]:
            raise ValueError(_recurrent_input_error(node, 4))
        for k in (5, 6):
            if len(ins) > k and ins[k]:
                v = self.env[ins[k]]
                zero = (v.fill is not None and v.fill[1] == 0) or (
                    v.const is not None and v.const.dtype != object and not np.any(v.const))
                if not zero:
                    raise ValueError(_recurrent_input_error(node, k))
        if len(ins) > 7 and ins[7]:
            p = self.const(ins[7])
            if p is None or np.any(p):
                raise ValueError(f"{where}: peephole weights P are not supported")
        return acts[:per] if op != "RNN" else acts[:1]

    def batch_major(self, node, name, layout):
        """The fastnn (N, T, C) tensor of a recurrent node's input X."""
        if layout == 1:
            return self.tensor(name)
        v = self.plain(name, node)
        if v.perm != (1, 0, 2):
            raise ValueError(f"fastnn.onnx.load: {node.op_type} node {_node_name(node)}: its "
                             f"time-major input {name!r} must be a Transpose of a batch-major "
                             "sequence or an earlier recurrent node's output (fastnn keeps "
                             "the batch axis first)")
        return v.t

    def directions_apart(self, y, layout):
        """Whether the graph takes the two directions of sequence y apart (a Gather on the
        direction axis, after Transposes): then one layer per direction, not a
        Bidirectional whose sequence is their concatenation."""
        todo = [(y, 1 if layout == 0 else 2)]
        while todo:
            name, axis = todo.pop()
            for n in self.consumers.get(name, []):
                if n.op_type in ("Identity", "Dropout", "Cast"):
                    todo.append((n.output[0], axis))
                elif n.op_type == "Transpose":
                    perm = [int(p) for p in self.helper.get_attribute_value(n.attribute[0])]
                    todo.append((n.output[0], perm.index(axis)))
                elif n.op_type in ("Gather", "Slice") and self.uses.get(n.output[0], 0):
                    return True
        return False

    def reduce(self, op, a, ins):
        axes = a.get("axes")
        if axes is None and len(ins) > 1:
            axes = [int(d) for d in self.const(ins[1])]
        keep = bool(a.get("keepdims", 1))
        rank = len(self.tensor_shape(ins[0]))
        axes = sorted(d % rank for d in axes)
        mean = op == "ReduceMean"
        if rank == 3 and axes == [1]:
            cls = L.GlobalAveragePooling1D if mean else L.GlobalMaxPooling1D
            return Value(t=cls(keepdims=keep)(self.tensor(ins[0])))
        if rank == 4 and axes in ([1, 2], [2, 3]):
            cls = L.GlobalAveragePooling2D if mean else L.GlobalMaxPooling2D
            x = self.nhwc(ins[0]) if axes == [2, 3] else self.tensor(ins[0])
            y = cls(keepdims=keep)(x)
            return Value(t=y, perm=NCHW if (axes == [2, 3] and keep) else None)
        raise ValueError(f"fastnn.onnx.load: {op} over axes {axes} of a rank-{rank} tensor is "
                         "not supported (only pooling over time or space)")


def _recurrent_input_error(node, k):
    where = f"fastnn.onnx.load: {node.op_type} node {_node_name(node)}"
    if k == 4:
        return f"{where}: sequence_lens is not supported (fastnn runs every sequence to its end)"
    what = "initial_h" if k == 5 else "initial_c"
    return (f"{where}: a non-zero or graph-input {what} is not supported (fastnn's imported "
            "layers start from zero states)")


def _node_name(node):
    return repr(node.name or node.output[0])


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _perm_or_none(perm):
    return None if perm == tuple(range(len(perm))) else perm


def _reverse(t, axis):
    """t read backwards along `axis` (not the batch): the axis moved last and multiplied by
    the exchange matrix, which is exact (each output is one input times 1)."""
    rank, size = len(t.shape), t.shape[axis]
    order = [k for k in range(rank) if k != axis] + [axis]
    if order != list(range(rank)):
        t = fn.ops.transpose(t, order)
    y = fn.ops.matmul(t, np.eye(size, dtype=np.float32)[::-1].copy())
    return y if order == list(range(rank)) else fn.ops.transpose(y, tuple(np.argsort(order)))


def _recurrent_weights(op, w, r, b, u, reset_after):
    """fastnn weights of one direction from ONNX's W (G·U, C), R (G·U, U), B (2·G·U):
    kernel = Wᵀ and recurrent_kernel = Rᵀ (LSTM gate blocks reordered from ONNX's i, o, f,
    c to Keras's i, f, c, o; GRU's z, r, h and RNN's single block are already in order);
    the input and recurrent biases stay apart for GRU(reset_after=True)
    (linear_before_reset=1, where the recurrent bias is inside the reset gate's product)
    and are added otherwise, where ONNX only adds them."""
    if op == "LSTM":
        order = np.concatenate([np.arange(u) + k * u for k in _IOFC_TO_IFCO])
        w, r = w[order], r[order]
        if b is not None:
            b = np.concatenate([b[:4 * u][order], b[4 * u:][order]])
    weights = {"kernel": np.ascontiguousarray(w.T), "recurrent_kernel": np.ascontiguousarray(r.T)}
    if b is not None:
        gu = b.shape[0] // 2
        weights["bias"] = np.stack([b[:gu], b[gu:]]) if reset_after else b[:gu] + b[gu:]
    return weights


def load_model(path):
    """Read an ONNX file into a fastnn Functional model whose inputs and outputs are those
    of the file (in its order and layouts: an NCHW input stays NCHW).

    The operators in SUPPORTED are imported. Raises ValueError naming the operators
    outside that set, a file that is not a valid ONNX model (truncated bytes, failed
    checks), an input without fixed sizes past the batch axis, or an attribute
    combination fastnn cannot run."""
    onnx, _, nh = _onnx()
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - the parser's own errors vary by version
        raise ValueError(f"fastnn.onnx.load: {str(path)!r} is not a valid ONNX model ({e})") from None
    proto = _quant_import.rewrite(proto, _, nh)  # int8 products -> QDense / QConv nodes
    g = proto.graph
    bad = sorted({n.op_type for n in g.node if not (
        n.op_type in SUPPORTED and n.domain in ("", "ai.onnx")
        or n.op_type in _quant_import.NODES and n.domain == _quant_import.DOMAIN)})
    if bad:
        raise ValueError(f"fastnn.onnx.load: {str(path)!r} uses operators fastnn cannot import: "
                         f"{bad} (supported: {', '.join(SUPPORTED)})")
    imp = Importer(proto)
    inits = {t.name for t in g.initializer}
    for t in g.initializer:
        imp.env[t.name] = Value(const=nh.to_array(t))
    for node in imp.nodes:  # a graph input as a recurrent node's state or lengths: its error
        if node.op_type in ("LSTM", "GRU", "RNN"):
            for k in (4, 5, 6):
                if len(node.input) > k and node.input[k] and node.input[k] not in inits:
                    if any(vi.name == node.input[k] for vi in g.input):
                        raise ValueError(_recurrent_input_error(node, k))
    inputs = []
    for vi in g.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if len(dims) < 2 or any(d is None for d in dims[1:]):
            raise ValueError(f"fastnn.onnx.load: input {vi.name!r} needs every dimension but the "
                             f"first (the batch) fixed, got {dims}")
        t = fn.Input(tuple(dims[1:]), name=vi.name)
        imp.env[vi.name] = Value(t=t)
        inputs.append(t)
    regions, res = _fused_regions(imp, proto)
    for k, node in enumerate(imp.nodes):  # the nodes no output depends on are left out
        r = imp.regions.get(k)
        if r is None or node.op_type == "Constant":
            imp.run(node)
        elif r.output in node.output:
            imp.env[r.output] = r.build(imp)
    outputs = [imp.tensor(o.name) for o in g.output]
    model = fn.Model(inputs if len(inputs) > 1 else inputs[0],
                     outputs if len(outputs) > 1 else outputs[0], name=g.name or "onnx_model")
    model.build()
    if imp.qlayers:
        _quant_import.set_int8(model, imp.qlayers)
    for layer, weights in imp.weights:
        for attr, value in weights.items():
            getattr(layer, attr)[...] = np.asarray(value, np.float32).reshape(getattr(layer, attr).shape)
    if res is not None:
        _check_probe(model, regions, res, proto)
    return model


def _fused_regions(imp, proto):
    """Find the subgraphs imported as one layer (see _fused) and mark their nodes in
    imp.regions. Attention and masked pooling need the probe run (returned; None if no
    region needs it)."""
    from . import _fused

    inits = {t.name: imp.nh.to_array(t) for t in proto.graph.initializer}
    inputs = {vi.name: [d.dim_value if d.HasField("dim_value") else None
                        for d in vi.type.tensor_type.shape.dim]
              for vi in proto.graph.input if vi.name not in inits}
    g = _fused.Graph(imp.nodes, inits, imp.helper, imp.nh, inputs)
    regions, matches = [], []
    for k, node in enumerate(imp.nodes):
        if node.op_type == "Erf":
            r = _fused.find_gelu(g, k)
        elif node.op_type == "Div":
            r = _fused.find_masked_mean(g, k)
        elif node.op_type == "Softmax":
            try:
                matches.append(_fused.match_attention(g, k))
            except _fused.NotAttention:
                pass
            continue
        else:
            continue
        if r is not None:
            regions.append(r)
    res = None
    if matches or any(r.kind == "masked_mean" for r in regions):
        n = _fused.probe_batch(proto)
        feeds, res = _fused.probe(proto, g, n)
        res = dict(res, __feeds__=feeds)
        regions += [_fused.attention_region(g, m, res, n) for m in matches]
        blocks = [r for r in regions if r.kind == "attention"]
        masks = _fused.mask_path_nodes(g, blocks)
        if masks:  # the attention layers take the key masks themselves: never built
            regions.append(_fused.Region("key_mask", masks, None, None))
    for r in regions:
        for k in r.nodes:
            if k in imp.regions:
                raise ValueError(f"fastnn.onnx.load: node {_node_name(imp.nodes[k])} belongs "
                                 f"to two fused subgraphs ({imp.regions[k].kind}, {r.kind})")
            imp.regions[k] = r
    return regions, res


def _check_probe(model, regions, res, proto):
    """Each attention layer, then the whole model, against the probe run's values."""
    for r in regions:
        if r.check is not None:
            r.check(r, res)
    feeds = res["__feeds__"]
    xs = [feeds[t.name] for t in model.inputs]
    got = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    got = got if isinstance(got, list) else [got]
    for o, y in zip(proto.graph.output, got):
        want = np.asarray(res[o.name], np.float32)
        err = float(np.max(np.abs(y - want))) if want.size else 0.0
        if not err <= 1e-4 * max(float(np.max(np.abs(want))), 1.0):
            raise ValueError(f"fastnn.onnx.load: the imported model's output {o.name!r} differs "
                             f"from the ONNX graph's by {err:.3g} on a probe batch (a padding "
                             "mask or layout fastnn does not follow); not imported")
