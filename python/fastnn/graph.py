"""The layer graph: symbolic tensors, nodes, and the plan that runs them.

Calling a layer on a symbolic tensor (``fastnn.Input(shape=...)`` or the output of
another call) records a :class:`Node` instead of computing anything. A model is the set
of nodes between its input and output tensors. ``Plan`` turns those nodes into a flat
list of steps over numbered slots:

- forward runs each step in topological order; a step reads its inputs' slots and writes
  its outputs' slots (a layer's output usually lives in that layer's scratch buffer);
- backward runs the steps that need a gradient in reverse; a tensor read by several steps
  (fan-out) receives the sum of their gradients, added in place into the first one;
- a parameter leaf (a :class:`Variable` used by an ``fastnn.ops`` function) receives its
  gradient by addition into its view of the model's flat gradient buffer.

Composite layers (a ``Layer`` or ``Model`` subclass that defines ``call``) are traced:
their ``call`` runs on the symbolic tensors, so the nodes it records join the graph of
whoever called it; the call itself is kept as one node of the structure (summary, saving).
A layer called at several nodes shares its weights: the plan runs the first node on the
layer itself and every further node on a shallow copy that points at the same parameter
and gradient views (the kernels add into the gradients) but has buffers of its own.
"""
from __future__ import annotations

import copy

import numpy as np

#: The composite layers whose call() is being traced, innermost last.
_TRACING: list = []

_BRANCH_MSG = ("a symbolic tensor has no value while a model is being built, so it cannot "
               "decide a Python `if`, `while`, `bool()` or `len()`. Write the choice with "
               "fastnn ops (e.g. fastnn.ops.maximum), or give the layer a hand-written "
               "forward/backward")


def tracing() -> bool:
    return bool(_TRACING)


def _no_value(msg: str) -> TypeError:
    """The error for using a symbolic tensor as a value, naming the layer being traced."""
    where = f"{_TRACING[-1].name}.call(): " if _TRACING else ""
    return TypeError(where + msg)


class Variable:
    """A weight of a layer: ``value`` (a view into the model's flat parameter buffer once
    the model is built) and ``grad`` (the matching view of the gradient buffer).

    As in Keras, ``layer.add_weight(...)`` returns one; ``fastnn.ops`` functions take it
    in ``call()`` like an array, and it converts to a NumPy array (``np.asarray(v)``,
    ``v.numpy()``) outside a graph."""

    __slots__ = ("layer", "name", "shape", "initializer", "trainable", "value", "grad",
                 "in_build", "as_attribute", "_symbol")

    def __init__(self, layer, name: str, shape: tuple, initializer, trainable: bool = True,
                 in_build: bool = False, as_attribute: bool = False):
        self.layer, self.name, self.shape = layer, name, tuple(int(s) for s in shape)
        self.initializer, self.trainable = initializer, bool(trainable)
        self.in_build, self.as_attribute = in_build, as_attribute
        self.value = self.grad = None
        self._symbol = None

    @property
    def path(self) -> str:
        return f"{self.layer.name}/{self.name}"

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def _require_value(self):
        if self.value is None:
            raise ValueError(f"variable {self.path} has no value yet: build the layer or model "
                             "(call it on data, or fit/predict) first")
        return self.value

    def numpy(self) -> np.ndarray:
        return self._require_value().copy()

    def assign(self, value) -> None:
        v = self._require_value()
        value = np.asarray(value, np.float32)
        if value.shape != v.shape:
            raise ValueError(f"assign: {self.path} has shape {v.shape}, got {value.shape}")
        v[...] = value

    def __array__(self, dtype=None, copy=None):
        v = self._require_value()
        return v if dtype is None else v.astype(dtype)

    @property
    def symbol(self) -> "KerasTensor":
        """The symbolic tensor standing for this variable inside a traced call()."""
        if self._symbol is None:
            self._symbol = KerasTensor(self.shape, var=self)
        return self._symbol

    def __repr__(self):
        return f"<Variable {self.path} shape={self.shape} trainable={self.trainable}>"


