"""Learning-rate schedules (Keras's ``keras.optimizers.schedules``): pass one as an
optimizer's ``learning_rate`` and the rate follows it step by step::

    steps = epochs * math.ceil(len(x_train) / batch_size)
    opt = fn.optim.Adam(learning_rate=fn.optim.schedules.CosineDecay(2e-3, steps))

A schedule maps the number of optimizer steps already taken (0 for the first update)
to a learning rate. Plain Python floats: one call per step costs well under a microsecond.
"""
from __future__ import annotations

import abc
import math
import numbers

__all__ = ["LearningRateSchedule", "ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay",
           "serialize", "deserialize"]


class LearningRateSchedule(abc.ABC):
    """Base class: ``schedule(step) -> float`` for step = 0, 1, 2, ..."""

    @abc.abstractmethod
    def __call__(self, step: int) -> float:
        """The learning rate of the update after `step` updates."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """The constructor's arguments (what a saved model stores)."""


class ExponentialDecay(LearningRateSchedule):
    """lr = initial_learning_rate · decay_rate^(step / decay_steps); with staircase=True
    the exponent is rounded down, so the rate drops every decay_steps steps."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        where = "ExponentialDecay"
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate", where)
        self.decay_steps = _positive_int(decay_steps, "decay_steps", where)
        self.decay_rate = _positive(decay_rate, "decay_rate", where)
        self.staircase = bool(staircase)

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


class CosineDecay(LearningRateSchedule):
    """Half a cosine from initial_learning_rate down to alpha · initial_learning_rate over
    decay_steps steps, then constant (Loshchilov & Hutter's SGDR without restarts)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0):
        where = "CosineDecay"
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate", where)
        self.decay_steps = _positive_int(decay_steps, "decay_steps", where)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{where}: alpha must be a number in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)

    def __call__(self, step):
        t = min(step, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * t))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha}


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <=
    boundaries[i], values[-1] after the last boundary."""

    def __init__(self, boundaries, values):
        where = "PiecewiseConstantDecay"
        boundaries, values = list(boundaries), list(values)
        for b in boundaries:
            if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 0:
                raise ValueError(f"{where}: boundaries must be step counts (ints >= 0), got {b!r}")
        if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
            raise ValueError(f"{where}: boundaries must increase strictly, got {boundaries}")
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"{where}: values needs one more entry than boundaries "
                             f"({len(boundaries) + 1}), got {len(values)}")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [_positive(v, "values", where) for v in values]

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


_CLASSES = {c.__name__: c for c in (ExponentialDecay, CosineDecay, PiecewiseConstantDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    """{"class": name, **config}: what a saved model stores for it."""
    if type(schedule).__name__ not in _CLASSES:
        raise ValueError(f"cannot save a learning-rate schedule of type {type(schedule).__name__}; "
                         f"use one of {sorted(_CLASSES)}")
    return {"class": type(schedule).__name__, **schedule.get_config()}


def deserialize(cfg: dict) -> LearningRateSchedule:
    cfg = dict(cfg)
    name = cfg.pop("class", None)
    if name not in _CLASSES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; expected one of {sorted(_CLASSES)}")
    return _CLASSES[name](**cfg)


def _positive(x, name, where):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not x > 0 or not math.isfinite(x):
        raise ValueError(f"{where}: {name} must be a positive number, got {x!r}")
    return float(x)


def _positive_int(x, name, where):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {x!r}")
    return int(x)
