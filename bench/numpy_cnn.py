"""A fair NumPy reference trainer for the Keras MNIST CNNs, used as the NumPy baseline in
bench/train_mnist.py (``--model cnn`` / ``--model cnn-small``).

The models (channels-last input (N, 28, 28, 1), 3x3 'valid' convolutions with stride 1,
2x2 max-pooling with stride 2, ReLU, softmax output, sparse categorical cross-entropy,
Adam lr 1e-3 eps 1e-7, Glorot-uniform weights, zero biases):

- ``cnn``:       Conv2D(32) → MaxPool → Conv2D(64) → MaxPool → Conv2D(64) → Flatten →
                 Dense(64, relu) → Dense(10, softmax)
- ``cnn-small``: Conv2D(32) → MaxPool → Conv2D(64) → MaxPool → Flatten → Dense(10, softmax)

What makes it a fair (strong) baseline rather than a strawman — on top of everything
numpy_mlp.py already does (float32 throughout, Python-float constants only, BLAS with
``out=``, bias gradients as a BLAS ``ones · dz``, fused stable softmax + cross-entropy,
one flat buffer each for parameters, gradients and Adam state, seeded shuffling with
``np.take(..., out=)``; the softmax-xent, Adam and epoch loop are inherited from
``numpy_mlp.NumpyMLP``, not copied):

- Convolution is im2col + one BLAS matrix product. The columns come from a
  ``sliding_window_view`` of the input, copied once per step into a preallocated
  (N, OH, OW, KH, KW, C) buffer (for C = 1 tap by tap, which gives long contiguous runs);
  the forward product is ``cols · W`` with W the Keras (KH, KW, C, OC) kernel seen as a
  (KH·KW·C, OC) matrix, and the weight gradient ``colsᵀ · dz`` reuses the same columns.
- The data gradient is col2im: one batched ``np.matmul`` computes dz · W[kh, kw]ᵀ for all
  nine taps into a tap-major (9, N·OH·OW, C) buffer (each tap's block contiguous, which
  measured about twice as fast to scatter as the (N·OH·OW, 9·C) layout), then nine
  in-place shifted adds (the first a copy). The first convolution gets no data gradient.
- Max-pooling 2x2/2 uses the four strided quarter views of the conv output (the
  (N, PH, 2, PW, 2, C) reshape), reduced with three ``np.maximum(..., out=)`` calls,
  which measured 3-5x faster than ``np.max`` over the two window axes. The backward
  pass uses an argmax mask with the same tie rule as fastnn (first in row-major window
  order): ties are common here (all-zero background windows give exactly equal
  outputs), so an equality mask alone would send the gradient to every tied position.
  The mask is stored in the pooled layout (4, N, PH, PW, C), contiguous, so its
  logic runs over long runs (about 3x faster than a mask laid out like the conv output).
- Bias and ReLU of a pooled convolution are applied after the pooling, on the 4x smaller
  tensor: max(z) + b = max(z + b) exactly (rounding is monotone) and ReLU commutes with
  max, so the forward values are the same as conv → bias → ReLU → pool. In the backward
  pass the ReLU mask and the bias gradient are likewise taken on the pooled tensor.
- ReLU backward multiplies by sign(y) (0 or 1, as y ≥ 0) written into a preallocated
  mask, as numpy_mlp.py does. Flatten is a free reshape of a contiguous buffer.
- No allocation in the training step apart from NumPy's small view objects: every
  activation, column, mask and gradient buffer is allocated once for the batch size;
  the last, partial batch uses leading-row views of the same buffers.
- The BLAS thread count is set explicitly (``threads=``); elementwise NumPy (im2col,
  pooling, col2im, masks) is single-threaded, which is what NumPy is.

Run alone:  FASTNN_DATA=... python bench/numpy_cnn.py --model cnn --epochs 1
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from numpy_mlp import NumpyMLP, train_net

# Layer specs: ("conv", filters, pool_after) — 3x3 valid, ReLU; ("dense", units, act).
ARCHS = {
    "cnn": [("conv", 32, True), ("conv", 64, True), ("conv", 64, False),
            ("dense", 64, "relu"), ("dense", 10, "softmax")],
    "cnn-small": [("conv", 32, True), ("conv", 64, True), ("dense", 10, "softmax")],
}
K = 3  # kernel size
POOL = 2  # pool size and stride


def _glorot(rng, w, fan_in, fan_out):
    """Fill w (any shape) with U(−l, l), l = √(6/(fan_in + fan_out)) (Keras's Glorot)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    w[...] = rng.uniform(-limit, limit, size=w.shape)


class _Conv:
    """Conv2D(OC, 3, relu) on (N, H, W, C), optionally followed by MaxPooling2D(2).

    Owns its output y (B, *out_shape) and the gradient dy w.r.t. y, which the next
    layer (or the loss) fills. W (K, K, C, OC), b (OC) and their gradients are views into
    the model's flat buffers.
    """

    def __init__(self, in_shape, filters, pool, B, W, b, dW, db):
        H, Wd, C = in_shape
        OC = filters
        self.C, self.OC = C, OC
        self.OH, self.OW = H - K + 1, Wd - K + 1
        self.pool = pool
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.W2 = W.reshape(K * K * C, OC)
        self.dW2 = dW.reshape(K * K * C, OC)
        self.W9T = W.reshape(K * K, C, OC).transpose(0, 2, 1)  # (9, OC, C) view
        f32 = np.float32
        OH, OW = self.OH, self.OW
        self.cols = np.empty((B, OH, OW, K, K, C), f32)
        self.ones = np.ones(B * OH * OW, f32)
        self.dT = np.empty((K * K, B * OH * OW, C), f32)  # tap-major data-gradient columns
        if pool:
            self.PH, self.PW = OH // POOL, OW // POOL
            self.out_shape = (self.PH, self.PW, OC)
            self.z = np.empty((B, OH, OW, OC), f32)    # conv output before bias/ReLU
            # dz: rows/columns that no pooling window reads stay zero forever.
            self.dz = np.zeros((B, OH, OW, OC), f32)
            # argmax mask per window position k (row-major), in the pooled layout.
            self.amask = np.empty((POOL * POOL, B, self.PH, self.PW, OC), np.bool_)
            self.taken = np.empty((B, self.PH, self.PW, OC), np.bool_)
            self.ptmp = np.empty((B, self.PH, self.PW, OC), f32)
        else:
            self.out_shape = (OH, OW, OC)
        self.y = np.empty((B,) + self.out_shape, f32)
        self.dy = np.empty((B,) + self.out_shape, f32)
        self.mask = np.empty((B,) + self.out_shape, f32)

    def _im2col(self, x, n):
        cols = self.cols[:n]
        win = sliding_window_view(x, (K, K), axis=(1, 2))  # (n, OH, OW, C, K, K) view
        if self.C == 1:
            for kh in range(K):
                for kw in range(K):
                    np.copyto(cols[..., kh, kw, 0], win[..., 0, kh, kw])
        else:
            np.copyto(cols, win.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(-1, K * K * self.C)

    @staticmethod
    def _quarters(a, ph, pw):
        """The four (n, ph, pw, C) views a[:, i::2, j::2] in row-major window order."""
        v = a[:, :POOL * ph, :POOL * pw].reshape(a.shape[0], ph, POOL, pw, POOL, a.shape[-1])
        return [v[:, :, i, :, j] for i in range(POOL) for j in range(POOL)]

    def forward(self, x, n, training=True):
        self.x = x
        cols2 = self._im2col(x, n)
        OC = self.OC
        if not self.pool:
            y = self.y[:n]
            np.matmul(cols2, self.W2, out=y.reshape(-1, OC))
            y += self.b
            np.maximum(y, 0.0, out=y)
            return y
        z = self.z[:n]
        np.matmul(cols2, self.W2, out=z.reshape(-1, OC))
        p, tmp = self.y[:n], self.ptmp[:n]
        q = self._quarters(z, self.PH, self.PW)
        np.maximum(q[0], q[1], out=p)
        np.maximum(q[2], q[3], out=tmp)
        np.maximum(p, tmp, out=p)
        if training:
            # First-wins argmax mask: m_k = (q_k == max) and no earlier quarter was taken.
            m = self.amask[:, :n]
            taken = self.taken[:n]
            np.equal(q[0], p, out=m[0])
            np.equal(q[1], p, out=m[1])
            np.greater(m[1], m[0], out=m[1])
            np.logical_or(m[0], m[1], out=taken)
            np.equal(q[2], p, out=m[2])
            np.greater(m[2], taken, out=m[2])
            np.logical_or(taken, m[2], out=taken)
            np.logical_not(taken, out=m[3])
        p += self.b  # max(z) + b == max(z + b); ReLU commutes with max
        np.maximum(p, 0.0, out=p)
        return p

    def backward(self, n, dx):
        """Gradients from self.dy[:n] (overwritten): dW, db (=) and dx (=) if not None."""
        OC = self.OC
        dy = self.dy[:n]
        mask = self.mask[:n]
        np.sign(self.y[:n], out=mask)  # ReLU output ≥ 0: sign is 0/1
        dy *= mask
        if self.pool:
            np.matmul(self.ones[:dy.size // OC], dy.reshape(-1, OC), out=self.db)
            dz = self.dz[:n]
            for mk, dzk in zip(self.amask[:, :n], self._quarters(dz, self.PH, self.PW)):
                np.multiply(mk, dy, out=dzk)  # dy routed to the argmax of each window
        else:
            dz = dy
        dz2 = dz.reshape(-1, OC)
        P = dz2.shape[0]
        np.matmul(self.cols[:n].reshape(P, -1).T, dz2, out=self.dW2)
        if not self.pool:
            np.matmul(self.ones[:P], dz2, out=self.db)
        if dx is None:
            return
        # col2im: dT[k] = dz · W[kh, kw]ᵀ for each tap k, then shifted adds into dx.
        dT = self.dT[:, :P]
        np.matmul(dz2[None], self.W9T, out=dT)
        d = dT.reshape(K, K, n, self.OH, self.OW, self.C)
        OH, OW = self.OH, self.OW
        np.copyto(dx[:, :OH, :OW], d[0, 0])
        dx[:, OH:] = 0.0
        dx[:, :OH, OW:] = 0.0
        for kh in range(K):
            for kw in range(K):
                if kh or kw:
                    v = dx[:, kh:kh + OH, kw:kw + OW]
                    np.add(v, d[kh, kw], out=v)


class _Dense:
    """Dense(units, relu | softmax) on (N, F); the softmax is folded into the loss."""

    def __init__(self, in_features, units, act, B, W, b, dW, db):
        self.act = act
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.out_shape = (units,)
        f32 = np.float32
        self.y = np.empty((B, units), f32)
        self.dy = np.empty((B, units), f32)
        self.mask = np.empty((B, units), f32) if act == "relu" else None
        self.ones = np.ones(B, f32)

    def forward(self, x, n, training=True):
        self.x = x = x.reshape(n, -1)  # Flatten: a view of a contiguous buffer
        y = self.y[:n]
        np.matmul(x, self.W, out=y)
        y += self.b
        if self.act == "relu":
            np.maximum(y, 0.0, out=y)
        return y

    def backward(self, n, dx):
        dz = self.dy[:n]
        if self.act == "relu":
            mask = self.mask[:n]
            np.sign(self.y[:n], out=mask)
            dz *= mask
        np.matmul(self.x.T, dz, out=self.dW)
        np.matmul(self.ones[:n], dz, out=self.db)
        if dx is not None:
            np.matmul(dz, self.W.T, out=dx.reshape(n, -1))


class NumpyCNN(NumpyMLP):
    """The Keras MNIST CNN ``model`` ('cnn' or 'cnn-small') on (N, 28, 28, 1) float32.

    Reuses NumpyMLP's fused softmax cross-entropy (_softmax_xent), flat-buffer Adam
    (_adam) and epoch loop (fit); those read self.a[0] (the input batch buffer),
    self.labels, self.rowbuf, self.arange, self.params/grads/m/v/tmp and the Adam
    hyper-parameters, which __init__ sets up here.
    """

    def __init__(self, model="cnn", batch_size=64, seed=0, lr=1e-3, beta1=0.9, beta2=0.999,
                 eps=1e-7, input_shape=(28, 28, 1)):
        if model not in ARCHS:
            raise ValueError(f"unknown CNN {model!r}; choose from {sorted(ARCHS)}")
        self.model = model
        self.batch_size = B = int(batch_size)
        self.lr = lr if callable(lr) else float(lr)  # a number or a function of the step
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = float(eps)
        self.t = 0
        f32 = np.float32

        # Parameter shapes (kernel, bias per layer, in Keras order) and fan-in/out.
        shapes, fans, shape = [], [], tuple(input_shape)
        for kind, units, opt in ARCHS[model]:
            if kind == "conv":
                C = shape[-1]
                shapes.append(((K, K, C, units), (units,)))
                fans.append((K * K * C, K * K * units))
                oh, ow = shape[0] - K + 1, shape[1] - K + 1
                shape = (oh // POOL, ow // POOL, units) if opt else (oh, ow, units)
            else:
                F = int(np.prod(shape))
                shapes.append(((F, units), (units,)))
                fans.append((F, units))
                shape = (units,)
        n = sum(int(np.prod(w)) + int(np.prod(b)) for w, b in shapes)
        self._flat_buffers(n)

        def views(buf):
            out, off = [], 0
            for ws, bs in shapes:
                nw, nb = int(np.prod(ws)), int(np.prod(bs))
                out.append((buf[off:off + nw].reshape(ws), buf[off + nw:off + nw + nb]))
                off += nw + nb
            return out

        pv, gv = views(self.params), views(self.grads)
        rng = np.random.default_rng(seed)
        for (w, _), (fi, fo) in zip(pv, fans):
            _glorot(rng, w, fi, fo)

        self.layers, shape = [], tuple(input_shape)
        for (kind, units, opt), (W, b), (dW, db) in zip(ARCHS[model], pv, gv):
            if kind == "conv":
                layer = _Conv(shape, units, opt, B, W, b, dW, db)
            else:
                layer = _Dense(int(np.prod(shape)), units, opt, B, W, b, dW, db)
            self.layers.append(layer)
            shape = layer.out_shape
        self.sizes = [int(np.prod(input_shape)), shape[0]]
        self.a = [np.empty((B,) + tuple(input_shape), f32)]  # the input batch (fit fills it)
        self.rowbuf = np.empty((B, 1), f32)
        self.labels = np.empty(B, np.int64)
        self.argmax = np.empty(B, np.int64)
        self.arange = np.arange(B)

    def _forward(self, x, n, training=True):
        h = x
        for layer in self.layers:
            h = layer.forward(h, n, training)
        return h

    def train_step(self, n):
        """Train on the first n rows of self.a[0] / self.labels; returns (loss_sum, correct)."""
        labels = self.labels[:n]
        logits = self._forward(self.a[0][:n], n)
        am = self.argmax[:n]
        np.argmax(logits, axis=1, out=am)
        correct = int(np.count_nonzero(am == labels))
        loss_sum = self._softmax_xent(logits, labels, n, self.layers[-1].dy[:n])
        self.backward(n)
        self._adam()
        return loss_sum, correct

    def backward(self, n):
        """Fill self.grads from the output gradient already in self.layers[-1].dy[:n]."""
        L = self.layers
        for k in range(len(L) - 1, -1, -1):
            L[k].backward(n, L[k - 1].dy[:n] if k > 0 else None)

    def evaluate(self, x, y, batch_size=None):
        """(mean loss, accuracy) on x (N, 28, 28, 1), y; forward only, in batches that fit
        the training buffers."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.asarray(y)
        B = self.batch_size
        loss, correct = 0.0, 0
        for s in range(0, len(x), B):
            xb = x[s:s + B]
            n = len(xb)
            logits = self._forward(xb, n, training=False)
            ls, c = self._eval_batch(logits, y[s:s + n])
            loss += ls
            correct += c
        return loss / len(x), correct / len(x)


def images_nhwc(x):
    """(N, 28, 28) or (N, 784) or (N, 28, 28, 1) float32 images as (N, 28, 28, 1)."""
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(len(x), 28, 28, 1)


def train(model="cnn", epochs=1, batch_size=64, threads=2, seed=0, data=None,
          verbose=False, lr=1e-3, schedule="constant"):
    """Train on MNIST and return a result dict (what bench/train_mnist.py prints)."""
    import _common

    def make(n_train):
        steps = _common.total_steps(n_train, batch_size, epochs)
        return NumpyCNN(model, batch_size=batch_size, seed=seed,
                        lr=_common.lr_at(lr, schedule, steps))
    return train_net(make, epochs, threads, seed, data, verbose, images=images_nhwc)


def main(argv=None):
    import _common

    def run(a, verbose):
        return train(a.model, a.epochs, a.batch_size, a.threads, a.seed, verbose=verbose,
                     lr=a.lr, schedule=a.schedule)

    ap = _common.trainer_parser(__doc__, model="cnn", epochs=1, batch_size=64,
                                models=sorted(ARCHS))
    _common.run_trainer_main(ap, argv, run, label="numpy {version}, {threads} BLAS threads")


if __name__ == "__main__":
    main()