class KerasTensor:
    """A symbolic tensor: a shape (None for the batch axis), the node that makes it, and
    nothing else. Arithmetic on it records ``fastnn.ops`` nodes."""

    __slots__ = ("shape", "node", "index", "outer", "const", "var", "name")
    __array_priority__ = 1000  # numpy defers `array + tensor` to KerasTensor.__radd__

    def __init__(self, shape, node=None, index=0, const=None, var=None, name=None):
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.node, self.index = node, index
        self.outer = None  # the composite call whose output this is (outermost wins)
        self.const, self.var, self.name = const, var, name

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] is None

    def __bool__(self):
        raise _no_value(_BRANCH_MSG)

    def __len__(self):
        raise _no_value(_BRANCH_MSG)

    def _compare(self, other):
        raise _no_value(_BRANCH_MSG)

    __lt__ = __le__ = __gt__ = __ge__ = _compare

    def __iter__(self):
        raise _no_value("a symbolic tensor cannot be iterated while a model is being built")

    def __array__(self, dtype=None, copy=None):
        raise _no_value("a symbolic tensor has no value while a model is being built; "
                        "use fastnn.ops functions on it, not NumPy ones")

    def __repr__(self):
        what = self.node.layer.name if self.node is not None else (
            "constant" if self.const is not None else self.var.path if self.var is not None else "?")
        return f"<KerasTensor shape={self.shape} from {what}>"

    # Operators record fastnn.ops nodes (autodiff.py defines them).
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().subtract(self, o)
    def __rsub__(self, o): return _ops().subtract(o, self)
    def __mul__(self, o): return _ops().multiply(self, o)
    def __rmul__(self, o): return _ops().multiply(o, self)
    def __truediv__(self, o): return _ops().divide(self, o)
    def __rtruediv__(self, o): return _ops().divide(o, self)
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __neg__(self): return _ops().negative(self)
    def __pow__(self, p): return _ops().power(self, p)


def _ops():
    from . import autodiff
    return autodiff


def is_symbolic(x) -> bool:
    return isinstance(x, (KerasTensor, Variable))


def any_symbolic(args) -> bool:
    """Whether a (nested list/tuple/dict of) argument(s) holds a symbolic tensor."""
    for a in args:
        if a is None or type(a) is np.ndarray:  # the common case, first and cheapest
            continue
        if isinstance(a, (KerasTensor, Variable)):
            return True
        if isinstance(a, (list, tuple)) and any_symbolic(a):
            return True
        if isinstance(a, dict) and any_symbolic(a.values()):
            return True
    return False


def as_tensor(x, where: str) -> KerasTensor:
    """A symbolic tensor for x: itself, a variable's symbol, or a constant (arrays and
    numbers inside a traced call(), e.g. ``fastnn.ops.arange(T)``)."""
    if isinstance(x, KerasTensor):
        return x
    if isinstance(x, Variable):
        return x.symbol
    if isinstance(x, (np.ndarray, int, float, np.number)) and not isinstance(x, bool):
        a = np.asarray(x)
        a = a.astype(np.float32) if a.dtype != np.float32 else a
        return KerasTensor(a.shape, const=np.ascontiguousarray(a))
    raise TypeError(f"{where}: expected a tensor (a fastnn.Input, a layer's output, an array "
                    f"or a number), got {type(x).__name__}")


def flatten(struct) -> list:
    """The leaves of a tensor, list/tuple or dict (dicts in key order as given)."""
    if isinstance(struct, (list, tuple)):
        return [t for s in struct for t in flatten(s)]
    if isinstance(struct, dict):
        return [t for s in struct.values() for t in flatten(s)]
    return [struct]


