"""2-D convolution on fastnn's kernels: y = activation(conv(x, w) + b).

Images are channels-last, x (N, H, W, C), and kernels are (KH, KW, C/groups, OC) as in
Keras. One kernel call does the convolution, the bias and the activation; the backward
call forms dz = dy * act'(.) once and derives dx, dw and db from it.

``padding`` is "valid" (none), "same" (as Keras/TensorFlow: output size ceil(H/stride),
the odd pixel of padding at the bottom/right), an int p (p on every side), a pair
(ph, pw) (ph top and bottom, pw left and right) or ((top, bottom), (left, right)).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _core, autodiff
from ..graph import any_symbolic
from ._util import as_f32
from .activation import _NEEDS_Y, act_kind, check_out

class Conv2DGeometry(NamedTuple):
    """Resolved sizes of one convolution (see conv2d_geometry)."""
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    dil_h: int
    dil_w: int
    out_h: int
    out_w: int

    def core_args(self, groups: int) -> dict:
        """Keyword arguments of fastnn._core.conv2d_forward/backward (without act)."""
        return dict(stride_h=self.stride_h, stride_w=self.stride_w, pad_top=self.pad_top,
                    pad_left=self.pad_left, dil_h=self.dil_h, dil_w=self.dil_w, groups=groups)

    def core_pos(self, groups: int) -> tuple:
        """The same, as positional arguments in the kernels' order (act follows): parsing
        them as keywords took 1.5 us of a 3 us call at batch 1."""
        return (self.stride_h, self.stride_w, self.pad_top, self.pad_left, self.dil_h,
                self.dil_w, groups)


def _pair(value, op: str, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as (h, w)."""
    vals = (value, value) if isinstance(value, (int, np.integer)) else value
    try:
        h, w = vals
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise TypeError(f"{op}: argument '{name}' must be an int or a pair of ints (h, w), "
                        f"got {value!r}")
    if h < minimum or w < minimum:
        raise ValueError(f"{op}: argument '{name}' must be >= {minimum}, got {value!r}")
    return int(h), int(w)


def _explicit_padding(padding, op: str):
    """((top, bottom), (left, right)) from an int, (ph, pw) or ((t, b), (l, r))."""
    bad = (f"{op}: argument 'padding' must be 'valid', 'same', an int, a pair (ph, pw) or "
           f"((top, bottom), (left, right)) of ints >= 0, got {padding!r}")

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(padding):
        pads = ((padding, padding), (padding, padding))
    else:
        try:
            ph, pw = padding
        except (TypeError, ValueError):
            raise TypeError(bad) from None
        if is_int(ph) and is_int(pw):
            pads = ((ph, ph), (pw, pw))
        else:
            try:
                (t, b), (l, r) = ph, pw
            except (TypeError, ValueError):
                raise TypeError(bad) from None
            if not all(is_int(v) for v in (t, b, l, r)):
                raise TypeError(bad)
            pads = ((t, b), (l, r))
    if min(min(p) for p in pads) < 0:
        raise ValueError(bad)
    return tuple((int(a), int(b)) for a, b in pads)


