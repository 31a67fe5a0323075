"""Functional kernels for other Python programs: NumPy arrays in, NumPy arrays out.

Rules shared by every function here:
- Inputs are converted once, explicitly, to C-contiguous float32 (integer labels to
  int32) with ``numpy.ascontiguousarray``; an input that is already so is used as is.
- An ``out=`` array (or any other array a function writes) is never converted: it must
  already be a writeable, C-contiguous float32 array of the right shape, or a TypeError /
  ValueError names it and says what was expected. A result never lands in a temporary.
- The GIL is released while a kernel runs.
"""
from .attention import attention, attention_backward
from .gemm import matmul

__all__ = ["attention", "attention_backward", "matmul"]
