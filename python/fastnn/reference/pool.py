"""NumPy twins of the fastnn.ops pooling functions (NHWC, any float dtype).

Window geometry follows Keras/TensorFlow: 'valid' keeps only whole windows; 'same' gives
ceil(H / stride) outputs and pads evenly (the odd row/column at the bottom/right).
Padded positions never take part: a max ignores them, an average divides by the number of
real elements in its window.
"""
import numpy as np


def _pair(v):
    if np.isscalar(v):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def pool2d_geometry(h, w, pool_size, strides=None, padding="valid"):
    """(OH, OW, PT, PL): output size and the padding before the first row/column."""
    kh, kw = _pair(pool_size)
    sh, sw = _pair(pool_size if strides is None else strides)
    if padding == "valid":
        return (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
    oh, ow = -(-h // sh), -(-w // sw)
    return oh, ow, max((oh - 1) * sh + kh - h, 0) // 2, max((ow - 1) * sw + kw - w, 0) // 2


def _windows(h, w, pool_size, strides, padding):
    """Yield (oh, ow, h0, h1, w0, w1): each window's real extent [h0, h1) x [w0, w1)."""
    kh, kw = _pair(pool_size)
    sh, sw = _pair(pool_size if strides is None else strides)
    oh_n, ow_n, pt, pl = pool2d_geometry(h, w, pool_size, strides, padding)
    for oh in range(oh_n):
        h0 = oh * sh - pt
        for ow in range(ow_n):
            w0 = ow * sw - pl
            yield oh, ow, max(h0, 0), min(h0 + kh, h), max(w0, 0), min(w0 + kw, w)


def _result(r, out):
    if out is None:
        return r
    out[...] = r
    return out


def max_pool2d(x, pool_size=2, strides=None, padding="valid", out=None):
    """(y, indices): y (N,OH,OW,C) the window max; indices (int32) the position h*W + w of
    the max within its image (first in row-major window order on ties; the first NaN)."""
    n, h, w, c = x.shape
    oh_n, ow_n, _, _ = pool2d_geometry(h, w, pool_size, strides, padding)
    y = np.empty((n, oh_n, ow_n, c), x.dtype)
    idx = np.empty((n, oh_n, ow_n, c), np.int32)
    for oh, ow, h0, h1, w0, w1 in _windows(h, w, pool_size, strides, padding):
        win = x[:, h0:h1, w0:w1, :].reshape(n, -1, c)
        k = np.argmax(win, axis=1)  # (N, C); argmax returns the first NaN, as max keeps it
        y[:, oh, ow] = np.take_along_axis(win, k[:, None, :], axis=1)[:, 0]
        idx[:, oh, ow] = (h0 + k // (w1 - w0)) * w + (w0 + k % (w1 - w0))
    return _result(y, out), idx


def max_pool2d_backward(dy, indices, x_shape, dx=None):
    """dx (x_shape) += dy routed to the saved positions."""
    n, h, w, c = x_shape
    if dx is None:
        dx = np.zeros(x_shape, dy.dtype)
    flat = dx.reshape(n, h * w, c)
    ni = np.arange(n)[:, None, None]
    ci = np.arange(c)[None, None, :]
    np.add.at(flat, (ni, indices.reshape(n, -1, c), ci), dy.reshape(n, -1, c))
    return dx


def avg_pool2d(x, pool_size=2, strides=None, padding="valid", out=None):
    """y (N,OH,OW,C): mean of the real elements of each window."""
    n, h, w, c = x.shape
    oh_n, ow_n, _, _ = pool2d_geometry(h, w, pool_size, strides, padding)
    y = np.empty((n, oh_n, ow_n, c), x.dtype)
    for oh, ow, h0, h1, w0, w1 in _windows(h, w, pool_size, strides, padding):
        y[:, oh, ow] = x[:, h0:h1, w0:w1, :].sum(axis=(1, 2)) / ((h1 - h0) * (w1 - w0))
    return _result(y, out)


def avg_pool2d_backward(dy, x_shape, pool_size=2, strides=None, padding="valid", dx=None):
    """dx (x_shape) += each dy spread evenly over the real elements of its window."""
    n, h, w, c = x_shape
    if dx is None:
        dx = np.zeros(x_shape, dy.dtype)
    for oh, ow, h0, h1, w0, w1 in _windows(h, w, pool_size, strides, padding):
        dx[:, h0:h1, w0:w1, :] += (dy[:, oh, ow] / ((h1 - h0) * (w1 - w0)))[:, None, None, :]
    return dx


def global_avg_pool2d(x, out=None):
    """y (N,C): mean over H and W."""
    return _result(x.mean(axis=(1, 2)), out)


def global_avg_pool2d_backward(dy, x_shape, dx=None):
    """dx (x_shape) += dy / (H*W) at every position."""
    n, h, w, c = x_shape
    if dx is None:
        dx = np.zeros(x_shape, dy.dtype)
    dx += (dy / (h * w))[:, None, None, :]
    return dx
