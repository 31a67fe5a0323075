"""Post-training int8 quantization (as TF-MOT's quantize_model, torch's quantize_dynamic,
ONNX Runtime's quantize_dynamic / quantize_static).

    qmodel = fn.quantization.quantize(model)                              # dynamic
    qmodel = fn.quantization.quantize(model, mode="static",
                                      calibration_data=x_train[:1000])     # static
    qmodel.predict(x); qmodel.evaluate(x, y); qmodel.save("model.fastnn")
    fn.quantization.model_bytes(qmodel)  # bytes of weights, int8 and float32

Every Dense, Conv2D (groups 1; Conv1D too), MultiHeadAttention projection (so the
attention, feed-forward and output layers of a TransformerEncoder), LSTM and GRU (both
forms; inside Bidirectional too) gets int8 kernels,
symmetric per output channel; Embedding and PositionalEmbedding token tables become int8
too (per channel, gathered and scaled: weight-only, no input range). Its input is quantized per tensor to uint8 with a zero
point: from each batch's range at run time ("dynamic"), or from the range its layer saw
on ``calibration_data`` ("static"; ``method="minmax"`` or ``"percentile"``, which clips
the (100 - percentile)% most extreme values on each side). Products accumulate in int32
and are dequantized, biased and activated in one pass; see fastnn.layers.quantized. An
LSTM/GRU quantizes its kernel and recurrent_kernel; its input projection over all steps
is one int8 product (x quantized per tensor as above), and each step quantizes h_prev per
tensor (dynamic: from that step's range, as torch's quantize_dynamic does; static: from
the range of the float layer's outputs on the calibration data) for the recurrent int8
product; gates stay float32 (fastnn.layers.qrecurrent). Other layers (normalization,
SimpleRNN, pooling, position tables) stay float32.

The model given is not changed: quantize works on a copy (of ``strip_pruning(model)`` for a
model that is being pruned). The copy predicts, evaluates,
saves and loads (the int8 kernels and their scales are int8 / float32 tensors in the
file); it does not train.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .layers.quantized import OBSERVER, QuantKernels, check_mode

__all__ = ["quantize", "quantized_layers", "model_bytes"]

METHODS = ("minmax", "percentile")


def _all_layers(model):
    for leaf in model._leaf_layers:
        yield from leaf.all_layers()


def quantized_layers(model) -> dict:
    """{layer name: mode} of the quantized layers of a built model."""
    return {la.name: la.quantization for la in _all_layers(model)
            if isinstance(la, QuantKernels) and la.quantization is not None}


def saved_record(model) -> list:
    """[[position, class, mode], ...] of the quantized layers, by their position in the
    model's layer order (names of a subclassed model's layers are not saved)."""
    return [[i, type(la).__name__, la.quantization] for i, la in enumerate(_all_layers(model))
            if isinstance(la, QuantKernels) and la.quantization is not None]


def model_bytes(model) -> int:
    """Bytes of the model's weights: its float32 parameters and layer state (int8 kernels,
    their scales, normalization statistics). The saved file adds the architecture and,
    when compiled with state, the optimizer's moments."""
    model._require_ready("model_bytes")
    return int(model._params.nbytes + sum(a.nbytes for a in model._state_arrays().values()))


def _copy(model):
    from .models import load_model

    fd, path = tempfile.mkstemp(suffix=".fastnn")
    os.close(fd)
    try:
        model.save(path, include_optimizer=False)  # an int8 copy does not train
        return load_model(path)
    finally:
        os.remove(path)


