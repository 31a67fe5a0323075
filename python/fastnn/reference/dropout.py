"""NumPy twins of fastnn.ops.dropout and dropout_backward.

The mask is the kernel's exactly: flat element i is kept iff the high 32 bits of
splitmix64's i-th output from state mix(seed + γ) are >= floor(rate·2³²), with rate
rounded to float32 as the kernel receives it. The scaling is done in x's dtype.
"""
import numpy as np

_GAMMA = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _mix64_int(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix64(z):
    # uint64 arrays: products wrap modulo 2**64, as in C++
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def keep_mask(n, rate, seed):
    """Boolean keep mask of n flat elements for (rate, seed), as the kernel draws it."""
    key = _mix64_int((int(seed) + _GAMMA) & _M64)
    i = np.arange(n, dtype=np.uint64)
    h = _mix64(np.uint64(key) + i * np.uint64(_GAMMA))
    threshold = int(float(np.float32(rate)) * 4294967296.0)
    return (h >> np.uint64(32)) >= np.uint64(threshold)


def dropout(x, rate, seed, out=None, mask=None):
    x = np.asarray(x)
    keep = keep_mask(x.size, rate, seed).reshape(x.shape)
    y = np.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype, copy=False)
    if out is not None:
        out[...] = y
        y = out
    if mask is None:
        mask = keep.astype(np.uint8)
    else:
        mask[...] = keep
    return y, mask


def dropout_backward(dy, mask, rate, dx=None):
    dy = np.asarray(dy)
    g = np.where(np.asarray(mask) != 0, dy / (1.0 - rate), 0.0).astype(dy.dtype, copy=False)
    if dx is None:
        return g
    dx += g
    return dx
