"""Models: Sequential, Functional (``Model(inputs, outputs)``) and subclassed
(``class Net(fastnn.Model)`` with ``call``), with compile, fit, evaluate, predict, the
``*_on_batch`` calls, an overridable ``train_step``, save and load_model.

All three build the same graph (see graph.py) and run it through one Plan. One flat
float32 buffer holds every parameter of a model and another every gradient; layers hold
views into them. A training step is: the plan's forward, one fused loss kernel per
output, the plan's backward, and one optimizer kernel over the whole buffer. In the
backward, Dense layers overwrite their gradients on their first write (see
Layer.overwrites_grads); every other gradient is zeroed before the pass and added into.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import time
import warnings

import numpy as np

from . import callbacks as callbacks_mod
from . import distribute
from . import _core, graph, io
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optim as optim_mod
from . import quantization
from .graph import KerasTensor, Plan, Variable
from .layers.base import (Layer, bind_variable, grads_written, layer_class, new_grad_pass,
                          overwrites_grads, register)
from .layers.core import Activated, InputLayer
from .layers.quantized import QuantKernels
from .ops._util import as_f32, from_any

FORMAT_VERSION = "1"

_seed_source = np.random.default_rng()
_BIND_EPOCH = [0]    # bumped whenever a model (re)binds layers to its flat buffers
_ACTIVE_PLAN = [None]  # the plan whose need_input_grad flags the layers carry now


def set_random_seed(seed: int) -> None:
    """Seed the generator behind weight initialisation and unseeded fits (like Keras)."""
    global _seed_source
    _seed_source = np.random.default_rng(seed)


def _draw_seed() -> int:
    return int(_seed_source.integers(0, 2**63 - 1))


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None):
    """A symbolic input tensor (Keras' Input): the start of a Functional model, or the
    first entry of a Sequential. `shape` excludes the batch axis."""
    if batch_shape is not None:
        shape = tuple(batch_shape)[1:]
    if shape is None:
        raise ValueError("Input: shape is required, e.g. Input(shape=(28, 28))")
    if dtype not in (None, "float32", "int32", "int64", np.float32, np.int32, np.int64):
        raise ValueError(f"Input: unsupported dtype {dtype!r}")
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if any(s is None for s in shape):
        raise ValueError(f"Input: every size but the batch axis must be known, got shape {tuple(shape)}")
    return graph.input_tensor(InputLayer(shape=shape, name=name))


class Model(Layer):
    """A model: ``Model(inputs, outputs)`` (Functional API) or a subclass defining
    ``__init__`` (creating layers) and ``call(inputs, training=False)``."""

    def __init__(self, inputs=None, outputs=None, name: str | None = None,
                 seed: int | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.seed = seed
        self.stop_training = False
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self._compile_args = None
        self._ready = False
        self._graph_in = self._graph_out = None
        self._in_struct = self._out_struct = None
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError(f"{self.name}: a Functional model needs both inputs and outputs")
            self._set_graph(inputs, outputs)

    # --- structure --------------------------------------------------------------------
    @property
    def is_functional(self) -> bool:
        return type(self).call is Model.call

    def _set_graph(self, inputs, outputs) -> None:
        """Check and keep the symbolic inputs and outputs (Functional API)."""
        ins, outs = graph.flatten(inputs), graph.flatten(outputs)
        for t in ins:
            if not isinstance(t, KerasTensor) or t.node is None or t.node.kind != "input":
                raise TypeError(f"{self.name}: inputs must be tensors made by fastnn.Input, got {t!r}")
        if len({id(t) for t in ins}) != len(ins):
            raise ValueError(f"{self.name}: an input is given twice")
        for t in outs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"{self.name}: outputs must be symbolic tensors (layer outputs), "
                                f"got {type(t).__name__}")
            if not t.batched:
                raise ValueError(f"{self.name}: output {t!r} has no batch axis")
        self._in_struct = list(inputs.keys()) if isinstance(inputs, dict) else (
            "list" if isinstance(inputs, (list, tuple)) else "single")
        self._out_struct = list(outputs.keys()) if isinstance(outputs, dict) else (
            "list" if isinstance(outputs, (list, tuple)) else "single")
        self._graph_in, self._graph_out = ins, outs
        self._in_tail = None  # until _make_plans
        self._trace_plans = None
        Plan(ins, outs, self.name)  # checks: cycles, disconnected inputs
        self.built = True

    @property
    def inputs(self):
        return self._graph_in

    @property
    def outputs(self):
        return self._graph_out

    @property
    def input_names(self) -> list[str]:
        if isinstance(self._in_struct, list):
            return list(self._in_struct)
        return [t.name for t in self._graph_in]

    @property
    def output_names(self) -> list[str]:
        if isinstance(self._out_struct, list):
            return list(self._out_struct)
        names = []
        for t in self._graph_out:
            node = t.outer or t.node
            names.append(node.layer.name)
        return names

    @property
    def input_shape(self):
        if self._graph_in is None:
            return self.__dict__.get("_declared_input_shape")
        shapes = [t.shape[1:] for t in self._graph_in]
        return shapes[0] if len(shapes) == 1 else shapes

    @input_shape.setter
    def input_shape(self, value):
        self.__dict__["_declared_input_shape"] = value

    @property
    def output_shape(self):
        if self._graph_out is None:
            return None
        shapes = [t.shape[1:] for t in self._graph_out]
        return shapes[0] if len(shapes) == 1 else shapes

    @output_shape.setter
    def output_shape(self, value):
        pass  # derived from the graph

    @property
    def layers(self) -> list[Layer]:
        """The layers as wired at this model's level (nested models and composite
        layers count as one), InputLayers first, each once."""
        self._require_graph("layers")
        seen, out = set(), []
        for node in graph.structure_nodes(self._graph_out):
            if node.kind != "op" and id(node.layer) not in seen:
                seen.add(id(node.layer))
                out.append(node.layer)
        return out

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        layers = self.layers
        if index is not None:
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{self.name}: no layer named {name!r}; layers: {[l.name for l in layers]}")

    def call(self, inputs, training=None):
        """Functional models: apply the recorded graph to new inputs (a model used as a
        layer inside another model shares its layers and weights)."""
        self._require_graph("call")
        given = graph.flatten(inputs)
        if len(given) != len(self._graph_in):
            raise ValueError(f"{self.name}: expects {len(self._graph_in)} inputs, got {len(given)}")
        env = {}
        for t, g in zip(self._graph_in, given):
            g = graph.as_tensor(g, self.name)
            if tuple(g.shape[1:]) != tuple(t.shape[1:]):
                raise ValueError(f"{self.name}: input {t.name!r} expects shape {t.shape}, got {g.shape}")
            env[id(t)] = g
        for node in graph.structure_nodes(self._graph_out):
            if node.kind == "input":
                continue
            outs = _recall(node, env, training)
            for t, o in zip(node.outputs, outs):
                env[id(t)] = o
        outs = [env[id(t)] for t in self._graph_out]
        return outs[0] if self._out_struct == "single" else (
            dict(zip(self._out_struct, outs)) if isinstance(self._out_struct, list) else outs)

    def _require_graph(self, op):
        if self._graph_out is None:
            raise ValueError(f"{op}: the model is not built yet; call it on data (fit, predict) "
                             "or build(input_shape) first")

    # --- building ---------------------------------------------------------------------
    def build(self, input_shape=None) -> None:
        """Trace a subclassed model's call() for inputs of `input_shape` (per sample, or
        with a leading None for the batch axis; a list for several inputs) and create its
        parameters."""
        if self._graph_out is None:
            if input_shape is None:
                raise ValueError(f"{self.name}: build needs the input shape")
            self._trace(input_shape)
        self._finalize()

    def _trace(self, input_shape) -> None:
        shapes = _sample_shapes(input_shape)
        ins = [Input(s, name=f"input_{i}" if len(shapes) > 1 else "input") for i, s in enumerate(shapes)]
        arg = ins[0] if len(ins) == 1 and not _is_shape_list(input_shape) else ins
        takes_training = "training" in inspect.signature(self.call).parameters
        plans_out = {}
        for mode in ((True, False) if takes_training else (None,)):
            graph._TRACING.append(self)
            try:
                out = self.call(arg, training=mode) if takes_training else self.call(arg)
            finally:
                graph._TRACING.pop()
            plans_out[mode] = out
        out = plans_out[True if takes_training else None]
        self._set_graph(arg, _own_outputs(out))
        if takes_training:
            self._trace_plans = graph.flatten(_own_outputs(plans_out[False]))

    def _finalize(self) -> None:
        """Bind every weight to one flat buffer (trainable first), initialise new ones, and
        make the plans."""
        self._require_graph("build")
        plan = Plan(self._graph_in, self._graph_out, self.name)
        leaf = []
        seen = set()
        for layer in plan.layers:
            base = getattr(layer, "_shared_from", layer)
            if id(base) not in seen:
                seen.add(id(base))
                leaf.append(base)
        variables, vseen = [], set()
        for layer in leaf:
            for v in layer.variables_list():
                if id(v) not in vseen:
                    vseen.add(id(v))
                    variables.append(v)
        for _, v in plan.params:
            if id(v) not in vseen:
                vseen.add(id(v))
                variables.append(v)
        names = {}
        for layer in leaf:
            if layer.name in names and names[layer.name] is not layer:
                raise ValueError(f"{self.name}: two different layers are named {layer.name!r}; "
                                 "layer names must be unique in a model")
            names[layer.name] = layer
        trainable = [v for v in variables if v.trainable and v.layer.trainable]
        frozen = [v for v in variables if not (v.trainable and v.layer.trainable)]
        self._leaf_layers, self._variables = leaf, trainable + frozen
        self._n_trainable = sum(v.size for v in trainable)
        fresh = [layer for layer in leaf if any(v.value is None for v in layer.variables_list())
                 or not layer.variables_list() and not getattr(layer, "_initialized", False)]
        fresh_params = [v for _, v in plan.params if v.value is None]
        self._bind(copy_old=True)
        rng = np.random.default_rng(self.seed if self.seed is not None else _draw_seed())
        for layer in leaf:
            if layer in fresh:
                layer.initialize(rng)
                layer._initialized = True
        for v in fresh_params:
            v.value[...] = v.initializer(v.shape, rng)
        self._make_plans()
        self._ready = True
        if self.optimizer is not None:
            self.optimizer.build(self._n_trainable)

    def _bind(self, copy_old: bool) -> None:
        total = sum(v.size for v in self._variables)
        params = np.zeros(total, np.float32)
        grads = np.zeros(total, np.float32)
        offset = 0
        for v in self._variables:
            old = v.value
            offset = bind_variable(v, params, grads, offset)
            if copy_old and old is not None:
                v.value[...] = old
        self._params, self._grads = params, grads
        _BIND_EPOCH[0] += 1
        self._bind_epoch = _BIND_EPOCH[0]

    def _make_plans(self) -> None:
        # One input's shape past the batch axis, for _prepare_x's shortcut.
        self._in_tail = self._graph_in[0].shape[1:] if len(self._graph_in) == 1 else None
        self._plan_infer = None
        if self._trace_plans is not None:
            self._plan_infer = Plan(self._graph_in, self._trace_plans, self.name)
        self._plan_train = Plan(self._graph_in, self._graph_out, self.name)
        if self._plan_infer is None:
            self._plan_infer = self._plan_train
        _ACTIVE_PLAN[0] = self._plan_train  # its constructor set the layers' flags

    def _ensure_ready(self, op: str) -> None:
        if not self._ready:
            self._finalize()
            return
        if self._bind_epoch != _BIND_EPOCH[0]:
            # Another model bound some of these layers since: take them back (values kept).
            if any(v.value is None or v.value.base is not self._params for v in self._variables):
                self._bind(copy_old=True)
                self._make_plans()
            self._bind_epoch = _BIND_EPOCH[0]

    def count_params(self) -> int:
        self._require_ready("count_params")
        return int(self._params.size)

    @property
    def weights(self) -> list[Variable]:
        if not self._ready:
            return []
        return list(self._variables)

    @property
    def trainable_weights(self) -> list[Variable]:
        if not self._ready:
            return []
        return [v for v in self._variables if v.trainable and v.layer.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        if not self._ready:
            return []
        return [v for v in self._variables if not (v.trainable and v.layer.trainable)]

    trainable_variables = trainable_weights

    def summary(self, print_fn=print) -> None:
        """Print each layer (as wired at this level) with its output shape, parameter count
        and, for a graph with branches, the layers it is connected to."""
        self._require_ready("summary")
        nodes = [n for n in graph.structure_nodes(self._graph_out)]
        chain = all(len(n.inputs) <= 1 for n in nodes) and len(self._graph_in) == 1
        counted, rows = set(), []
        for n in nodes:
            layer = n.layer
            if n.kind == "op":
                typ = f"{type(layer).__name__} op"
                params = 0
            else:
                typ = type(layer).__name__
                modes = {la.quantization for la in layer.all_layers()
                         if isinstance(la, QuantKernels) and la.quantization}
                if modes:
                    typ += ", int8 " + "/".join(sorted(modes))
                params = 0 if id(layer) in counted else (
                    _inner_param_count(n) if n.kind == "composite" else _param_count(layer))
                counted.add(id(layer))
            shape = ", ".join(str(o.shape) for o in n.outputs)
            conn = ", ".join(_producer_name(t) for t in n.inputs)
            rows.append((f"{layer.name} ({typ})", shape, f"{params:,}", conn))
        cols = ["Layer (type)", "Output Shape", "Param #"] + ([] if chain else ["Connected to"])
        widths = [max(len(cols[i]), *(len(r[i]) for r in rows)) + 2 for i in range(len(cols))]
        line = "-" * (sum(widths) + 2)

        def fmt(r):
            return "".join(f"{c:>{w - 2}}  " if i == 2 else f"{c:<{w}}" for i, (c, w) in enumerate(zip(r, widths)))

        out = [f'Model: "{self.name}"', line, fmt(cols), "=" * len(line)]
        out += [fmt(r[:len(cols)]) for r in rows]
        n_train = self._n_trainable
        out += ["=" * len(line), f"Total params: {self._params.size:,}",
                f"Trainable params: {n_train:,}", f"Non-trainable params: {self._params.size - n_train:,}"]
        qlayers = [la for leaf in self._leaf_layers for la in leaf.all_layers()
                   if isinstance(la, QuantKernels) and la.quantization]
        if qlayers:
            n8 = sum(la.quantized_count() for la in qlayers)
            out += [f"Int8 weights: {n8:,} in {len(qlayers)} quantized layers "
                    f"(float32 params above: biases and unquantized layers)",
                    f"Weights in memory: {quantization.model_bytes(self):,} bytes"]
        out.append(line)
        print_fn("\n".join(out))

    # --- training configuration ------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None, loss_weights=None) -> None:
        """Choose the optimizer, the loss (one, or one per output as a list or a dict by
        output name), loss_weights and metrics (names or objects, as in Keras)."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = optim_mod.get(optimizer)
        self._loss_spec, self._weights_spec, self._metrics_spec = loss, loss_weights, metrics
        self.loss = loss if isinstance(loss, (list, dict)) else losses_mod.get(loss)
        self.metrics = []
        self._compile_args = {"loss": _loss_config(self.loss), "metrics": _metric_names(metrics),
                              "loss_weights": loss_weights}
        if not self._ready and (self._graph_out is not None or self.input_shape is not None):
            self.build(self.input_shape)
        if self._graph_out is not None:
            self._resolve_outputs()
        if self._ready:
            self.optimizer.build(self._n_trainable)

    def _resolve_outputs(self) -> None:
        """One loss, weight and metric list per output, once the outputs are known."""
        names = self.output_names
        k = len(names)
        self._losses = [losses_mod.get(l) for l in _per_output(self._loss_spec, names, "loss")]
        w = self._weights_spec
        self._loss_weights = [1.0] * k if w is None else [float(x) for x in _per_output(w, names, "loss_weights")]
        spec = self._metrics_spec
        if isinstance(spec, dict):
            per = [_as_list(spec.get(n)) for n in names]
        elif k > 1 and isinstance(spec, (list, tuple)) and spec and all(isinstance(s, (list, tuple)) for s in spec):
            if len(spec) != k:
                raise ValueError(f"compile: metrics has {len(spec)} lists for {k} outputs")
            per = [list(s) for s in spec]
        else:
            per = [_as_list(spec)] * k
        self._out_metrics = []
        for i, ms in enumerate(per):
            objs = [metrics_mod.get(m) for m in ms]
            if k > 1:
                for m in objs:
                    m.name = f"{names[i]}_{m.name}"
            self._out_metrics.append(objs)
        self.metrics = [m for ms in self._out_metrics for m in ms]
        self.loss = self._losses[0] if k == 1 else self._losses

    def _configure_output(self):
        """Decide, per output, whether its last layer hands logits to a fused loss kernel:
        a softmax (sigmoid) layer whose output only the loss reads."""
        self._ensure_ready("compile")
        self._fused, self._logits = [], []
        self._fusers = []
        for k, loss in enumerate(self._losses):
            fused = False
            for plan in {id(p): p for p in (self._plan_train, self._plan_infer)}.values():
                st = _producer_step(plan, k)
                last = st.layer if st is not None and hasattr(st, "need_dx") else None
                if isinstance(last, Activated):
                    if loss.from_logits and last.activation in ("softmax", "sigmoid"):
                        warnings.warn(f"loss has from_logits=True but the last layer applies "
                                      f"{last.activation}; the loss will treat probabilities as "
                                      "logits", stacklevel=3)
                    ok = (loss.fusable is not None and last.activation == loss.fusable
                          and not loss.from_logits and _only_read_by_loss(plan, k))
                    if ok:
                        self._fusers.append(last)
                    fused = ok
            self._fused.append(fused)
            self._logits.append(fused or loss.from_logits)

    @contextlib.contextmanager
    def _emitting_logits(self, on: bool = True):
        """While inside, fused output layers hand logits to the loss (on=True) or apply
        their activation (on=False, for predict); on exit the previous setting comes back,
        so an evaluate() or predict() inside fit() (validation, a callback) leaves fit's
        alone."""
        fusers = getattr(self, "_fusers", [])
        before = [f.emit_logits for f in fusers]
        for f in fusers:
            f.emit_logits = bool(on)
        try:
            yield
        finally:
            for f, b in zip(fusers, before):
                f.emit_logits = b

    # --- data -----------------------------------------------------------------------
    def _prepare_x(self, x, op: str) -> list:
        """The inputs as a list of float32 arrays, one per model input, checked."""
        # The common case first, at the cost of a few comparisons (which shows in predict
        # at batch 1): one C-contiguous float32 array of the right shape, all finite, for
        # a one-input model. Anything else, bad input included, takes the general path
        # below, which says what is wrong.
        tail = self.__dict__.get("_in_tail")
        if (tail is not None and type(x) is np.ndarray and x.dtype == np.float32 and x.ndim
                and x.shape[0] and x.shape[1:] == tail and x.flags.c_contiguous
                and _core.all_finite(x)):
            if not self._ready or self._bind_epoch != _BIND_EPOCH[0]:
                self._ensure_ready(op)
            return [x]
        if self._graph_out is None:
            self._build_for(x, op)
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"{op}: input {missing[0]!r} is missing from 'x' (the model's "
                                 f"inputs are {names}, got keys {sorted(x)})")
            xs = [x[n] for n in names]
        elif isinstance(x, (list, tuple)):
            if len(x) != len(names):
                raise ValueError(f"{op}: the model has {len(names)} inputs {names}, got a list "
                                 f"of {len(x)} arrays in 'x'")
            xs = list(x)
        else:
            if len(names) != 1:
                raise ValueError(f"{op}: the model has {len(names)} inputs {names}; give 'x' as a "
                                 "list or a dict of arrays")
            xs = [x]
        out = []
        single = len(names) == 1
        for name, t, a in zip(names, self._graph_in, xs):
            key = "x" if single else f"x[{name!r}]"
            a = as_f32(a, op, key)  # NumPy, DLPack (torch, JAX) or buffer-protocol inputs
            if a.ndim == 0 or a.shape[0] == 0 or a.shape[1:] != t.shape[1:] \
                    or not np.isfinite(a).all():
                _bad_input(op, "'x'" if single else key, a, t.shape[1:])
            out.append(a)
        if any(len(a) != len(out[0]) for a in out):
            raise ValueError(f"{op}: the inputs have different numbers of samples "
                             f"{[len(a) for a in out]}")
        self._ensure_ready(op)
        return out

    def _build_for(self, x, op):
        """Build a subclassed model from the first data it sees."""
        if isinstance(x, dict):
            raise ValueError(f"{op}: build the model (build(input_shape)) before passing a dict")
        if isinstance(x, (list, tuple)):
            self.build([np.shape(a)[1:] for a in x])
        else:
            self.build(np.shape(x)[1:])

    def _prepare_y(self, y, op: str, n: int) -> list:
        names = self.output_names
        if isinstance(y, dict):
            missing = [k for k in names if k not in y]
            if missing:
                raise ValueError(f"{op}: targets for output {missing[0]!r} are missing from 'y' "
                                 f"(outputs: {names})")
            ys = [y[k] for k in names]
        elif len(names) > 1:
            if not isinstance(y, (list, tuple)) or len(y) != len(names):
                raise ValueError(f"{op}: the model has {len(names)} outputs {names}; give 'y' as "
                                 "a list or dict with one array per output")
            ys = list(y)
        else:
            ys = [y]
        out = []
        for k, (loss, t, a) in enumerate(zip(self._losses, self._graph_out, ys)):
            if not isinstance(a, np.ndarray) and hasattr(a, "__dlpack__"):
                a = from_any(a, op, "y" if len(names) == 1 else f"y[{names[k]!r}]")
            a = loss.prepare_targets(a, t.shape[1:], op)
            if len(a) != n:
                raise ValueError(f"{op}: 'x' has {n} samples but 'y' has {len(a)}")
            out.append(a)
        return out

    def _prepare_xy(self, x, y, op: str):
        xs = self._prepare_x(x, op)
        if self.loss is None:
            raise ValueError(f"{op}: call compile(optimizer=..., loss=...) first")
        if not hasattr(self, "_losses"):
            self._resolve_outputs()
        return xs, self._prepare_y(y, op, len(xs[0]))

    def _buf(self, key, shape, dtype=np.float32):
        bufs = self.__dict__.setdefault("_mbufs", {})
        k = (key, shape)
        b = bufs.get(k)
        if b is None:
            b = bufs[k] = np.empty(shape, dtype)
        return b

    # --- one step -------------------------------------------------------------------
    def _run(self, xs, training: bool) -> list:
        if not training:
            return self._plan_infer.forward(xs, False)
        plan = self._plan_train
        if _ACTIVE_PLAN[0] is not plan:
            plan.activate()
            _ACTIVE_PLAN[0] = plan
        return plan.forward(xs, True)

    def _forward(self, x, training: bool):
        outs = self._run(x if isinstance(x, list) else [x], training)
        return outs[0] if len(outs) == 1 else outs

    def _train_step(self, xs, ys):
        loss_sum, preds = self._loss_and_grads(xs, ys)
        n = self._n_trainable
        self.optimizer._step(self._params[:n], self._grads[:n])
        return loss_sum, preds

    def _grad_zeroing(self):
        """(ranges, by_layer): the [a, b) ranges of the gradient buffer to zero before a
        backward pass (what frozen variables and the layers that add into their gradients
        own), and for each layer that overwrites its gradients (overwrites_grads) the
        ranges to zero after the pass if it did not run."""
        key = self.__dict__.get("_bind_epoch")
        cached = self.__dict__.get("_grad_zeroing_cache")
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        ranges, by_layer, offset = [], {}, 0
        for v in self._variables:
            span = (offset, offset + v.size)
            offset += v.size
            layer = v.layer
            if v.trainable and isinstance(layer, Layer) and \
                    layer.trainable and overwrites_grads(layer):
                by_layer.setdefault(id(layer), (layer, []))[1].append(span)
            elif ranges and ranges[-1][1] == span[0]:
                ranges[-1] = (ranges[-1][0], span[1])
            else:
                ranges.append(span)
        by_layer = list(by_layer.values())
        self._grad_zeroing_cache = (key, ranges, by_layer)
        return ranges, by_layer

    def _backward(self, douts):
        """The training plan's backward from the outputs' gradients douts into the flat
        gradient buffer: the gradients that layers add into are zeroed first, those of
        layers that overwrite theirs (overwrites_grads) are zeroed after if the layer did
        not run."""
        new_grad_pass()
        grads = self._grads
        ranges, by_layer = self._grad_zeroing()
        for a, b in ranges:
            grads[a:b].fill(0.0)
        self._plan_train.backward(douts)
        for layer, spans in by_layer:
            if not grads_written(layer):
                for a, b in spans:
                    grads[a:b].fill(0.0)

    def _loss_and_grads(self, xs, ys, scale: float = 1.0):
        """Forward, loss and backward for one batch: the gradient of the (weighted) mean
        loss, times `scale`, lands in the flat gradient buffer. Returns (sum of losses,
        predictions)."""
        if not isinstance(xs, list):
            xs, ys = [xs], [ys]
        outs = self._run(xs, True)
        total, preds, douts = 0.0, [], []
        per = self.__dict__.setdefault("_out_losses", [0.0] * len(outs))
        for k, out in enumerate(outs):
            dout = self._buf(("dout", k), out.shape)
            dout.fill(0.0)
            probs = self._buf(("probs", k), out.shape) if self._fused[k] else None
            loss_sum = self._losses[k].forward_backward(dout, probs, out, ys[k], self._logits[k])
            w = self._loss_weights[k]
            if w * scale != 1.0:
                dout *= np.float32(w * scale)
            per[k] = loss_sum
            total += w * loss_sum
            douts.append(dout)
            preds.append(probs if probs is not None else out)
        self._backward(douts)
        return total, (preds[0] if len(preds) == 1 else preds)

    def _eval_batch(self, xs, ys):
        if not isinstance(xs, list):
            xs, ys = [xs], [ys]
        outs = self._run(xs, False)
        total, preds = 0.0, []
        per = self.__dict__.setdefault("_out_losses", [0.0] * len(outs))
        for k, out in enumerate(outs):
            probs = np.empty(out.shape, np.float32) if self._fused[k] else None
            loss_sum = self._losses[k].forward_backward(None, probs, out, ys[k], self._logits[k])
            per[k] = loss_sum
            total += self._loss_weights[k] * loss_sum
            preds.append(probs if probs is not None else out)
        return total, (preds[0] if len(preds) == 1 else preds)

    def _update_metrics(self, ys, preds):
        if len(self._out_metrics) == 1:
            for m in self._out_metrics[0]:
                m.update_batch(ys[0], preds)
            return
        for ms, yk, pk in zip(self._out_metrics, ys, preds):
            for m in ms:
                m.update_batch(yk, pk)

    # --- Keras' step API ----------------------------------------------------------------
    def train_step(self, data) -> dict:
        """One training step on a batch ``data = (x, y)``; returns the logs. Override it
        for a custom step (see docs/models.md): ``self(x, training=True)`` inside a
        ``fastnn.GradientTape``, ``self.compute_loss``, ``tape.gradient`` and
        ``self.optimizer.apply_gradients``."""
        x, y = data[0], data[1]
        if not isinstance(x, list):
            x, y = [x], [y]
        loss_sum, pred = self._train_step(x, y)
        self._update_metrics(y, pred)
        n = len(x[0])
        return {"loss": loss_sum / n, **{m.name: m.result() for m in self.metrics}}

    def test_step(self, data) -> dict:
        x, y = data[0], data[1]
        if not isinstance(x, list):
            x, y = [x], [y]
        loss_sum, pred = self._eval_batch(x, y)
        self._update_metrics(y, pred)
        return {"loss": loss_sum / len(x[0]), **{m.name: m.result() for m in self.metrics}}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        """The compiled (weighted) loss of y_pred against y, as Keras' compute_loss; inside
        a GradientTape it is differentiable (tape.gradient)."""
        from .tape import loss_value
        if sample_weight is not None:
            raise NotImplementedError("compute_loss: sample_weight is not supported")
        if self.loss is None:
            raise ValueError("compute_loss: call compile(optimizer=..., loss=...) first")
        if y_pred is None:
            y_pred = self(x, training=True)
        preds = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
        if isinstance(y_pred, dict):
            preds = [y_pred[n] for n in self.output_names]
        n = len(preds[0])
        ys = self._prepare_y(y, "compute_loss", n)
        total = None
        for loss, w, yk, pk in zip(self._losses, self._loss_weights, ys, preds):
            term = loss_value(loss, yk, pk) * w
            total = term if total is None else total + term
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> dict:
        """Update the compiled metrics with one batch and return their results."""
        preds = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
        ys = self._prepare_y(y, "compute_metrics", len(preds[0]))
        self._update_metrics(ys, preds[0] if len(preds) == 1 else preds)
        return {m.name: m.result() for m in self.metrics}

    def reset_metrics(self) -> None:
        for m in self.metrics:
            m.reset()

    def _batch_data(self, x, y, op):
        """(x, y) of one batch as train_step/test_step take it: arrays for a one-input,
        one-output model, lists otherwise."""
        self._require_compiled(op)
        xs, ys = self._prepare_xy(x, y, op)
        self._configure_output()
        self.reset_metrics()
        single = len(xs) == 1 and len(ys) == 1
        return (xs[0], ys[0]) if single else (xs, ys)

    def train_on_batch(self, x, y, return_dict: bool = False):
        """One training step on one batch; returns the loss (and metrics) of that batch."""
        xb, yb = self._batch_data(x, y, "train_on_batch")
        with self._emitting_logits():
            logs = self._step_logs(xb, yb)
        return _logs_result(logs, return_dict)

    def test_on_batch(self, x, y, return_dict: bool = False):
        """Loss (and metrics) of one batch, without training."""
        data = self._batch_data(x, y, "test_on_batch")
        with self._emitting_logits():
            logs = self.test_step(data)
        return _logs_result({k: float(v) for k, v in logs.items()}, return_dict)

    def predict_on_batch(self, x):
        xs = self._prepare_x(x, "predict_on_batch")
        with self._emitting_logits(False):
            return _copy_out(self._forward(xs, False))

    def _custom_step(self) -> bool:
        return type(self).train_step is not Model.train_step

    def _step_logs(self, xs, ys) -> dict:
        logs = self.train_step((xs, ys))
        if not isinstance(logs, dict):
            raise TypeError(f"train_step must return a dict of logs, got {type(logs).__name__}")
        return {k: float(v) for k, v in logs.items()}

    # --- public loops ---------------------------------------------------------------
    def fit(self, x, y, batch_size: int = 32, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            seed: int | None = None, initial_epoch: int = 0):
        """Train for `epochs` passes over (x, y); returns a History.

        x (an array, or a list/dict of arrays for several inputs) is converted once to
        C-contiguous float32 (e.g. the float64 result of ``x / 255.0``); y (likewise per
        output) to int32 labels or float32 targets as the loss needs.
        `seed` fixes the shuffling and dropout masks (weights are fixed by the model's
        seed): the same seeds give bitwise-identical weights for any thread count.
        Epoch times in the history count training steps only, not validation.
        """
        self._require_compiled("fit")
        _check_int(batch_size, "batch_size", "fit")
        _check_int(epochs, "epochs", "fit", minimum=0)
        xs, ys = self._prepare_xy(x, y, "fit")
        if validation_data is not None and validation_split:
            raise ValueError("fit: give either validation_data or validation_split, not both")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        val = None
        n = len(xs[0])
        if validation_split:
            cut = int(n * (1.0 - validation_split))
            if cut < 1 or cut == n:
                raise ValueError(f"fit: validation_split={validation_split} leaves no training or validation samples")
            val = ([a[cut:] for a in xs], [a[cut:] for a in ys])
            xs, ys = [a[:cut] for a in xs], [a[:cut] for a in ys]
        elif validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            val = self._prepare_xy(*validation_data, "fit (validation_data)")

        self._configure_output()
        dist = distribute.distribution()
        if dist is not None:
            if self._custom_step():
                raise NotImplementedError("fit: a custom train_step does not run under "
                                          "fastnn.distribute yet; set_distribution(None)")
            seed = dist.bcast(seed if seed is not None else _draw_seed())
            dist.sync_model(self)
            if not distribute.is_writer():
                verbose = 0
        rng = np.random.default_rng(seed if seed is not None else _draw_seed())
        seeded = _seeded_layers(self)
        for layer in seeded:
            layer._base_seed = int(rng.integers(0, 2**63 - 1)) if layer.seed is None else layer.seed
            layer._calls = 0
        n = len(xs[0])
        steps = (n + batch_size - 1) // batch_size
        cbs = callbacks_mod.CallbackList(
            callbacks, add_history=True, add_progbar=_verbosity(verbose) > 0,
            verbose=_verbosity(verbose), model=self,
            params={"epochs": epochs, "steps": steps, "samples": n, "batch_size": batch_size})
        self.stop_training = False
        custom = self._custom_step()
        single = len(xs) == 1 and len(ys) == 1
        x0, y0 = xs[0], ys[0]
        with self._emitting_logits(), distribute.ending_job_on_error(dist):
            cbs.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch, {})
                self.reset_metrics()
                order = rng.permutation(n) if shuffle else np.arange(n)
                total, seen = 0.0, 0
                t0 = time.perf_counter()
                for step in range(steps):
                    idx = order[step * batch_size:(step + 1) * batch_size]
                    cbs.on_train_batch_begin(step, {})
                    if dist is not None:  # each rank takes its shards' rows only
                        loss_sum, pred = dist.train_batch(self, xs, ys, idx,
                                                          (epoch - initial_epoch) * steps + step, seeded)
                        xb, yb = None, [a[idx] for a in ys]
                    # mode="clip": the indices are valid, and numpy's default mode="raise"
                    # stages an out= result through a temporary (twice the time).
                    elif single:
                        xb = [np.take(x0, idx, axis=0, out=self._buf("xb", (len(idx),) + x0.shape[1:]),
                                      mode="clip")]
                        yb = [y0[idx]]
                    else:
                        xb = [np.take(a, idx, axis=0, out=self._buf(("xb", i), (len(idx),) + a.shape[1:]),
                                      mode="clip") for i, a in enumerate(xs)]
                        yb = [a[idx] for a in ys]
                    if custom:  # the user's train_step sees arrays as Keras passes them
                        logs = self._step_logs(xb[0] if single else xb, yb[0] if single else yb)
                        loss_sum = logs.get("loss", 0.0) * len(idx)
                    elif dist is None:
                        loss_sum, pred = self._train_step(xb, yb)
                    if not math.isfinite(loss_sum):
                        raise FloatingPointError(
                            f"fit: the loss became {loss_sum} at epoch {epoch + 1}, step {step + 1}; "
                            "lower the learning rate or check the data")
                    total += loss_sum
                    seen += len(idx)
                    if custom:
                        logs = {**logs, "loss": total / seen, "size": len(idx)}
                    else:
                        logs = {"loss": total / seen, "size": len(idx)}
                        self._update_metrics(yb, pred)
                        for m in self.metrics:
                            logs[m.name] = m.result()
                    cbs.on_train_batch_end(step, logs)
                epoch_time = time.perf_counter() - t0
                logs = {k: float(v) for k, v in logs.items() if k != "size"} if steps else {}
                logs["loss"] = total / max(seen, 1)
                if val is not None:
                    vals = self._evaluate_arrays(val[0], val[1], batch_size)
                    logs.update({"val_" + k: v for k, v in vals.items()})
                logs["epoch_time"] = epoch_time
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cbs.on_train_end({})
        return cbs.history

    def _evaluate_arrays(self, xs, ys, batch_size) -> dict:
        self.reset_metrics()
        total = 0.0
        per_total = [0.0] * len(ys)
        n = len(xs[0])
        with self._emitting_logits():
            for b in range(0, n, batch_size):
                xb, yb = [a[b:b + batch_size] for a in xs], [a[b:b + batch_size] for a in ys]
                loss_sum, pred = self._eval_batch(xb, yb)
                total += loss_sum
                for k, l in enumerate(self._out_losses):
                    per_total[k] += l
                self._update_metrics(yb, pred)
        out = {"loss": total / n}
        if len(ys) > 1:
            for name, l in zip(self.output_names, per_total):
                out[f"{name}_loss"] = l / n
        for m in self.metrics:
            out[m.name] = float(m.result())
        return out

    def evaluate(self, x, y, batch_size: int = 32, verbose="auto", return_dict: bool = False):
        """Loss and metrics over (x, y): a scalar loss, or [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        _check_int(batch_size, "batch_size", "evaluate")
        xs, ys = self._prepare_xy(x, y, "evaluate")
        self._configure_output()
        res = self._evaluate_arrays(xs, ys, batch_size)
        if _verbosity(verbose):
            print(" - ".join(f"{k}: {v:.4f}" for k, v in res.items()))
        if return_dict:
            return res
        vals = list(res.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size: int = 32, verbose=0):
        """Model outputs for x, computed in batches (no dropout): one array, or a list
        (a dict) for a model with several outputs."""
        _check_int(batch_size, "batch_size", "predict")
        xs = self._prepare_x(x, "predict")
        n = len(xs[0])
        # Fused output layers apply their activation here (see _emitting_logits); set
        # without a context manager, whose cost shows at batch 1.
        fusers = self.__dict__.get("_fusers")
        flipped = [f for f in fusers if f.emit_logits] if fusers else ()
        if n <= batch_size and not flipped and self._plan_infer.all_fresh:  # the common case
            return self._structure_outputs(self._run(xs, False))
        for f in flipped:
            f.emit_logits = False
        try:
            if n <= batch_size:  # one batch: its outputs, copied out of the layers' buffers
                # (those made afresh by each call need no copy: Plan.fresh_outs)
                outs = [r if fresh else np.array(r, np.float32, copy=True)
                        for r, fresh in zip(self._run(xs, False), self._plan_infer.fresh_outs)]
            else:
                outs = [np.empty((n,) + tuple(t.shape[1:]), np.float32) for t in self._graph_out]
                for b in range(0, n, batch_size):
                    res = self._run([a[b:b + batch_size] for a in xs], False)
                    for o, r in zip(outs, res):
                        o[b:b + batch_size] = r
        finally:
            for f in flipped:
                f.emit_logits = True
        return self._structure_outputs(outs)

    def _structure_outputs(self, outs):
        if self._out_struct == "single":
            return outs[0]
        if isinstance(self._out_struct, list):
            return dict(zip(self._out_struct, outs))
        return outs

    def __call__(self, *args, **kwargs):
        if graph.any_symbolic(args) or graph.any_symbolic(kwargs.values()) or graph.tracing():
            return graph.call_layer(self, args, kwargs)
        x = args[0] if args else kwargs.pop("inputs", kwargs.pop("x", None))
        training = bool(kwargs.pop("training", False))
        xs = self._prepare_x(x, "__call__")
        from .tape import record_model_call
        if training:
            outs = self._run(xs, True)
            record_model_call(self, outs)
            return self._structure_outputs(outs)
        with self._emitting_logits(False):
            return self._structure_outputs(_copy_out(self._run(xs, False), as_list=True))

    # --- weights and files ------------------------------------------------------------
    def get_weights(self) -> list:
        """Copies of every parameter array, in the model's weight order."""
        self._require_ready("get_weights")
        return [v.value.copy() for v in self._weight_order()]

    def set_weights(self, weights) -> None:
        """Set every parameter from a list shaped like get_weights()'s."""
        self._require_ready("set_weights")
        targets = self._weight_order()
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"set_weights: expected {len(targets)} arrays, got {len(weights)}")
        for v, new in zip(targets, weights):
            new = np.asarray(new)
            if new.shape != v.shape:
                raise ValueError(f"set_weights: {v.path} has shape {v.shape}, got {new.shape}")
        for v, new in zip(targets, weights):
            v.value[...] = new
        for layer in self._leaf_layers:  # cached sparse kernels (fastnn.pruning)
            if layer.__dict__.get("_sparse") is not None:
                layer._sparse.stale = True

    def _weight_order(self) -> list[Variable]:
        """Weights layer by layer in graph order (not trainable-first)."""
        self._ensure_ready("weights")
        order, seen = [], set()
        for layer in self._leaf_layers:
            for v in layer.variables_list():
                seen.add(id(v))
                order.append(v)
        order += [v for v in self._variables if id(v) not in seen]
        return order

    def _state_arrays(self) -> dict:
        return {f"{i}.{k}": a for i, layer in enumerate(self._leaf_layers)
                for k, a in layer.state().items()}

    def get_config(self) -> dict:
        if self.is_functional:
            return functional_config(self)
        cfg = super().get_config()
        return cfg

    def save(self, path, include_optimizer: bool = True) -> None:
        """Save architecture, weights, compile settings and optimizer state to one file
        (safetensors layout). The file is replaced atomically: a failed save never
        leaves a half-written file in place of a good one. include_optimizer=False
        leaves the optimizer's state out (a file for inference; training would resume
        with fresh moments)."""
        self._require_ready("save")
        tensors = {}
        for i, v in enumerate(self._weight_order()):
            tensors[f"weights.{i}"] = v.value
        for k, a in self._state_arrays().items():
            tensors[f"state.{k}"] = a
        arch = {"class": _class_name(self), "config": self.get_config()}
        if not self.is_functional and not isinstance(self, Sequential):
            arch["build_input_shape"] = _shape_json(self.input_shape)
        meta = {"fastnn_format": FORMAT_VERSION, "architecture": json.dumps(arch),
                "weight_paths": json.dumps([v.path for v in self._weight_order()])}
        qlayers = quantization.saved_record(self)
        if qlayers:
            meta["quantized"] = json.dumps(qlayers)
        if self._compile_args is not None:
            meta["compile"] = json.dumps({"optimizer": self.optimizer.get_config(),
                                          **self._compile_args})
            if include_optimizer and self.optimizer is not None and self.optimizer.iterations:
                meta["optimizer_iterations"] = str(self.optimizer.iterations)
                for k, v in self.optimizer.state().items():
                    tensors[f"optimizer.{k}"] = v
        from . import pruning
        pruning._on_save(self, tensors, meta)  # compact sparse kernels, pruning masks
        io.save_safetensors(os.fspath(path), tensors, meta)

    # --- checks ---------------------------------------------------------------------
    def _require_ready(self, op):
        if not self._ready:
            if self._graph_out is not None or self.input_shape is not None:
                self.build(self.input_shape)
                return
            raise ValueError(f"{op}: the model is not built yet; give the first layer input_shape=... "
                             "or call build(input_shape) or fit first")
        self._ensure_ready(op)

    _require_built = _require_ready

    def _require_compiled(self, op):
        if self.loss is None:
            raise ValueError(f"{op}: call compile(optimizer=..., loss=...) first")


