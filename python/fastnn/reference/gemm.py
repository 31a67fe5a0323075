"""NumPy twin of fastnn.ops.matmul."""
import numpy as np


def matmul(a, b, transpose_a=False, transpose_b=False, out=None, accumulate=False):
    a = a.T if transpose_a else a
    b = b.T if transpose_b else b
    r = a @ b
    if out is None:
        return r
    if accumulate:
        out += r
    else:
        out[...] = r
    return out