class Node:
    """One call of a layer (or op) on symbolic tensors.

    ``kind`` says how a plan step passes the inputs: "single" (one tensor, the common
    case), "list" (a multi-input layer such as Add gets one list), "args" (separate
    positional tensors, e.g. MultiHeadAttention(query, value)), "op" (a fastnn.ops
    function), "input" (an Input), "composite" (a traced call(); structure only)."""

    __slots__ = ("layer", "inputs", "outputs", "kind", "kwargs", "training", "args")

    def __init__(self, layer, inputs, kind, kwargs=None, training=None, args=None):
        self.layer, self.inputs, self.kind = layer, list(inputs), kind
        self.kwargs = kwargs or {}
        self.training = training
        self.args = args  # the call's arguments as given (composites: for re-calling)
        self.outputs: list[KerasTensor] = []

    def make_outputs(self, shapes) -> list:
        self.outputs = [KerasTensor(s, node=self, index=i) for i, s in enumerate(shapes)]
        return self.outputs

    def __repr__(self):
        return f"<Node {self.layer.name} ({self.kind})>"


def input_tensor(layer) -> KerasTensor:
    """The symbolic tensor an InputLayer stands for."""
    node = Node(layer, [], "input")
    (t,) = node.make_outputs([(None,) + tuple(layer.input_shape)])
    t.name = layer.name
    return t


def _check_built_shape(layer, want, got):
    if tuple(want) != tuple(got):
        raise ValueError(f"{layer.name}: this layer was built for inputs of shape "
                         f"{_full(want)} and cannot be called on shape {_full(got)}; a layer "
                         "called again shares its weights, so it needs the same input shape")


def _full(shape):
    if isinstance(shape, list):
        return [_full(s) for s in shape]
    return (None,) + tuple(shape)


def call_layer(layer, args, kwargs):
    """Record a call of a layer on symbolic tensors and return its symbolic output(s)."""
    if layer.is_composite:
        return _call_composite(layer, args, kwargs)
    training = kwargs.pop("training", None)
    kwargs.pop("mask", None)  # masks travel with the tensors
    tensors, kind, fwd_kwargs = layer._graph_inputs(args, kwargs)
    tensors = [as_tensor(t, layer.name) for t in tensors]
    batch = tensors[0].shape[0] if tensors[0].shape else None
    if any(not t.shape for t in tensors):
        raise ValueError(f"{layer.name}: cannot be called on a scalar")
    if kind == "list":
        shapes = [t.shape[1:] for t in tensors]
    else:
        shapes = tensors[0].shape[1:]
    if layer.built:
        _check_built_shape(layer, layer.input_shape, shapes)
        if kind == "args":
            layer._graph_check(tensors)
    else:
        layer._graph_build(tensors, shapes)
    node = Node(layer, tensors, kind, fwd_kwargs, training)
    if kind == "multi":  # several outputs, e.g. an RNN returning its final states
        outs = node.make_outputs([(batch,) + tuple(s) for s in layer.output_shapes])
        return outs if len(outs) > 1 else outs[0]
    (out,) = node.make_outputs([(batch,) + tuple(layer.output_shape)])
    return out


def _call_composite(layer, args, kwargs):
    if any(layer is t for t in _TRACING):
        chain = " -> ".join(t.name for t in _TRACING) + f" -> {layer.name}"
        raise ValueError(f"{layer.name}: its call() calls itself ({chain}); a model is a "
                         "graph without cycles")
    leaves = [x for x in flatten(list(args)) if isinstance(x, (KerasTensor, Variable))]
    inputs = [as_tensor(x, layer.name) for x in leaves]
    if not layer.built:
        first = args[0] if args else None
        shape = ([t.shape for t in flatten(first)] if isinstance(first, (list, tuple, dict))
                 else (first.shape if isinstance(first, KerasTensor) else None))
        layer._build_composite(shape)
    _TRACING.append(layer)
    try:
        result = layer.call(*args, **kwargs)
    finally:
        _TRACING.pop()
    node = Node(layer, inputs, "composite", kwargs=dict(kwargs), args=args)
    outs = []
    for o in flatten(result):
        if not isinstance(o, KerasTensor) or (o.node is None and o.var is None and o.const is None):
            raise TypeError(f"{layer.name}: call() must return tensors computed from its "
                            f"inputs, got {type(o).__name__}")
        if o.node is None or o.node.kind == "input" or any(o is i for i in inputs):
            o = _ops().identity(o)  # the composite needs outputs of its own
        outs.append(o)
    node.outputs = outs
    for o in outs:
        o.outer = node
    return _restructure(result, iter(outs))