@register
class Sequential(Model):
    """A linear stack of layers, trained with ``compile`` then ``fit`` (as in Keras)."""

    def __init__(self, layers=None, name: str = "sequential", seed: int | None = None, **kwargs):
        super().__init__(name=name, seed=seed, **kwargs)
        self._stack: list[Layer] = []
        self._input = None  # a fastnn.Input tensor given as the first entry
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._stack)

    def add(self, layer) -> None:
        if isinstance(layer, KerasTensor) and layer.node is not None and layer.node.kind == "input":
            if self._stack or self._input is not None:
                raise ValueError("Sequential.add: an Input can only be the first entry")
            self._input = layer
            self._stack.append(layer.node.layer)  # as fastnn.layers.Input always was
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fastnn layer, got {type(layer).__name__}")
        if any(layer is other for other in self._stack):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        self._stack.append(layer)
        self._graph_in = self._graph_out = self._in_tail = None
        self._ready = False

    @property
    def input_shape(self):
        if self._graph_in is not None:
            return self._graph_in[0].shape[1:]
        if self._input is not None:
            return self._input.shape[1:]
        return self._stack[0].input_shape if self._stack else None

    @input_shape.setter
    def input_shape(self, value):
        pass

    def build(self, input_shape=None) -> None:
        """Create the parameters for samples of `input_shape` (no batch axis)."""
        if not self._stack:
            raise ValueError(f"{self.name}: a model needs at least one layer")
        shape = _sample_shapes(input_shape)[0] if input_shape is not None else self.input_shape
        if shape is None:
            raise ValueError(f"{self.name}: the input shape is unknown; give the first layer "
                             "input_shape=..., start with fastnn.Input(shape=...), or call build(shape)")
        if self._input is not None and tuple(shape) == self._input.shape[1:]:
            x = inp = self._input
        elif self._input is not None:
            raise ValueError(f"{self.name}: built for {tuple(shape)} but its Input is {self._input.shape}")
        elif isinstance(self._stack[0], InputLayer):
            x = inp = graph.input_tensor(self._stack[0])
        else:
            x = inp = Input(shape)
        for layer in self._stack:
            if isinstance(layer, InputLayer):
                continue
            x = layer(x)
        if x is inp:
            x = graph._ops().identity(x)
        self._set_graph(inp, x)
        self._finalize()

    def call(self, inputs, training=None):
        x = inputs
        for layer in self._stack:
            if not isinstance(layer, InputLayer):
                x = layer(x)
        return x

    @property
    def is_functional(self) -> bool:
        return False

    def get_config(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape) if self.input_shape else None,
                "layers": [{"class": _class_name(l), "config": l.get_config()} for l in self._stack]}

    @classmethod
    def from_config(cls, config: dict):
        layers = [_layer_from_entry(e) for e in config["layers"]]
        model = cls(layers, name=config.get("name", "sequential"))
        if config.get("input_shape") is not None:
            model.build(tuple(config["input_shape"]))
        return model


