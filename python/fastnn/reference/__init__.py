"""Plain NumPy twins of every fastnn kernel: same names, same arguments, any float dtype.

They are the specification the C++ kernels are tested against, and are themselves
checked by central finite differences in float64.
"""
from .dropout import dropout, dropout_backward
from .gemm import matmul
from .optim import adagrad_step, adam_step, sgd_step

__all__ = ["matmul", "sgd_step", "adam_step", "adagrad_step", "dropout", "dropout_backward"]
