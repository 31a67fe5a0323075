"""Plain NumPy twins of every fastnn kernel: same names, same arguments, any float dtype.

They are the specification the C++ kernels are tested against, and are themselves
checked by central finite differences in float64.
"""
from .activation import (activation, activation_backward, gelu, relu, sigmoid, softmax,
                         softmax_backward, tanh)
from .dense import dense, dense_backward
from .gemm import matmul
from .loss import (binary_cross_entropy_with_logits, categorical_cross_entropy,
                   mean_squared_error, softmax_cross_entropy)

__all__ = [
    "activation", "activation_backward", "binary_cross_entropy_with_logits",
    "categorical_cross_entropy", "dense", "dense_backward", "gelu", "matmul",
    "mean_squared_error", "relu", "sigmoid", "softmax", "softmax_backward",
    "softmax_cross_entropy", "tanh",
]
