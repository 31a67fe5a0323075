"""Int8 inference on fastnn's kernels: quantized dense and 2-D convolution forwards.

Scheme (as ONNX Runtime's dynamic quantization): activations x ≈ x_scale · (q − zp) with
q uint8 and one (x_scale, zp) per tensor; weights w[:, n] ≈ scale[n] · qweight[:, n] with
qweight int8 in [-127, 127], symmetric per output column. The int8 products accumulate
exactly in int32; one fused epilogue per output element then computes

    y = act(float(acc − zp · colsum[n]) · (x_scale · scale[n]) + b[n])

in float32 in that order (fastnn/qgemm.h), colsum[n] = Σ_k qweight[k, n].

A weight is quantized and packed once (``pack_qweight`` / ``QWeight``), for the int8 ISA
in use (``fastnn._core.qgemm_isa()``: "amx", "avx512vnni", "avx2" or "generic"; force one with
``fastnn._core.set_qgemm_isa`` before packing). Then ``qdense`` / ``qconv2d`` are one
kernel call per batch: the float input is quantized (dynamically from its own range when
``x_scale`` is None, else with the given static ``x_scale`` / ``x_zero_point``), multiplied
and dequantized in the same call, without the GIL.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from ..reference.quant import dequantize_u8, quantize_weight
from ._util import as_f32, from_any, new_out
from .activation import ACTIVATIONS, act_kind, check_out
from .conv2d import conv2d_geometry

__all__ = ["QWeight", "pack_qweight", "quantize_weight", "qdense", "qconv2d", "quantize_u8",
           "quantize_u8_dynamic", "dequantize_u8", "qgemm_s32"]


def _packed_buffer(K: int, N: int) -> np.ndarray:
    """An uninitialised uint8 buffer for a packed (K, N) weight, starting on a 64-byte
    boundary: the kernels load B 64 bytes at a time, and a buffer off by 16 (NumPy's
    large allocations) splits every load over two cache lines (up to 1.6x slower when
    B streams from L2, as at batch 1)."""
    size = _core.qgemm_packed_size(K, N)
    raw = np.empty(size + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + size]


def _scale_value(v, op: str, name: str) -> float:
    """A finite float32 scale > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        if isinstance(v, np.ndarray) and v.size == 1:
            v = v.item()
        else:
            raise TypeError(f"{op}: argument '{name}' must be a float scale > 0, got {v!r}")
    f = float(v)
    if not (math.isfinite(f) and f > 0 and np.isfinite(np.float32(f)) and np.float32(f) > 0):
        raise ValueError(f"{op}: argument '{name}' must be a finite float32 > 0, got {v!r}")
    return f


def _zero_point(v, op: str, name: str) -> int:
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        else:
            raise TypeError(f"{op}: argument '{name}' must be an integer in [0, 255], got {v!r}")
    if not 0 <= int(v) <= 255:
        raise ValueError(f"{op}: argument '{name}' must be an integer in [0, 255], got {v!r}")
    return int(v)


def _input_params(x_scale, x_zero_point, op: str):
    """(x_scale or None, zero point) of a call: None means dynamic quantization."""
    if x_scale is None:
        if x_zero_point is not None:
            raise ValueError(f"{op}: argument 'x_zero_point' is given without 'x_scale' (dynamic "
                             "quantization derives both from the batch); pass both or neither")
        return None, 0
    s = _scale_value(x_scale, op, "x_scale")
    z = 0 if x_zero_point is None else _zero_point(x_zero_point, op, "x_zero_point")
    return s, z