# --- helpers -------------------------------------------------------------------------------
def eager_model(layer: Layer, x):
    """A one-layer Functional model that runs a composite layer on arrays."""
    m = layer._eager
    shapes = [np.shape(a)[1:] for a in x] if isinstance(x, (list, tuple)) else [np.shape(x)[1:]]
    if m is None or [tuple(t.shape[1:]) for t in m.inputs] != [tuple(s) for s in shapes]:
        ins = [Input(s) for s in shapes]
        out = layer(ins if isinstance(x, (list, tuple)) else ins[0])
        m = layer._eager = Model(ins if isinstance(x, (list, tuple)) else ins[0], out,
                                 name=f"{layer.name}_eager")
    return m


def _recall(node, env, training):
    """Call node's layer (or op) again on the tensors that env maps its inputs to."""
    def sub(a):
        if isinstance(a, KerasTensor):
            return env.get(id(a), a)
        if isinstance(a, (list, tuple)):
            return type(a)(sub(x) for x in a)
        if isinstance(a, dict):
            return {k: sub(v) for k, v in a.items()}
        return a

    if node.kind == "op":
        from . import autodiff
        ins = [sub(t) for t in node.inputs]
        return [autodiff._apply(type(node.layer)(**node.layer.get_config())
                                if not isinstance(node.layer, autodiff.Activation)
                                else autodiff.Activation(node.layer.kind), *ins)]
    kw = dict(node.kwargs)
    if node.training is not None:
        kw["training"] = node.training
    if node.kind == "composite":
        out = node.layer(*sub(node.args), **sub(kw))
        return graph.flatten(out)
    ins = [sub(t) for t in node.inputs]
    if node.kind == "list":
        return [node.layer(ins, **kw)]
    return [node.layer(*ins, **kw)]


