"""Central finite differences, for checking the NumPy twins in float64."""
from __future__ import annotations

import numpy as np


def num_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f() / d x by central differences: x (float64) is changed in place, one element
    at a time, and restored; f takes no arguments and reads x."""
    g = np.empty_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g
