"""Subgraphs of an ONNX file that fastnn imports as one layer: attention blocks (-> fastnn
MultiHeadAttention), the erf form of GELU (-> Activation("gelu")) and the masked mean over
time fastnn exports (-> GlobalAveragePooling1D, which reads the padding mask).

An attention block is found from its Softmax: the scores MatMul before it (after scalar
scales, a Where on a key mask and one on a constant causal triangle, the addition of a
causal mask made from constants and shapes, as torch writes attn_mask buffers and
is_causal, or the addition of a key mask made from a boolean graph input, as torch
writes key_padding_mask), the MatMul by
the values after it, and, through the
layout operators around them (Reshape, Transpose, Squeeze, Unsqueeze, Gather of one
block of a packed projection), the four projections by constant kernels. What lies
between is not interpreted: exporters write the head split in many ways (fastnn as
(N, NH, T, D), torch as (N·NH, T, D) on time-major tensors, with shapes computed from
Shape nodes). Instead the whole graph is run once by onnx's reference evaluator on a small
probe batch, which gives the number of heads (the Softmax input's shape), the scale (the
values of the scalar factors) and the layout of the block's output; and each block's
fastnn layer is checked against the probe's values once its weights are set, so a
subgraph that only looks like attention is an error, never a wrong answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import fastnn as fn

L = fn.layers
_BOOL = 9  # onnx.TensorProto.BOOL
_LAYOUT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast", "Flatten")


@dataclass
class Region:
    """ONNX nodes (indices into Importer.nodes) replaced by one fastnn layer that makes
    the ONNX value `output`; build(importer) returns its Value."""
    kind: str
    nodes: set
    output: str
    build: object
    check: object = None  # check(importer, probe) after the weights are set
    info: dict = field(default_factory=dict)


class Graph:
    """Producers, consumers and static values (constants and shape arithmetic)."""

    def __init__(self, nodes, inits, helper, numpy_helper, inputs=None):
        self.nodes = nodes
        self.inputs = inputs or {}  # graph input -> its dims (None where not fixed)
        self.helper, self.nh = helper, numpy_helper
        self.producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
        self.consumers: dict[str, list] = {}
        for k, n in enumerate(nodes):
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(k)
        self.consts = dict(inits)
        for n in nodes:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(self.attrs(n)["value"])
            elif n.op_type == "Identity" and n.input[0] in self.consts:  # shared weights
                self.consts[n.output[0]] = self.consts[n.input[0]]
        self._static: dict[str, bool] = {}

    def attrs(self, node):
        return {a.name: self.helper.get_attribute_value(a) for a in node.attribute}

    def node(self, name):
        k = self.producer.get(name)
        return None if k is None else self.nodes[k]

    def static(self, name) -> bool:
        """A constant, or computed from constants and tensor shapes only."""
        if name in self.consts:
            return True
        if name not in self._static:
            n = self.node(name)
            self._static[name] = n is not None and (
                n.op_type == "Shape" or all(self.static(i) for i in n.input if i))
        return self._static[name]

    def data_consumers(self, name):
        """The consumers of `name` other than Shape nodes."""
        return [k for k in self.consumers.get(name, []) if self.nodes[k].op_type != "Shape"]


def _close(a, b):
    return abs(float(a) - float(b)) <= 1e-6 * max(abs(float(b)), 1.0)


# --- GELU ---------------------------------------------------------------------------------
def _scalar(g, name):
    c = g.consts.get(name)
    return None if c is None or c.size != 1 else float(c.reshape(-1)[0])


def _other(node, name):
    """The other input of a two-input node, or None if `name` is not one of them."""
    if list(node.input).count(name) != 1 or len(node.input) != 2:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _sole_consumer(g, name, op):
    ks = g.consumers.get(name, [])
    if len(ks) != 1 or g.nodes[ks[0]].op_type != op:
        return None
    return ks[0]


def find_gelu(g, k):
    """x·(1 + erf(x/√2))/2 around Erf node k (x/√2 as Div or Mul, the 1/2 last):
    a Region, or None."""
    erf = g.nodes[k]
    pre = g.node(erf.input[0])
    if pre is None or pre.op_type not in ("Div", "Mul") or len(pre.input) != 2:
        return None
    x, c = pre.input
    want = np.sqrt(2.0) if pre.op_type == "Div" else 1 / np.sqrt(2.0)
    if _scalar(g, c) is None or not _close(_scalar(g, c), want):
        return None
    a = _sole_consumer(g, erf.output[0], "Add")
    if a is None or not _close(_scalar(g, _other(g.nodes[a], erf.output[0])) or 0.0, 1.0):
        return None
    m1 = _sole_consumer(g, g.nodes[a].output[0], "Mul")
    if m1 is None or _other(g.nodes[m1], g.nodes[a].output[0]) != x:
        return None
    m2 = _sole_consumer(g, g.nodes[m1].output[0], "Mul")
    if m2 is None or not _close(_scalar(g, _other(g.nodes[m2], g.nodes[m1].output[0])) or 0.0, 0.5):
        return None
    if g.consumers.get(pre.output[0]) != [k]:
        return None
    nodes = {g.producer[pre.output[0]], k, a, m1, m2}

    def build(imp):
        from ._import import Value
        return Value(t=L.Activation("gelu")(imp.tensor(x)))
    return Region("gelu", nodes, g.nodes[m2].output[0], build)


# --- masked mean over time ------------------------------------------------------------------
def find_masked_mean(g, k):
    """fastnn's masked GlobalAveragePooling1D around Div node k:
    ReduceSum(x·w, 1) / Max(ReduceSum(w, 1), 1) with w = Unsqueeze(Cast(mask), 2)."""
    div = g.nodes[k]
    num, den = (g.node(i) for i in div.input)
    if num is None or den is None or num.op_type != "ReduceSum" or den.op_type != "Max":
        return None
    cnt = next((g.node(i) for i in den.input if _scalar(g, i) is None), None)
    if cnt is None or cnt.op_type != "ReduceSum" or len(den.input) != 2 or \
            not _close(_scalar(g, _other(den, cnt.output[0])) or 0.0, 1.0):
        return None
    w = cnt.input[0]
    prod = g.node(num.input[0])
    if prod is None or prod.op_type != "Mul" or _other(prod, w) is None:
        return None
    x = _other(prod, w)
    axes = [g.consts.get(n.input[1]) if len(n.input) > 1 else g.attrs(n).get("axes")
            for n in (num, cnt)]
    keep = [g.attrs(n).get("keepdims", 1) for n in (num, cnt)]
    if any(a is None or list(np.ravel(a)) != [1] for a in axes) or keep[0] != keep[1]:
        return None
    nodes = _interior(g, div.output[0], {x})

    def build(imp):
        from ._import import Value
        return Value(t=L.GlobalAveragePooling1D(keepdims=bool(keep[0]))(imp.tensor(x)))
    return Region("masked_mean", nodes, div.output[0], build)


# --- attention ------------------------------------------------------------------------------
class NotAttention(Exception):
    """A Softmax that is not the core of an attention block."""


def _const_input(g, n, i):
    return g.consts.get(n.input[i]) if len(n.input) > i and n.input[i] else None


def _projection(g, n):
    """(kernel (C, M), bias or None) of a MatMul or Gemm by a constant 2-D kernel."""
    if n.op_type == "MatMul":
        w = _const_input(g, n, 1)
        return (w, None) if w is not None and w.ndim == 2 else None
    if n.op_type == "Gemm":
        a = g.attrs(n)
        w = _const_input(g, n, 1)
        if w is None or a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return None
        c = _const_input(g, n, 2)
        return (w.T if a.get("transB", 0) else w), (None if c is None else c.reshape(-1))
    return None


def _scale_operand(g, n):
    """The static scalar operand of a Mul or Div (a Div's divisor only), or None."""
    if n.op_type not in ("Mul", "Div") or len(n.input) != 2:
        return None
    for j in ((1,) if n.op_type == "Div" else (1, 0)):
        if g.static(n.input[j]) and not g.static(n.input[1 - j]):
            return j
    return None


def _back_to_projection(g, name, where):
    """From an operand of the scores or values MatMul back, through layout operators,
    scalar scales, a Gather of one part of a packed projection and a bias Add, to the
    projection by a constant kernel."""
    scales, part, bias = [], None, None
    while True:
        k = g.producer.get(name)
        n = None if k is None else g.nodes[k]
        op = None if n is None else n.op_type
        if op in _LAYOUT:
            name = n.input[0]
        elif op == "Gather" and part is None and _const_input(g, n, 1) is not None \
                and _const_input(g, n, 1).size == 1:
            part, name = int(_const_input(g, n, 1).reshape(-1)[0]), n.input[0]
        elif op in ("Mul", "Div") and _scale_operand(g, n) is not None:
            j = _scale_operand(g, n)
            scales.append((n.input[j], op == "Div"))
            name = n.input[1 - j]
        elif op == "Add" and bias is None and len(n.input) == 2 and \
                any(i in g.consts and g.consts[i].ndim == 1 for i in n.input):
            j = 0 if n.input[0] in g.consts and g.consts[n.input[0]].ndim == 1 else 1
            bias, name = g.consts[n.input[j]], n.input[1 - j]
        elif n is not None and _projection(g, n) is not None:
            w, b = _projection(g, n)
            if b is not None and bias is not None:
                raise ValueError(f"{where}: two biases on one projection")
            b = bias if b is None else b
            if b is not None and b.shape != (w.shape[1],):
                raise ValueError(f"{where}: a bias of shape {b.shape} on a projection to "
                                 f"{w.shape[1]} channels")
            return dict(proj=k, x=n.input[0], kernel=w, bias=b, part=part, scales=scales)
        else:
            raise ValueError(f"{where}: the path from a projection reaches {op or name!r}, "
                             "which fastnn does not recognise inside attention")


def match_attention(g, k):
    """The parts of the attention block whose Softmax is node k (raises NotAttention when
    the Softmax input is not a product of two computed tensors)."""
    sm = g.nodes[k]
    where = _where(sm)
    scales, mask, causal, name = [], None, False, sm.input[0]
    key_mask = None  # (graph input, where) of an additive key mask
    added = None  # a static mask added to the scores (checked causal on the probe run)
    while True:  # back from the Softmax to the scores MatMul
        n = g.node(name)
        if n is None:
            raise NotAttention
        if n.op_type in ("Mul", "Div") and _scale_operand(g, n) is not None:
            j = _scale_operand(g, n)
            scales.append((n.input[j], n.op_type == "Div"))
            name = n.input[1 - j]
        elif n.op_type == "Where" and not causal and _is_causal(g.consts.get(n.input[0])) \
                and g.static(n.input[2]):
            causal, name = True, n.input[1]  # a constant lower triangle: a causal mask
        elif n.op_type == "Where" and mask is None and g.static(n.input[2]) and \
                not g.static(n.input[1]) and not g.static(n.input[0]):
            mask, name = _condition_sources(g, n.input[0]), n.input[1]
        elif n.op_type == "Add" and not causal and added is None and len(n.input) == 2 and \
                sum(map(g.static, n.input)) == 1:  # torch's attn_mask made in the model
            j = 0 if g.static(n.input[1]) else 1
            added, name = n.input[1 - j], n.input[j]
        elif n.op_type == "Add" and mask is None and len(n.input) == 2 and \
                not any(g.static(i) for i in n.input) and _scores_operand(g, n) is not None:
            j = _scores_operand(g, n)  # the other operand is an additive key mask
            mask, name = n.input[1 - j], n.input[j]
            key_mask = _key_mask_source(g, mask, where)
        elif n.op_type == "MatMul" and not any(g.static(i) for i in n.input):
            scores = n
            break
        else:
            raise NotAttention
    if g.attrs(sm).get("axis", -1) != -1:
        raise ValueError(f"{where}: the Softmax must be on the last axis")
    users = g.data_consumers(sm.output[0])
    pv = g.nodes[users[0]] if len(users) == 1 else None
    if pv is None or pv.op_type != "MatMul" or pv.input[0] != sm.output[0]:
        raise ValueError(f"{where}: the probabilities must go to one MatMul by the values")
    q = _back_to_projection(g, scores.input[0], where)
    kk = _back_to_projection(g, scores.input[1], where)
    v = _back_to_projection(g, pv.input[1], where)
    for p in (q, kk, v):  # one packed projection split into parts, or one per role
        sharing = sum(r["proj"] == p["proj"] for r in (q, kk, v))
        if (sharing == 1) != (p["part"] is None) or p["kernel"].shape[1] % sharing:
            raise ValueError(f"{where}: a packed query/key/value projection must be split "
                             "into one part per role")
        if p["part"] is not None:
            h = p["kernel"].shape[1] // sharing
            cut = slice(p["part"] * h, (p["part"] + 1) * h)
            p["kernel"] = p["kernel"][:, cut]
            p["bias"] = None if p["bias"] is None else p["bias"][cut]
    parts = [p["part"] for p in (q, kk, v) if p["part"] is not None]
    if len(set(parts)) != len(parts):
        raise ValueError(f"{where}: two roles read the same part of a packed projection")
    out = _forward_to_projection(g, pv.output[0], where)
    return dict(where=where, softmax=k, scores_in=sm.input[0], q=q, k=kk, v=v, o=out,
                scales=scales + q["scales"] + kk["scales"], mask=mask, causal=causal, added=added,
                key_mask=key_mask)


def _where(sm):
    return f"fastnn.onnx.load: attention at Softmax node {sm.name or sm.output[0]!r}"


def _scores_operand(g, add):
    """Which input of an Add before a Softmax holds the scores (a MatMul of computed tensors,
    maybe scaled); None when not exactly one does."""
    def scores(name):
        n = g.node(name)
        while n is not None and n.op_type in ("Mul", "Div") and _scale_operand(g, n) is not None:
            n = g.node(n.input[1 - _scale_operand(g, n)])
        return n is not None and n.op_type == "MatMul" and not any(g.static(i) for i in n.input)
    found = [j for j in (0, 1) if scores(add.input[j])]
    return found[0] if len(found) == 1 else None


def _condition_sources(g, name):
    """The tensors a Where's condition is the And of, through layout operators and casts
    to bool (which keep nonzero = true): the key masks the block reads (fastnn writes
    a padding mask and a key mask given as a tensor so)."""
    n = g.node(name)
    if n is not None and n.op_type == "And":
        return tuple(s for i in n.input for s in _condition_sources(g, i))
    if n is not None and (n.op_type in ("Unsqueeze", "Reshape", "Expand", "Identity") or
                          n.op_type == "Cast" and g.attrs(n).get("to") == _BOOL):
        return _condition_sources(g, n.input[0])
    return (name,)


def _key_mask_source(g, name, where):
    """From the mask added to the scores back to the graph input it is made of: (input, the
    Where node). torch writes a boolean key_padding_mask m as Where(Cast(m, bool), -inf, 0),
    reshaped and expanded to the scores' shape; fastnn's attention takes exactly that (a
    key mask per sample), not a float mask added as it is nor one shared by the batch
    (torch's attn_mask). The Where's branch values are checked on the probe run."""
    sel = None
    while True:
        n = g.node(name)
        if n is None:
            break
        if n.op_type in _LAYOUT or n.op_type == "Expand":
            name = n.input[0]
        elif n.op_type == "Where" and sel is None and g.static(n.input[1]) and \
                g.static(n.input[2]) and not g.static(n.input[0]):
            sel, name = g.producer[n.output[0]], n.input[0]
        else:
            raise ValueError(f"{where}: the mask added to its scores is computed by {n.op_type} "
                             f"node {n.name or n.output[0]!r}, which fastnn does not follow (it "
                             "imports a boolean key padding mask given as a graph input)")
    dims = g.inputs.get(name)
    if dims is None:
        raise ValueError(f"{where}: the mask added to its scores comes from {name!r}, not a "
                         "graph input")
    batch_free = any(d[0] is None for d in g.inputs.values() if d)
    if len(dims) != 2 or (batch_free and dims[0] is not None):
        raise ValueError(f"{where}: its mask comes from input {name!r} of shape {dims}, which "
                         "is not one mask per sample and key (N, S): a mask shared by the "
                         "batch (torch's attn_mask) cannot be a fastnn model input, which "
                         "always has the batch first, and fastnn's attention masks whole "
                         "keys per sample only")
    if sel is None:
        raise ValueError(f"{where}: input {name!r} is added to its scores as it is (a float "
                         "mask); fastnn's attention masks keys and cannot add other values "
                         "to the scores: give torch a boolean key_padding_mask instead")
    return name, sel


def _is_causal_added(c):
    """Whether c, added to the scores, is a causal mask: its last two axes square, 0 on and
    below the diagonal and -inf (or below -1e9) above, the same for every leading index."""
    if c is None or c.ndim < 2 or c.shape[-1] != c.shape[-2] or not c.size:
        return False
    c = np.asarray(c, np.float64).reshape((-1,) + c.shape[-2:])
    upper = np.triu(np.ones(c.shape[-2:], bool), 1)
    return bool(np.all(c[:, ~upper] == 0) and np.all(c[:, upper] <= -1e9))


def _is_causal(c):
    """Whether c is a square boolean lower triangle (query i sees keys 0..i)."""
    return c is not None and c.dtype == np.bool_ and c.ndim >= 2 and c.shape[-1] == c.shape[-2] \
        and np.array_equal(c.reshape(c.shape[-2:]), np.tril(np.ones(c.shape[-2:], bool)))


def _forward_to_projection(g, name, where):
    """From the values MatMul on, through layout operators (and a Mul that zeroes queries
    without keys), to the output projection and its bias: (kernel, bias, output name)."""
    while True:
        users = g.data_consumers(name)
        n = g.nodes[users[0]] if len(users) == 1 else None
        if n is None:
            raise ValueError(f"{where}: the attention output has no single consumer")
        if n.op_type in _LAYOUT and n.input[0] == name:
            name = n.output[0]
        elif n.op_type == "Mul" and not g.static(_other(n, name) or name):
            name = n.output[0]
        elif _projection(g, n) is not None and n.input[0] == name:
            w, b = _projection(g, n)
            name = n.output[0]
            users = g.data_consumers(name)
            add = g.nodes[users[0]] if len(users) == 1 else None
            c = None if add is None or add.op_type != "Add" else g.consts.get(_other(add, name))
            if b is None and c is not None and c.shape == (w.shape[1],):
                b, name = c, add.output[0]
            return dict(kernel=w, bias=b, out=name)
        else:
            raise ValueError(f"{where}: the attention output reaches {n.op_type!r} before "
                             "an output projection")


def _interior(g, output, inputs):
    """Node indices of the block: the ancestors of `output` up to `inputs`, less those
    whose results are also read outside it (and their own ancestors that then are)."""
    nodes, todo = set(), [output]
    while todo:
        k = g.producer.get(todo.pop())
        if k is None or k in nodes:
            continue
        n = g.nodes[k]
        nodes.add(k)
        todo += [i for i in n.input if i and i not in inputs]
    while True:
        shared = {k for k in nodes for o in g.nodes[k].output if o and o != output and
                  any(c not in nodes for c in g.consumers.get(o, []))}
        if not shared:
            return nodes
        nodes -= shared


def attention_region(g, m, res, n):
    """The Region of a matched block, from the probe run (res: every value, batch n)."""
    where = m["where"]
    s = res[m["scores_in"]].shape
    if len(s) == 4 and s[0] == n:
        nh = s[1]
    elif len(s) == 3 and s[0] % n == 0:
        nh = s[0] // n
    else:
        raise ValueError(f"{where}: scores of shape {s} for a batch of {n} are neither "
                         "(N, NH, Tq, Tk) nor (N·NH, Tq, Tk)")
    q, k, v, o = m["q"], m["k"], m["v"], m["o"]
    h = q["kernel"].shape[1]
    if h % nh or k["kernel"].shape[1] != h or v["kernel"].shape[1] != h or o["kernel"].shape[0] != h:
        raise ValueError(f"{where}: projections of {h}, {k['kernel'].shape[1]} and "
                         f"{v['kernel'].shape[1]} channels for {nh} heads (fastnn needs one "
                         "head size for queries, keys and values)")
    d = h // nh
    scale = 1.0
    for name, div in m["scales"]:
        c = np.asarray(res[name], np.float64)
        if c.size != 1:
            raise ValueError(f"{where}: a scale factor of shape {c.shape} is not a scalar")
        scale = scale / float(c.reshape(-1)[0]) if div else scale * float(c.reshape(-1)[0])
    fold = scale * np.sqrt(d)  # fastnn's core scales by 1/√D; the rest goes into the query
    causal = m["causal"]
    if m["added"] is not None:  # a mask made from constants and shapes: causal, or refused
        c = np.asarray(res[m["added"]])
        if not _is_causal_added(c):
            raise ValueError(f"{where}: a mask of shape {c.shape} made inside the model is "
                             "added to its scores; fastnn's attention takes a causal one only "
                             "(0 on and below the diagonal, -inf above: use_causal_mask)")
        causal = True
    cout = o["kernel"].shape[1]
    tq = res[q["x"]].shape
    # the first value after the output projection in (N, Tq, C) or (Tq, N, C) layout
    name = o["out"]
    while True:
        shape = res[name].shape
        tq_len = tq[1] if tq[0] == n else tq[0]
        if shape == (n, tq_len, cout) or shape == (tq_len, n, cout):
            perm = None if shape[0] == n else (1, 0, 2)
            break
        users = g.data_consumers(name)
        nxt = g.nodes[users[0]] if len(users) == 1 else None
        if nxt is None or nxt.op_type not in _LAYOUT:
            raise ValueError(f"{where}: the output projection's result {shape} does not "
                             "reach an (N, T, C) or (T, N, C) tensor")
        name = nxt.output[0]
    xs = (q["x"], k["x"], v["x"])
    key_mask = None
    if m["key_mask"] is not None:
        src, sel = m["key_mask"]
        key_mask = (src, _true_masks(g, g.nodes[sel], res, where))
    masks = () if key_mask or m["mask"] is None else m["mask"]
    nodes = _interior(g, name, set(xs) | set(masks))
    ext = {i for j in nodes for i in g.nodes[j].input if i and g.producer.get(i) not in nodes}
    ext = sorted(i for i in ext if i not in xs and i not in masks and not g.static(i))
    path = ()  # where torch's key mask path leaves the block (see mask_path_nodes)
    if key_mask:
        path, ext = tuple(ext[:1]), ext[1:]
    if ext:
        raise ValueError(f"{where}: the block also reads {ext}, which fastnn's attention "
                         "does not take (it takes key masks)")
    use_bias = any(p["bias"] is not None for p in (q, k, v, o))
    weights = {}
    for role, p in (("query", q), ("key", k), ("value", v), ("output", o)):
        f = fold if role == "query" else 1.0
        weights[role + "_kernel"] = (p["kernel"] * f).astype(np.float32)
        if use_bias:
            b = np.zeros(p["kernel"].shape[1]) if p["bias"] is None else p["bias"]
            weights[role + "_bias"] = (b * f).astype(np.float32)
    region = Region("attention", nodes, name, None,
                    info=dict(where=where, xs=xs, masks=masks, mask_path=path, perm=perm,
                              causal=causal,
                              key_mask=key_mask))
    kw = {"use_causal_mask": True} if causal else {}

    def build(imp):
        from ._import import Value
        vs = [imp.plain(x) for x in xs]
        for x, val in zip(xs, vs):
            if val.const is not None or len(val.t.shape) != 3 or val.perm not in (None, (1, 0, 2)):
                raise ValueError(f"{where}: its input {x!r} must be a (N, T, C) or (T, N, C) "
                                 "tensor")
        cq = vs[0].t.shape[-1]
        layer = L.MultiHeadAttention(nh, d, use_bias=use_bias,
                                     output_shape=None if cout == cq else cout)
        tq_, tk, tv = (val.t for val in vs)
        if key_mask is not None:
            km = imp.key_mask(*key_mask)
        else:  # at most one needs to be given: the padding mask reaches the layer itself
            given = [t for t in (imp.attention_mask(s) for s in masks) if t is not None]
            if len(given) > 1:
                raise ValueError(f"{where}: its scores are masked by {len(given)} key masks; "
                                 "fastnn's attention takes one besides a padding mask")
            km = given[0] if given else None
        if km is not None:
            y = layer(tq_, tv, tk, key_mask=km, **kw)
        elif tk is tq_ and tv is tq_:
            y = layer(tq_, **kw)
        else:
            y = layer(tq_, tv, **kw) if tk is tv else layer(tq_, tv, tk, **kw)
        imp.weights.append((layer, weights))
        region.info.update(layer=layer, perms=[val.perm for val in vs])
        return Value(t=y, perm=perm)

    region.build = build
    region.check = _check_attention
    return region


def _true_masks(g, where_node, res, where):
    """Whether a true value of the Where's condition masks the key: one branch is 0, the
    other -inf (or a value so negative that its exponential is 0)."""
    a, b = (np.asarray(res[i], np.float64) for i in where_node.input[1:])

    def off(v):
        return v.size > 0 and bool(np.all(v <= -1e9))
    if off(a) and not np.any(b):
        return True
    if off(b) and not np.any(a):
        return False
    raise ValueError(f"{where}: its key mask is Where(mask, a, b) with a, b = {a.ravel()[:3]}, "
                     f"{b.ravel()[:3]}; fastnn takes one of them 0 and the other -inf")


def mask_path_nodes(g, regions):
    """The nodes that make the masks added to the attention scores from their graph inputs
    (Cast, Where, Reshape, Expand, ... and the shapes computed for them) and that lie
    outside the blocks because several blocks read them (torch's TransformerEncoder
    converts its mask once): fastnn gives its attention layers the key mask itself. A node
    whose result is also read elsewhere stays with the graph (with its ancestors)."""
    inside = set().union(*(r.nodes for r in regions))
    nodes, todo = set(), [name for r in regions for name in r.info["mask_path"]]
    while todo:
        k = g.producer.get(todo.pop())
        if k is None or k in nodes or k in inside:
            continue
        nodes.add(k)
        todo += [i for i in g.nodes[k].input if i]
    while True:
        shared = {k for k in nodes for o in g.nodes[k].output if o and
                  any(c not in nodes and c not in inside for c in g.consumers.get(o, []))}
        if not shared:
            return nodes
        nodes -= shared


def _to_fastnn(a, perm):
    return np.ascontiguousarray(a if perm is None else np.transpose(a, np.argsort(perm)), np.float32)


def _check_attention(region, res):
    """The fastnn layer against the probe's values of the block."""
    i = region.info
    layer, xs = i["layer"], [_to_fastnn(res[x], p) for x, p in zip(i["xs"], i["perms"])]
    mask = None
    if i["key_mask"] is not None:  # torch's key_padding_mask: true (nonzero) masks the key
        src, true_masks = i["key_mask"]
        given = np.asarray(res["__feeds__"][src]) != 0
        mask = ~given if true_masks else given
    for name in i["masks"]:  # Where(And(masks), scores, -big): nonzero (true) = attend
        m = np.asarray(res[name])
        if m.shape != xs[2].shape[:2]:
            raise ValueError(f"{i['where']}: its key mask {name!r} must be one mask per "
                             f"sample and key (N, Tk), got shape {m.shape}")
        mask = m != 0 if mask is None else mask & (m != 0)
    got = layer.forward(xs[0], xs[2], xs[1], mask=mask, training=False,
                        use_causal_mask=i["causal"])
    want = _to_fastnn(res[region.output], i["perm"])
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not err <= 1e-4 * max(float(np.max(np.abs(want))), 1.0):
        raise ValueError(f"{i['where']}: the subgraph looks like attention but fastnn's "
                         f"MultiHeadAttention does not compute it (max difference {err:.3g} "
                         "on a probe batch); its layout is not supported")


def probe(proto, g, batch):
    """Run the graph with onnx's reference evaluator on a probe batch: every value by name.
    Inputs that are cast to integers (token ids) get ids 0, 1 and 2 (0 pads), boolean
    inputs (key padding masks, true = masked) true at the last i % S of the S keys of
    sample i (some keys masked, never all of one sample's), float inputs made boolean or
    compared (key masks, nonzero = attend) 0 there and 1 elsewhere, others standard
    normal values."""
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    inits = {t.name for t in proto.graph.initializer}
    feeds = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        shape = (batch,) + tuple(d.dim_value for d in vi.type.tensor_type.shape.dim[1:])
        users = [g.nodes[c] for c in g.consumers.get(vi.name, [])]
        casts = [g.attrs(c).get("to") for c in users if c.op_type == "Cast"]
        ids = any(to in (TensorProto.INT32, TensorProto.INT64) for to in casts)
        if len(shape) == 2 and not ids:
            s = shape[1]
            masked = np.arange(s)[None, :] >= s - np.arange(batch)[:, None] % s
            if vi.type.tensor_type.elem_type == TensorProto.BOOL:
                feeds[vi.name] = masked
                continue
            if TensorProto.BOOL in casts or any(c.op_type == "Equal" for c in users):
                feeds[vi.name] = (~masked).astype(np.float32)
                continue
        feeds[vi.name] = (rng.integers(0, 3, shape) if ids else rng.standard_normal(shape)
                          ).astype(np.float32)
    try:
        res = ReferenceEvaluator(proto).run(None, feeds, intermediate=True)
    except Exception as e:  # noqa: BLE001 - any failure of the evaluator on this graph
        raise ValueError(f"fastnn.onnx.load: onnx's reference evaluator could not run the "
                         f"graph on a probe batch to import its attention ({e})") from None
    return feeds, res


def probe_batch(proto):
    """A batch size unlike every fixed input size, so that the batch axis is told apart."""
    dims = {d.dim_value for vi in proto.graph.input for d in vi.type.tensor_type.shape.dim}
    return next(n for n in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31) if n not in dims)