def _restructure(struct, it):
    if isinstance(struct, (list, tuple)):
        return type(struct)(_restructure(s, it) for s in struct)
    if isinstance(struct, dict):
        return {k: _restructure(v, it) for k, v in struct.items()}
    return next(it)


# --- structure -----------------------------------------------------------------------
def leaf_nodes(outputs) -> list:
    """Every node the outputs depend on (through the tensors' producers), in topological
    order; raises on a cycle."""
    order, state = [], {}
    for out in outputs:
        _visit(out.node, order, state, [])
    return order


def _visit(node, order, state, path):
    if node is None:
        return
    st = state.get(id(node))
    if st == 2:
        return
    if st == 1:
        names = " -> ".join(n.layer.name for n in path[path.index(node):]) + f" -> {node.layer.name}"
        raise ValueError(f"the graph has a cycle: {names}")
    state[id(node)] = 1
    path.append(node)
    for t in node.inputs:
        _visit(t.node, order, state, path)
    path.pop()
    state[id(node)] = 2
    order.append(node)


def structure_nodes(outputs) -> list:
    """The nodes as the user wired them (a composite call is one node), in topological
    order."""
    order, seen = [], set()

    def visit(t):
        node = t.outer if t.outer is not None else t.node
        if node is None or id(node) in seen:
            return
        seen.add(id(node))
        for i in node.inputs:
            visit(i)
        order.append(node)

    for out in outputs:
        visit(out)
    return order


# --- execution -------------------------------------------------------------------------
def share_weights_copy(layer):
    """A copy of a built layer for a further node: the same Variables (so the same
    parameter and gradient views) and state arrays, buffers and saved tensors of its own."""
    memo = {}
    for sub in layer.all_layers():
        for v in sub._vars:
            memo[id(v)] = v
            for a in (v.value, v.grad):
                if a is not None:
                    memo[id(a)] = a
        for a in sub.state().values():
            memo[id(a)] = a
        memo[id(sub._bufs)] = {}
    clone = copy.deepcopy(layer, memo)
    clone._shared_from = layer
    return clone


class _LayerStep:
    __slots__ = ("layer", "i", "o", "training", "need_dx")
    multi = False  # several outputs: backward runs when any of them has a gradient

    def forward(self, vals, masks, training):
        if self.training is not None:
            training = self.training
        vals[self.o], masks[self.o] = self.layer.forward_masked(vals[self.i], training, masks[self.i])

    def backward(self, grads):
        dx = self.layer.backward(grads[self.o])
        if self.need_dx:
            _add(grads, self.i, dx)


class _ListStep:
    """A multi-input layer (Add, Concatenate, ...): forward(list) -> y, backward -> list."""
    __slots__ = ("layer", "ins", "o", "training", "need")
    multi = False

    def forward(self, vals, masks, training):
        if self.training is not None:
            training = self.training
        vals[self.o] = self.layer.forward([vals[i] for i in self.ins], training)
        masks[self.o] = _merge_masks([masks[i] for i in self.ins])

    def backward(self, grads):
        for i, need, dx in zip(self.ins, self.need, self.layer.backward(grads[self.o])):
            if need and dx is not None:
                _add(grads, i, dx)


class _ArgsStep(_ListStep):
    """A layer taking separate tensors, e.g. MultiHeadAttention(query, value, key)."""
    __slots__ = ("kwargs",)

    def forward(self, vals, masks, training):
        if self.training is not None:
            training = self.training
        ins = self.ins
        m = masks[ins[1]] if len(ins) > 1 else masks[ins[0]]
        kw = self.kwargs
        if m is not None and self.layer.supports_masking:
            kw = dict(kw, mask=m)
        vals[self.o] = self.layer.forward(*[vals[i] for i in ins], training=training, **kw)
        masks[self.o] = masks[ins[0]]

    def backward(self, grads):
        dxs = self.layer.backward(grads[self.o])
        if not isinstance(dxs, (tuple, list)):
            dxs = (dxs,)
        for i, need, dx in zip(self.ins, self.need, dxs):
            if need and dx is not None:
                _add(grads, i, dx)


