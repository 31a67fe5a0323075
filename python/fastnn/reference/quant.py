"""NumPy twins of fastnn.ops' int8 quantization functions: same names, same arguments.

Scheme: activations x ≈ x_scale · (q − x_zero_point), q uint8, per tensor; weights
w[:, n] ≈ scale[n] · qweight[:, n], qweight int8 in [-127, 127], symmetric per output
column. Every float step is float32, in the order the C++ kernels document (qgemm.h), so
the quantizers and the int32 products match bit for bit and the linear/relu outputs of
qdense/qconv2d match too (sigmoid/tanh/gelu to a few ulp).

``quantize_weight`` is also what fastnn.ops.quant uses (weights are quantized offline).
"""
from __future__ import annotations

import numpy as np

from ..ops.conv2d import conv2d_geometry
from .activation import _forward, _kind
from .conv2d import _im2col

_F = np.float32


def quantize_weight(w):
    """(qweight int8 (K, N), scale float32 (N,)): symmetric per column of a float (K, N) w.

    scale[n] = max_k |w[k, n]| / 127 (1 for an all-zero column); qweight =
    clip(rint(w / scale), -127, 127).
    """
    w = np.asarray(w, dtype=_F)
    amax = np.max(np.abs(w), axis=0)
    scale = (amax / _F(127)).astype(_F)
    scale[scale == 0] = _F(1)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def quantize_u8(x, scale, zero_point):
    """q uint8 = clip(rint(x / scale) + zero_point, 0, 255) in float32; NaN gives 0."""
    x = np.asarray(x, dtype=_F)
    with np.errstate(over="ignore"):  # |x| / scale past float32: clipped below, as in C++
        v = np.rint(x / _F(scale)) + _F(zero_point)
    v = np.where(np.isnan(v), _F(0), v)
    return np.clip(v, 0, 255).astype(np.uint8)


def quantize_u8_dynamic(x):
    """(q, scale, zero_point) over the range [min(x, 0), max(x, 0)] of float32 x.

    scale = (max − min) / 255 (1 when that is 0), zero_point = clip(rint(−min / scale),
    0, 255), both in float32. Raises ValueError for NaN or infinity in x.
    """
    x = np.asarray(x, dtype=_F)
    if not np.all(np.isfinite(x)):
        raise ValueError("quantize_u8_dynamic: argument 'x' holds NaN or infinity")
    mn = min(_F(x.min()), _F(0)) if x.size else _F(0)
    mx = max(_F(x.max()), _F(0)) if x.size else _F(0)
    with np.errstate(over="ignore"):  # a range past float32 is inf, as in C++
        scale = _F(_F(mx - mn) / _F(255))
    if scale == 0:
        scale = _F(1)
    zp = int(np.clip(np.rint(_F(-mn) / scale), 0, 255))
    return quantize_u8(x, scale, zp), float(scale), zp


def dequantize_u8(q, scale, zero_point):
    """x ≈ scale · (q − zero_point) as float32."""
    return ((np.asarray(q).astype(np.int32) - int(zero_point)).astype(_F) * _F(scale))


def _weight(qw):
    """(qweight int8 (K, N), scale float32 (N,)) of a QWeight, a (qweight, scale) pair or
    an int8 array (scale 1)."""
    if hasattr(qw, "qweight"):
        return np.asarray(qw.qweight), np.asarray(qw.scale, dtype=_F)
    if isinstance(qw, tuple):
        return np.asarray(qw[0]), np.asarray(qw[1], dtype=_F)
    qw = np.asarray(qw)
    return qw, np.ones(qw.shape[-1], _F)


def qgemm_s32(a_u8, qw_or_b_int8):
    """int32 (M, N) = a uint8 (M, K) @ b int8 (K, N), exactly (via int64)."""
    b, _ = _weight(qw_or_b_int8)
    b = b.reshape(-1, b.shape[-1])
    return (np.asarray(a_u8).astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


def _epilogue(acc, b_q, w_scale, bias, x_scale, x_zero_point, kind):
    """act(float(acc − zp·colsum) · (x_scale · w_scale) + bias), float32, in that order."""
    colsum = b_q.astype(np.int64).sum(axis=0)
    d = (acc.astype(np.int64) - int(x_zero_point) * colsum).astype(np.int32)
    s = (_F(x_scale) * w_scale).astype(_F)
    z = d.astype(_F) * s
    if bias is not None:
        z = z + np.asarray(bias, dtype=_F)
    return _forward(z.astype(_F), kind).astype(_F)


def _quantize_input(x, x_scale, x_zero_point):
    if x_scale is None:
        q, s, z = quantize_u8_dynamic(x)
        return q, s, z
    z = 0 if x_zero_point is None else int(x_zero_point)
    return quantize_u8(x, x_scale, z), float(x_scale), z


def qdense(x, qw, b=None, activation="linear", x_scale=None, x_zero_point=None, out=None):
    """float32 (..., N): x quantized (dynamically when x_scale is None), times the int8
    weight, through the epilogue."""
    kind = _kind(activation)
    x = np.asarray(x, dtype=_F)
    wq, ws = _weight(qw)
    q, s, z = _quantize_input(x, x_scale, x_zero_point)
    acc = qgemm_s32(q.reshape(-1, x.shape[-1]), wq)
    y = _epilogue(acc, wq, ws, b, s, z, kind).reshape(x.shape[:-1] + (wq.shape[-1],))
    if out is None:
        return y
    out[...] = y
    return out


def qconv2d(x, qw, b=None, strides=1, padding="valid", dilation=1, activation="linear",
            x_scale=None, x_zero_point=None, out=None):
    """Int8 convolution of channels-last x (N, H, W, C) with a (KH, KW, C, OC) weight
    (qw.qweight int8, or the (KH·KW·C, OC) matrix with the kernel shape in qw.kernel_shape);
    the input is padded with its zero point."""
    kind = _kind(activation)
    x = np.asarray(x, dtype=_F)
    wq, ws = _weight(qw)
    shape = getattr(qw, "kernel_shape", None) or wq.shape
    KH, KW, C, OC = shape
    wq = wq.reshape(KH * KW * C, OC)
    geo = conv2d_geometry(x.shape[1:3], (KH, KW, C, OC), strides, padding, dilation)
    q, s, z = _quantize_input(x, x_scale, x_zero_point)
    # Pad with the zero point: shift so that the zero point becomes 0, pad, shift back.
    cols = _im2col(q.astype(np.int32) - z, geo, KH, KW) + z  # (N, OH, OW, KH, KW, C)
    N, OH, OW = cols.shape[:3]
    acc = qgemm_s32(cols.reshape(N * OH * OW, KH * KW * C), wq)
    y = _epilogue(acc, wq, ws, b, s, z, kind).reshape(N, OH, OW, OC)
    if out is None:
        return y
    out[...] = y
    return out