class QWeight:
    """An int8 weight, quantized per output column and packed once for the int8 kernels.

    Attributes: ``qweight`` int8, the unpacked weight (K, N) for dense or (KH, KW, C, OC)
    for conv (what to save); ``scale`` float32 (N,); ``packed`` uint8, the kernels' layout
    of the (K, N) matrix with its column sums; ``colsum`` int32 (N,); ``isa`` the int8 ISA
    it was packed for; ``K``, ``N``; ``kernel_shape`` (KH, KW, C, OC) for a conv weight,
    else None.

    w: a float (K, N) or (KH, KW, C, OC) weight, quantized with ``quantize_weight``
    (scale = max|w[:, n]| / 127), or with the given per-column ``scale``; or an int8
    weight, then ``scale`` (N,) is required and its values must lie in [-128, 127].
    """

    __slots__ = ("qweight", "scale", "packed", "colsum", "isa", "K", "N", "kernel_shape")

    def __init__(self, w, scale=None):
        op = "pack_qweight"
        arr = from_any(w, op, "w")
        if arr.ndim not in (2, 4):
            raise ValueError(f"{op}: argument 'w' must be 2-D (K, N) or 4-D (KH, KW, C, OC), "
                             f"got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{op}: argument 'w' is empty (shape {arr.shape})")
        N = arr.shape[-1]
        if scale is not None:
            scale = as_f32(scale, op, "scale")
            if scale.shape != (N,):
                raise ValueError(f"{op}: argument 'scale' must have shape (N,) = ({N},), got "
                                 f"{scale.shape}")
            if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
                raise ValueError(f"{op}: argument 'scale' must hold finite values > 0")
        if arr.dtype == np.int8:
            if scale is None:
                raise ValueError(f"{op}: argument 'scale' (float32 (N,) = ({N},)) is required "
                                 "with an int8 weight")
            q = np.ascontiguousarray(arr)
        elif arr.dtype.kind in "fiu" and arr.dtype != np.uint8:
            wf = as_f32(arr, op, "w")
            if not np.all(np.isfinite(wf)):
                raise ValueError(f"{op}: argument 'w' holds NaN or infinity")
            if scale is None:
                q, scale = quantize_weight(wf.reshape(-1, N))
                q = q.reshape(arr.shape)
            else:
                q = np.clip(np.rint(wf / scale), -127, 127).astype(np.int8)
        else:
            raise TypeError(f"{op}: argument 'w' must be a float weight or an int8 one, got "
                            f"dtype {arr.dtype}")
        self.qweight = q
        self.scale = np.ascontiguousarray(scale, dtype=np.float32)
        self.kernel_shape = tuple(int(s) for s in q.shape) if q.ndim == 4 else None
        mat = q.reshape(-1, N)
        self.K, self.N = int(mat.shape[0]), int(N)
        self.packed = _packed_buffer(self.K, self.N)
        _core.qgemm_pack_b(self.packed, mat)
        self.isa, _, _, self.colsum = _core.qgemm_packed_info(self.packed)

    def dequantize(self) -> np.ndarray:
        """The float32 weight the int8 one stands for: qweight · scale."""
        return self.qweight.astype(np.float32) * self.scale

    def __repr__(self):
        shape = self.kernel_shape or (self.K, self.N)
        return f"QWeight(shape={shape}, isa={self.isa!r})"


def pack_qweight(w, scale=None) -> QWeight:
    """Quantize (if float) and pack a weight once; see QWeight."""
    return QWeight(w, scale)


def _check_qw(qw, op: str, conv: bool) -> QWeight:
    if not isinstance(qw, QWeight):
        raise TypeError(f"{op}: argument 'qw' must be a QWeight (fastnn.ops.pack_qweight(w)), "
                        f"got {type(qw).__name__}")
    if conv and qw.kernel_shape is None:
        raise ValueError(f"{op}: argument 'qw' must hold a 4-D (KH, KW, C, OC) conv kernel, got "
                         f"a 2-D ({qw.K}, {qw.N}) weight")
    if not conv and qw.kernel_shape is not None:
        raise ValueError(f"{op}: argument 'qw' must hold a 2-D (K, N) weight, got a conv kernel "
                         f"{qw.kernel_shape}")
    return qw


def _bias(b, n: int, op: str):
    if b is None:
        return None
    b = as_f32(b, op, "b")
    if b.shape != (n,):
        raise ValueError(f"{op}: argument 'b' must have shape (N,) = ({n},), got {b.shape}")
    return b


_FAST_ACT = {None: _core.Act.linear, **{a: getattr(_core.Act, a) for a in ACTIVATIONS}}


def _f32_ready(a, shape) -> bool:
    """a is a float32 C-contiguous ndarray of exactly `shape` (no conversion needed)."""
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.shape == shape
            and a.flags.c_contiguous)


