"""Recurrent layers (Keras names): LSTM, GRU, SimpleRNN, each one kernel call per batch
for the whole sequence (fastnn.ops.recurrent describes the kernels).

Keras semantics: inputs (N, T, C); ``return_sequences`` gives (N, T, U), else the last
output (N, U); ``return_state`` adds the final states ([y, h, c] for an LSTM, [y, h]
otherwise); ``go_backwards`` reads the sequence from its end and returns the outputs in
that order; ``initial_state`` (a list of (N, U) tensors) starts the recurrence.
A padding mask (from Embedding(mask_zero=True)) carries the states over padded steps;
with return_sequences the mask passes on, and ``zero_output_for_mask`` makes the outputs
at padded steps zero (Bidirectional sets it, as Keras does). ``dropout`` drops input
channels and ``recurrent_dropout`` units of h_prev in the recurrent product, with one
mask per sample for all steps (Keras's variational dropout).

LSTM and GRU run in int8 after fastnn.quantization.quantize (inference only): their
kernel and recurrent_kernel become int8 per output column, the input is quantized once
per call and h_prev once per step (fastnn._core.qlstm_forward / qgru_forward; the NumPy
twin is fastnn.reference.qlstm / qgru).
"""
from __future__ import annotations

import numpy as np

from .. import _core, initializers
from ..ops.recurrent import as_mask
from .base import Layer, register
from . import qrecurrent
from .core import Dropout
from .quantized import QuantKernels, observe


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    return int(v)


