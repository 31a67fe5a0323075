"""Bidirectional (Keras name): a recurrent layer run forwards and backwards over the same
sequence, outputs merged."""
from __future__ import annotations

import numpy as np

from .attention import _SeedsDropouts
from .base import Layer, layer_class, register
from .recurrent import _Recurrent

_MERGES = ("concat", "sum", "mul", "ave")


def _class_name(layer) -> str:
    return getattr(type(layer), "_registered_name", type(layer).__name__)


def _as_layer(spec, what: str):
    if isinstance(spec, dict):  # from a saved config
        spec = layer_class(spec["class"]).from_config(spec["config"])
    if not isinstance(spec, _Recurrent):
        raise TypeError(f"Bidirectional: {what} must be an LSTM, GRU or SimpleRNN layer, got "
                        f"{type(spec).__name__}")
    return spec


@register
class Bidirectional(_SeedsDropouts, Layer):
    """Runs a copy of `layer` over the sequence and another copy from its end
    (go_backwards flipped, or `backward_layer`), then merges their outputs: "concat"
    (Keras's default, last axis 2U), "sum", "mul" or "ave". The backward copy's outputs
    are put back in time order before the merge. With return_state the outputs are
    [y, forward states..., backward states...]; initial_state takes the forward states
    then the backward ones. A padding mask reaches both copies; with return_sequences
    their outputs at padded steps are zero (zero_output_for_mask, as Keras sets it)."""

    supports_masking = True

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kw):
        layer = _as_layer(layer, "layer")
        if merge_mode not in _MERGES:
            raise ValueError(f"Bidirectional: merge_mode must be one of {list(_MERGES)}, got "
                             f"{merge_mode!r}")
        super().__init__(**kw)
        self.merge_mode = merge_mode
        cfg = layer.get_config()
        self._layer_entry = {"class": _class_name(layer), "config": cfg}
        self.forward_layer = type(layer).from_config({**cfg, "name": "forward_" + layer.name})
        if backward_layer is None:
            self._backward_entry = None
            self.backward_layer = type(layer).from_config(
                {**cfg, "name": "backward_" + layer.name, "go_backwards": not layer.go_backwards})
        else:
            backward_layer = _as_layer(backward_layer, "backward_layer")
            self._backward_entry = {"class": _class_name(backward_layer),
                                    "config": backward_layer.get_config()}
            f, b = layer, backward_layer
            for attr in ("return_sequences", "return_state"):
                if getattr(f, attr) != getattr(b, attr):
                    raise ValueError(f"Bidirectional: layer and backward_layer must have the "
                                     f"same {attr}")
            if f.go_backwards == b.go_backwards:
                raise ValueError("Bidirectional: backward_layer must have the opposite "
                                 "go_backwards of layer")
            if type(f) is not type(b) or f.units != b.units:
                raise ValueError("Bidirectional: layer and backward_layer must be the same "
                                 "kind of layer with the same units")
            self.backward_layer = backward_layer
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self._n_states = 2 * layer._n_states
        self._saved = None
        self.seed = None  # the copies' dropout seeds derive from the fit's (_SeedsDropouts)

    @property
    def units(self) -> int:
        return self.forward_layer.units

    def build(self, input_shape):
        self.add_sublayer(self.forward_layer, input_shape)
        self.add_sublayer(self.backward_layer, input_shape)
        u = self.units
        last = 2 * u if self.merge_mode == "concat" else u
        out = (input_shape[0], last) if self.return_sequences else (last,)
        self.output_shapes = [out] + [(u,)] * (self._n_states if self.return_state else 0)
        return out

    compute_mask = _Recurrent.compute_mask
    _states_arg = _Recurrent._states_arg
    _graph_inputs = _Recurrent._graph_inputs
    _call_eager = _Recurrent._call_eager

    def forward_multi(self, inputs, training, mask):
        f, b = self.forward_layer, self.backward_layer
        f.need_input_grad = b.need_input_grad = self.need_input_grad
        x, states = inputs[0], inputs[1:]
        k = f._n_states
        if states and len(states) != self._n_states:
            raise ValueError(f"{self.name}: initial_state must hold {self._n_states} states")
        yf, sf = f.run(x, states[:k], training, mask, f.go_backwards)
        yb, sb = b.run(x, states[k:], training, mask, b.go_backwards)
        of, ob = f._output(yf, sf, mask), b._output(yb, sb, mask)
        if self.return_sequences:
            ob = ob[:, ::-1]  # the backward copy's outputs back in time order
        y = self._merge(of, ob, training)
        if training:
            self._saved = (of, ob)
        return [y] + sf + sb if self.return_state else [y]

    def forward(self, x, training=False, mask=None):
        return self.forward_multi([x], training, mask)[0]

    def _merge(self, of, ob, training):
        shape = of.shape[:-1] + ((2 * of.shape[-1],) if self.merge_mode == "concat" else of.shape[-1:])
        y = self.buffer("y", shape) if training else np.empty(shape, np.float32)
        if self.merge_mode == "concat":
            u = of.shape[-1]
            y[..., :u], y[..., u:] = of, ob
        elif self.merge_mode == "sum":
            np.add(of, ob, out=y)
        elif self.merge_mode == "mul":
            np.multiply(of, ob, out=y)
        else:
            np.add(of, ob, out=y)
            y *= 0.5
        return y

    def _split(self, dy):
        """Gradients of the two copies' outputs from that of the merged output."""
        of, ob = self._saved
        if self.merge_mode == "concat":
            u = of.shape[-1]
            return dy[..., :u], dy[..., u:]
        if self.merge_mode == "sum":
            return dy, dy
        if self.merge_mode == "mul":
            return dy * ob, dy * of
        return dy * 0.5, dy * 0.5

    def backward_multi(self, douts):
        if self._saved is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(training=True) first")
        f, b = self.forward_layer, self.backward_layer
        k = f._n_states
        dy, dstates = douts[0], list(douts[1:]) + [None] * (self._n_states - len(douts) + 1)
        dyf = dyb = None
        if dy is not None:
            dyf, dyb = self._split(np.asarray(dy, np.float32))
            if self.return_sequences:
                dyb = dyb[:, ::-1]
        gf = f.backward_multi([dyf] + dstates[:k])
        gb = b.backward_multi([dyb] + dstates[k:])
        dx = None
        if self.need_input_grad:
            dx = gf[0]
            np.add(dx, gb[0], out=dx)
        return [dx] + gf[1:] + gb[1:]

    def backward(self, dy):
        return self.backward_multi([dy])[0]

    def get_config(self):
        cfg = {**super().get_config(), "layer": self._layer_entry, "merge_mode": self.merge_mode}
        cfg.pop("input_shape", None)
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        if self._backward_entry is not None:
            cfg["backward_layer"] = self._backward_entry
        return cfg