def _own_outputs(out):
    """Outputs of a traced call(), each made by a node (an input returned as is gets an
    identity node)."""
    def fix(t):
        if isinstance(t, KerasTensor) and t.node is not None and t.node.kind == "input":
            return graph._ops().identity(t)
        return t
    if isinstance(out, (list, tuple)):
        return type(out)(fix(t) for t in out)
    if isinstance(out, dict):
        return {k: fix(v) for k, v in out.items()}
    return fix(out)


def _is_shape_list(s) -> bool:
    return isinstance(s, list) and s and isinstance(s[0], (tuple, list))


def _sample_shapes(input_shape) -> list[tuple]:
    """Per-sample shapes from a shape or a list of shapes (a leading None is the batch)."""
    shapes = list(input_shape) if _is_shape_list(input_shape) else [input_shape]
    out = []
    for s in shapes:
        s = (s,) if isinstance(s, (int, np.integer)) else tuple(s)
        if s and s[0] is None:
            s = s[1:]
        out.append(tuple(int(d) for d in s))
    return out


def _param_count(layer) -> int:
    """Parameters, int8 kernels of quantized layers included (as Keras counts them)."""
    return sum(v.size for v in layer.variables_list()) + _int8_count(layer) if not isinstance(layer, Model) else (
        sum(v.size for v in layer._variables) if layer._ready else _graph_param_count(layer))


