"""Functional kernels for other Python programs: NumPy arrays in, NumPy arrays out.

Rules shared by every function here:
- Inputs are converted once, explicitly, to C-contiguous float32 (integer labels to
  int32) with ``numpy.ascontiguousarray``; an input that is already so is used as is.
- An ``out=`` array (or any other array a function writes) is never converted: it must
  already be a writeable, C-contiguous float32 array of the right shape, or a TypeError /
  ValueError names it and says what was expected. A result never lands in a temporary.
- The GIL is released while a kernel runs.

Arrays from other frameworks: an input may be any object with ``__dlpack__`` (a PyTorch
CPU tensor, a JAX CPU array, ...) or the buffer protocol (memoryview, array.array). It is
viewed with ``numpy.from_dlpack`` (``numpy.asarray`` for buffers), so a C-contiguous
float32 one is used in place, with no copy; any other dtype or layout (float64, a
transposed tensor) is then converted once, as above. An object on another device (CUDA,
ROCm, ...: ``__dlpack_device__`` is not the CPU) or a torch tensor that requires grad
raises a TypeError naming the argument (move it with ``.cpu()``, ``.detach()``); nothing
is copied between devices behind your back. Arrays that are written (``out=``, ``dx=``,
optimizer state) must be NumPy arrays; to write into a CPU tensor ``t`` in place pass
``numpy.from_dlpack(t)``, a writable view of its memory. Results are NumPy arrays, which
export ``__dlpack__`` themselves: ``torch.from_dlpack(result)`` shares their memory.
``fastnn.Model.predict``, ``predict_on_batch``, ``evaluate`` and ``fit`` take the same
inputs (and targets).

On symbolic tensors (inside a model's or layer's ``call()``, or on ``fastnn.Input``
tensors) the differentiable functions — add, subtract, multiply, divide, maximum,
minimum, negative, square, sqrt, exp, log, abs, power, clip, mean, sum, reshape,
transpose, expand_dims, concatenate, matmul, dense, conv2d, relu, sigmoid, tanh, gelu,
softmax, layer_normalization, dot_product_attention — record graph nodes instead, and
their gradients come from fastnn's backward kernels (see ``fastnn.autodiff``); so does
logical_not (1 where x == 0, for masks; no gradient).
"""
from ..autodiff import (abs, add, arange, cast, clip, concatenate, divide, dot_product_attention,
                        exp, expand_dims, identity, layer_normalization, log, logical_not,
                        maximum, mean, minimum, multiply, negative, power, reshape, shape, sqrt,
                        square, subtract, sum, transpose)
from .attention import attention, attention_backward
from .activation import (ACTIVATIONS, activation, activation_backward, gelu, relu, sigmoid,
                         softmax, softmax_backward, tanh)
from .conv2d import conv2d, conv2d_backward, conv2d_geometry
from .dense import dense, dense_backward
from .dropout import dropout, dropout_backward
from .embedding import embedding, embedding_backward
from .gemm import matmul
from .layernorm import LayerNormSaved, layer_norm, layer_norm_backward
from .loss import (binary_cross_entropy_with_logits, categorical_cross_entropy,
                   mean_squared_error, softmax_cross_entropy)
from .norm import BatchNormSaved, batch_norm, batch_norm_backward
from .optim import adagrad_step, adam_step, sgd_step
from .sparse_dense import CSC, dense_to_csc, sparse_dense
from .recurrent import (gru, gru_backward, lstm, lstm_backward, simple_rnn,
                        simple_rnn_backward)
from .quant import (QWeight, dequantize_u8, pack_qweight, qconv2d, qdense, qgemm_s32,
                    quantize_u8, quantize_u8_dynamic, quantize_weight)
from .pool import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d,
                   global_avg_pool2d_backward, max_pool2d, max_pool2d_backward)

__all__ = [name for name in dir() if not name.startswith("_") and callable(globals()[name])]
__all__.append("ACTIVATIONS")
