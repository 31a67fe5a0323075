"""One epoch of the seed MLP or CNN on N random samples, 1 thread: a fixed workload for
instruction counts. Run it under callgrind for two N and subtract, which leaves the
instructions of (N2 - N1) / batch training steps without the start-up:

    valgrind --tool=callgrind python bench/fit_steps.py mlp 1600
    valgrind --tool=callgrind python bench/fit_steps.py mlp 4800   # 100 steps more

(use the interpreter's real path, not a shell shim, e.g. `$(python -c 'import sys;
print(sys.executable)')`).
"""
import sys

import numpy as np

import fastnn as fn
from fastnn import cli


def main(model="mlp", n="1600"):
    fn.set_num_threads(1)
    n = int(n)
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    if model == "mlp":
        m, batch = cli.mnist_mlp_model([128], 0), 32
    else:
        m, batch, x = cli.mnist_cnn_model(False, 0), 64, x.reshape(-1, 28, 28, 1)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, batch_size=batch, epochs=1, verbose=0)


if __name__ == "__main__":
    main(*sys.argv[1:])
