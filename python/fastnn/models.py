"""Sequential models: build, compile, fit, evaluate, predict, save, load_model.

One flat float32 buffer holds every parameter of a model and another every gradient;
layers hold views into them. A training step is: forward through the layers, one fused
loss kernel, backward through the layers (adding into the zeroed gradients), one
optimizer kernel over the whole buffer, which also zeroes the gradients it has read, for
the next step (one memset when anything else touched them).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings

import numpy as np

from . import callbacks as callbacks_mod
from . import io
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optim as optim_mod
from .layers.base import Layer, layer_class
from .layers.core import Activated
from .ops._util import as_f32

FORMAT_VERSION = "1"

_seed_source = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Seed the generator behind weight initialisation and unseeded fits (like Keras)."""
    global _seed_source
    _seed_source = np.random.default_rng(seed)


def _draw_seed() -> int:
    return int(_seed_source.integers(0, 2**63 - 1))


class Sequential:
    """A linear stack of layers, trained with ``compile`` then ``fit`` (as in Keras)."""

    def __init__(self, layers=None, name: str = "sequential", seed: int | None = None):
        self.name = name
        self.layers: list[Layer] = []
        self.seed = seed
        self.built = False
        self.stop_training = False
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self._compile_args = None
        for layer in layers or []:
            self.add(layer)

    # --- structure ------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fastnn layer, got {type(layer).__name__}")
        if any(layer is other for other in self.layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        self.layers.append(layer)
        self.built = False

    @property
    def input_shape(self):
        return self.layers[0].input_shape if self.layers else None

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    def build(self, input_shape=None) -> None:
        """Create the parameters for samples of `input_shape` (no batch axis)."""
        if not self.layers:
            raise ValueError(f"{self.name}: a model needs at least one layer")
        shape = tuple(input_shape) if input_shape is not None else self.layers[0].input_shape
        if shape is None:
            raise ValueError(f"{self.name}: the input shape is unknown; give the first layer "
                             "input_shape=..., start with fastnn.layers.Input(shape=...), or call build(shape)")
        for layer in self.layers:
            shape = layer._build(shape)
        # Trainable parameters first, so the optimizer steps over one prefix of the buffer.
        order = [l for l in self.layers if l.trainable] + [l for l in self.layers if not l.trainable]
        total = sum(l.param_count for l in self.layers)
        self._params = np.zeros(total, np.float32)
        self._grads = np.zeros(total, np.float32)
        self._grads_zeroed = True
        offset = 0
        for layer in order:
            offset = layer.bind(self._params, self._grads, offset)
        self._n_trainable = sum(l.param_count for l in self.layers if l.trainable)
        rng = np.random.default_rng(self.seed if self.seed is not None else _draw_seed())
        for layer in self.layers:
            layer.initialize(rng)
        # Layers up to the first one with trainable parameters need no input gradient.
        first = next((i for i, l in enumerate(self.layers) if l.trainable and l.param_count), len(self.layers))
        for i, layer in enumerate(self.layers):
            layer.need_input_grad = i > first
        self._backward_layers = list(reversed(self.layers[first:])) if first < len(self.layers) else []
        self.built = True
        if self.optimizer is not None:
            self.optimizer.build(self._n_trainable)

    def count_params(self) -> int:
        self._require_built("count_params")
        return int(self._params.size)

    def summary(self, print_fn=print) -> None:
        """Print each layer with its output shape and parameter count."""
        self._require_built("summary")
        rows = [(f"{l.name} ({type(l).__name__})", str((None,) + tuple(l.output_shape)), f"{l.param_count:,}")
                for l in self.layers]
        w0 = max(len("Layer (type)"), *(len(r[0]) for r in rows)) + 2
        w1 = max(len("Output Shape"), *(len(r[1]) for r in rows)) + 2
        line = "-" * (w0 + w1 + 12)
        out = [f'Model: "{self.name}"', line, f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>10}", "=" * len(line)]
        out += [f"{a:<{w0}}{b:<{w1}}{c:>10}" for a, b, c in rows]
        n_train = self._n_trainable
        out += ["=" * len(line), f"Total params: {self._params.size:,}",
                f"Trainable params: {n_train:,}", f"Non-trainable params: {self._params.size - n_train:,}", line]
        print_fn("\n".join(out))

    # --- training configuration ------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None) -> None:
        """Choose the optimizer, loss and metrics (names or objects, as in Keras)."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = optim_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        names = [metrics] if isinstance(metrics, str) else list(metrics or [])
        self.metrics = [metrics_mod.get(m) for m in names]
        # The optimizer's config is taken when saving: its learning rate may change.
        self._compile_args = {"loss": self.loss.get_config(),
                              "metrics": [m if isinstance(m, str) else m.name for m in names]}
        if not self.built and self.layers and self.layers[0].input_shape is not None:
            self.build()
        if self.built:
            self.optimizer.build(self._n_trainable)

    def _configure_output(self):
        """Decide whether the last layer hands logits to a fused loss kernel."""
        last = self.layers[-1]
        fused = (isinstance(last, Activated) and self.loss.fusable is not None
                 and last.activation == self.loss.fusable and not self.loss.from_logits)
        if self.loss.from_logits and isinstance(last, Activated) and last.activation in ("softmax", "sigmoid"):
            warnings.warn(f"loss has from_logits=True but the last layer applies {last.activation}; "
                          "the loss will treat probabilities as logits", stacklevel=3)
        self._fused = fused
        self._logits = fused or self.loss.from_logits

    @contextlib.contextmanager
    def _emitting_logits(self, on: bool = True):
        """While inside, a fused last layer hands logits to the loss (on=True) or applies its
        activation (on=False, for predict); on exit the previous setting comes back, so an
        evaluate() or predict() inside fit() (validation, a callback) leaves fit's alone."""
        last = self.layers[-1] if self.layers else None
        if not isinstance(last, Activated):
            yield
            return
        before = last.emit_logits
        last.emit_logits = bool(on and getattr(self, "_fused", False))
        try:
            yield
        finally:
            last.emit_logits = before

    # --- data -----------------------------------------------------------------------
    def _prepare_x(self, x, op: str) -> np.ndarray:
        x = as_f32(x, op, "x")
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"{op}: argument 'x' is empty (shape {x.shape})")
        if not self.built:
            self.build(self.input_shape or x.shape[1:])
            if self.optimizer is not None:
                self.optimizer.build(self._n_trainable)
        want = self.layers[0].input_shape
        if x.shape[1:] != want:
            raise ValueError(f"{op}: argument 'x' must have shape (N, {', '.join(map(str, want))}) "
                             f"for this model, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{op}: argument 'x' contains NaN or infinite values")
        return x

    def _prepare_xy(self, x, y, op: str):
        x = self._prepare_x(x, op)
        y = self.loss.prepare_targets(y, self.output_shape, op)
        if len(y) != len(x):
            raise ValueError(f"{op}: 'x' has {len(x)} samples but 'y' has {len(y)}")
        return x, y

    def _buf(self, key, shape, dtype=np.float32):
        bufs = self.__dict__.setdefault("_bufs", {})
        k = (key, shape)
        if k not in bufs:
            bufs[k] = np.empty(shape, dtype)
        return bufs[k]

    # --- one step -------------------------------------------------------------------
    def _forward(self, x, training: bool):
        mask = None  # padding mask (N, T) made by an Embedding(mask_zero=True), if any
        for layer in self.layers:
            x, mask = layer.forward_masked(x, training, mask)
        return x

    def _train_step(self, xb, yb):
        loss_sum, pred = self._loss_and_grads(xb, yb)
        n = self._n_trainable
        self.optimizer.step(self._params[:n], self._grads[:n], zero_grads=True)
        self._grads_zeroed = True
        return loss_sum, pred

    def _loss_and_grads(self, xb, yb):
        """Forward, loss and backward for one batch: the gradient of the mean loss lands
        in the flat gradient buffer. Returns (sum of losses, predictions)."""
        out = self._forward(xb, True)
        if self._grads_zeroed:  # by the last optimizer step, except what it does not update
            if self._n_trainable < self._grads.size:
                self._grads[self._n_trainable:].fill(0.0)
        else:
            self._grads.fill(0.0)
        self._grads_zeroed = False
        dout = self._buf("dout", out.shape)
        dout.fill(0.0)
        probs = self._buf("probs", out.shape) if self._fused else None
        loss_sum = self.loss.forward_backward(dout, probs, out, yb, self._logits)
        d = dout
        for layer in self._backward_layers:
            d = layer.backward(d)
        return loss_sum, (probs if probs is not None else out)

    def _eval_batch(self, xb, yb):
        out = self._forward(xb, False)
        probs = np.empty(out.shape, np.float32) if self._fused else None
        loss_sum = self.loss.forward_backward(None, probs, out, yb, self._logits)
        return loss_sum, (probs if probs is not None else out)

    # --- public loops ---------------------------------------------------------------
    def fit(self, x, y, batch_size: int = 32, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            seed: int | None = None, initial_epoch: int = 0):
        """Train for `epochs` passes over (x, y); returns a History.

        x is converted once to C-contiguous float32 (e.g. the float64 result of
        ``x / 255.0``); y to int32 labels or float32 targets as the loss needs.
        `seed` fixes the shuffling and dropout masks (weights are fixed by the model's
        seed): the same seeds give bitwise-identical weights for any thread count.
        Epoch times in the history count training steps only, not validation.
        """
        self._require_compiled("fit")
        _check_int(batch_size, "batch_size", "fit")
        _check_int(epochs, "epochs", "fit", minimum=0)
        x, y = self._prepare_xy(x, y, "fit")
        if validation_data is not None and validation_split:
            raise ValueError("fit: give either validation_data or validation_split, not both")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        val = None
        if validation_split:
            cut = int(len(x) * (1.0 - validation_split))
            if cut < 1 or cut == len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves no training or validation samples")
            x, y, val = x[:cut], y[:cut], (x[cut:], y[cut:])
        elif validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val)")
            val = self._prepare_xy(*validation_data, "fit (validation_data)")

        self._configure_output()
        rng = np.random.default_rng(seed if seed is not None else _draw_seed())
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "_base_seed"):
                layer._base_seed = int(rng.integers(0, 2**63 - 1)) if layer.seed is None else layer.seed
                layer._calls = 0
        n = len(x)
        steps = (n + batch_size - 1) // batch_size
        cbs = callbacks_mod.CallbackList(
            callbacks, add_history=True, add_progbar=_verbosity(verbose) > 0,
            verbose=_verbosity(verbose), model=self,
            params={"epochs": epochs, "steps": steps, "samples": n, "batch_size": batch_size})
        self.stop_training = False
        with self._emitting_logits():
            cbs.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch, {})
                for m in self.metrics:
                    m.reset()
                order = rng.permutation(n) if shuffle else np.arange(n)
                total, seen = 0.0, 0
                t0 = time.perf_counter()
                for step in range(steps):
                    idx = order[step * batch_size:(step + 1) * batch_size]
                    # mode="clip": the indices are valid, and numpy's default mode="raise"
                    # stages an out= result through a temporary (twice the time).
                    xb = np.take(x, idx, axis=0, out=self._buf("xb", (len(idx),) + x.shape[1:]),
                                 mode="clip")
                    yb = y[idx]
                    loss_sum, pred = self._train_step(xb, yb)
                    if not math.isfinite(loss_sum):
                        raise FloatingPointError(
                            f"fit: the loss became {loss_sum} at epoch {epoch + 1}, step {step + 1}; "
                            "lower the learning rate or check the data")
                    total += loss_sum
                    seen += len(idx)
                    logs = {"loss": total / seen, "size": len(idx)}
                    for m in self.metrics:
                        m.update_batch(yb, pred)
                        logs[m.name] = m.result()
                    cbs.on_train_batch_end(step, logs)
                epoch_time = time.perf_counter() - t0
                logs = {"loss": total / seen}
                for m in self.metrics:
                    logs[m.name] = float(m.result())
                if val is not None:
                    vals = self._evaluate_arrays(val[0], val[1], batch_size)
                    logs.update({"val_" + k: v for k, v in vals.items()})
                logs["epoch_time"] = epoch_time
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
            cbs.on_train_end({})
        return cbs.history

    def _evaluate_arrays(self, x, y, batch_size) -> dict:
        for m in self.metrics:
            m.reset()
        total = 0.0
        with self._emitting_logits():
            for b in range(0, len(x), batch_size):
                xb, yb = x[b:b + batch_size], y[b:b + batch_size]
                loss_sum, pred = self._eval_batch(xb, yb)
                total += loss_sum
                for m in self.metrics:
                    m.update_batch(yb, pred)
        out = {"loss": total / len(x)}
        for m in self.metrics:
            out[m.name] = float(m.result())
        return out

    def evaluate(self, x, y, batch_size: int = 32, verbose="auto", return_dict: bool = False):
        """Loss and metrics over (x, y): a scalar loss, or [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        _check_int(batch_size, "batch_size", "evaluate")
        x, y = self._prepare_xy(x, y, "evaluate")
        self._configure_output()
        res = self._evaluate_arrays(x, y, batch_size)
        if _verbosity(verbose):
            print(" - ".join(f"{k}: {v:.4f}" for k, v in res.items()))
        if return_dict:
            return res
        vals = list(res.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size: int = 32, verbose=0) -> np.ndarray:
        """Model outputs for x, computed in batches (no dropout)."""
        _check_int(batch_size, "batch_size", "predict")
        x = self._prepare_x(x, "predict")
        out = np.empty((len(x),) + tuple(self.output_shape), np.float32)
        with self._emitting_logits(False):
            for b in range(0, len(x), batch_size):
                out[b:b + batch_size] = self._forward(x[b:b + batch_size], False)
        return out

    def __call__(self, x) -> np.ndarray:
        x = self._prepare_x(x, "__call__")
        with self._emitting_logits(False):
            return self._forward(x, False)

    # --- weights and files ------------------------------------------------------------
    def get_weights(self) -> list:
        """Copies of every parameter array, layer by layer."""
        self._require_built("get_weights")
        return [w.copy() for layer in self.layers for _, w in layer.weights()]

    def set_weights(self, weights) -> None:
        """Set every parameter from a list shaped like get_weights()'s."""
        self._require_built("set_weights")
        targets = [(layer.name, name, w) for layer in self.layers for name, w in layer.weights()]
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"set_weights: expected {len(targets)} arrays, got {len(weights)}")
        for (lname, pname, w), new in zip(targets, weights):
            new = np.asarray(new)
            if new.shape != w.shape:
                raise ValueError(f"set_weights: {lname}.{pname} has shape {w.shape}, got {new.shape}")
        for (_, _, w), new in zip(targets, weights):
            w[...] = new

    def get_config(self) -> dict:
        return {"name": self.name, "input_shape": list(self.layers[0].input_shape) if self.built else None,
                "layers": [{"class": type(l).__name__, "config": l.get_config()} for l in self.layers]}

    def save(self, path) -> None:
        """Save architecture, weights, compile settings and optimizer state to one file
        (safetensors layout). The file is replaced atomically: a failed save never
        leaves a half-written file in place of a good one."""
        self._require_built("save")
        tensors = {}
        for i, layer in enumerate(self.layers):
            for name, w in layer.weights():
                tensors[f"layers.{i}.{name}"] = w
            for name, a in layer.state().items():
                tensors[f"layers.{i}.state.{name}"] = a
        meta = {"fastnn_format": FORMAT_VERSION, "config": json.dumps(self.get_config())}
        if self._compile_args is not None:
            meta["compile"] = json.dumps({"optimizer": self.optimizer.get_config(),
                                          **self._compile_args})
            if self.optimizer is not None and self.optimizer.iterations:
                meta["optimizer_iterations"] = str(self.optimizer.iterations)
                for k, v in self.optimizer.state().items():
                    tensors[f"optimizer.{k}"] = v
        io.save_safetensors(os.fspath(path), tensors, meta)

    # --- checks ---------------------------------------------------------------------
    def _require_built(self, op):
        if not self.built:
            raise ValueError(f"{op}: the model is not built yet; give the first layer input_shape=... "
                             "or call build(input_shape) or fit first")

    def _require_compiled(self, op):
        if self.loss is None:
            raise ValueError(f"{op}: call compile(optimizer=..., loss=...) first")


