"""fastnn: a small, fast deep-learning library for the CPU.

C++/OpenMP kernels (``fastnn._core``, functional wrappers in ``fastnn.ops``, NumPy twins in
``fastnn.reference``) behind a Keras-shaped API::

    import fastnn as fn
    model = fn.Sequential([fn.layers.Flatten(input_shape=(28, 28)),
                           fn.layers.Dense(128, activation="relu"),
                           fn.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
from . import _core
from ._runtime import build_info, get_num_threads, set_num_threads
from . import callbacks, data, datasets, initializers, layers, losses, metrics, ops, optim, reference, text
from . import distribute, models, onnx, saving, utils
from . import pruning, quantization
from .models import Input, Model, Sequential, load_model, set_random_seed
from .tape import GradientTape

__version__ = _core.__version__

__all__ = ["Input", "Model", "Sequential", "GradientTape", "load_model", "set_random_seed", "build_info", "get_num_threads",
           "set_num_threads", "callbacks", "data", "datasets", "distribute", "onnx", "initializers", "layers", "losses",
           "metrics", "models", "ops", "pruning", "quantization", "saving", "utils", "optim", "reference", "text", "__version__"]
