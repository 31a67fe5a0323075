"""NumPy twins of fastnn.ops.sgd_step, adam_step and adagrad_step.

Same names and arguments; they update params and the state in place, in the arrays' own
dtype (float64 for the tests), written as the textbook formulas (PyTorch's conventions).
With zero_grads=True, grads is set to 0 at the end.
"""
import numpy as np


def sgd_step(params, grads, velocity=None, lr=0.01, momentum=0.0, nesterov=False,
             weight_decay=0.0, zero_grads=False):
    g = grads + weight_decay * params if weight_decay else np.array(grads, dtype=params.dtype)
    if momentum:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    params -= lr * g
    if zero_grads:
        grads[...] = 0


def adam_step(params, grads, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7,
              weight_decay=0.0, decoupled=False, zero_grads=False):
    g = np.array(grads, dtype=params.dtype)
    if weight_decay:
        if decoupled:
            params *= 1.0 - lr * weight_decay
        else:
            g += weight_decay * params
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * g * g
    m_hat = m / (1.0 - beta1 ** step)
    v_hat = v / (1.0 - beta2 ** step)
    params -= lr * m_hat / (np.sqrt(v_hat) + eps)
    if zero_grads:
        grads[...] = 0


def adagrad_step(params, grads, accum, lr=0.01, eps=1e-7, weight_decay=0.0, zero_grads=False):
    g = grads + weight_decay * params if weight_decay else np.array(grads, dtype=params.dtype)
    accum += g * g
    params -= lr * g / (np.sqrt(accum) + eps)
    if zero_grads:
        grads[...] = 0
