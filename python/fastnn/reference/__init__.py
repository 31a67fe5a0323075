"""Plain NumPy twins of every fastnn kernel: same names, same arguments, any float dtype.

They are the specification the C++ kernels are tested against, and are themselves
checked by central finite differences in float64.
"""
from .attention import attention, attention_backward
from .gemm import matmul

__all__ = ["attention", "attention_backward", "matmul"]
