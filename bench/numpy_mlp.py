"""A fair NumPy reference trainer for a multi-layer perceptron (ReLU hidden layers,
softmax output, sparse categorical cross-entropy, Adam), used as the NumPy baseline in
bench/train_mnist.py.

What makes it a fair (strong) baseline rather than a strawman:

- float32 throughout: data, parameters, gradients, optimizer state, every temporary.
  Python-float constants only, so NumPy 2 (NEP 50) never promotes a step to float64.
- No allocation in the training step: every activation, gradient, mask and scratch
  buffer is allocated once and reused; every ufunc writes with ``out=``. The last,
  partial batch uses leading-row views of the same buffers.
- All matrix products go to BLAS (OpenBLAS in NumPy wheels) through ``np.matmul(...,
  out=)``, transposed operands passed as views (BLAS handles the transpose flag), bias
  gradients as a BLAS matrix-vector product (``ones · dz``) instead of a reduction.
- Fused, numerically stable softmax + cross-entropy: one max-shift, one exp, one row sum;
  the gradient (softmax − onehot)/n is formed in place in the same buffer.
- One flat float32 buffer each for parameters, gradients, Adam's m and v; the per-layer
  W and b are views into them, so the Adam step is one vectorised in-place pass over all
  parameters (10 whole-buffer ufunc calls). The state is stored pre-scaled
  (m' = m/(1−β1), v' = v/(1−β2)), which is algebraically the same Adam update with two
  fewer passes over memory.
- The Adam update is Keras's: alpha_t = lr·√(1−β2^t)/(1−β1^t),
  p −= alpha_t·m/(√v + eps) with eps = 1e-7 (Keras's default).
- Glorot-uniform weights and zero biases (Keras's Dense defaults), seeded.
- Each epoch shuffles with a seeded ``numpy.random.Generator`` and gathers each batch
  with ``np.take(..., out=, mode="clip")`` (numpy's default mode stages an ``out=``
  result through a temporary) into the preallocated input buffer (no copy of the whole
  training set per epoch). The training loss and accuracy are accumulated every step, as
  Keras's ``fit(metrics=["accuracy"])`` does.
- The BLAS thread count is set explicitly (``threads=``); elementwise NumPy is
  single-threaded, which is what NumPy is.

Run alone:  FASTNN_DATA=... python bench/numpy_mlp.py --model 784-128-10 --epochs 5
"""
from __future__ import annotations

import math
import time

