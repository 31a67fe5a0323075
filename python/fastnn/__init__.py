"""fastnn: a small, fast deep-learning library for the CPU.

C++/OpenMP kernels (fastnn._core) behind a Keras-shaped Python API.
"""
from . import _core
from ._runtime import build_info, get_num_threads, set_num_threads

__version__ = _core.__version__

__all__ = ["build_info", "get_num_threads", "set_num_threads", "__version__"]
