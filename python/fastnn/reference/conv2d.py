"""NumPy twins of fastnn.ops.conv2d and fastnn.ops.conv2d_backward (any float dtype).

im2col + matmul, written for clarity: pad x, gather the KH·KW shifted views into columns,
one matrix product per group. The geometry (strides, 'same' padding, ...) is resolved by
the same function as the kernels' wrapper, fastnn.ops.conv2d_geometry.
"""
from __future__ import annotations

import numpy as np

from ..ops.conv2d import conv2d_geometry
from .activation import _derivative, _forward, _kind


def _act_grad(dy, y, z, kind):
    """dy ⊙ act'(.), from the output y (relu, sigmoid, tanh) or pre-activation z (gelu)."""
    return dy * _derivative(kind, z, y)


def _windows(geo, kh, kw):
    """Slices of the padded input that output pixels read for kernel tap (kh, kw)."""
    h0, w0 = kh * geo.dil_h, kw * geo.dil_w
    return (slice(h0, h0 + (geo.out_h - 1) * geo.stride_h + 1, geo.stride_h),
            slice(w0, w0 + (geo.out_w - 1) * geo.stride_w + 1, geo.stride_w))


def _pad(x, geo):
    return np.pad(x, ((0, 0), (geo.pad_top, geo.pad_bottom), (geo.pad_left, geo.pad_right),
                      (0, 0)))


def _im2col(x, geo, KH, KW):
    """(N, OH, OW, KH, KW, C): the input values each output pixel reads."""
    xp = _pad(x, geo)
    return np.stack([np.stack([xp[:, sh, sw, :] for sh, sw in
                               (_windows(geo, kh, kw) for kw in range(KW))], axis=3)
                     for kh in range(KH)], axis=3)


def conv2d(x, w, b=None, strides=1, padding="valid", dilation=1, groups=1,
           activation="linear", out=None, z=None):
    kind = _kind(activation)
    x, w = np.asarray(x), np.asarray(w)
    KH, KW, Cg, OC = w.shape
    OCg = OC // groups
    geo = conv2d_geometry(x.shape[1:3], w.shape, strides, padding, dilation)
    cols = _im2col(x, geo, KH, KW)  # (N, OH, OW, KH, KW, C)
    N, OH, OW = cols.shape[:3]
    pre = np.empty((N, OH, OW, OC), dtype=np.result_type(x, w))
    for g in range(groups):
        cg = cols[..., g * Cg:(g + 1) * Cg].reshape(N * OH * OW, KH * KW * Cg)
        wg = w[..., g * OCg:(g + 1) * OCg].reshape(KH * KW * Cg, OCg)
        pre[..., g * OCg:(g + 1) * OCg] = (cg @ wg).reshape(N, OH, OW, OCg)
    if b is not None:
        pre = pre + b
    if z is not None:
        z[...] = pre
    y = _forward(pre, kind)
    if out is None:
        return y
    out[...] = y
    return out


def conv2d_backward(dy, x, w, y=None, z=None, strides=1, padding="valid", dilation=1,
                    groups=1, activation="linear", *, has_bias=True, need_dx=True,
                    need_dw=True, dx=None, dw=None, db=None):
    kind = _kind(activation)
    dy, x, w = np.asarray(dy), np.asarray(x), np.asarray(w)
    KH, KW, Cg, OC = w.shape
    OCg = OC // groups
    geo = conv2d_geometry(x.shape[1:3], w.shape, strides, padding, dilation)
    g = _act_grad(dy, None if y is None else np.asarray(y), None if z is None else np.asarray(z),
                  kind)
    N, OH, OW = g.shape[:3]
    P = N * OH * OW

    def add(acc, value):
        if acc is None:
            return value
        acc += value
        return acc

    gdw = gdx = None
    if need_dw:
        cols = _im2col(x, geo, KH, KW)
        gdw = np.empty(w.shape, dtype=np.result_type(x, g))
        for gi in range(groups):
            cg = cols[..., gi * Cg:(gi + 1) * Cg].reshape(P, KH * KW * Cg)
            gg = g[..., gi * OCg:(gi + 1) * OCg].reshape(P, OCg)
            gdw[..., gi * OCg:(gi + 1) * OCg] = (cg.T @ gg).reshape(KH, KW, Cg, OCg)
    if need_dx:
        xp = np.zeros(_pad(x, geo).shape, dtype=np.result_type(w, g))
        for gi in range(groups):
            gg = g[..., gi * OCg:(gi + 1) * OCg].reshape(P, OCg)
            wg = w[..., gi * OCg:(gi + 1) * OCg].reshape(KH * KW * Cg, OCg)
            dcol = (gg @ wg.T).reshape(N, OH, OW, KH, KW, Cg)
            for kh in range(KH):
                for kw in range(KW):
                    sh, sw = _windows(geo, kh, kw)
                    xp[:, sh, sw, gi * Cg:(gi + 1) * Cg] += dcol[:, :, :, kh, kw, :]
        H, W = x.shape[1:3]
        gdx = xp[:, geo.pad_top:geo.pad_top + H, geo.pad_left:geo.pad_left + W, :]
    dx = add(dx, gdx) if need_dx else None
    dw = add(dw, gdw) if need_dw else None
    db = add(db, g.sum(axis=(0, 1, 2))) if has_bias or db is not None else None
    return dx, dw, db