import numpy as np


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, out: np.ndarray):
    """Fill out (fan_in, fan_out) with U(−l, l), l = √(6/(fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    out[...] = rng.uniform(-limit, limit, size=(fan_in, fan_out))
    return out


class NumpyMLP:
    """MLP sizes[0] → sizes[1] → … → sizes[-1]: ReLU hidden layers, softmax output.

    Parameters, gradients and Adam state each live in one flat float32 buffer; the
    layers' W (in, out) and b (out) are views into it.
    """

    def __init__(self, sizes, batch_size=32, seed=0, lr=1e-3, beta1=0.9, beta2=0.999,
                 eps=1e-7):
        self.sizes = [int(s) for s in sizes]
        self.batch_size = int(batch_size)
        # lr: a number, or a function of the 0-based step (see _common.lr_at)
        self.lr = lr if callable(lr) else float(lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.t = 0
        f32 = np.float32
        layer_shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        n = sum(i * o + o for i, o in layer_shapes)
        self._flat_buffers(n)

        def views(buf):
            ws, bs, off = [], [], 0
            for i, o in layer_shapes:
                ws.append(buf[off:off + i * o].reshape(i, o))
                off += i * o
                bs.append(buf[off:off + o])
                off += o
            return ws, bs

        self.W, self.b = views(self.params)
        self.dW, self.db = views(self.grads)
        rng = np.random.default_rng(seed)
        for (i, o), w in zip(layer_shapes, self.W):
            glorot_uniform(rng, i, o, w)

        B = self.batch_size
        # a[0] is the input batch, a[k] the output of layer k (a[-1]: logits, then probs).
        self.a = [np.empty((B, s), f32) for s in self.sizes]
        # d[k]: gradient w.r.t. a[k] (k >= 1); the output one holds softmax − onehot.
        self.d = [None] + [np.empty((B, s), f32) for s in self.sizes[1:]]
        self.relu_mask = [None] + [np.empty((B, s), f32) for s in self.sizes[1:-1]]
        self.ones = np.ones(B, f32)
        self.rowbuf = np.empty((B, 1), f32)
        self.labels = np.empty(B, np.int64)
        self.argmax = np.empty(B, np.int64)
        self.arange = np.arange(B)

    def _flat_buffers(self, n):
        """Allocate the flat float32 buffers of the n parameters: params and grads (zero),
        Adam's m and v (zero, stored pre-scaled) and the step's scratch tmp."""
        f32 = np.float32
        self.num_params = n
        self.params = np.zeros(n, f32)
        self.grads = np.zeros(n, f32)
        self.m = np.zeros(n, f32)  # stores m / (1 − β1)
        self.v = np.zeros(n, f32)  # stores v / (1 − β2)
        self.tmp = np.empty(n, f32)

    # -- forward ---------------------------------------------------------------------
    def _forward(self, a, n):
        """a: list of per-layer buffers; fills a[1..] for the first n rows; returns logits."""
        L = len(self.W)
        for k in range(L):
            y = a[k + 1][:n]
            np.matmul(a[k][:n], self.W[k], out=y)
            y += self.b[k]
            if k < L - 1:
                np.maximum(y, 0.0, out=y)
        return a[L][:n]

    def _softmax_xent(self, logits, labels, n, grad_out):
        """Stable softmax + cross-entropy summed over rows; grad_out = (p − onehot)/n."""
        mx = self.rowbuf[:n]
        np.max(logits, axis=1, keepdims=True, out=mx)
        np.subtract(logits, mx, out=grad_out)          # z = logits − max (≤ 0)
        ar = self.arange[:n]
        z_label = grad_out[ar, labels]                   # (n,) small gather
        np.exp(grad_out, out=grad_out)
        s = mx                                           # reuse the row buffer
        np.sum(grad_out, axis=1, keepdims=True, out=s)
        loss_sum = float(np.log(s).sum() - z_label.sum())
        np.divide(grad_out, s, out=grad_out)             # softmax
        grad_out[ar, labels] -= 1.0
        grad_out *= 1.0 / n
        return loss_sum

    # -- one training step -------------------------------------------------------------
    def train_step(self, n):
        """Train on the first n rows of self.a[0] / self.labels; returns (loss_sum, correct)."""
        a, d, L = self.a, self.d, len(self.W)
        labels = self.labels[:n]
        logits = self._forward(a, n)
        am = self.argmax[:n]
        np.argmax(logits, axis=1, out=am)
        correct = int(np.count_nonzero(am == labels))
        loss_sum = self._softmax_xent(logits, labels, n, d[L][:n])
        ones = self.ones[:n]
        for k in range(L - 1, -1, -1):
            dz = d[k + 1][:n]
            np.matmul(a[k][:n].T, dz, out=self.dW[k])
            np.matmul(ones, dz, out=self.db[k])
            if k > 0:
                dx = d[k][:n]
                np.matmul(dz, self.W[k].T, out=dx)
                mask = self.relu_mask[k][:n]
                np.sign(a[k][:n], out=mask)              # ReLU output ≥ 0: sign is 0/1
                dx *= mask
        self._adam()
        return loss_sum, correct

    def _adam(self):
        """Keras Adam on the flat buffers, with m, v stored scaled by 1/(1−β)."""
        self.t += 1
        b1, b2, t = self.beta1, self.beta2, self.t
        p, g, m, v, tmp = self.params, self.grads, self.m, self.v, self.tmp
        m *= b1                                   # m' = β1·m' + g   (m = (1−β1)·m')
        m += g
        np.multiply(g, g, out=tmp)                # v' = β2·v' + g²  (v = (1−β2)·v')
        v *= b2
        v += tmp
        lr = self.lr(t - 1) if callable(self.lr) else self.lr
        alpha = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        scale = alpha * (1.0 - b1) / math.sqrt(1.0 - b2)
        eps = self.eps / math.sqrt(1.0 - b2)
        np.sqrt(v, out=tmp)                       # p −= alpha·m/(√v + eps)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= scale
        p -= tmp

    # -- loops -------------------------------------------------------------------------
    def fit(self, x, y, epochs=1, seed=0, verbose=False):
        """x: (N, sizes[0]) float32, y: (N,) integer labels. Returns per-epoch records."""
        import _common

        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        N, B = len(x), self.batch_size
        rng = np.random.default_rng(seed)
        xb, yb = self.a[0], self.labels
        history = []
        for epoch in range(epochs):
            t0 = time.perf_counter()
            perm = rng.permutation(N)
            loss_sum, correct = 0.0, 0
            for s in range(0, N, B):
                idx = perm[s:s + B]
                n = len(idx)
                np.take(x, idx, axis=0, out=xb[:n], mode="clip")
                np.take(y, idx, out=yb[:n], mode="clip")
                ls, c = self.train_step(n)
                loss_sum += ls
                correct += c
            dt = time.perf_counter() - t0
            _common.end_epoch(history, epoch, epochs, dt, loss_sum, correct, N, verbose)
        return history

    @staticmethod
    def _eval_batch(logits, yb):
        """(summed cross-entropy, number correct) of one batch of logits (no buffers)."""
        z = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        loss = float((lse - z[np.arange(len(yb)), yb]).sum())
        return loss, int(np.count_nonzero(logits.argmax(axis=1) == yb))

    def evaluate(self, x, y, batch_size=1000):
        """(mean loss, accuracy) on x, y; forward only, in chunks of batch_size rows."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.asarray(y)
        B = min(batch_size, len(x))
        a = [None] + [np.empty((B, s), np.float32) for s in self.sizes[1:]]
        loss, correct = 0.0, 0
        for s in range(0, len(x), B):
            xb = x[s:s + B]
            n = len(xb)
            a[0] = xb
            logits = self._forward(a, n)
            ls, c = self._eval_batch(logits, y[s:s + n])
            loss += ls
            correct += c
        return loss / len(x), correct / len(x)


