"""ONNX graph -> fastnn Functional model, for a subset of the standard operators.

Each ONNX node becomes a fastnn layer (Conv -> Conv2D, Gemm/MatMul -> Dense, ...) or a
fastnn.ops function on symbolic tensors. ONNX images are NCHW and fastnn's are NHWC: a
tensor is kept as a fastnn tensor plus the permutation that turns it into the ONNX
tensor, so a chain of convolutions and pools runs channels-last with no transposes, and
a transpose is made only where a node needs the ONNX layout itself (Flatten, Reshape,
...). A MatMul by a constant followed by the addition of a constant vector is one Dense.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import fastnn as fn

from ._export import _onnx, _same_pads

L = fn.layers
NCHW = (0, 3, 1, 2)  # the ONNX (NCHW) tensor is transpose(fastnn NHWC tensor, NCHW)

SUPPORTED = ("Identity", "Dropout", "Cast", "Relu", "Sigmoid", "Tanh", "Softmax", "Gemm",
             "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat",
             "BatchNormalization", "LayerNormalization", "Gather", "ReduceMean", "ReduceMax",
             "Constant")


@dataclass
class Value:
    """An ONNX value: a constant, or a fastnn tensor t with onnx = transpose(t, perm); or a
    pending MatMul by a constant (x · kernel), made a Dense when its consumer is known."""
    const: np.ndarray | None = None
    t: object = None
    perm: tuple | None = None
    matmul: tuple | None = None  # (fastnn tensor in ONNX layout, kernel)


class Importer:
    def __init__(self, proto):
        self.onnx, self.helper, self.nh = _onnx()
        self.proto = proto
        self.g = proto.graph
        self.env: dict[str, Value] = {}
        self.weights: list[tuple] = []  # (layer, {attribute: array}) set after the build
        self.uses: dict[str, int] = {}
        for node in self.g.node:
            for i in node.input:
                self.uses[i] = self.uses.get(i, 0) + 1

    # --- values -------------------------------------------------------------------------
    def tensor(self, name):
        """The fastnn tensor holding ONNX value `name` in ONNX layout."""
        v = self.env[name]
        if v.matmul is not None:
            x, k = v.matmul
            v = self.env[name] = Value(t=self.dense(x, k, None))
        if v.const is not None:
            raise ValueError(f"fastnn.onnx.load: {name!r} is a constant where a tensor is needed")
        return v.t if v.perm is None else fn.ops.transpose(v.t, v.perm)

    def nhwc(self, name):
        """The fastnn NHWC tensor of a 4-D ONNX (NCHW) value."""
        v = self.env[name]
        if v.perm == NCHW and v.matmul is None:
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

    # --- nodes --------------------------------------------------------------------------
    def run(self, node):
        op = node.op_type
        a = {x.name: self.helper.get_attribute_value(x) for x in node.attribute}
        ins = list(node.input)
        out = node.output[0]
        env = self.env
        if op == "Constant":
            env[out] = Value(const=self.nh.to_array(a["value"]))
        elif op in ("Identity", "Dropout", "Cast"):  # ids stay float32 in fastnn
            env[out] = env[ins[0]]
        elif op in ("Relu", "Sigmoid", "Tanh"):
            v = env[ins[0]]
            t = self.tensor(ins[0]) if v.matmul is not None else v.t
            env[out] = Value(t=L.Activation(op.lower())(t), perm=None if v.matmul else v.perm)
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
            xs = [self.tensor(i) for i in ins]
            env[out] = Value(t=L.Concatenate(axis=int(a["axis"]))(xs))
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
            table = self.const(ins[0])
            if table is None or table.ndim != 2 or a.get("axis", 0) != 0:
                raise ValueError("fastnn.onnx.load: Gather is supported as an embedding lookup "
                                 "(a constant 2-D table, axis 0)")
            layer = L.Embedding(table.shape[0], table.shape[1])
            env[out] = Value(t=self.layer(layer, self.tensor(ins[1]), embeddings=table))
        elif op in ("ReduceMean", "ReduceMax"):
            env[out] = self.reduce(op, a, ins)

    def last_axis(self, node, axis, name):
        rank = len(self.tensor_shape(name))
        if axis not in (-1, rank - 1):
            raise ValueError(f"fastnn.onnx.load: {node.op_type} is supported on the last axis "
                             f"only, got axis={axis}")

    def tensor_shape(self, name):
        v = self.env[name]
        if v.matmul is not None:
            return tuple(v.matmul[0].shape[:-1]) + (v.matmul[1].shape[1],)
        s = tuple(v.t.shape)
        return s if v.perm is None else tuple(s[p] for p in v.perm)

    def binary(self, op, ins):
        ca, cb = self.const(ins[0]), self.const(ins[1])
        va = self.env[ins[0]]
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
        kh, kw = w.shape[2:]
        pads = a.get("pads", [0, 0, 0, 0])
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER",):
            padding = "same"
        elif auto in ("NOTSET", "VALID"):
            padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        else:
            raise ValueError(f"fastnn.onnx.load: Conv auto_pad={auto} is not supported")
        bias = self.const(ins[2]) if len(ins) > 2 and ins[2] else None
        layer = L.Conv2D(w.shape[0], (kh, kw), strides=tuple(a.get("strides", [1, 1])),
                         padding=padding, dilation_rate=tuple(a.get("dilations", [1, 1])),
                         groups=int(a.get("group", 1)), use_bias=bias is not None)
        wts = {"kernel": np.transpose(w, (2, 3, 1, 0)).astype(np.float32)}
        if bias is not None:
            wts["bias"] = bias.astype(np.float32)
        return Value(t=self.layer(layer, x, **wts), perm=NCHW)

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
        shape = [int(d) for d in self.const(ins[1])]
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
        c = self.const(ins[0])
        perm = tuple(a["perm"])
        if c is not None:
            return Value(const=np.transpose(c, perm))
        if perm[0] != 0:
            raise ValueError("fastnn.onnx.load: Transpose must keep the batch axis first")
        v = self.env[ins[0]]
        if v.matmul is not None:
            v = Value(t=self.tensor(ins[0]))
        base = v.perm or tuple(range(len(perm)))
        new = tuple(base[p] for p in perm)
        return Value(t=v.t, perm=None if new == tuple(range(len(new))) else new)

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
    g = proto.graph
    bad = sorted({n.op_type for n in g.node if n.op_type not in SUPPORTED or n.domain not in ("", "ai.onnx")})
    if bad:
        raise ValueError(f"fastnn.onnx.load: {str(path)!r} uses operators fastnn cannot import: "
                         f"{bad} (supported: {', '.join(SUPPORTED)})")
    imp = Importer(proto)
    inits = {t.name for t in g.initializer}
    for t in g.initializer:
        imp.env[t.name] = Value(const=nh.to_array(t))
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
    for node in g.node:
        imp.run(node)
    outputs = [imp.tensor(o.name) for o in g.output]
    model = fn.Model(inputs if len(inputs) > 1 else inputs[0],
                     outputs if len(outputs) > 1 else outputs[0], name=g.name or "onnx_model")
    model.build()
    for layer, weights in imp.weights:
        for attr, value in weights.items():
            getattr(layer, attr)[...] = np.asarray(value, np.float32).reshape(getattr(layer, attr).shape)
    return model