def load_model(path) -> Sequential:
    """Load a model saved with Model.save: architecture, weights, and (if it was
    compiled) loss, metrics and optimizer with its state."""
    path = os.fspath(path)
    tensors, meta = io.load_safetensors(path)
    if meta.get("fastnn_format") != FORMAT_VERSION or "config" not in meta:
        raise ValueError(f"load_model: {path!r} is not a fastnn model file (format {meta.get('fastnn_format')!r})")
    try:
        cfg = json.loads(meta["config"])
        layers = [layer_class(entry["class"]).from_config(entry["config"]) for entry in cfg["layers"]]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"load_model: {path!r} has a corrupt model description ({e})") from None
    model = Sequential(layers, name=cfg.get("name", "sequential"))
    model.build(tuple(cfg["input_shape"]))
    for i, layer in enumerate(model.layers):
        for name, w in layer.weights():
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
    if "compile" in meta:
        c = json.loads(meta["compile"])
        model.compile(optimizer=optim_mod.from_config(c["optimizer"]), loss=losses_mod.from_config(c["loss"]),
                      metrics=c["metrics"])
        if "optimizer_iterations" in meta:
            model.optimizer.iterations = int(meta["optimizer_iterations"])
            for k, v in model.optimizer.state().items():
                key = f"optimizer.{k}"
                if key in tensors and tensors[key].shape == v.shape:
                    v[...] = tensors[key]
    return model


def _check_int(v, name, op, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum}, got {v!r}")


def _verbosity(verbose) -> int:
    if verbose == "auto":
        return 1
    return int(verbose)
