"""Magnitude pruning (TF-MOT's ``tfmot.sparsity.keras`` API) and sparse inference.

::

    import fastnn as fn
    from fastnn import pruning

    sched = pruning.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000, frequency=100)
    model = pruning.prune_low_magnitude(model, pruning_schedule=sched)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, callbacks=[pruning.UpdatePruningStep()])
    export = pruning.strip_pruning(model)       # plain model, zeros in its kernels
    export.save("mlp.fnn")                      # sparse kernels stored compactly

How it works. A pruned model keeps one flat float32 mask buffer beside its flat
parameter buffer, with a view per pruned kernel (1 = kept, 0 = pruned). The optimizers
call a hook around every update of a model's parameter buffer (``fit``,
``train_on_batch``, ``optimizer.apply_gradients`` in a GradientTape loop, distributed
fit): before the update the gradients of pruned weights are zeroed, after it the
pruned weights are multiplied by 0, so they are exactly 0 after every step. When a mask
is updated, the optimizer's moment/velocity state of newly pruned weights is zeroed too,
so Adam's momentum cannot move them again.

Masks are updated by :class:`UpdatePruningStep` at the start of training batches whose
step the schedule selects (as TF-MOT: ``step`` counts training batches from 0; the
mask is updated when ``begin_step <= step (<= end_step)`` and ``(step - begin_step) %
frequency == 0``). Training a pruned model without the callback raises a ValueError, as
TF-MOT does (in a custom loop, call ``on_train_begin()`` once and
``on_train_batch_begin(step)`` before each step, exactly as with TF-MOT).

Masks zero the smallest ``round(sparsity * size)`` magnitudes of each kernel (ties
broken by the flat index: the earlier weight is pruned first), or of all kernels
together with ``pruning_scope="global"``. ``block_size=(bh, bw)`` prunes whole blocks of
the kernel seen as 2-D (rows = all axes but the last), ranked by mean magnitude.
"""
from __future__ import annotations

import json
import math
import weakref

import numpy as np

from . import _core
from . import optim as optim_mod
from .callbacks import Callback
from .ops.sparse_dense import dense_to_csc, scratch_size

__all__ = ["PruningSchedule", "PolynomialDecay", "ConstantSparsity", "prune_low_magnitude",
           "UpdatePruningStep", "strip_pruning", "get_sparsity", "is_pruned",
           "SPARSE_MIN_BATCH", "SPARSE_MAX_DENSITY", "enable_sparse_inference"]


# --- schedules -------------------------------------------------------------------------
def _check_sparsity(v, name, where):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{where}: {name} must be a number in [0, 1), got {v!r}")
    return float(v)


def _check_step(v, name, where, allow_minus_one=False):
    ok = not isinstance(v, bool) and isinstance(v, (int, np.integer)) and (
        v >= 0 or (allow_minus_one and v == -1))
    if not ok:
        extra = " or -1 (no end)" if allow_minus_one else ""
        raise ValueError(f"{where}: {name} must be an int >= 0{extra}, got {v!r}")
    return int(v)


