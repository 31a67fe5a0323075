"""Optimizers (Keras names and defaults). Each owns flat state buffers the size of the
model's flat parameter buffer, and one step is one fused kernel call over all of it.

``learning_rate`` is a number or a schedule from :mod:`fastnn.optim.schedules`."""
from __future__ import annotations

import numpy as np

from . import _core
from . import schedules


# Hooks around the updates of a model's flat parameter buffer, by id of that buffer:
# hook(phase, lo, hi) runs with phase "pre" before and "post" after an update of
# params[lo:hi]. fastnn.pruning keeps pruned weights at exactly zero with one.
_UPDATE_HOOKS: dict = {}


def set_update_hook(params: np.ndarray, hook) -> None:
    """Register hook (or None to remove it) for updates of the flat buffer params."""
    import weakref
    if hook is None:
        _UPDATE_HOOKS.pop(id(params), None)
        return
    # Bound methods are held weakly, so a hook does not keep its model alive.
    ref = weakref.WeakMethod(hook) if hasattr(hook, "__self__") else (lambda: hook)
    for k in [k for k, (p, h) in _UPDATE_HOOKS.items() if p() is None or h() is None]:
        del _UPDATE_HOOKS[k]
    _UPDATE_HOOKS[id(params)] = (weakref.ref(params), ref)


