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

import inspect

import numpy as np

from .. import graph, initializers
from ..graph import Variable

_REGISTRY: dict[str, type] = {}


def register(cls=None, *, name: str | None = None):
    """Class decorator: make a layer or model class loadable by name from a saved model
    (``@register`` or ``@register(name="MyBlock")``; Keras' register_keras_serializable)."""
    def deco(c):
        key = name or c.__name__
        other = _REGISTRY.get(key)
        if other is not None and other is not c and (other.__module__, other.__qualname__) != (c.__module__, c.__qualname__):
            raise ValueError(f"register: the name {key!r} is already taken by {other.__module__}.{other.__qualname__}")
        _REGISTRY[key] = c
        c._registered_name = key
        return c
    return deco(cls) if cls is not None else deco


def layer_class(name: str) -> type:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown layer class {name!r}: a custom layer or model must be "
                         "registered with @fastnn.saving.register_keras_serializable() and "
                         f"imported before load_model; known: {sorted(_REGISTRY)}") from None


def _shape_tuple(shape, what: str) -> tuple:
    try:
        t = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{what} must be a tuple of ints, got {shape!r}") from None
    if any(s < 1 for s in t):
        raise ValueError(f"{what} must hold positive sizes, got {t}")
    return t


class Layer:
    """Base class: see the module docstring."""

    _counts: dict[str, int] = {}
    #: Padding masks (Keras ``mask_zero``): a layer that keeps the time axis sets this to
    #: pass the (N, T) mask of its input on to the next layer (see compute_mask).
    supports_masking = False
    #: A merge layer (Add, Concatenate, ...): build, forward and backward take lists.
    multi_input = False
    #: forward(x, training=False) of this class returns a new array that nothing else
    #: refers to (not a buffer, not x or a view of x), so Model.predict can hand it to the
    #: caller without a copy. A subclass that overrides forward does not inherit it (see
    #: graph.fresh_inference_output).
    fresh_inference_output = False
    #: backward() overwrites (=) this layer's parameter gradients the first time it runs
    #: in a backward pass (first_grad_write() tells it when) and adds into them after that
    #: (a layer called twice), so the model need not zero them before each step. Honoured
    #: only on the class that defines backward (see overwrites_grads).
    overwrites_grads = False

    def first_grad_write(self) -> bool:
        """Whether this backward call is the first in the current backward pass (see
        new_grad_pass) to write these parameters' gradients, counting the copies of a
        shared layer (graph.share_weights_copy) as the layer: it then overwrites them."""
        owner = _weights_owner(self)
        p = _GRAD_PASS[0]
        if owner.__dict__.get("_grad_pass") == p:
            return False
        owner._grad_pass = p
        return True

    def __init__(self, name: str | None = None, input_shape=None, trainable: bool = True,
                 dtype=None, **kwargs):
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{type(self).__name__}: only float32 is supported, got dtype={dtype!r}")
        if "input_dim" in kwargs and input_shape is None:  # Keras' Dense(..., input_dim=784)
            input_shape = (kwargs.pop("input_dim"),)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {sorted(kwargs)}")
        cls = type(self)
        if not self.is_composite and cls.forward is Layer.forward:
            raise TypeError(f"{cls.__name__} must define call(inputs) (gradients are derived) "
                            "or forward(x, training) and backward(dy)")
        if name is None:
            base = _snake(cls.__name__)
            n = Layer._counts.get(base, 0)
            Layer._counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
        self.name = name
        self.input_shape = None if input_shape is None else _shape_tuple(input_shape, f"{name}: input_shape")
        self.trainable = trainable
        self.built = False
        self.need_input_grad = True
        self.output_shape: tuple | None = None
        self._vars: list[Variable] = []
        self._children: list[Layer] = []  # sub-layers of a composite layer, in build order
        self._bufs: dict[tuple, np.ndarray] = {}
        self._building = False
        self._eager = None  # a one-layer model for calls on arrays of a composite layer

    @property
    def is_composite(self) -> bool:
        """A layer whose call() is traced into the graph (a user's Layer or Model subclass
        that defines call instead of forward/backward)."""
        return type(self).call is not Layer.call

    # --- building -------------------------------------------------------------------
    def add_weight(self, name=None, shape=None, initializer="glorot_uniform",
                   trainable: bool = True, dtype=None, **kwargs):
        """Declare a parameter and return its Variable.

        Keras' spelling, ``self.w = self.add_weight(shape=(4, 8), initializer="zeros",
        trainable=True, name="w")``, and fastnn's built-in layers' ``add_weight("kernel",
        shape, initializer)`` (which also makes the attributes ``kernel`` and ``dkernel``
        the parameter's and its gradient's arrays, unless the layer keeps the returned
        Variable under that name) both work."""
        as_attribute = isinstance(name, str) and shape is not None
        if shape is None and not isinstance(name, str) and name is not None:
            name, shape = None, name  # add_weight((4, 8), ...) as Keras' positional shape
        kwargs.pop("regularizer", None), kwargs.pop("constraint", None)
        if kwargs:
            raise TypeError(f"{self.name}: add_weight got unexpected arguments {sorted(kwargs)}")
        if shape is None:
            raise ValueError(f"{self.name}: add_weight needs a shape")
        if initializer is None:
            initializer = "glorot_uniform"
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{self.name}: add_weight supports float32 only, got {dtype!r}")
        name = name or f"variable_{len(self._vars)}"
        if any(v.name == name for v in self._vars):
            raise ValueError(f"{self.name}: a weight named {name!r} exists already")
        var = Variable(self, name, _shape_tuple(shape, f"{self.name}: add_weight shape")
                       if len(tuple(shape)) else (), initializers.get(initializer), trainable,
                       in_build=self._building, as_attribute=as_attribute)
        self._vars.append(var)
        return var

    def add_sublayer(self, layer: "Layer", input_shape: tuple) -> tuple:
        """Build a child layer inside build() of a composite layer (its parameters join
        this layer's); returns the child's output shape."""
        self._children.append(layer)
        return layer._build(tuple(input_shape))

    def build(self, input_shape: tuple) -> tuple:
        """Declare parameters for this input shape; return the output shape."""
        return input_shape if self.multi_input else tuple(input_shape)

    def _build(self, input_shape) -> tuple:
        shape = [tuple(s) for s in input_shape] if self.multi_input else tuple(input_shape)
        if self.input_shape is not None and shape != self.input_shape:
            raise ValueError(f"{self.name}: expected input shape {self.input_shape}, got {shape}")
        self._vars = [v for v in self._vars if not v.in_build]
        self._children = []
        self.input_shape = shape
        self._building = True
        try:
            self.output_shape = tuple(self.build(self.input_shape))
        finally:
            self._building = False
        self.built = True
        return self.output_shape

    def _build_composite(self, input_shape) -> None:
        """Build a composite layer before its call() is traced: a user's build() gets the
        Keras shape, batch axis (None) included."""
        if type(self).build is not Layer.build:
            self._building = True
            try:
                self.build(input_shape)
            finally:
                self._building = False
        self.built = True

    # --- graph calls (graph.call_layer) ------------------------------------------------
    def _graph_inputs(self, args, kwargs):
        """(tensors, node kind, forward kwargs) of a symbolic call; layers that take
        several tensors (MultiHeadAttention) override this."""
        if kwargs:
            raise TypeError(f"{self.name}: unexpected arguments {sorted(kwargs)}")
        if len(args) != 1:
            raise TypeError(f"{self.name}: expected one input, got {len(args)} arguments")
        x = args[0]
        if self.multi_input:
            if not isinstance(x, (list, tuple)) or len(x) < 2:
                got = (f"a {type(x).__name__} of {len(x)}" if isinstance(x, (list, tuple))
                       else type(x).__name__)
                raise ValueError(f"{self.name}: expects a list of at least 2 inputs, got {got}")
            return list(x), "list", {}
        if isinstance(x, (list, tuple)):
            raise TypeError(f"{self.name}: expects one tensor, got a {type(x).__name__} of {len(x)}")
        return [x], "single", {}

    def _graph_build(self, tensors, shapes) -> None:
        self._build(shapes)

    def _graph_check(self, tensors) -> None:
        """Checks of a further call of a built layer taking several tensors."""

    @property
    def param_count(self) -> int:
        own = sum(v.size for v in self._vars)
        return own + sum(c.param_count for c in self._children)

    def all_layers(self):
        """This layer and every child below it, depth first."""
        yield self
        for c in self._children:
            yield from c.all_layers()

    def variables_list(self) -> list[Variable]:
        return [v for sub in self.all_layers() for v in sub._vars]

    def bind(self, params: np.ndarray, grads: np.ndarray, offset: int) -> int:
        """Point each declared parameter (and the children's) at its slice of the flat
        buffers; returns the offset after the last one."""
        for v in self.variables_list():
            offset = bind_variable(v, params, grads, offset)
        return offset

    def initialize(self, rng: np.random.Generator) -> None:
        for v in self._vars:
            v.value[...] = v.initializer(v.shape, rng)
        for child in self._children:
            child.initialize(rng)

    def named_weights(self) -> list[tuple[str, np.ndarray]]:
        """(name, array) of every parameter; a child's are prefixed with its index."""
        own = [(v.name, v.value) for v in self._vars]
        for i, child in enumerate(self._children):
            own += [(f"{i}.{n}", w) for n, w in child.named_weights()]
        return own

    @property
    def weights(self) -> list[Variable]:
        """Every Variable of the layer (Keras' layer.weights)."""
        return self.variables_list()

    @property
    def trainable_weights(self) -> list[Variable]:
        return [v for v in self.variables_list() if v.trainable and self.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [v for v in self.variables_list() if not (v.trainable and self.trainable)]

    def state(self) -> dict:
        """Non-trainable arrays saved with the model (e.g. running statistics); the
        arrays returned are the layer's own, so loading writes into them in place."""
        out = {}
        for i, child in enumerate(self._children):
            out.update({f"{i}.{k}": v for k, v in child.state().items()})
        return out

    # --- running --------------------------------------------------------------------
    def call(self, *args, **kwargs):
        """Composite layers define this: the layer's computation on symbolic tensors, from
        layers and fastnn.ops functions. Its gradient is derived from theirs."""
        raise TypeError(f"{type(self).__name__} does not define call()")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Return the layer's output for a batch x; when training, keep what backward needs."""
        raise TypeError(f"{type(self).__name__} is a composite layer: it runs inside a model's graph")

    def fuse_inference(self, nxt: "Layer"):
        """(fn, arg) with fn(x, arg) == nxt.forward(self.forward(x)) for inference, running
        both layers in one kernel call, when this layer can do that with nxt as the only
        reader of its output; None otherwise (the default). Model plans use it for
        predict/evaluate."""
        return None

    def backward(self, dy: np.ndarray):
        """Add into the parameter gradients; return dx (None if not need_input_grad)."""
        raise TypeError(f"{type(self).__name__} does not define backward()")

    # --- padding masks (as Keras) -----------------------------------------------------
    def compute_mask(self, x, mask):
        """The (N, T) padding mask of this layer's output (nonzero = real step), given its
        input x and the input's mask (None: no mask). By default a layer that supports
        masking passes the mask on and other layers drop it; an Embedding with
        mask_zero=True makes one from its token ids."""
        return mask if self.supports_masking else None

    def creates_mask(self) -> bool:
        """Whether compute_mask can return a mask for an input without one (an Embedding
        with mask_zero=True). A plan in which no layer does so runs without the mask
        bookkeeping (graph.Plan.forward). Assumed of any layer that overrides
        compute_mask unless it says otherwise."""
        return type(self).compute_mask is not Layer.compute_mask

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

    def __call__(self, *args, **kwargs):
        """On symbolic tensors: record a node of the graph (Functional API). On arrays:
        run the layer on its own for inference, building it on first use."""
        if graph.any_symbolic(args) or graph.any_symbolic(kwargs.values()) or graph.tracing():
            return graph.call_layer(self, args, kwargs)
        return self._call_eager(*args, **kwargs)

    def _call_eager(self, x, training=False):
        if self.is_composite:
            from ..models import eager_model
            return eager_model(self, x)(x, training=training)
        if self.multi_input:
            x = [np.ascontiguousarray(a, dtype=np.float32) for a in x]
            shape = [a.shape[1:] for a in x]
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
            shape = x.shape[1:]
        if not self.built:
            self._build(shape)
            n = self.param_count
            p, g = np.empty(n, np.float32), np.zeros(n, np.float32)
            self.bind(p, g, 0)
            self.initialize(np.random.default_rng())
        return self.forward(x, training=bool(training))

    # --- saving ---------------------------------------------------------------------
    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self.input_shape is not None and not self.multi_input and not self.is_composite:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


_GRAD_PASS = [0]


def new_grad_pass() -> None:
    """Start a backward pass: every layer's next first_grad_write() is True."""
    _GRAD_PASS[0] += 1


def _weights_owner(layer):
    while "_shared_from" in layer.__dict__:
        layer = layer.__dict__["_shared_from"]
    return layer


def grads_written(layer) -> bool:
    """Whether layer (or a copy sharing its weights) wrote its gradients in the current
    backward pass."""
    return _weights_owner(layer).__dict__.get("_grad_pass") == _GRAD_PASS[0]


def overwrites_grads(layer) -> bool:
    """layer.overwrites_grads, as declared by the class that defines its backward (a
    subclass with its own backward does not inherit the promise)."""
    for cls in type(layer).__mro__:
        if "backward" in cls.__dict__:
            return bool(cls.__dict__.get("overwrites_grads", False))
    return False


def bind_variable(v: Variable, params, grads, offset: int) -> int:
    """Point v at params/grads[offset:offset + size]; returns the next offset."""
    size = v.size
    v.value = params[offset:offset + size].reshape(v.shape)
    v.grad = grads[offset:offset + size].reshape(v.shape)
    if v.as_attribute and not isinstance(getattr(v.layer, v.name, None), Variable):
        setattr(v.layer, v.name, v.value)
        setattr(v.layer, "d" + v.name, v.grad)
    return offset + size


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