class PruningSchedule:
    """Base class: ``schedule(step)`` returns ``(should_prune, sparsity)``."""

    def _validate(self, begin_step, end_step, frequency, allow_minus_one):
        where = type(self).__name__
        self.begin_step = _check_step(begin_step, "begin_step", where)
        self.end_step = _check_step(end_step, "end_step", where, allow_minus_one)
        if isinstance(frequency, bool) or not isinstance(frequency, (int, np.integer)) or frequency < 1:
            raise ValueError(f"{where}: frequency must be an int >= 1, got {frequency!r}")
        self.frequency = int(frequency)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(f"{where}: end_step ({self.end_step}) must be >= begin_step "
                             f"({self.begin_step})")

    def _should_prune(self, step: int) -> bool:
        in_range = step >= self.begin_step and (self.end_step == -1 or step <= self.end_step)
        return bool(in_range and (step - self.begin_step) % self.frequency == 0)

    def __call__(self, step: int):
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from initial_sparsity at begin_step to final_sparsity at end_step
    as ``final + (initial - final) * (1 - p)**power``, p = (step - begin) / (end - begin)
    clipped to [0, 1] (TF-MOT's PolynomialDecay)."""

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        where = "PolynomialDecay"
        self.initial_sparsity = _check_sparsity(initial_sparsity, "initial_sparsity", where)
        self.final_sparsity = _check_sparsity(final_sparsity, "final_sparsity", where)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
            raise ValueError(f"{where}: power must be a positive number, got {power!r}")
        self.power = power
        self._validate(begin_step, end_step, frequency, allow_minus_one=False)

    def sparsity(self, step: int) -> float:
        span = max(1, self.end_step - self.begin_step)
        p = min(1.0, max(0.0, (step - self.begin_step) / span))
        return (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power \
            + self.final_sparsity

    def __call__(self, step: int):
        return self._should_prune(step), self.sparsity(step)

    def get_config(self) -> dict:
        return {"class_name": "PolynomialDecay", "config": {
            "initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step, "end_step": self.end_step, "power": self.power,
            "frequency": self.frequency}}


class ConstantSparsity(PruningSchedule):
    """target_sparsity from begin_step on, mask updated every `frequency` steps until
    end_step (-1: until training ends) (TF-MOT's ConstantSparsity)."""

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = _check_sparsity(target_sparsity, "target_sparsity", "ConstantSparsity")
        self._validate(begin_step, end_step, frequency, allow_minus_one=True)

    def __call__(self, step: int):
        return self._should_prune(step), self.target_sparsity

    def get_config(self) -> dict:
        return {"class_name": "ConstantSparsity", "config": {
            "target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
            "end_step": self.end_step, "frequency": self.frequency}}


def _schedule_from_config(cfg) -> PruningSchedule:
    cls = {"PolynomialDecay": PolynomialDecay, "ConstantSparsity": ConstantSparsity}[cfg["class_name"]]
    return cls(**cfg["config"])


# --- masks ------------------------------------------------------------------------------
def _prunable(layer) -> bool:
    from .layers.conv import Conv2D
    from .layers.core import Dense
    return isinstance(layer, (Dense, Conv2D)) and any(v.name == "kernel" for v in layer._vars)


def _kernel_var(layer):
    return next(v for v in layer._vars if v.name == "kernel")


def _scores(w: np.ndarray, block) -> np.ndarray:
    """|w| per weight, or the mean |w| of its (bh, bw) block of w seen as 2-D."""
    a = np.abs(w, dtype=np.float64)
    bh, bw = block
    if (bh, bw) == (1, 1):
        return a.reshape(-1)
    a2 = a.reshape(-1, w.shape[-1])
    rows, cols = a2.shape
    hs, ws = np.arange(0, rows, bh), np.arange(0, cols, bw)
    sums = np.add.reduceat(np.add.reduceat(a2, hs, axis=0), ws, axis=1)
    counts = np.outer(np.minimum(bh, rows - hs), np.minimum(bw, cols - ws))
    mean = sums / counts
    return np.repeat(np.repeat(mean, bh, axis=0)[:rows], bw, axis=1)[:, :cols].reshape(-1)


def _mask_from_scores(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """1.0 except at the round(sparsity * n) smallest scores (stable: ties by index)."""
    n = scores.size
    k = int(round(sparsity * n))
    mask = np.ones(n, np.float32)
    if k:
        mask[np.argsort(scores, kind="stable")[:k]] = 0.0
    return mask


class _Entry:
    __slots__ = ("layer", "var", "schedule", "block", "mask")

    def __init__(self, layer, var, schedule, block):
        self.layer, self.var, self.schedule, self.block = layer, var, schedule, block
        self.mask = None


class _PruningState:
    """The pruning of one model: its kernels, their masks (views of one flat float32
    buffer), the pruning step and the optimizer hook."""

    def __init__(self, model, entries, scope: str):
        self.model = model
        self.entries = entries
        self.scope = scope
        self.step = -1        # set by UpdatePruningStep, as TF-MOT's pruning_step
        self.pending = False  # UpdatePruningStep ran for the coming optimizer step
        total = sum(e.var.size for e in entries)
        self.mask = np.ones(total, np.float32)
        off = 0
        for e in entries:
            e.mask = self.mask[off:off + e.var.size].reshape(e.var.shape)
            off += e.var.size
        self._ranges_for = None
        self._ranges = []
        self.register()

    # flat offsets of the kernels in the model's parameter buffer
    def ranges(self):
        params = self.model._params
        if self._ranges_for is not params:
            base = params.__array_interface__["data"][0]
            rs = []
            for e in self.entries:
                if e.var.value.base is not params:
                    raise ValueError(f"pruning: {e.var.path} is not bound to this model's parameters")
                lo = (e.var.value.__array_interface__["data"][0] - base) // 4
                rs.append((lo, lo + e.var.size, e.mask.reshape(-1)))
            self._ranges, self._ranges_for = rs, params
        return self._ranges

    def register(self):
        optim_mod.set_update_hook(self.model._params, self.hook)

    def hook(self, phase, lo, hi):
        """Called by the optimizers around an update of params[lo:hi]."""
        if phase == "pre":
            if not self.pending:
                raise ValueError(
                    f"{self.model.name} is pruned (fastnn.pruning.prune_low_magnitude): train it "
                    "with callbacks=[fastnn.pruning.UpdatePruningStep()] in fit, or in a custom "
                    "loop call that callback's on_train_begin() once and "
                    "on_train_batch_begin(step) before every optimizer step")
            self.pending = False
        grads, params = self.model._grads, self.model._params
        for a, b, m in self.ranges():
            s, e = max(a, lo), min(b, hi)
            if s >= e:
                continue
            if phase == "pre":
                grads[s:e] *= m[s - a:e - a]
            else:
                params[s:e] *= m[s - a:e - a]
        if phase == "post":
            _mark_stale(self.model)

    def update(self, step: int) -> bool:
        """Recompute the masks the schedule selects at `step` and apply them."""
        changed = False
        if self.scope == "global":
            should, sparsity = self.entries[0].schedule(step)
            if should:
                scores = np.concatenate([_scores(e.var.value, e.block) for e in self.entries])
                self.mask[...] = _mask_from_scores(scores, sparsity)
                changed = True
        else:
            for e in self.entries:
                should, sparsity = e.schedule(step)
                if should:
                    e.mask.reshape(-1)[...] = _mask_from_scores(_scores(e.var.value, e.block), sparsity)
                    changed = True
        if changed:
            self.apply()
        return changed

    def apply(self):
        """weights *= mask, and the optimizer's moments/velocities of pruned weights = 0."""
        params = self.model._params
        opt = self.model.optimizer
        state = opt.state() if opt is not None else {}
        for a, b, m in self.ranges():
            params[a:b] *= m
            for k in ("m", "v", "velocity"):
                if k in state and state[k].size >= b:
                    state[k][a:b] *= m
        _mark_stale(self.model)

    def config(self) -> dict:
        order = {id(v): i for i, v in enumerate(self.model._weight_order())}
        return {"scope": self.scope, "step": self.step,
                "layers": [{"weight": order[id(e.var)], "schedule": e.schedule.get_config(),
                            "block_size": list(e.block)} for e in self.entries]}


def _state(model):
    return model.__dict__.get("_pruning")


def is_pruned(model) -> bool:
    """Whether `model` carries pruning masks (prune_low_magnitude, not stripped)."""
    return _state(model) is not None


def _check_block(block_size):
    try:
        bh, bw = (int(b) for b in block_size)
        ok = len(tuple(block_size)) == 2 and bh >= 1 and bw >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"prune_low_magnitude: block_size must be a pair of positive ints, got {block_size!r}")
    return (bh, bw)


def prune_low_magnitude(to_prune, pruning_schedule=None, block_size=(1, 1),
                        pruning_scope: str = "layer", to_prune_layers=None):
    """Prune the kernels of a model's Dense and Conv2D layers by magnitude (biases are
    not pruned); returns the model, which is pruned in place.

    to_prune: a built model, or a single Dense/Conv2D layer (marked here; its kernel is
        pruned once the model holding it is trained with UpdatePruningStep).
    pruning_schedule: a PolynomialDecay or ConstantSparsity (default: ConstantSparsity(0.5,
        begin_step=0, frequency=100), as TF-MOT).
    block_size: (bh, bw) blocks pruned together.
    pruning_scope: "layer" (each kernel reaches the sparsity) or "global" (the smallest
        magnitudes of all kernels together).
    to_prune_layers: restrict a model's pruning to these layers (objects or names).
    """
    from .layers.base import Layer
    from .models import Model
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0, frequency=100)
    if not isinstance(pruning_schedule, PruningSchedule):
        raise ValueError("prune_low_magnitude: pruning_schedule must be a fastnn.pruning."
                         f"PolynomialDecay or ConstantSparsity, got {type(pruning_schedule).__name__}")
    block = _check_block(block_size)
    if pruning_scope not in ("layer", "global"):
        raise ValueError(f"prune_low_magnitude: pruning_scope must be 'layer' or 'global', got {pruning_scope!r}")
    if isinstance(to_prune, Model):
        model = to_prune
        model._require_ready("prune_low_magnitude")
        if is_pruned(model):
            raise ValueError(f"prune_low_magnitude: {model.name} is pruned already")
        layers = [l for l in model._leaf_layers if _prunable(l)]
        if to_prune_layers is not None:
            want = list(to_prune_layers)
            names = {w for w in want if isinstance(w, str)}
            objs = {id(w) for w in want if not isinstance(w, str)}
            known = {l.name for l in layers}
            missing = [n for n in names if n not in known]
            if missing:
                raise ValueError(f"prune_low_magnitude: to_prune_layers names {missing}, which are "
                                 f"not Dense/Conv2D layers of {model.name} ({sorted(known)})")
            layers = [l for l in layers if l.name in names or id(l) in objs]
        marked = [l for l in model._leaf_layers if getattr(l, "_prune_spec", None) is not None]
        specs = {id(l): (pruning_schedule, block) for l in layers}
        specs.update({id(l): l._prune_spec for l in marked})
        layers = [l for l in model._leaf_layers if id(l) in specs]
        if not layers:
            raise ValueError(f"prune_low_magnitude: {model.name} has no Dense or Conv2D layer to prune")
        entries = [_Entry(l, _kernel_var(l), *specs[id(l)]) for l in layers]
        if pruning_scope == "global" and len({id(e.schedule) for e in entries}) > 1:
            raise ValueError("prune_low_magnitude: pruning_scope='global' needs one schedule for all layers")
        model._pruning = _PruningState(model, entries, pruning_scope)
        enable_sparse_inference(model)
        return model
    if isinstance(to_prune, Layer):
        if not _prunable(to_prune) and to_prune.built:
            raise ValueError(f"prune_low_magnitude: {to_prune.name} is a {type(to_prune).__name__}; "
                             "only Dense and Conv2D layers are pruned")
        from .layers.conv import Conv2D
        from .layers.core import Dense
        if not isinstance(to_prune, (Dense, Conv2D)):
            raise ValueError(f"prune_low_magnitude: {to_prune.name} is a {type(to_prune).__name__}; "
                             "only Dense and Conv2D layers are pruned")
        if pruning_scope != "layer":
            raise ValueError("prune_low_magnitude: pruning_scope='global' applies to a whole model")
        to_prune._prune_spec = (pruning_schedule, block)
        return to_prune
    raise ValueError(f"prune_low_magnitude: to_prune must be a fastnn model or a Dense/Conv2D "
                     f"layer, got {type(to_prune).__name__}")


class UpdatePruningStep(Callback):
    """Advances the pruning step and updates the masks on schedule (TF-MOT's callback):
    required in ``fit`` of a pruned model. A model with layers marked by
    ``prune_low_magnitude(layer)`` is pruned when this callback first sees it."""

    def __init__(self):
        self.step = None

    def _state(self):
        model = self.model
        st = _state(model)
        if st is None:
            if any(getattr(l, "_prune_spec", None) is not None for l in model._leaf_layers):
                prune_low_magnitude(model, to_prune_layers=[])
                st = _state(model)
            else:
                raise ValueError(f"UpdatePruningStep: {model.name} is not pruned; use "
                                 "fastnn.pruning.prune_low_magnitude(model) first")
        if st.model._params is not st._ranges_for:
            st.register()  # the model bound new buffers since
        return st

    def on_train_begin(self, logs=None):
        st = self._state()
        self.step = st.step + 1  # the step after the last one trained (0 at first)

    def on_train_batch_begin(self, batch, logs=None):
        st = self._state()
        if self.step is None:
            self.step = st.step + 1
        st.step = self.step
        st.update(self.step)
        st.pending = True
        self.step += 1


# --- reporting and export -----------------------------------------------------------------
def get_sparsity(model) -> dict:
    """Fraction of exact zeros in each Dense/Conv2D kernel, by layer name, and "total"
    over them all."""
    model._require_ready("get_sparsity")
    out, zeros, size = {}, 0, 0
    for layer in model._leaf_layers:
        if _prunable(layer):
            w = _kernel_var(layer).value
            z = int(w.size - np.count_nonzero(w))
            out[layer.name] = z / w.size
            zeros, size = zeros + z, size + w.size
    out["total"] = zeros / size if size else 0.0
    return out


def strip_pruning(model):
    """A plain copy of a pruned model for export: same architecture and weights (the
    pruned ones exactly 0), no masks, not compiled. Sparse Dense kernels of it use the
    sparse inference kernel in predict where that is faster (see enable_sparse_inference)."""
    from . import models
    model._require_ready("strip_pruning")
    arch = {"class": models._class_name(model), "config": model.get_config()}
    if not model.is_functional and not isinstance(model, models.Sequential):
        arch["build_input_shape"] = models._shape_json(model.input_shape)
    plain = models._model_from_arch(json.loads(json.dumps(arch)))
    plain._require_ready("strip_pruning")
    st = _state(model)
    if st is not None:
        for a, b, m in st.ranges():
            model._params[a:b] *= m  # pruned weights are 0 already; make sure
    plain.set_weights(model.get_weights())
    for src, dst in zip(model._leaf_layers, plain._leaf_layers):
        dst.__dict__.pop("_prune_spec", None)
        for k, a in src.state().items():
            dst.state()[k][...] = a
    enable_sparse_inference(plain)
    return plain


# --- sparse inference ------------------------------------------------------------------------
# When Dense uses the sparse kernel in predict (inference only). Measured on this project's
# shared 2-core Xeon (AVX-512, GCC 12) for the 784->128 relu layer of the MNIST MLP at 90%
# sparsity, fastnn._core.dense_forward vs sparse_dense_forward, best of 7 x 300 calls, us:
#   N:            1     2     4     8    16    32    64   256
#   1 thread:
#     dense      4.9   5.0   6.3  11.9  19.6  39.2  73.1   283
#     sparse     6.0   8.0  13.4   9.1   9.8  16.0  28.7   109
#   2 threads:
#     dense      4.9   5.3   6.3   8.1  19.8  24.6  45.5   166
#     sparse     6.4   8.2  12.6   9.3   9.8  12.2  19.6    58
# Below a batch of 8 the GEMV/small GEMM streams the dense kernel from cache faster than
# the sparse kernel can do its indexed loads (~2 cycles per nonzero against 1/32 per dense
# multiply-add); from 8 on, the sparse kernel does one 16-row vector multiply-add per
# nonzero, whatever the batch up to 16 (at 8 on two threads the two are even: 0.9-1.4x
# between runs). The rule: batch >= SPARSE_MIN_BATCH, kernel density <= SPARSE_MAX_DENSITY
# (at N = 16 the gain is 2.1x at 10% density, 1.4x at 15%, 1.15x at 20%) and at least
# SPARSE_MIN_WEIGHTS weights (smaller layers take a few us either way).
SPARSE_MIN_BATCH = 8
SPARSE_MAX_DENSITY = 0.12
SPARSE_MIN_WEIGHTS = 16384


class _SparseKernel:
    """A Dense layer's kernel as CSC for inference, rebuilt after the weights change."""

    __slots__ = ("layer", "csc", "stale", "xt")

    def __init__(self, layer):
        self.layer, self.csc, self.stale, self.xt = layer, None, True, None

    def forward(self, x2, act):
        """y (N, OC) from the sparse kernel, or None where the dense GEMM is faster."""
        n = x2.shape[0]
        if n < SPARSE_MIN_BATCH:
            return None
        if self.stale:
            self.csc = dense_to_csc(self.layer.kernel)
            self.stale = False
        csc = self.csc
        if csc.density > SPARSE_MAX_DENSITY:
            return None
        layer = self.layer
        size = scratch_size(n, x2.shape[1])
        if self.xt is None or len(self.xt) < size:
            self.xt = np.empty(size, np.float32)
        y = np.empty((n, layer.units), np.float32)
        _core.sparse_dense_forward(y, self.xt[:size], x2, csc.indptr, csc.indices, csc.values,
                                   layer.bias if layer.use_bias else None, act)
        return y


def enable_sparse_inference(model) -> list:
    """Let the model's large, sparse Dense layers use the sparse kernel in predict (where
    the rule above says it is faster); returns their names. strip_pruning calls it;
    pruned models get it from prune_low_magnitude. After writing into a kernel directly
    (not through fit, set_weights or an optimizer), call it again."""
    from .layers.core import Dense
    names = []
    for layer in model._leaf_layers:
        if isinstance(layer, Dense) and layer.kernel.size >= SPARSE_MIN_WEIGHTS:
            layer._sparse = _SparseKernel(layer)
            names.append(layer.name)
    if _state(model) is None:  # a pruned model's own hook marks them stale
        optim_mod.set_update_hook(model._params, _stale_hook(model))
    return names


def _stale_hook(model):
    ref = weakref.ref(model)

    def hook(phase, lo, hi):
        m = ref()
        if m is not None and phase == "post":
            _mark_stale(m)
    return hook


def _mark_stale(model):
    for layer in model._leaf_layers:
        sp = layer.__dict__.get("_sparse")
        if sp is not None:
            sp.stale = True


# --- files -------------------------------------------------------------------------------------
# Kernels with at least this fraction of zeros are saved as a bitmask + the nonzero values
# (1 bit + 4 bytes per nonzero instead of 4 bytes per weight).
COMPACT_MIN_SPARSITY = 0.5


def _on_save(model, tensors: dict, meta: dict) -> None:
    """Model.save: compact sparse kernels; masks and step of a pruned model."""
    compact = []
    kernels = {id(_kernel_var(l)) for l in model._leaf_layers if _prunable(l)}
    for i, v in enumerate(model._weight_order()):
        if id(v) not in kernels:
            continue
        w = v.value.reshape(-1)
        nz = w != 0
        if w.size and 1.0 - np.count_nonzero(nz) / w.size >= COMPACT_MIN_SPARSITY:
            del tensors[f"weights.{i}"]
            tensors[f"weights.{i}.bits"] = np.packbits(nz)
            tensors[f"weights.{i}.values"] = w[nz]
            compact.append(i)
    if compact:
        meta["compact_weights"] = json.dumps(compact)
    st = _state(model)
    if st is not None:
        meta["pruning"] = json.dumps(st.config())
        for j, e in enumerate(st.entries):
            tensors[f"pruning.mask.{j}"] = np.packbits(e.mask.reshape(-1) != 0)


def _expand(model, tensors: dict, meta: dict) -> None:
    """load_model: the dense arrays of compact kernels (bitwise the saved weights)."""
    if "compact_weights" not in meta:
        return
    order = model._weight_order()
    for i in json.loads(meta["compact_weights"]):
        key = f"weights.{i}"
        if not 0 <= i < len(order) or f"{key}.bits" not in tensors or f"{key}.values" not in tensors:
            raise ValueError(f"load_model: compact weight {key!r} is missing or not in the architecture")
        v = order[i]
        bits, vals = tensors.pop(f"{key}.bits"), tensors.pop(f"{key}.values")
        nz = np.unpackbits(bits.reshape(-1))
        if nz.size < v.size or nz[v.size:].any():
            raise ValueError(f"load_model: compact {key!r} has {nz.size} mask bits for {v.path} "
                             f"of shape {v.shape}")
        nz = nz[:v.size].astype(bool)
        if int(np.count_nonzero(nz)) != vals.size:
            raise ValueError(f"load_model: compact {key!r} has {vals.size} values for "
                             f"{int(np.count_nonzero(nz))} set mask bits")
        w = np.zeros(v.size, np.float32)
        w[nz] = vals
        tensors[key] = w.reshape(v.shape)


def _on_load(model, tensors: dict, meta: dict) -> None:
    """load_model, after the weights: the masks and step of a pruned model."""
    if "pruning" not in meta:
        if "compact_weights" in meta:
            enable_sparse_inference(model)
        return
    cfg = json.loads(meta["pruning"])
    order = model._weight_order()
    layers = {id(_kernel_var(l)): l for l in model._leaf_layers if _prunable(l)}
    entries = []
    for e in cfg["layers"]:
        v = order[e["weight"]]
        entries.append(_Entry(layers[id(v)], v, _schedule_from_config(e["schedule"]),
                              tuple(e["block_size"])))
    st = _PruningState(model, entries, cfg["scope"])
    for j, e in enumerate(st.entries):
        bits = np.unpackbits(tensors[f"pruning.mask.{j}"])[:e.var.size]
        e.mask.reshape(-1)[...] = bits.astype(np.float32)
    st.step = int(cfg["step"])
    model._pruning = st
    enable_sparse_inference(model)