class _Ranges:
    """The input range of every quantizable kernel over the calibration batches."""

    def __init__(self, method: str, percentile: float):
        self.method, self.percentile = method, percentile
        self.lo: dict = {}
        self.hi: dict = {}
        self.samples: dict = {}

    def __call__(self, layer, name, x):
        key = (layer.name, name)
        if self.method == "minmax":
            lo, hi = float(x.min()), float(x.max())
            self.lo[key] = min(self.lo.get(key, lo), lo)
            self.hi[key] = max(self.hi.get(key, hi), hi)
        else:
            flat = x.reshape(-1)
            step = max(1, flat.size // 65536)  # at most 64 K values per batch
            self.samples.setdefault(key, []).append(flat[::step].copy())

    def range(self, layer, name):
        key = (layer.name, name)
        if self.method == "minmax":
            if key not in self.lo:
                return None
            return self.lo[key], self.hi[key]
        if key not in self.samples:
            return None
        v = np.concatenate(self.samples[key])
        lo, hi = np.percentile(v, [100.0 - self.percentile, self.percentile])
        return float(lo), float(hi)


def quantize(model, mode: str = "dynamic", calibration_data=None, method: str = "minmax",
             percentile: float = 99.99, batch_size: int = 32):
    """Return an int8 copy of a built model (see the module docstring).

    mode: "dynamic" or "static". calibration_data: inputs (as predict takes them) that
    static mode runs the float model on to fix each quantized layer's input range;
    method: "minmax" or "percentile" (with ``percentile`` in (50, 100]).
    """
    from .models import Model

    if not isinstance(model, Model):
        raise TypeError(f"quantize: model must be a fastnn model, got {type(model).__name__}")
    if not model._ready:
        raise ValueError("quantize: the model is not built yet; build it (input_shape=..., "
                         "build() or fit) before quantizing")
    check_mode(mode, "quantize")
    if method not in METHODS:
        raise ValueError(f"quantize: method must be one of {METHODS}, got {method!r}")
    if not (isinstance(percentile, (int, float)) and 50.0 < percentile <= 100.0):
        raise ValueError(f"quantize: percentile must be in (50, 100], got {percentile!r}")
    if mode == "dynamic" and calibration_data is not None:
        raise ValueError("quantize: calibration_data is for mode='static'; dynamic mode "
                         "takes each batch's own range")
    if mode == "static" and calibration_data is None:
        raise ValueError("quantize: mode='static' needs calibration_data (a few hundred "
                         "typical inputs)")
    if quantized_layers(model):
        raise ValueError("quantize: the model is quantized already")
    from . import pruning
    if pruning.is_pruned(model):  # quantize what would be exported: no masks
        model = pruning.strip_pruning(model)
    qmodel = _copy(model)
    ranges = None
    if mode == "static":
        ranges = _Ranges(method, float(percentile))
        OBSERVER[0] = ranges
        try:
            qmodel.predict(calibration_data, batch_size=batch_size)
        except ValueError as e:
            raise ValueError(f"quantize: calibration_data does not fit the model: {e}") from None
        finally:
            OBSERVER[0] = None
    done = 0
    for layer in _all_layers(qmodel):
        if not isinstance(layer, QuantKernels) or not layer.can_quantize():
            continue
        r = None
        if ranges is not None and not layer.weight_only:
            r = {k: ranges.range(layer, k) for k in layer.quantizable_kernels}
            if any(v is None for v in r.values()):
                continue  # never reached by the calibration data: left in float32
        layer.to_int8(mode, r)
        done += 1
    if not done:
        raise ValueError("quantize: the model has no layer that can be quantized (Dense, "
                         "Conv2D with groups=1, MultiHeadAttention, LSTM, GRU)")
    qmodel._finalize()
    return qmodel


def apply_saved(model, record: list) -> None:
    """Give a freshly built model the int8 structure a saved file describes (saved_record;
    load_model loads the values next)."""
    layers = list(_all_layers(model))
    for pos, cls, mode in record:
        if not (0 <= pos < len(layers)) or type(layers[pos]).__name__ != cls:
            raise ValueError(f"layer {pos} of the model is not the quantized {cls} the file "
                             "describes")
        layers[pos].to_int8(mode, fill=False)
    model._finalize()