def _rate(v, what: str) -> float:
    v = float(v)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {v!r}")
    return v


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class _Recurrent(QuantKernels, Layer):
    """What LSTM, GRU and SimpleRNN share: arguments, weights, masks, dropout, states.

    A subclass sets ``_gates`` (4, 3 or 1), ``_n_states`` (2 or 1) and implements
    ``_forward_kernel`` and ``_backward_kernel``."""

    supports_masking = True
    _gates = 1
    _n_states = 1
    _activations = ("tanh",)
    _next_seed = Dropout._next_seed  # one dropout seed per training call, from `seed`

    def __init__(self, units: int, activation="tanh", use_bias: bool = True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, seed: int | None = None, **kw):
        super().__init__(**kw)
        cls = type(self).__name__
        self.units = _positive_int(units, f"{cls}: units")
        if activation not in self._activations:
            raise ValueError(f"{cls}: activation must be one of {list(self._activations)}, "
                             f"got {activation!r}")
        if stateful:
            raise ValueError(f"{cls}: stateful=True is not supported (pass the states with "
                             "initial_state and return_state instead)")
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.dropout = _rate(dropout, f"{cls}: dropout")
        self.recurrent_dropout = _rate(recurrent_dropout, f"{cls}: recurrent_dropout")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)  # accepted for Keras code; the kernel never unrolls
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.seed = seed
        self._calls = 0
        self._base_seed = None
        self._saved = None

    # --- building -------------------------------------------------------------------
    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: {type(self).__name__} expects sequences (N, T, C), "
                             f"got samples of shape {tuple(input_shape)}")
        t, c = input_shape
        gu = self._gates * self.units
        self.add_kernel("kernel", (c, gu), self.kernel_initializer)
        self.add_kernel("recurrent_kernel", (self.units, gu), self.recurrent_initializer)
        if self.use_bias:
            self.add_weight("bias", self._bias_shape(), self._bias_initializer())
        out = (t, self.units) if self.return_sequences else (self.units,)
        self.output_shapes = [out] + [(self.units,)] * (self._n_states if self.return_state else 0)
        return out

    def compute_mask(self, x, mask):
        return mask if self.return_sequences else None

    def creates_mask(self) -> bool:
        return False  # passes the input's mask on or drops it

    # --- graph calls: initial_state in, final states out ------------------------------
    def _states_arg(self, initial_state):
        if initial_state is None:
            return []
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(states) != self._n_states:
            raise ValueError(f"{self.name}: initial_state must be a list of {self._n_states} "
                             f"state(s) of shape (N, {self.units}), got {len(states)}")
        return states

    def _graph_inputs(self, args, kwargs):
        initial_state = kwargs.pop("initial_state", None)
        if len(args) == 2 and initial_state is None:
            args, initial_state = args[:1], args[1]
        if kwargs:
            raise TypeError(f"{self.name}: unexpected arguments {sorted(kwargs)}")
        if len(args) != 1:
            raise TypeError(f"{self.name}: expected one input sequence, got {len(args)} arguments")
        states = self._states_arg(initial_state)
        for s in states:
            if tuple(s.shape[1:]) != (self.units,):
                raise ValueError(f"{self.name}: each initial state must have shape "
                                 f"(N, {self.units}), got {tuple(s.shape)}")
        if states or self.return_state:
            return [args[0]] + states, "multi", {}
        return [args[0]], "single", {}

    def _call_eager(self, x, initial_state=None, mask=None, training=False):
        x = _f32(x)
        if not self.built:
            self._build(x.shape[1:])
            n = self.param_count
            self.bind(np.empty(n, np.float32), np.zeros(n, np.float32), 0)
            self.initialize(np.random.default_rng())
        states = self._states_arg(initial_state)
        if states or self.return_state:
            outs = self.forward_multi([x] + states, bool(training), mask)
            return outs if self.return_state else outs[0]
        return self.forward(x, bool(training), mask=mask)

    # --- running --------------------------------------------------------------------
    def _dropout_masks(self, n, c, training):
        """(input mask (N, 1, C) or None, recurrent mask (N, U) or None), scaled."""
        if not training or (self.dropout == 0.0 and self.recurrent_dropout == 0.0):
            return None, None
        rng = np.random.default_rng(self._next_seed())
        dm = rm = None
        if self.dropout:
            keep = 1.0 - self.dropout
            dm = ((rng.random((n, 1, c)) < keep) / keep).astype(np.float32)
        if self.recurrent_dropout:
            keep = 1.0 - self.recurrent_dropout
            rm = ((rng.random((n, self.units)) < keep) / keep).astype(np.float32)
        return dm, rm

    def run(self, x, states, training, mask, reverse):
        """The recurrence over x (N, T, C): (y (N, T, U) in time order, [final states]).
        Keeps what backward needs when training."""
        x = _f32(x)
        if x.ndim != 3 or x.shape[2] != self.input_shape[1]:
            raise ValueError(f"{self.name}: expects sequences (N, T, {self.input_shape[1]}), "
                             f"got shape {x.shape}")
        n, t, c = x.shape
        m = as_mask(mask, n, t, self.name)
        dm, rm = self._dropout_masks(n, c, training)
        xin = x
        if dm is not None:
            xin = self.buffer("xin", x.shape)
            np.multiply(x, dm, out=xin)
        states = [_f32(s) for s in states] + [None] * (self._n_states - len(states))
        if self.quantization is not None:
            self.check_inference(training)
            saved = self._qforward_kernel(xin, states, m, reverse)
        else:
            if not training:
                observe(self, "kernel", x)
            saved = self._forward_kernel(xin, states, m, rm, reverse, training)
            if not training:  # the range of every h_prev: the outputs and h0
                observe(self, "recurrent_kernel", saved["y"] if states[0] is None else
                        np.concatenate([saved["y"].reshape(-1), states[0].reshape(-1)]))
        y = saved["y"]
        last = 0 if reverse else t - 1
        finals = [np.ascontiguousarray(y[:, last])]
        if "c" in saved:
            finals.append(np.ascontiguousarray(saved["c"][:, last]))
        if training:
            saved.update(x=xin, mask=m, rmask=rm, dmask=dm, states=states, reverse=reverse)
            self._saved = saved
        return y, finals

    def _output(self, y, finals, mask):
        """The layer's first output from the time-ordered y."""
        if not self.return_sequences:
            return finals[0]
        if self.zero_output_for_mask and mask is not None:
            y = y * (np.asarray(mask) != 0)[:, :, None]
        return np.ascontiguousarray(y[:, ::-1]) if self.go_backwards else y

    def forward(self, x, training=False, mask=None):
        y, finals = self.run(x, [], training, mask, self.go_backwards)
        return self._output(y, finals, mask)

    def forward_multi(self, inputs, training, mask):
        y, finals = self.run(inputs[0], inputs[1:], training, mask, self.go_backwards)
        out = self._output(y, finals, mask)
        return [out] + finals if self.return_state else [out]

    def run_backward(self, dy_seq, dfinals):
        """Gradients from the time-ordered dy (N, T, U) or None and the final states'
        gradients (each may be None): returns (dx or None, [initial states' gradients])."""
        s = self._saved
        if s is None:
            raise RuntimeError(f"{self.name}: backward() needs a forward(training=True) first")
        x = s["x"]
        dx = self.buffer("dx", x.shape, zero=True) if self.need_input_grad else None
        dstates = [self.buffer(f"ds{i}", st.shape, zero=True) if st is not None else None
                   for i, st in enumerate(s["states"])]
        dfinals = [None if d is None else _f32(d) for d in dfinals]
        dfinals += [None] * (self._n_states - len(dfinals))
        self._backward_kernel(dx, dy_seq, dfinals, dstates, s)
        if dx is not None and s["dmask"] is not None:
            np.multiply(dx, s["dmask"], out=dx)
        return dx, dstates

    def _sequence_grad(self, dy):
        """The time-ordered gradient of y from the gradient of the first output."""
        s = self._saved
        if not self.return_sequences:
            return None, _f32(dy)
        dy = np.asarray(dy, np.float32)
        if self.go_backwards:
            dy = dy[:, ::-1]
        if self.zero_output_for_mask and s["mask"] is not None:
            dy = dy * (s["mask"] != 0)[:, :, None]
        return _f32(dy), None

    def backward(self, dy):
        dseq, dh = self._sequence_grad(dy)
        dx, _ = self.run_backward(dseq, [dh])
        return dx

    def backward_multi(self, douts):
        dy, dstate = douts[0], list(douts[1:])
        dseq, dh = (None, None) if dy is None else self._sequence_grad(dy)
        dfin = dstate + [None] * (self._n_states - len(dstate))
        if dh is not None:
            dfin[0] = dh if dfin[0] is None else dh + dfin[0]
        dx, dstates = self.run_backward(dseq, dfin)
        return [dx] + dstates

    def can_quantize(self) -> bool:  # LSTM and GRU name their kernels; SimpleRNN none
        return bool(self.quantizable_kernels)

    def _grad_args(self):
        """The parameter gradient arrays (None when the layer is frozen)."""
        if not self.trainable:
            return None, None, None
        return self.dkernel, self.drecurrent_kernel, (self.dbias if self.use_bias else None)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "recurrent_initializer": self.recurrent_initializer,
                "bias_initializer": self.bias_initializer, "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "unroll": self.unroll,
                "zero_output_for_mask": self.zero_output_for_mask, "seed": self.seed}

    def _out(self, key, shape, training):
        return self.buffer(key, shape) if training else np.empty(shape, np.float32)