def _int8_count(layer) -> int:
    return sum(la.quantized_count() for la in layer.all_layers() if isinstance(la, QuantKernels))


def _inner_param_count(node) -> int:
    """Parameters of a composite call: its own weights and those of every layer between
    its inputs and its outputs."""
    stop = {id(t) for t in node.inputs}
    seen, vars_, stack = set(), {id(v): v for v in node.layer._vars}, list(node.outputs)
    while stack:
        t = stack.pop()
        if id(t) in stop or t.node is None or id(t.node) in seen:
            if t.var is not None:
                vars_[id(t.var)] = t.var
            continue
        seen.add(id(t.node))
        if t.node.kind not in ("op", "input"):
            for v in t.node.layer.variables_list():
                vars_[id(v)] = v
        stack.extend(t.node.inputs)
    return sum(v.size for v in vars_.values())


def _graph_param_count(model) -> int:
    seen, total = set(), 0
    for node in graph.leaf_nodes(model.outputs or []):
        if node.kind in ("op", "input") or id(node.layer) in seen:
            continue
        seen.add(id(node.layer))
        total += sum(v.size for v in node.layer.variables_list())
    return total


def _producer_name(t) -> str:
    node = t.outer or t.node
    if node is None:
        return "constant" if t.const is not None else (t.var.path if t.var is not None else "?")
    return node.layer.name