def qdense(x, qw, b=None, activation="linear", x_scale=None, x_zero_point=None,
           out=None) -> np.ndarray:
    """Return activation(dequantized(quantized(x) @ qw) + b) as float32 (..., N).

    x: float (N, K) or (..., K), converted once to C-contiguous float32. qw: a QWeight of
    shape (K, N). b: (N,) or None. activation: "linear" (or None), "relu", "sigmoid",
    "tanh" or "gelu". x_scale None: dynamic per-tensor quantization of this batch (range
    [min(x, 0), max(x, 0)]); else static, with x_zero_point (default 0) in [0, 255].
    out: optional float32 C-contiguous (..., N) array that receives the result.
    """
    # The common call (2-D float32 x, dynamic quantization or a Python float x_scale and
    # int zero point, arrays that need no conversion) goes straight to the binding, which
    # checks shapes, overlaps and values again; any other call takes the checked path.
    if (type(qw) is QWeight and qw.kernel_shape is None
            and ((x_scale is None and x_zero_point is None)
                 or (type(x_scale) is float and (x_zero_point is None
                                                 or type(x_zero_point) is int)))
            and type(x) is np.ndarray and x.ndim == 2
            and x.shape[0] > 0 and _f32_ready(x, (x.shape[0], qw.K))
            and (b is None or _f32_ready(b, (qw.N,)))
            and (activation is None or isinstance(activation, str))):
        act = _FAST_ACT.get(activation)
        shape = (x.shape[0], qw.N)
        if act is not None and (out is None or (_f32_ready(out, shape) and out.flags.writeable)):
            if out is None:
                out = np.empty(shape, np.float32)
            _core.qdense_f32(out, None, x, qw.packed, qw.scale, b, x_scale,
                             x_zero_point or 0, act)
            return out
    op = "qdense"
    act = act_kind(activation, op)
    qw = _check_qw(qw, op, conv=False)
    x = as_f32(x, op, "x")
    if x.ndim < 2:
        raise ValueError(f"{op}: argument 'x' must be (N, K) or (..., K), got shape {x.shape}")
    if x.shape[-1] != qw.K:
        raise ValueError(f"{op}: argument 'x' has {x.shape[-1]} features (last axis) but 'qw' "
                         f"of shape ({qw.K}, {qw.N}) expects K = {qw.K}")
    b = _bias(b, qw.N, op)
    s, z = _input_params(x_scale, x_zero_point, op)
    shape = x.shape[:-1] + (qw.N,)
    out = check_out(out, shape, op) if out is not None else np.empty(shape, np.float32)
    _core.qdense_f32(out.reshape(-1, qw.N), None, x.reshape(-1, qw.K), qw.packed, qw.scale, b,
                     s, z, act)
    return out


def qconv2d(x, qw, b=None, strides=1, padding="valid", dilation=1, activation="linear",
            x_scale=None, x_zero_point=None, out=None) -> np.ndarray:
    """Int8 2-D convolution of channels-last x: returns float32 (N, OH, OW, OC).

    x: (N, H, W, C) float. qw: a QWeight of a (KH, KW, C, OC) kernel (the float Conv2D's
    layout). b: (OC,) or None. strides, padding, dilation, activation: as fastnn.ops.conv2d
    (groups = 1). The input is quantized as in qdense; padded pixels take its zero point
    (the quantized 0.0). out: optional float32 C-contiguous (N, OH, OW, OC) array.
    """
    op = "qconv2d"
    act = act_kind(activation, op)
    qw = _check_qw(qw, op, conv=True)
    x = as_f32(x, op, "x")
    KH, KW, C, OC = qw.kernel_shape
    if x.ndim != 4:
        raise ValueError(f"{op}: argument 'x' must be 4-D (N, H, W, C), got shape {x.shape}")
    if x.shape[3] != C:
        raise ValueError(f"{op}: argument 'x' has C = {x.shape[3]} channels but 'qw' of kernel "
                         f"shape {qw.kernel_shape} expects C = {C}")
    geo = conv2d_geometry(x.shape[1:3], qw.kernel_shape, strides, padding, dilation, op)
    b = _bias(b, OC, op)
    s, z = _input_params(x_scale, x_zero_point, op)
    shape = (x.shape[0], geo.out_h, geo.out_w, OC)
    out = check_out(out, shape, op) if out is not None else np.empty(shape, np.float32)
    qconv2d_run(out, x, qw, b, geo, act, s, z)
    return out


def _new_scratch(key, shape, dtype):
    return np.empty(shape, dtype)


def qconv2d_run(out, x, qw: QWeight, b, geo, act, x_scale, x_zero_point: int,
                scratch=_new_scratch) -> None:
    """The kernel call of qconv2d for arguments already checked: out (N, OH, OW, OC), x
    (N, H, W, C) float32, geo a conv2d_geometry, act a _core.Act, x_scale None for dynamic.
    scratch(key, shape, dtype) gives the uint8 scratch arrays (new ones by default; a
    layer passes its reusable buffer())."""
    KH, KW, C, _ = qw.kernel_shape
    xq = scratch("xq", x.shape, np.uint8)
    direct = (KH == KW == 1 and geo.stride_h == geo.stride_w == 1 and
              geo.out_h == x.shape[1] and geo.out_w == x.shape[2])
    col = None if direct else scratch(
        "col", (x.shape[0] * geo.out_h * geo.out_w, KH * KW * C), np.uint8)
    _core.qconv2d_f32(out, xq, col, x, qw.packed, qw.scale, b, x_scale, x_zero_point, KH, KW,
                      geo.stride_h, geo.stride_w, geo.pad_top, geo.pad_left, geo.dil_h,
                      geo.dil_w, act)