@register
class LSTM(_Recurrent):
    """Long short-term memory (Keras LSTM): kernel (C, 4U), recurrent_kernel (U, 4U),
    bias (4U) with gates i, f, c, o; unit_forget_bias starts the forget gate's bias at 1.
    To load a PyTorch nn.LSTM see fastnn.reference.lstm_from_torch."""

    _gates, _n_states = 4, 2
    quantizable_kernels = ("kernel", "recurrent_kernel")

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid",
                 unit_forget_bias: bool = True, **kw):
        if recurrent_activation != "sigmoid":
            raise ValueError(f"LSTM: recurrent_activation must be 'sigmoid', got "
                             f"{recurrent_activation!r}")
        super().__init__(units, activation, **kw)
        self.recurrent_activation = recurrent_activation
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, u = initializers.get(self.bias_initializer), self.units

        def unit_forget(shape, rng):
            b = np.asarray(base(shape, rng), np.float32).copy()
            b[u:2 * u] = 1.0
            return b
        return unit_forget

    def _forward_kernel(self, x, states, m, rm, reverse, training):
        n, t, _ = x.shape
        u = self.units
        y = self._out("y", (n, t, u), training)
        c = self._out("c", (n, t, u), training)
        g = self._out("gates", (n, t, 4 * u), training)
        _core.lstm_forward(y, c, g, x, states[0], states[1], m, rm, self.kernel,
                           self.recurrent_kernel, self.bias if self.use_bias else None, reverse)
        return {"y": y, "c": c, "gates": g}

    def _qforward_kernel(self, x, states, m, reverse):
        return qrecurrent.qlstm_run(self, x, states, m, reverse)

    def _backward_kernel(self, dx, dy, dfinals, dstates, s):
        x = s["x"]
        n, t, _ = x.shape
        work = self.buffer("work", (_core.lstm_backward_work(n, t, self.units),))
        dW, dR, db = self._grad_args()
        _core.lstm_backward(dx, dW, dR, db, dstates[0], dstates[1], dy, dfinals[0], dfinals[1],
                            s["y"], s["c"], s["gates"], x, s["states"][0], s["states"][1],
                            s["mask"], s["rmask"], self.kernel, self.recurrent_kernel,
                            s["reverse"], work)

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation,
                "unit_forget_bias": self.unit_forget_bias}


