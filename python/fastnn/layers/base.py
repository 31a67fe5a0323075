"""The Layer base class.

A layer is a small object with three duties:

- ``build(input_shape)`` declares its parameters with ``add_weight`` and returns its
  output shape (shapes exclude the batch axis);
- ``forward(x, training)`` returns y and keeps what backward needs;
- ``backward(dy)`` adds into its parameter gradients and returns dx (or None when
  ``need_input_grad`` is False: the first layers of a model need no input gradient).

Parameters live in one flat float32 buffer owned by the model, gradients in another;
``bind`` hands a layer its views into both. A layer used on its own binds to buffers of
its own on first use.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import inspect

import numpy as np

from .. import initializers

_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a layer class loadable by name from a saved model."""
    _REGISTRY[cls.__name__] = cls
    return cls


def layer_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown layer class {name!r}; known: {sorted(_REGISTRY)}") from None


def _shape_tuple(shape, what: str) -> tuple:
    try:
        t = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{what} must be a tuple of ints, got {shape!r}") from None
    if any(s < 1 for s in t):
        raise ValueError(f"{what} must hold positive sizes, got {t}")
    return t


class Layer(ABC):
    """Base class: see the module docstring."""

    _counts: dict[str, int] = {}
    #: Padding masks (Keras ``mask_zero``): a layer that keeps the time axis sets this to
    #: pass the (N, T) mask of its input on to the next layer (see compute_mask).
    supports_masking = False

    def __init__(self, name: str | None = None, input_shape=None, trainable: bool = True):
        if name is None:
            base = _snake(type(self).__name__)
            n = Layer._counts.get(base, 0)
            Layer._counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
        self.name = name
        self.input_shape = None if input_shape is None else _shape_tuple(input_shape, f"{name}: input_shape")
        self.trainable = trainable
        self.built = False
        self.need_input_grad = True
        self.output_shape: tuple | None = None
        self._specs: list[tuple[str, tuple, object]] = []  # (name, shape, initializer)
        self._children: list[Layer] = []  # sub-layers of a composite layer, in build order
        self._bufs: dict[tuple, np.ndarray] = {}

    # --- building -------------------------------------------------------------------
    def add_weight(self, name: str, shape, initializer="glorot_uniform") -> None:
        """Declare a parameter; it becomes attribute ``name`` (and ``d<name>`` for its
        gradient) once the layer is bound to parameter buffers."""
        self._specs.append((name, tuple(int(s) for s in shape), initializers.get(initializer)))

    def add_sublayer(self, layer: "Layer", input_shape: tuple) -> tuple:
        """Build a child layer inside build() of a composite layer (its parameters join
        this layer's); returns the child's output shape."""
        self._children.append(layer)
        return layer._build(tuple(input_shape))

    def build(self, input_shape: tuple) -> tuple:
        """Declare parameters for this input shape; return the output shape."""
        return tuple(input_shape)

    def _build(self, input_shape: tuple) -> tuple:
        if self.input_shape is not None and tuple(input_shape) != self.input_shape:
            raise ValueError(f"{self.name}: expected input shape {self.input_shape}, got {tuple(input_shape)}")
        self._specs = []
        self._children = []
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(self.build(self.input_shape))
        self.built = True
        return self.output_shape

    @property
    def param_count(self) -> int:
        own = sum(int(np.prod(s)) for _, s, _ in self._specs)
        return own + sum(c.param_count for c in self._children)

    def bind(self, params: np.ndarray, grads: np.ndarray, offset: int) -> int:
        """Point each declared parameter (and the children's) at its slice of the flat
        buffers; returns the offset after the last one."""
        for name, shape, _ in self._specs:
            size = int(np.prod(shape))
            setattr(self, name, params[offset:offset + size].reshape(shape))
            setattr(self, "d" + name, grads[offset:offset + size].reshape(shape))
            offset += size
        for child in self._children:
            offset = child.bind(params, grads, offset)
        return offset

    def initialize(self, rng: np.random.Generator) -> None:
        for name, shape, init in self._specs:
            getattr(self, name)[...] = init(shape, rng)
        for child in self._children:
            child.initialize(rng)

    def weights(self) -> list[tuple[str, np.ndarray]]:
        """(name, array) of every parameter; a child's are prefixed with its index."""
        own = [(name, getattr(self, name)) for name, _, _ in self._specs]
        for i, child in enumerate(self._children):
            own += [(f"{i}.{n}", w) for n, w in child.weights()]
        return own

    def state(self) -> dict:
        """Non-trainable arrays saved with the model (e.g. running statistics); the
        arrays returned are the layer's own, so loading writes into them in place."""
        out = {}
        for i, child in enumerate(self._children):
            out.update({f"{i}.{k}": v for k, v in child.state().items()})
        return out

    # --- running --------------------------------------------------------------------
    @abstractmethod
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Return the layer's output for a batch x; when training, keep what backward needs."""

    @abstractmethod
    def backward(self, dy: np.ndarray):
        """Add into the parameter gradients; return dx (None if not need_input_grad)."""

    # --- padding masks (as Keras) -----------------------------------------------------
    def compute_mask(self, x, mask):
        """The (N, T) padding mask of this layer's output (nonzero = real step), given its
        input x and the input's mask (None: no mask). By default a layer that supports
        masking passes the mask on and other layers drop it; an Embedding with
        mask_zero=True makes one from its token ids."""
        return mask if self.supports_masking else None

    def forward_masked(self, x, training: bool = False, mask=None):
        """Run forward with the input's padding mask: the mask is given to forward when
        forward takes a ``mask`` argument. Returns (y, the output's mask)."""
        out_mask = self.compute_mask(x, mask)
        if mask is not None and _takes_mask(type(self)):
            return self.forward(x, training, mask=mask), out_mask
        return self.forward(x, training), out_mask

    def buffer(self, key: str, shape: tuple, dtype=np.float32, zero: bool = False) -> np.ndarray:
        """A scratch array reused from call to call while the shape stays the same."""
        k = (key, shape, dtype)
        b = self._bufs.get(k)
        if b is None:
            if len(self._bufs) > 32:
                self._bufs.clear()
            b = self._bufs[k] = np.empty(shape, dtype=dtype)
        if zero:
            b.fill(0)
        return b

    def __call__(self, x):
        """Run the layer on its own (inference), building it on first use."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.built:
            self._build(x.shape[1:])
            n = self.param_count
            p, g = np.empty(n, np.float32), np.zeros(n, np.float32)
            self.bind(p, g, 0)
            self.initialize(np.random.default_rng())
        return self.forward(x, training=False)

    # --- saving ---------------------------------------------------------------------
    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


_TAKES_MASK: dict[type, bool] = {}


def _takes_mask(cls) -> bool:
    """Whether cls.forward accepts a ``mask`` argument (looked up once per class)."""
    r = _TAKES_MASK.get(cls)
    if r is None:
        r = _TAKES_MASK[cls] = "mask" in inspect.signature(cls.forward).parameters
    return r


def _snake(name: str) -> str:
    """Keras-style default names: Dense -> dense, Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and name[i - 1].islower():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