def _update_hook(params: np.ndarray):
    """(hook, offset of params in its flat buffer), or (None, 0)."""
    if not _UPDATE_HOOKS:
        return None, 0
    base = params if params.base is None else params.base
    entry = _UPDATE_HOOKS.get(id(base))
    hook = None if entry is None or entry[0]() is not base else entry[1]()
    if hook is None:
        return None, 0
    return hook, (params.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // 4


class Optimizer:
    """Base class: ``build(n)`` allocates state, ``step(params, grads)`` updates in place."""

    def __init__(self, learning_rate, weight_decay: float = 0.0):
        self.iterations = 0  # steps taken
        self._schedule = None
        self.learning_rate = learning_rate
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self._n = None

    @property
    def learning_rate(self) -> float:
        """The rate of the next step: the schedule's value at ``iterations``, if one is set."""
        if self._schedule is not None:
            return self._schedule(self.iterations)
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        where = type(self).__name__
        if isinstance(value, schedules.LearningRateSchedule):
            self._schedule = value
            return
        if self._schedule is not None:
            raise TypeError(f"{where}: the learning rate follows a {type(self._schedule).__name__} "
                            "schedule and cannot be set to a number")
        self._lr = _positive(value, "learning_rate", where)

    def build(self, n: int) -> None:
        if self._n != n:
            self._n = n
            self.iterations = 0
            self._state = {k: np.zeros(n, np.float32) for k in self.state_names()}
            self._init_state()

    def state_names(self) -> tuple:
        return ()

    def _init_state(self):
        pass

    def step(self, params: np.ndarray, grads: np.ndarray, zero_grads: bool = False) -> None:
        """One update of params from grads (flat float32 arrays of one size); with
        zero_grads, grads is 0 afterwards. The first call builds the state for that size."""
        where = f"{type(self).__name__}.step"
        for name, a in (("params", params), ("grads", grads)):
            if not isinstance(a, np.ndarray) or a.ndim != 1:
                raise TypeError(f"{where}: argument '{name}' must be a 1-D float32 array, got "
                                f"{type(a).__name__}{getattr(a, 'shape', '')}")
        if grads.size != params.size:
            raise ValueError(f"{where}: 'grads' has {grads.size} elements, 'params' {params.size}")
        if self._n is None:
            self.build(params.size)
        elif params.size != self._n:
            raise ValueError(f"{where}: the state was built for {self._n} parameters, got "
                             f"{params.size} (call build({params.size}) to start afresh)")
        self._step(params, grads, zero_grads)

    def _step(self, params: np.ndarray, grads: np.ndarray, zero_grads: bool = False) -> None:
        """step() on buffers known to fit the built state (a model's own flat parameter and
        gradient buffers, once per training step): no argument checks."""
        lr = self.learning_rate
        hook, lo = _update_hook(params)
        if hook is not None:
            hook("pre", lo, lo + params.size)
        self.iterations += 1
        self._apply(params, grads, lr, zero_grads)
        if hook is not None:
            hook("post", lo, lo + params.size)

    def apply_gradients(self, grads_and_vars) -> None:
        """Keras' spelling: one step for (gradient, Variable) pairs of one model.

        The gradients tape.gradient returns are the model's own gradient views; other
        arrays are copied into them first. The step runs over the variables' slices of
        the model's flat buffers (one fused call when they are all its trainable
        weights) and zeroes those gradients afterwards."""
        from .graph import Variable
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        if not pairs:
            return
        flat = grads_flat = None
        spans = []
        for g, v in pairs:
            if not isinstance(v, Variable) or v.value is None:
                raise TypeError("apply_gradients: expected (gradient, Variable) pairs of a built "
                                f"model, got a {type(v).__name__}")
            if flat is None:
                flat, grads_flat = v.value.base, v.grad.base
            if v.value.base is not flat:
                raise ValueError("apply_gradients: the variables must all belong to one model")
            if g is not v.grad:
                g = np.asarray(g, np.float32)
                if g.shape != v.shape:
                    raise ValueError(f"apply_gradients: the gradient of {v.path} has shape "
                                     f"{g.shape}, expected {v.shape}")
                np.copyto(v.grad, g)
            lo = (v.value.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) // 4
            spans.append((lo, lo + v.size, v))
        spans.sort(key=lambda s: s[0])
        if self._n is None:
            self.build(spans[-1][1])
        ranges = []
        for lo, hi, v in spans:
            if hi > self._n:
                raise ValueError(f"apply_gradients: {v.path} is not a trainable weight of the "
                                 "model this optimizer was compiled with")
            if ranges and ranges[-1][1] == lo:
                ranges[-1][1] = hi
            elif not ranges or lo >= ranges[-1][1]:
                ranges.append([lo, hi])
        lr = self.learning_rate
        hook = _update_hook(flat)[0]
        if hook is not None:
            for lo, hi in ranges:
                hook("pre", lo, hi)
        self.iterations += 1
        if ranges == [[0, self._n]]:
            self._apply(flat[:self._n], grads_flat[:self._n], lr, True)
        else:
            full = self._state
            try:
                for lo, hi in ranges:
                    self._state = {k: a[lo:hi] for k, a in full.items()}
                    self._apply(flat[lo:hi], grads_flat[lo:hi], lr, True)
            finally:
                self._state = full
        if hook is not None:
            for lo, hi in ranges:
                hook("post", lo, hi)

    def state(self) -> dict:
        return dict(self._state) if self._n is not None else {}

    def get_config(self) -> dict:
        lr = schedules.serialize(self._schedule) if self._schedule is not None else self._lr
        return {"class": type(self).__name__, "learning_rate": lr,
                "weight_decay": self.weight_decay}


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def state_names(self):
        return ("velocity",) if self.momentum else ()

    def _apply(self, params, grads, lr, zero_grads):
        _core.sgd_step(params, self._state.get("velocity"), grads, lr,
                       self.momentum, self.nesterov, self.weight_decay, zero_grads)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient."""

    decoupled = False

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        for name, b in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{type(self).__name__}: {name} must be in [0, 1), got {b!r}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon = _positive(epsilon, "epsilon", type(self).__name__)

    def state_names(self):
        return ("m", "v")

    def _apply(self, params, grads, lr, zero_grads):
        s = self._state
        _core.adam_step(params, s["m"], s["v"], grads, lr, self.beta_1,
                        self.beta_2, self.epsilon, self.weight_decay, self.decoupled,
                        self.iterations, zero_grads)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""

    decoupled = True

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)


class Adagrad(Optimizer):
    """AdaGrad: per-parameter learning rates from the sum of squared gradients."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = _positive(epsilon, "epsilon", "Adagrad")

    def state_names(self):
        return ("accumulator",)

    def _init_state(self):
        self._state["accumulator"].fill(self.initial_accumulator_value)

    def _apply(self, params, grads, lr, zero_grads):
        _core.adagrad_step(params, self._state["accumulator"], grads, lr,
                           self.epsilon, self.weight_decay, zero_grads)

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


def _positive(x, name, where):
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating)) or not x > 0:
        raise ValueError(f"{where}: {name} must be a positive number, got {x!r}")
    return float(x)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "adagrad": Adagrad}


def get(opt) -> Optimizer:
    """Resolve an optimizer name ("sgd", "adam", "adamw", "adagrad") or object."""
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, str) and opt.lower() in _BY_NAME:
        return _BY_NAME[opt.lower()]()
    raise ValueError(f"unknown optimizer {opt!r}; expected a fastnn.optim.Optimizer or one of {sorted(_BY_NAME)}")


def from_config(cfg: dict) -> Optimizer:
    cfg = dict(cfg)
    cls = {c.__name__: c for c in (SGD, Adam, AdamW, Adagrad)}[cfg.pop("class")]
    if isinstance(cfg.get("learning_rate"), dict):
        cfg["learning_rate"] = schedules.deserialize(cfg["learning_rate"])
    return cls(**cfg)
