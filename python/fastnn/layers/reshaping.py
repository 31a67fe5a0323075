"""Rescaling, ZeroPadding2D and UpSampling2D (Keras names), on channels-last images."""
from __future__ import annotations

import numpy as np

from .base import Layer, register


@register
class Rescaling(Layer):
    """y = x * scale + offset (e.g. Rescaling(1 / 255) for pixels)."""

    def __init__(self, scale, offset=0.0, **kw):
        super().__init__(**kw)
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x, training=False):
        y = np.multiply(x, np.float32(self.scale))
        if self.offset:
            y += np.float32(self.offset)
        return y

    def backward(self, dy):
        return np.multiply(dy, np.float32(self.scale))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


def _pairs(padding, where):
    """((top, bottom), (left, right)) from an int, (ph, pw) or ((t, b), (l, r))."""
    try:
        if isinstance(padding, (int, np.integer)):
            p = ((int(padding),) * 2,) * 2
        elif all(isinstance(v, (int, np.integer)) for v in padding):
            ph, pw = padding
            p = ((int(ph), int(ph)), (int(pw), int(pw)))
        else:
            (t, b), (l, r) = padding
            p = ((int(t), int(b)), (int(l), int(r)))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: padding must be an int, (ph, pw) or ((top, bottom), "
                         f"(left, right)), got {padding!r}") from None
    if any(v < 0 for pair in p for v in pair):
        raise ValueError(f"{where}: padding must be >= 0, got {padding!r}")
    return p


@register
class ZeroPadding2D(Layer):
    """Pads (H, W, C) images with zeros on the top/bottom and left/right."""

    def __init__(self, padding=(1, 1), **kw):
        super().__init__(**kw)
        self.padding = _pairs(padding, "ZeroPadding2D")

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects (H, W, C) per sample, got {tuple(input_shape)}")
        (t, b), (l, r) = self.padding
        h, w, c = input_shape
        return (h + t + b, w + l + r, c)

    def forward(self, x, training=False):
        (t, b), (l, r) = self.padding
        self._hw = x.shape[1:3]
        return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))

    def backward(self, dy):
        (t, _), (l, _) = self.padding
        h, w = self._hw
        return np.ascontiguousarray(dy[:, t:t + h, l:l + w, :])

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding]}


@register
class UpSampling2D(Layer):
    """Repeats each pixel of (H, W, C) images size[0] x size[1] times (nearest)."""

    def __init__(self, size=(2, 2), interpolation="nearest", **kw):
        super().__init__(**kw)
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise ValueError(f"UpSampling2D: size must be a positive int or pair, got {size!r}")
        if interpolation != "nearest":
            raise ValueError(f"UpSampling2D: only interpolation='nearest' is supported, got {interpolation!r}")
        self.size, self.interpolation = (int(size[0]), int(size[1])), interpolation

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expects (H, W, C) per sample, got {tuple(input_shape)}")
        h, w, c = input_shape
        return (h * self.size[0], w * self.size[1], c)

    def forward(self, x, training=False):
        sh, sw = self.size
        return np.repeat(np.repeat(x, sh, axis=1), sw, axis=2)

    def backward(self, dy):
        n, h, w, c = dy.shape
        sh, sw = self.size
        return np.ascontiguousarray(dy.reshape(n, h // sh, sh, w // sw, sw, c).sum(axis=(2, 4)))

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "interpolation": self.interpolation}