def _producer_step(plan, k):
    s = plan.out_slots[k]
    for st in plan.steps:
        if st.o == s:
            return st
    return None


def _only_read_by_loss(plan, k) -> bool:
    s = plan.out_slots[k]
    if plan.out_slots.count(s) > 1:
        return False
    for st in plan.steps:
        ins = [st.i] if hasattr(st, "need_dx") else st.ins
        if s in ins:
            return False
    return True


def _seeded_layers(model):
    """Every layer instance with a dropout seed, in plan order (shared copies included)."""
    out, seen = [], set()
    for plan in (model._plan_train, model._plan_infer):
        for layer in plan.layers:
            if hasattr(layer, "_base_seed") and id(layer) not in seen:
                seen.add(id(layer))
                out.append(layer)
    return out


def _bad_input(op, arg, a, want):
    """Raise the ValueError that says what is wrong with input array a."""
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"{op}: argument {arg} is empty (shape {a.shape})")
    if a.shape[1:] != want:
        raise ValueError(f"{op}: argument {arg} must have shape "
                         f"(N, {', '.join(map(str, want))}) for this model, got {a.shape}")
    raise ValueError(f"{op}: argument {arg} contains NaN or infinite values")


def _copy_out(outs, as_list=False):
    """Outputs that the caller keeps: copies of arrays that live in layer buffers."""
    res = [np.array(o, np.float32, copy=True) for o in (outs if isinstance(outs, list) else [outs])]
    if as_list:
        return res
    return res[0] if len(res) == 1 else res


