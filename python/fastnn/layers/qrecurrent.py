"""Int8 inference of the LSTM and GRU layers (after fastnn.quantization.quantize).

The layer's kernel (C, G·U) and recurrent_kernel (U, G·U) are int8 per output column
(its QuantKernels state); the bias stays float32. One call runs the whole sequence in
C++ (fastnn._core.qlstm_forward / qgru_forward, contract in cpp/include/fastnn/
qrecurrent.h; NumPy twin fastnn.reference.qlstm / qgru): the input projection of all
steps is one int8 product, x quantized per tensor (dynamically per call, or with the
calibrated static scale); each step quantizes h_prev per tensor (dynamically per step,
as torch's quantize_dynamic does, or with the static scale calibrated on the float
layer's outputs) for the int8 recurrent product; gates and state updates run in float32.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops import quant as qops


def _static(layer):
    """(x_scale, x_zp, h_scale, h_zp); the scales are None for dynamic quantization."""
    xs, xz = layer.qinput("kernel")
    hs, hz = layer.qinput("recurrent_kernel")
    return xs, xz, hs, hz


def qlstm_run(layer, x, states, m, reverse) -> dict:
    n, t, _ = x.shape
    u = layer.units
    y = np.empty((n, t, u), np.float32)
    c = np.empty((n, t, u), np.float32)
    W, R = layer.qweight("kernel"), layer.qweight("recurrent_kernel")
    xs, xz, hs, hz = _static(layer)
    _core.qlstm_forward(y, c, layer.buffer("xa", (n, t, 4 * u)), None, x, states[0], states[1],
                        m, W.packed, W.scale, R.packed, R.scale,
                        layer.bias if layer.use_bias else None, xs, xz, hs, hz, reverse,
                        layer.buffer("qwork", (_core.qlstm_forward_work(n, u),)))
    return {"y": y, "c": c}


def gru_recurrent_packs(layer):
    """(packed R, packed R_h or None) of a quantized GRU: the whole (U, 3U) kernel for
    reset_after; for the original form R_zr = R[:, :2U] and R_h = R[:, 2U:] packed apart
    (each step multiplies r ⊙ h_prev by R_h alone)."""
    if layer.reset_after:
        return layer.qweight("recurrent_kernel"), None
    a, u = layer._q["recurrent_kernel"], layer.units
    key = ("recurrent_kernel_split", id(a["int8"]))
    p = layer._packed.get(key)
    if p is None:
        q, sc = a["int8"], a["scale"]
        p = layer._packed[key] = (
            qops.pack_qweight(np.ascontiguousarray(q[:, :2 * u]), sc[:2 * u].copy()),
            qops.pack_qweight(np.ascontiguousarray(q[:, 2 * u:]), sc[2 * u:].copy()))
    return p


def qgru_run(layer, x, states, m, reverse) -> dict:
    n, t, _ = x.shape
    u = layer.units
    y = np.empty((n, t, u), np.float32)
    W = layer.qweight("kernel")
    R, Rh = gru_recurrent_packs(layer)
    xs, xz, hs, hz = _static(layer)
    _core.qgru_forward(y, layer.buffer("xa", (n, t, 3 * u)), None, None, x, states[0], m,
                       W.packed, W.scale, R.packed, R.scale,
                       None if Rh is None else Rh.packed, None if Rh is None else Rh.scale,
                       layer.bias if layer.use_bias else None, xs, xz, hs, hz, reverse,
                       layer.reset_after,
                       layer.buffer("qwork", (_core.qgru_forward_work(n, u),)))
    return {"y": y}