class _OpStep(_ListStep):
    """A differentiable fastnn.ops function (autodiff.Op) of any number of tensors."""
    __slots__ = ()

    def forward(self, vals, masks, training):
        ins = self.ins
        vals[self.o] = self.layer.forward(*[vals[i] for i in ins])
        masks[self.o] = masks[ins[0]] if self.layer.keeps_mask else None

    def backward(self, grads):
        for i, need, dx in zip(self.ins, self.need, self.layer.backward(grads[self.o], self.need)):
            if need and dx is not None:
                _add(grads, i, dx)


class _OpStep1(_OpStep):
    """An op of one tensor: the common case, without the loops (Python time per op call
    is most of a small op's cost)."""
    __slots__ = ()

    def forward(self, vals, masks, training):
        i = self.ins[0]
        vals[self.o] = self.layer.forward(vals[i])
        masks[self.o] = masks[i] if self.layer.keeps_mask else None

    def backward(self, grads):
        dx = self.layer.backward(grads[self.o], self.need)[0]
        if dx is not None and self.need[0]:
            _add(grads, self.ins[0], dx)


class _OpStep2(_OpStep):
    """An op of two tensors (add, multiply, matmul, ...)."""
    __slots__ = ()

    def forward(self, vals, masks, training):
        a, b = self.ins
        vals[self.o] = self.layer.forward(vals[a], vals[b])
        masks[self.o] = masks[a] if self.layer.keeps_mask else None

    def backward(self, grads):
        ds, need = self.layer.backward(grads[self.o], self.need), self.need
        if need[0] and ds[0] is not None:
            _add(grads, self.ins[0], ds[0])
        if need[1] and ds[1] is not None:
            _add(grads, self.ins[1], ds[1])


class _MultiStep:
    """A layer with several tensors in or out: a recurrent layer given initial states or
    returning its final states. forward_multi(inputs, training, mask) -> outputs;
    backward_multi(output gradients, None where there is none) -> input gradients."""
    __slots__ = ("layer", "ins", "outs", "o", "training", "need")
    multi = True

    def forward(self, vals, masks, training):
        if self.training is not None:
            training = self.training
        ins, layer = self.ins, self.layer
        mask = masks[ins[0]]
        ys = layer.forward_multi([vals[i] for i in ins], training, mask)
        out_mask = layer.compute_mask(vals[ins[0]], mask)
        for k, (o, y) in enumerate(zip(self.outs, ys)):
            vals[o] = y
            masks[o] = out_mask if k == 0 else None

    def backward(self, grads):
        dxs = self.layer.backward_multi([grads[o] for o in self.outs])
        for i, need, dx in zip(self.ins, self.need, dxs):
            if need and dx is not None:
                _add(grads, i, dx)


class _FusedStep:
    """Inference of two single-input layers in a row, the first read only by the second,
    as one call fn(x, arg) (Layer.fuse_inference): e.g. Conv2D -> MaxPooling2D."""
    __slots__ = ("layer", "i", "o", "fn", "arg")

    def forward(self, vals, masks, training):
        vals[self.o] = self.fn(vals[self.i], self.arg)


def _fuse_for_inference(direct, out_slots):
    """The plan's (step, layer) list with each fusable pair of single-input layers replaced
    by one _FusedStep. A pair fuses when the second step reads only the first's output,
    nothing else reads that output, and neither step forces training=True."""
    readers: dict[int, int] = {}
    for st, _ in direct:
        for s in (st.ins if hasattr(st, "ins") else (st.i,)):
            readers[s] = readers.get(s, 0) + 1
    out, k = [], 0
    while k < len(direct):
        st, layer = direct[k]
        nxt = direct[k + 1] if k + 1 < len(direct) else (None, None)
        fused = None
        if (layer is not None and nxt[1] is not None and nxt[0].i == st.o
                and readers.get(st.o) == 1 and st.o not in out_slots
                and not st.training and not nxt[0].training):
            fused = layer.fuse_inference(nxt[1])
        if fused is None:
            out.append((st, layer))
            k += 1
            continue
        step = _FusedStep()
        step.layer, step.i, step.o = layer, st.i, nxt[0].o
        step.fn, step.arg = fused
        out.append((step, None))
        k += 2
    return out