@register
class GRU(_Recurrent):
    """Gated recurrent unit (Keras GRU): kernel (C, 3U), recurrent_kernel (U, 3U), gates
    z, r, h. reset_after=True (Keras's default, the cuDNN/PyTorch form) has bias (2, 3U):
    input and recurrent bias; reset_after=False the original form with bias (3U).
    To load a PyTorch nn.GRU see fastnn.reference.gru_from_torch."""

    _gates, _n_states = 3, 1
    quantizable_kernels = ("kernel", "recurrent_kernel")

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid",
                 reset_after: bool = True, **kw):
        if recurrent_activation != "sigmoid":
            raise ValueError(f"GRU: recurrent_activation must be 'sigmoid', got "
                             f"{recurrent_activation!r}")
        super().__init__(units, activation, **kw)
        self.recurrent_activation = recurrent_activation
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _forward_kernel(self, x, states, m, rm, reverse, training):
        n, t, _ = x.shape
        u = self.units
        y = self._out("y", (n, t, u), training)
        g = self._out("gates", (n, t, 3 * u), training)
        hn = self._out("hn", (n, t, u), training)
        _core.gru_forward(y, g, hn, x, states[0], m, rm, self.kernel, self.recurrent_kernel,
                          self.bias if self.use_bias else None, reverse, self.reset_after)
        return {"y": y, "gates": g, "hn": hn}

    def _qforward_kernel(self, x, states, m, reverse):
        return qrecurrent.qgru_run(self, x, states, m, reverse)

    def _backward_kernel(self, dx, dy, dfinals, dstates, s):
        x = s["x"]
        n, t, _ = x.shape
        work = self.buffer("work", (_core.gru_backward_work(n, t, self.units, self.reset_after),))
        dW, dR, db = self._grad_args()
        _core.gru_backward(dx, dW, dR, db, dstates[0], dy, dfinals[0], s["y"], s["gates"],
                           s["hn"], x, s["states"][0], s["mask"], s["rmask"], self.kernel,
                           self.recurrent_kernel, s["reverse"], self.reset_after, work)

    def get_config(self):
        return {**super().get_config(), "recurrent_activation": self.recurrent_activation,
                "reset_after": self.reset_after}


@register
class SimpleRNN(_Recurrent):
    """Fully connected recurrence (Keras SimpleRNN): h_t = act(x_t·kernel +
    h_prev·recurrent_kernel + bias), act "tanh" or "relu"."""

    _gates, _n_states = 1, 1
    _activations = ("tanh", "relu")

    def _act(self):
        return _core.Act.relu if self.activation == "relu" else _core.Act.tanh

    def _forward_kernel(self, x, states, m, rm, reverse, training):
        n, t, _ = x.shape
        y = self._out("y", (n, t, self.units), training)
        _core.simple_rnn_forward(y, x, states[0], m, rm, self.kernel, self.recurrent_kernel,
                                 self.bias if self.use_bias else None, reverse, self._act())
        return {"y": y}

    def _backward_kernel(self, dx, dy, dfinals, dstates, s):
        x = s["x"]
        n, t, _ = x.shape
        work = self.buffer("work", (_core.simple_rnn_backward_work(n, t, self.units),))
        dW, dR, db = self._grad_args()
        _core.simple_rnn_backward(dx, dW, dR, db, dstates[0], dy, dfinals[0], s["y"], x,
                                  s["states"][0], s["mask"], s["rmask"], self.kernel,
                                  self.recurrent_kernel, s["reverse"], self._act(), work)