def _q_out(out, shape, op: str) -> np.ndarray:
    out = new_out(shape, out, op) if out is not None else np.empty(shape, np.uint8)
    if out.dtype != np.uint8:
        raise TypeError(f"{op}: argument 'out' must be a uint8 array, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{op}: argument 'out' must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: argument 'out' must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{op}: argument 'out' is read-only but is written")
    return out


def quantize_u8(x, scale, zero_point=0, out=None) -> np.ndarray:
    """q uint8 = clip(rint(x / scale) + zero_point, 0, 255) (float32, IEEE division, round
    half to even; NaN gives 0), same shape as x. scale: finite > 0; zero_point in [0, 255]."""
    op = "quantize_u8"
    x = as_f32(x, op, "x")
    s = _scale_value(scale, op, "scale")
    z = _zero_point(zero_point, op, "zero_point")
    if x.size == 0:
        raise ValueError(f"{op}: argument 'x' is empty (shape {x.shape})")
    out = _q_out(out, x.shape, op)
    _core.quantize_u8(out.reshape(-1), x.reshape(-1), s, z)
    return out


def quantize_u8_dynamic(x, out=None):
    """(q uint8, scale, zero_point): x quantized per tensor over [min(x, 0), max(x, 0)].

    scale = (max − min) / 255 (1 when that is 0), zero_point = clip(rint(−min / scale), 0,
    255), all in float32. ValueError for NaN or infinity in x."""
    op = "quantize_u8_dynamic"
    x = as_f32(x, op, "x")
    if x.size == 0:
        raise ValueError(f"{op}: argument 'x' is empty (shape {x.shape})")
    out = _q_out(out, x.shape, op)
    s, z = _core.quantize_u8_dynamic(out.reshape(-1), x.reshape(-1))
    return out, s, z


def qgemm_s32(a_u8, qw_or_b_int8, out=None) -> np.ndarray:
    """int32 (M, N) = a uint8 (M, K) @ b int8 (K, N), exact.

    qw_or_b_int8: a QWeight (its packed weight is used) or an int8 (K, N) array (packed for
    this call). out: optional int32 C-contiguous (M, N) array."""
    op = "qgemm_s32"
    a = from_any(a_u8, op, "a_u8")
    if a.dtype != np.uint8:
        raise TypeError(f"{op}: argument 'a_u8' must be a uint8 array (M, K), got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{op}: argument 'a_u8' must be 2-D (M, K), got shape {a.shape}")
    a = np.ascontiguousarray(a)
    if isinstance(qw_or_b_int8, QWeight):
        packed, K, N = qw_or_b_int8.packed, qw_or_b_int8.K, qw_or_b_int8.N
    else:
        bm = from_any(qw_or_b_int8, op, "qw_or_b_int8")
        if bm.dtype != np.int8:
            raise TypeError(f"{op}: argument 'qw_or_b_int8' must be a QWeight or an int8 array "
                            f"(K, N), got dtype {bm.dtype}")
        if bm.ndim != 2:
            raise ValueError(f"{op}: argument 'qw_or_b_int8' must be 2-D (K, N), got shape "
                             f"{bm.shape}")
        bm = np.ascontiguousarray(bm)
        K, N = bm.shape
        packed = _packed_buffer(K, N)
        _core.qgemm_pack_b(packed, bm)
    if a.shape[1] != K:
        raise ValueError(f"{op}: argument 'a_u8' has K = {a.shape[1]} columns but the weight "
                         f"is ({K}, {N})")
    shape = (a.shape[0], N)
    if out is None:
        out = np.empty(shape, np.int32)
    else:
        out = new_out(shape, out, op)
        if out.dtype != np.int32 or out.shape != shape or not out.flags.c_contiguous:
            raise ValueError(f"{op}: argument 'out' must be a C-contiguous int32 array of shape "
                             f"{shape}, got {out.dtype} {out.shape}")
    _core.qgemm_s32(out, a, packed)
    return out
