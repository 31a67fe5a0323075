"""Int8 inference for the layers built on matrix products: Dense, Conv2D (and Conv1D),
MultiHeadAttention, and through them TransformerEncoder.

A quantized layer keeps each of its kernels as int8 per output channel, symmetric:
``w[:, o] ≈ scale[o] · q[:, o]`` with q in [-127, 127] (fastnn.reference.quant). Its input
is quantized per tensor to uint8 with a zero point, either from each batch's own range
(mode "dynamic") or with a scale and zero point fixed beforehand from calibration data
(mode "static"). The product accumulates in int32 and one epilogue dequantizes, adds the
float32 bias and applies the activation (fastnn.ops.qdense / qconv2d).

The int8 kernels, their scales and the static input ranges are layer state, saved with
the model as int8 and float32 tensors; they are not parameters, so a quantized model has
only its biases (and any unquantized layers) in its flat parameter buffer. Quantized
layers run inference only (predict, evaluate, save, load): training one raises.

fastnn.quantization.quantize drives this module; a layer's part is small:
``quantizable_kernels`` names its kernels, ``add_kernel`` replaces add_weight for them,
``observe`` reports a kernel's input while calibrating, and ``qdense_into`` /
``qconv2d_into`` run a product through the int8 kernel.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ..ops import quant as qops
from ..reference.quant import quantize_weight

MODES = ("dynamic", "static")

#: While fastnn.quantization calibrates: a function (layer, kernel name, x) called with
#: each quantizable kernel's float input; None otherwise.
OBSERVER: list = [None]


def observe(layer, name: str, x: np.ndarray) -> None:
    f = OBSERVER[0]
    if f is not None:
        f(layer, name, x)


def check_mode(mode, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be 'dynamic' or 'static', got {mode!r}")
    return mode


def input_params(lo: float, hi: float) -> tuple[float, int]:
    """uint8 scale and zero point of the range [lo, hi] widened to contain 0 (so that 0,
    the padding value, is exact): x ≈ scale · (q - zero_point)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"calibration saw a non-finite input range [{lo}, {hi}]")
    if hi == lo:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.rint(-lo / scale), 0, 255))
    return scale, zp


class QuantKernels:
    """Mixin for a layer whose kernels can run in int8 (put it first in the bases)."""

    #: names of the kernels (2-D (in, out), or (..., in, out) folded to 2-D) to quantize
    quantizable_kernels: tuple = ()
    #: an embedding table: int8 rows gathered and scaled, no product, so no input range
    weight_only = False
    quantization: str | None = None

    def can_quantize(self) -> bool:
        return True

    def add_kernel(self, name: str, shape: tuple, initializer):
        """add_weight for a kernel; its int8 state instead when the layer is quantized."""
        if self.quantization is None:
            return self.add_weight(name, shape, initializer)
        self._alloc_q(name, tuple(shape))
        return None

    def _alloc_q(self, name, shape):
        self.__dict__.setdefault("_q", {})
        self.__dict__.setdefault("_packed", {})
        self._q[name] = {"int8": np.zeros(shape, np.int8),
                         "scale": np.ones(shape[-1], np.float32),
                         "input": np.array([1.0, 0.0], np.float32)}
        self._packed.pop(name, None)

    def to_int8(self, mode: str, ranges: dict | None = None, fill: bool = True) -> None:
        """Turn this layer's float kernels into int8 state (mode 'dynamic' or 'static').

        fill: quantize the current float kernels (else leave zeros, for a file's values to
        be loaded into). ranges: {kernel name: (lo, hi)} of the kernels' inputs, for
        'static' with fill. The kernels' Variables leave the layer: the model that holds
        it must bind its parameters again (Model._finalize)."""
        check_mode(mode, self.name)
        if self.quantization is not None:
            raise ValueError(f"{self.name}: already quantized ({self.quantization})")
        if not self.quantizable_kernels:
            raise TypeError(f"{type(self).__name__} names no quantizable kernels")
        for name in self.quantizable_kernels:
            var = next(v for v in self._vars if v.name == name)
            self._alloc_q(name, var.shape)
            arrs = self._q[name]
            if fill:
                w = np.asarray(var.value, np.float32)
                q, s = quantize_weight(w.reshape(-1, w.shape[-1]))
                arrs["int8"][...] = q.reshape(w.shape)
                arrs["scale"][...] = s
                if mode == "static" and not self.weight_only:
                    scale, zp = input_params(*ranges[name])
                    arrs["input"][...] = (scale, zp)
            self._vars.remove(var)
            self.__dict__.pop(name, None)
            self.__dict__.pop("d" + name, None)
        self.quantization = mode

    def state(self) -> dict:
        st = super().state()
        for name, arrs in getattr(self, "_q", {}).items():
            st[f"{name}_int8"] = arrs["int8"]
            st[f"{name}_scale"] = arrs["scale"]
            if self.quantization == "static" and not self.weight_only:
                st[f"{name}_input"] = arrs["input"]
        return st

    def quantized_count(self) -> int:
        return sum(arrs["int8"].size for arrs in getattr(self, "_q", {}).values())

    def check_inference(self, training: bool) -> None:
        if training:
            raise RuntimeError(f"{self.name}: an int8-quantized layer runs inference only "
                               "(predict, evaluate); train the float model and quantize it "
                               "again")

    def qweight(self, name: str):
        """The packed int8 kernel (a fastnn.ops.QWeight; packed on first use, after
        building or loading)."""
        p = self._packed.get(name)
        if p is None:
            a = self._q[name]
            q = a["int8"]
            if q.ndim == 3:  # a Conv1D kernel (K, C, F): the (1, K, C, F) 2-D kernel
                q = q.reshape((1,) + q.shape)
            p = self._packed[name] = qops.pack_qweight(q, a["scale"])
        return p

    def qinput(self, name: str):
        """(scale, zero point) of a static input, or (None, 0) when dynamic."""
        if self.quantization != "static":
            return None, 0
        s, z = self._q[name]["input"]
        return float(s), int(z)

    def qdense_into(self, y2: np.ndarray, x2: np.ndarray, name: str, bias, act) -> None:
        """y2 (M, N) = act(x2 (M, K) · dequantized kernel + bias), through the int8 kernel
        (the binding fastnn.ops.qdense calls, without its per-call argument checks)."""
        xs, xz = self.qinput(name)
        qw = self.qweight(name)
        _core.qdense_f32(y2, None, x2, qw.packed, qw.scale, bias, xs, xz, act)

    def gather_int8(self, y: np.ndarray, ids: np.ndarray, name: str) -> None:
        """y (N, T, C) = the dequantized rows ids (N, T) of an int8 embedding table:
        scale[c] · q[id, c] in float32 (the NumPy twin is this line itself)."""
        a = self._q[name]
        np.multiply(a["int8"][ids], a["scale"], out=y)

    def qconv2d_into(self, y: np.ndarray, x: np.ndarray, geo, bias, act) -> None:
        """y (N, OH, OW, OC) = act(conv(x, dequantized kernel) + bias) through the int8
        kernel (fastnn.ops.qconv2d's call); geo: the layer's conv2d_geometry."""
        xs, xz = self.qinput("kernel")
        qops.qconv2d_run(y, x, self.qweight("kernel"), bias, geo, act, xs, xz,
                         scratch=self.buffer)

