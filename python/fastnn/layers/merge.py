"""Merge layers (Keras names): Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate, and their functional spellings add([a, b]), concatenate([a, b], axis=-1), ...

Each takes a list of at least two tensors. The elementwise ones broadcast per-sample
shapes as NumPy does; the gradient of a broadcast input is summed back to its shape.
Backward returns one distinct array per input (the graph may add into each in place).
"""
from __future__ import annotations

import numpy as np

from ..autodiff import broadcast_shapes, unbroadcast
from .base import Layer, register


class _Merge(Layer):
    multi_input = True

    def build(self, input_shapes):
        out = tuple(input_shapes[0])
        for s in input_shapes[1:]:
            try:
                out = broadcast_shapes(out, tuple(s), self.name)
            except ValueError:
                shapes = " and ".join(str(tuple(s)) for s in input_shapes)
                raise ValueError(f"{self.name}: inputs have incompatible shapes {shapes}") from None
        return out

    def forward(self, xs, training=False):
        self._xs = xs
        return self._combine(xs)

    def backward(self, dy):
        grads = self._grads(dy, self._xs)
        out, used = [], False
        for g, x in zip(grads, self._xs):
            g = unbroadcast(g, x.shape)
            if g is dy:
                if used:
                    g = dy.copy()
                used = True
            out.append(g)
        return out


@register
class Add(_Merge):
    """Sum of the inputs."""

    def _combine(self, xs):
        y = np.add(xs[0], xs[1])
        for x in xs[2:]:
            y += x
        return y

    def _grads(self, dy, xs):
        return [dy] * len(xs)


@register
class Subtract(_Merge):
    """inputs[0] - inputs[1] (exactly two inputs)."""

    def build(self, input_shapes):
        if len(input_shapes) != 2:
            raise ValueError(f"{self.name}: expects exactly 2 inputs, got {len(input_shapes)}")
        return super().build(input_shapes)

    def _combine(self, xs):
        return np.subtract(xs[0], xs[1])

    def _grads(self, dy, xs):
        return [dy, np.negative(dy)]


@register
class Multiply(_Merge):
    """Elementwise product of the inputs."""

    def _combine(self, xs):
        y = np.multiply(xs[0], xs[1])
        for x in xs[2:]:
            y *= x
        return y

    def _grads(self, dy, xs):
        out = []
        for i in range(len(xs)):
            g = dy.copy()
            for j, x in enumerate(xs):
                if j != i:
                    g = g * x
            out.append(g)
        return out


@register
class Average(_Merge):
    """Mean of the inputs."""

    def _combine(self, xs):
        y = np.add(xs[0], xs[1])
        for x in xs[2:]:
            y += x
        y *= np.float32(1.0 / len(xs))
        return y

    def _grads(self, dy, xs):
        return [dy * np.float32(1.0 / len(xs)) for _ in xs]


class _Extreme(_Merge):
    def _combine(self, xs):
        y = xs[0]
        for x in xs[1:]:
            y = self._f(y, x)
        self._y = y
        return y

    def _grads(self, dy, xs):
        # the gradient goes to the first input that attains the extreme
        taken = np.zeros(np.broadcast_shapes(*[x.shape for x in xs]), bool)
        out = []
        for x in xs:
            win = (x == self._y) & ~taken
            taken |= win
            out.append(dy * win)
        return out


@register
class Maximum(_Extreme):
    """Elementwise maximum of the inputs."""
    _f = staticmethod(np.maximum)


@register
class Minimum(_Extreme):
    """Elementwise minimum of the inputs."""
    _f = staticmethod(np.minimum)


@register
class Concatenate(_Merge):
    """Joins the inputs along `axis` (counting the batch axis, as Keras: -1 = last)."""

    def __init__(self, axis: int = -1, **kw):
        super().__init__(**kw)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"Concatenate: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def build(self, input_shapes):
        rank = len(input_shapes[0]) + 1
        if any(len(s) + 1 != rank for s in input_shapes):
            raise ValueError(f"{self.name}: inputs must have the same rank, got shapes "
                             f"{[tuple(s) for s in input_shapes]}")
        axis = self.axis % rank if -rank <= self.axis < rank else None
        if axis is None or axis == 0:
            raise ValueError(f"{self.name}: axis {self.axis} is not a feature axis of inputs "
                             f"of rank {rank} (batch axis included)")
        a = axis - 1
        first = tuple(input_shapes[0])
        for s in input_shapes[1:]:
            if tuple(s)[:a] + tuple(s)[a + 1:] != first[:a] + first[a + 1:]:
                raise ValueError(f"{self.name}: inputs must match except on axis {self.axis}, got "
                                 f"shapes {[tuple(s) for s in input_shapes]}")
        self._axis = axis
        return first[:a] + (sum(s[a] for s in input_shapes),) + first[a + 1:]

    def forward(self, xs, training=False):
        self._sizes = [x.shape[self._axis] for x in xs]
        return np.concatenate(xs, axis=self._axis)

    def backward(self, dy):
        cuts = np.cumsum(self._sizes)[:-1]
        return [np.ascontiguousarray(g) for g in np.split(dy, cuts, axis=self._axis)]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


def add(inputs, **kwargs):
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)