def _inference_chain(direct_infer, in_slots, out_slots):
    """(layer, training, fn) per step when inference is a chain: one input, each step a
    single-input layer (or fused pair) reading the step before, the last one the only
    output. forward then runs x = fn(x, training) or layer.forward(x, training) with no
    slots: a saving that shows in small models at batch 1. None otherwise."""
    if direct_infer is None or len(in_slots) != 1 or len(out_slots) != 1:
        return None
    s, chain = in_slots[0], []
    for st, layer in direct_infer:
        if type(st) is _FusedStep:
            item = (st.layer, st.arg, st.fn)
        elif type(st) is _LayerStep and layer is not None:
            item = (layer, bool(st.training), None)
        else:
            return None
        if st.i != s:
            return None
        s = st.o
        chain.append(item)
    return chain if s == out_slots[0] else None


def fresh_inference_output(layer) -> bool:
    """Whether layer.forward(x, training=False) returns a new array: the promise of the
    class that defines the forward in use."""
    for cls in type(layer).__mro__:
        if "forward" in vars(cls):
            return bool(vars(cls).get("fresh_inference_output", False))
    return False


def _add(grads, i, g):
    """Accumulate gradient g into slot i: the first one is taken as is (it belongs to the
    plan from now on), later ones are added into it in place."""
    cur = grads[i]
    if cur is None:
        grads[i] = g
    else:
        np.add(cur, g.reshape(cur.shape), out=cur)