def _logs_result(logs, return_dict):
    logs = {k: float(v) for k, v in logs.items()}
    if return_dict:
        return logs
    vals = list(logs.values())
    return vals[0] if len(vals) == 1 else vals


def _as_list(spec) -> list:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) or not isinstance(spec, (list, tuple)) else list(spec)


def _per_output(spec, names, what):
    k = len(names)
    if isinstance(spec, dict):
        missing = [n for n in names if n not in spec]
        extra = [n for n in spec if n not in names]
        if missing or extra:
            raise ValueError(f"compile: {what} must name every output {names}; "
                             f"missing {missing}, unknown {extra}")
        return [spec[n] for n in names]
    if isinstance(spec, (list, tuple)):
        if len(spec) != k:
            raise ValueError(f"compile: {what} has {len(spec)} entries for {k} outputs {names}")
        return list(spec)
    return [spec] * k


def _loss_config(loss):
    if isinstance(loss, dict):
        return {k: losses_mod.get(v).get_config() for k, v in loss.items()}
    if isinstance(loss, list):
        return [losses_mod.get(v).get_config() for v in loss]
    return loss.get_config()


def _loss_from_config(cfg):
    if isinstance(cfg, dict) and "class" not in cfg:
        return {k: losses_mod.from_config(v) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [losses_mod.from_config(v) for v in cfg]
    return losses_mod.from_config(cfg)


def _metric_names(metrics):
    def name(m):
        if isinstance(m, str):
            return m
        if isinstance(m, (list, tuple)):
            return [name(x) for x in m]
        if isinstance(m, dict):
            return {k: name(v) for k, v in m.items()}
        return getattr(m, "name", str(m))
    return name(metrics) if metrics is not None else []


def _class_name(obj) -> str:
    cls = type(obj)
    if cls is Model:
        return "Functional"
    return getattr(cls, "_registered_name", cls.__name__)


def _shape_json(s):
    if s is None:
        return None
    if _is_shape_list(s):
        return [list(x) for x in s]
    return list(s)


def _layer_from_entry(entry):
    cls = layer_class(entry["class"]) if entry["class"] != "Functional" else Model
    return cls.from_config(entry["config"])


# --- Functional models as configs -----------------------------------------------------
def functional_config(model: Model) -> dict:
    """Layers, the nodes that wire them (as the user called them) and the inputs and
    outputs, all JSON."""
    nodes = graph.structure_nodes(model.outputs)
    for t in model.inputs:  # inputs that no output reads still belong to the model
        if t.node not in nodes:
            nodes.insert(0, t.node)
    layers, lidx, nidx = [], {}, {}
    for i, node in enumerate(nodes):
        nidx[id(node)] = i
        if node.kind != "op" and id(node.layer) not in lidx:
            lidx[id(node.layer)] = len(layers)
            layers.append(node.layer)

    def ref(t):
        node = t.outer if t.outer is not None else t.node
        if node is None or id(node) not in nidx:
            if t.const is not None:
                return {"const": t.const.tolist(), "shape": list(t.const.shape)}
            raise ValueError(f"cannot save {model.name}: a node reads {t!r}, which is not saved")
        return {"tensor": [nidx[id(node)], node.outputs.index(t)]}

    def ser(a):
        if isinstance(a, KerasTensor):
            return ref(a)
        if isinstance(a, (list, tuple)):
            return {"list": [ser(x) for x in a], "tuple": isinstance(a, tuple)}
        if isinstance(a, dict):
            return {"dict": {k: ser(v) for k, v in a.items()}}
        if a is None or isinstance(a, (bool, int, float, str)):
            return {"value": a}
        raise ValueError(f"cannot save {model.name}: a call argument of type {type(a).__name__}")

    entries = []
    for node in nodes:
        e = {"kind": node.kind}
        if node.kind == "op":
            e.update(op=node.layer.name if not hasattr(node.layer, "kind") else node.layer.kind,
                     config=node.layer.get_config())
        else:
            e["layer"] = lidx[id(node.layer)]
        if node.kind == "composite":
            e["args"] = ser(list(node.args))
            e["kwargs"] = ser(dict(node.kwargs))
        elif node.kind != "input":
            e["inputs"] = [ref(t) for t in node.inputs]
            e["kwargs"] = ser(dict(node.kwargs))
            e["training"] = node.training
        entries.append(e)
    return {"name": model.name,
            "layers": [{"class": _class_name(l), "config": l.get_config()} for l in layers],
            "nodes": entries,
            "inputs": [ref(t) for t in model.inputs], "input_struct": model._in_struct,
            "outputs": [ref(t) for t in model.outputs], "output_struct": model._out_struct}


def functional_from_config(cfg: dict) -> Model:
    from . import autodiff
    layers = [_layer_from_entry(e) for e in cfg["layers"]]
    made: list[list] = []

    def deref(r):
        if "const" in r:
            return np.asarray(r["const"], np.float32).reshape(r["shape"])
        node_i, out_i = r["tensor"]
        return made[node_i][out_i]

    def de(a):
        if "tensor" in a or "const" in a:
            return deref(a)
        if "list" in a:
            items = [de(x) for x in a["list"]]
            return tuple(items) if a.get("tuple") else items
        if "dict" in a:
            return {k: de(v) for k, v in a["dict"].items()}
        return a["value"]

    for e in cfg["nodes"]:
        kind = e["kind"]
        if kind == "input":
            made.append([graph.input_tensor(layers[e["layer"]])])
            continue
        kw = de(e.get("kwargs", {"dict": {}}))
        if kind == "op":
            op = autodiff.op_from_config(e["op"], e["config"])
            made.append([autodiff._apply(op, *[deref(r) for r in e["inputs"]])])
            continue
        layer = layers[e["layer"]]
        if e.get("training") is not None:
            kw["training"] = e["training"]
        if kind == "composite":
            made.append(graph.flatten(layer(*de(e["args"]), **kw)))
        elif kind == "list":
            made.append([layer([deref(r) for r in e["inputs"]], **kw)])
        elif kind == "multi":  # a recurrent layer: sequence, then its initial states
            seq, *states = [deref(r) for r in e["inputs"]]
            out = layer(seq, initial_state=states or None, **kw)
            made.append(list(out) if isinstance(out, (list, tuple)) else [out])
        else:
            made.append([layer(*[deref(r) for r in e["inputs"]], **kw)])
    ins = [deref(r) for r in cfg["inputs"]]
    outs = [deref(r) for r in cfg["outputs"]]

    def struct(items, how):
        if how == "single":
            return items[0]
        if isinstance(how, list):
            return dict(zip(how, items))
        return items

    return Model(struct(ins, cfg["input_struct"]), struct(outs, cfg["output_struct"]),
                 name=cfg.get("name"))


Model.from_config = classmethod(lambda cls, config: functional_from_config(config)
                                if cls is Model else cls(**config))


def load_model(path) -> Model:
    """Load a model saved with Model.save: architecture, weights, and (if it was
    compiled) loss, metrics and optimizer with its state. Subclassed models and layers
    must be registered (``@fastnn.saving.register_keras_serializable()``)."""
    path = os.fspath(path)
    tensors, meta = io.load_safetensors(path)
    if meta.get("fastnn_format") != FORMAT_VERSION or ("config" not in meta and "architecture" not in meta):
        raise ValueError(f"load_model: {path!r} is not a fastnn model file (format {meta.get('fastnn_format')!r})")
    try:
        if "architecture" in meta:
            arch = json.loads(meta["architecture"])
            model = _model_from_arch(arch)
        else:  # files written before the graph API: a Sequential
            cfg = json.loads(meta["config"])
            model = Sequential([_layer_from_entry(e) for e in cfg["layers"]], name=cfg.get("name", "sequential"))
            model.build(tuple(cfg["input_shape"]))
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"load_model: {path!r} has a corrupt model description ({e})") from None
    model._require_ready("load_model")
    if "quantized" in meta:
        try:
            quantization.apply_saved(model, json.loads(meta["quantized"]))
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"load_model: {path!r} has a corrupt quantization record ({e})") from None
    from . import pruning
    pruning._expand(model, tensors, meta)  # compact sparse kernels back to arrays
    if "architecture" in meta:
        _load_weights(model, tensors, path)
    else:
        _load_legacy_weights(model, tensors, path)
    if "compile" in meta:
        c = json.loads(meta["compile"])
        model.compile(optimizer=optim_mod.from_config(c["optimizer"]), loss=_loss_from_config(c["loss"]),
                      metrics=c["metrics"], loss_weights=c.get("loss_weights"))
        if "optimizer_iterations" in meta:
            model.optimizer.iterations = int(meta["optimizer_iterations"])
            for k, v in model.optimizer.state().items():
                key = f"optimizer.{k}"
                if key in tensors and tensors[key].shape == v.shape:
                    v[...] = tensors[key]
    pruning._on_load(model, tensors, meta)  # masks and step of a pruned model
    return model