def conv2d_geometry(input_shape, kernel_shape, strides=1, padding="valid", dilation=1,
                    op: str = "conv2d") -> Conv2DGeometry:
    """Resolve strides, padding and dilation for input (H, W, ...) and kernel (KH, KW, ...).

    'same' pads as Keras/TensorFlow: out = ceil(in / stride), total padding
    max((out - 1)·stride + (K - 1)·dilation + 1 − in, 0), the larger half at the
    bottom/right. Raises ValueError naming the argument when the (dilated) kernel is
    larger than the padded input or a padding reaches a whole kernel beyond the image.
    """
    sh, sw = _pair(strides, op, "strides", 1)
    dh, dw = _pair(dilation, op, "dilation", 1)
    H, W = int(input_shape[0]), int(input_shape[1])
    KH, KW = int(kernel_shape[0]), int(kernel_shape[1])
    ekh, ekw = (KH - 1) * dh + 1, (KW - 1) * dw + 1
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            pads = ((0, 0), (0, 0))
        elif mode == "same":
            def same(size, s, ek):
                total = max((-(-size // s) - 1) * s + ek - size, 0)
                return total // 2, total - total // 2
            pads = (same(H, sh, ekh), same(W, sw, ekw))
        else:
            raise ValueError(f"{op}: argument 'padding' must be 'valid', 'same', an int, a "
                             f"pair or ((top, bottom), (left, right)), got {padding!r}")
    else:
        pads = _explicit_padding(padding, op)
    (pt, pb), (pl, pr) = pads
    if H + pt + pb < ekh or W + pl + pr < ekw:
        raise ValueError(
            f"{op}: the kernel ({KH}, {KW}) with dilation ({dh}, {dw}) spans ({ekh}, {ekw}) "
            f"pixels, larger than the padded input ({H + pt + pb}, {W + pl + pr}) "
            f"(input ({H}, {W}), padding {padding!r})")
    if max(pt, pb) >= ekh or max(pl, pr) >= ekw:
        raise ValueError(
            f"{op}: argument 'padding' {padding!r} must be smaller than the (dilated) kernel "
            f"size ({ekh}, {ekw}) on each side; wider padding only adds outputs that see no "
            f"input")
    OH = (H + pt + pb - ekh) // sh + 1
    OW = (W + pl + pr - ekw) // sw + 1
    return Conv2DGeometry(sh, sw, pt, pb, pl, pr, dh, dw, OH, OW)


def _groups(groups, op: str) -> int:
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{op}: argument 'groups' must be a positive int, got {groups!r}")
    return int(groups)


def check_conv_inputs(x, w, groups, op: str):
    """Rank and channel checks shared by forward and backward; returns groups as int."""
    groups = _groups(groups, op)
    if x.ndim != 4:
        hint = ""
        if x.ndim == 3:
            hint = (" (for single-channel images add the channel axis, e.g. "
                    "x[..., None] or layers.Reshape((H, W, 1)))")
        raise ValueError(f"{op}: argument 'x' must be 4-D (N, H, W, C), got shape "
                         f"{x.shape}{hint}")
    if w.ndim != 4:
        raise ValueError(f"{op}: argument 'w' must be 4-D (KH, KW, C/groups, OC), got shape "
                         f"{w.shape}")
    C, OC = x.shape[3], w.shape[3]
    if C % groups:
        raise ValueError(f"{op}: argument 'x' has C = {C} channels, not divisible by "
                         f"groups = {groups}")
    if OC % groups:
        raise ValueError(f"{op}: argument 'w' has OC = {OC} output channels, not divisible by "
                         f"groups = {groups}")
    if w.shape[2] != C // groups:
        raise ValueError(f"{op}: argument 'w' of shape {w.shape} expects "
                         f"{w.shape[2] * groups} input channels (w.shape[2] * groups) but "
                         f"'x' has C = {C}; w must be "
                         f"(KH, KW, C/groups, OC) = (KH, KW, {C // groups}, OC)")
    return groups


def conv2d(x, w, b=None, strides=1, padding="valid", dilation=1, groups=1,
           activation="linear", out=None, z=None) -> np.ndarray:
    """Return activation(conv(x, w) + b) for channels-last images.

    x: (N, H, W, C). w: (KH, KW, C/groups, OC). b: (OC,) or None (no bias). Inputs of
    another dtype or layout are converted once to C-contiguous float32.
    strides, dilation: int or (h, w). padding: see the module docstring. groups: C and OC
    split into this many independent groups (groups == C: depthwise).
    activation: "linear" (or None), "relu", "sigmoid", "tanh" or "gelu" (exact erf form).
    out: optional float32 C-contiguous (N, OH, OW, OC) array that receives the result.
    z: optional float32 C-contiguous (N, OH, OW, OC) array that receives the
    pre-activation conv(x, w) + b, which conv2d_backward needs for gelu.
    """
    op = "conv2d"
    if any_symbolic((x, w, b)):
        if out is not None or z is not None:
            raise TypeError("conv2d: out= and z= are not taken on symbolic tensors")
        return autodiff.conv2d_op(x, w, b, strides=strides, padding=padding,
                                  dilation=dilation, groups=groups, activation=activation)
    act = act_kind(activation, op)
    x = as_f32(x, op, "x")
    w = as_f32(w, op, "w")
    groups = check_conv_inputs(x, w, groups, op)
    geo = conv2d_geometry(x.shape[1:3], w.shape, strides, padding, dilation, op)
    OC = w.shape[3]
    if b is not None:
        b = as_f32(b, op, "b")
        if b.shape != (OC,):
            raise ValueError(f"{op}: argument 'b' must have shape (OC,) = ({OC},), got {b.shape}")
    shape = (x.shape[0], geo.out_h, geo.out_w, OC)
    out = check_out(out, shape, op) if out is not None else np.empty(shape, np.float32)
    if z is not None:
        z = check_out(z, shape, op, "z")
    _core.conv2d_forward(out, z, x, w, b, *geo.core_pos(groups), act)
    return out


def conv2d_backward(dy, x, w, y=None, z=None, strides=1, padding="valid", dilation=1,
                    groups=1, activation="linear", *, has_bias=True, need_dx=True,
                    need_dw=True, dx=None, dw=None, db=None):
    """Gradients of y = activation(conv(x, w) + b): returns (dx, dw, db).

    dy: (N, OH, OW, OC) upstream gradient; x, w and the geometry arguments as given to
    conv2d. y: the forward output, required for relu, sigmoid and tanh. z: the
    pre-activation (conv2d(..., z=z)), required for gelu.
    has_bias / need_dx / need_dw: False skips db / dx / dw (returned as None), e.g.
    need_dx=False for the first layer.
    dx, dw, db: optional float32 C-contiguous arrays of shapes (N, H, W, C),
    (KH, KW, C/groups, OC), (OC,) that the gradients are ADDED into (as the kernels do);
    those not given are returned as fresh arrays. dy is never modified.
    """
    op = "conv2d_backward"
    act = act_kind(activation, op)
    name = act.name
    dy = as_f32(dy, op, "dy")
    x = as_f32(x, op, "x")
    w = as_f32(w, op, "w")
    groups = check_conv_inputs(x, w, groups, op)
    geo = conv2d_geometry(x.shape[1:3], w.shape, strides, padding, dilation, op)
    yshape = (x.shape[0], geo.out_h, geo.out_w, w.shape[3])
    if dy.shape != yshape:
        raise ValueError(f"{op}: argument 'dy' must have the output's shape (N, OH, OW, OC) = "
                         f"{yshape}, got {dy.shape}")
    if name in _NEEDS_Y and y is None:
        raise ValueError(f"{op}: argument 'y' (the forward output) is required for "
                         f"activation {name!r}")
    if name == "gelu" and z is None:
        raise ValueError(f"{op}: argument 'z' (the pre-activation, from conv2d(..., z=z)) is "
                         "required for activation 'gelu'")

    def saved(a, arg):
        if a is None or (arg == "y" and name not in _NEEDS_Y) or (arg == "z" and name != "gelu"):
            return None
        a = as_f32(a, op, arg)
        if a.shape != yshape:
            raise ValueError(f"{op}: argument '{arg}' must have the shape of 'dy', {yshape}, "
                             f"got {a.shape}")
        return a

    y, z = saved(y, "y"), saved(z, "z")

    def grad(buf, need, flag, shape, arg):
        if not need:
            if buf is not None:
                raise ValueError(f"{op}: argument '{arg}' was given but {flag}=False")
            return None
        if buf is None:
            return np.zeros(shape, np.float32)
        return check_out(buf, shape, op, arg)

    dx = grad(dx, need_dx, "need_dx", x.shape, "dx")
    dw = grad(dw, need_dw, "need_dw", w.shape, "dw")
    db = grad(db, has_bias, "has_bias", (w.shape[3],), "db")
    dz = None if act == _core.Act.linear else np.empty(yshape, np.float32)
    _core.conv2d_backward(dx, dw, db, dz, dy, x, w, y, z, *geo.core_pos(groups), act)
    return dx, dw, db