def _merge_masks(masks):
    present = [m for m in masks if m is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    out = present[0].astype(bool)
    for m in present[1:]:
        out = out & m.astype(bool)
    return out.view(np.uint8)


class Plan:
    """The executable form of the graph between `inputs` and `outputs`."""

    def __init__(self, inputs, outputs, where: str = "model", grad_inputs=()):
        self.where = where
        nodes = leaf_nodes(outputs)
        slot: dict[int, int] = {}
        in_ids = {id(t) for t in inputs}
        self.in_slots = []
        for t in inputs:
            slot[id(t)] = len(slot)
            self.in_slots.append(slot[id(t)])
        self.consts, self.params = [], []
        requires = [i in grad_inputs for i in range(len(slot))]

        def slot_of(t):
            s = slot.get(id(t))
            if s is not None:
                return s
            if t.node is not None and t.node.kind == "input":
                raise ValueError(f"{where}: an output depends on the input {t.name!r} "
                                 f"{t.shape}, which is not among the model's inputs "
                                 f"{[i.name for i in inputs]} (the graph is disconnected)")
            s = slot[id(t)] = len(slot)
            requires.append(False)
            if t.const is not None:
                self.consts.append((s, t.const))
            elif t.var is not None:
                self.params.append((s, t.var))
                requires[s] = t.var.trainable and t.var.layer.trainable
            return s

        self.steps, self.layers, used = [], [], {}
        for node in nodes:
            if node.kind == "input":
                if id(node.outputs[0]) not in in_ids:
                    slot_of(node.outputs[0])  # raises: an input that was not given
                continue
            ins = [slot_of(t) for t in node.inputs]
            outs = [slot_of(t) for t in node.outputs]
            layer = node.layer
            if node.kind != "op":
                n = used.get(id(layer), 0)
                used[id(layer)] = n + 1
                if n:
                    layer = share_weights_copy(layer)
                self.layers.append(layer)
            trainable_here = node.kind != "op" and layer.trainable and any(
                v.trainable for sub in layer.all_layers() for v in sub._vars)
            need = [requires[i] for i in ins]
            for o in outs:
                requires[o] = any(need) or trainable_here
            if node.kind != "op":
                layer.need_input_grad = any(need)
            self.steps.append(_make_step(node, layer, ins, outs, need))
        self.out_slots = [slot_of(t) for t in outputs]
        # Outputs that inference makes afresh on every call (Layer.fresh_inference_output)
        # and that appear once among the outputs: predict returns them without a copy.
        producer = {st.o: st for st in self.steps}
        self.fresh_outs = []
        for s in self.out_slots:
            st = producer.get(s)
            self.fresh_outs.append(
                type(st) is _LayerStep and st.training is not True
                and self.out_slots.count(s) == 1 and fresh_inference_output(st.layer))
        self.all_fresh = all(self.fresh_outs)
        self.n_slots = len(slot)
        self.backward_steps = [st for st in reversed(self.steps) if requires[st.o]]
        self._vals = [None] * self.n_slots
        self._masks = [None] * self.n_slots
        for s, c in self.consts:
            self._vals[s] = c
        self._need_flags = [(l, l.need_input_grad) for l in self.layers]
        # When no layer creates a padding mask, every mask is None: forward then calls
        # each single-tensor layer's forward directly (forward_masked and compute_mask
        # would only pass None along): a saving that shows in small models at batch 1.
        self.direct = None
        if not any(layer.creates_mask() for layer in self.layers):
            self.direct = [(st, st.layer if type(st) is _LayerStep else None)
                           for st in self.steps]
        # Inference runs fusable pairs of layers as one kernel (Conv2D -> MaxPooling2D).
        self.direct_infer = self.direct
        if self.direct is not None:
            self.direct_infer = _fuse_for_inference(self.direct, self.out_slots)
        self.chain_infer = None
        if not self.params and not self.consts:
            self.chain_infer = _inference_chain(self.direct_infer, self.in_slots, self.out_slots)

    def activate(self):
        """Set each layer's need_input_grad for this plan (a layer can sit in several
        models' plans, e.g. an encoder trained alone and inside a bigger model)."""
        for layer, flag in self._need_flags:
            layer.need_input_grad = flag

    def forward(self, xs, training: bool):
        chain = self.chain_infer
        if chain is not None and not training:
            x = xs[0]
            for layer, tr, fn in chain:
                x = layer.forward(x, tr) if fn is None else fn(x, tr)
            return [x]
        vals, masks = self._vals, self._masks
        for s, x in zip(self.in_slots, xs):
            vals[s] = x
            masks[s] = None
        for s, v in self.params:
            vals[s] = v.value
        if self.direct is None:
            for st in self.steps:
                st.forward(vals, masks, training)
        else:
            for st, layer in (self.direct if training else self.direct_infer):
                if layer is None:
                    st.forward(vals, masks, training)
                else:
                    vals[st.o] = layer.forward(vals[st.i], training if st.training is None
                                               else st.training)
        return [vals[s] for s in self.out_slots]

    def backward(self, douts, want_inputs: bool = False):
        """Gradients of the outputs in; parameter gradients added into the flat buffer.
        With want_inputs, returns the gradients of the inputs (of those in grad_inputs)."""
        grads = [None] * self.n_slots
        for s, v in self.params:
            grads[s] = v.grad
        for s, d in zip(self.out_slots, douts):
            if d is not None:
                _add(grads, s, d)
        for st in self.backward_steps:
            if grads[st.o] is not None or st.multi:
                st.backward(grads)
        if want_inputs:
            return [grads[s] for s in self.in_slots]

    def output_mask(self, k: int):
        return self._masks[self.out_slots[k]]


def _make_step(node, layer, ins, outs, need):
    kind, out = node.kind, outs[0]
    if kind == "multi":
        st = _MultiStep()
        st.ins, st.need, st.outs = ins, need, outs
    elif kind == "single":
        st = _LayerStep()
        st.i, st.need_dx = ins[0], need[0]
    else:
        if kind == "op" and len(ins) <= 2:
            st = (_OpStep1 if len(ins) == 1 else _OpStep2)()
        else:
            st = {"list": _ListStep, "args": _ArgsStep, "op": _OpStep}[kind]()
        st.ins, st.need = ins, need
        if kind == "args":
            st.kwargs = node.kwargs
    st.layer, st.o = layer, out
    st.training = node.training
    return st