def _model_from_arch(arch):
    cls_name = arch["class"]
    if cls_name == "Functional":
        return functional_from_config(arch["config"])
    cls = layer_class(cls_name)
    model = cls.from_config(arch["config"])
    if arch.get("build_input_shape") is not None and not model._ready:
        shape = arch["build_input_shape"]
        model.build([tuple(s) for s in shape] if _is_shape_list(shape) else tuple(shape))
    return model


def _load_weights(model, tensors, path):
    for i, v in enumerate(model._weight_order()):
        key = f"weights.{i}"
        if key not in tensors:
            raise ValueError(f"load_model: {path!r} lacks tensor {key!r} ({v.path})")
        if tensors[key].shape != v.shape:
            raise ValueError(f"load_model: {path!r}: tensor {key!r} has shape {tensors[key].shape}, "
                             f"the architecture needs {v.shape} for {v.path}")
        v.value[...] = tensors[key]
    for k, a in model._state_arrays().items():
        key = f"state.{k}"
        if key not in tensors or tensors[key].shape != a.shape:
            raise ValueError(f"load_model: {path!r} lacks layer state {key!r} of shape {a.shape}")
        a[...] = tensors[key]


def _load_legacy_weights(model, tensors, path):
    for i, layer in enumerate(model.layers):
        for name, w in layer.named_weights():
            key = f"layers.{i}.{name}"
            if key not in tensors:
                raise ValueError(f"load_model: {path!r} lacks tensor {key!r}")
            if tensors[key].shape != w.shape:
                raise ValueError(f"load_model: {path!r}: tensor {key!r} has shape {tensors[key].shape}, "
                                 f"the architecture needs {w.shape}")
            w[...] = tensors[key]
        for name, a in layer.state().items():
            key = f"layers.{i}.state.{name}"
            if key not in tensors or tensors[key].shape != a.shape:
                raise ValueError(f"load_model: {path!r} lacks layer state {key!r} of shape {a.shape}")
            a[...] = tensors[key]


def _check_int(v, name, op, minimum=1):
    if type(v) is int and v >= minimum:  # the common case, without the isinstance tests
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum}, got {v!r}")


def _verbosity(verbose) -> int:
    if verbose == "auto":
        return 1
    return int(verbose)