def train(sizes=(784, 128, 10), epochs=5, batch_size=32, threads=2, seed=0, data=None,
          verbose=False, lr=1e-3, schedule="constant"):
    """Train on MNIST and return a result dict (what bench/train_mnist.py prints)."""
    import _common

    def make(n_train):
        steps = _common.total_steps(n_train, batch_size, epochs)
        return NumpyMLP(sizes, batch_size=batch_size, seed=seed,
                        lr=_common.lr_at(lr, schedule, steps))
    return train_net(make, epochs, threads, seed, data, verbose)


def train_net(make_net, epochs, threads, seed, data=None, verbose=False, images=None):
    """Train the model make_net(n_train) returns (a NumpyMLP or subclass, built after
    the data is loaded) on MNIST and return the result dict.

    images: None trains on flattened (N, 784) rows; else a function that turns the
    images into the model's input layout (counted in the load time).
    """
    import _common

    blas_set = _common.set_blas_threads(threads)
    t0 = time.perf_counter()
    if data is None:
        data = _common.mnist_float32(flatten=images is None)
    (xtr, ytr), (xte, yte) = data
    if images is not None:
        xtr, xte = images(xtr), images(xte)
    load_s = time.perf_counter() - t0
    net = make_net(len(xtr))
    hist = net.fit(xtr, ytr, epochs=epochs, seed=seed, verbose=verbose)
    test = net.evaluate(xte, yte)
    return _common.result_record(
        "numpy", np.__version__, threads, hist, test, n_train=len(xtr),
        num_params=net.num_params, load_s=load_s,
        blas_threads=_common.blas_threads() if blas_set else None)


def main(argv=None):
    import _common

    def run(a, verbose):
        return train(_common.parse_sizes(a.model), a.epochs, a.batch_size, a.threads, a.seed,
                     verbose=verbose, lr=a.lr, schedule=a.schedule)

    ap = _common.trainer_parser(__doc__, model="784-128-10", epochs=5, batch_size=32)
    _common.run_trainer_main(ap, argv, run, label="numpy {version}, {threads} BLAS threads")


if __name__ == "__main__":
    main()
