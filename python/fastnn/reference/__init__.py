"""Plain NumPy twins of every fastnn kernel: same names, same arguments, any float dtype.

They are the specification the C++ kernels are tested against, and are themselves
checked by central finite differences in float64.
"""
from .attention import attention, attention_backward
from .activation import (activation, activation_backward, gelu, relu, sigmoid, softmax,
                         softmax_backward, tanh)
from .conv2d import conv2d, conv2d_backward
from .dense import dense, dense_backward
from .dropout import dropout, dropout_backward
from .embedding import embedding, embedding_backward
from .gemm import matmul
from .layernorm import LayerNormSaved, layer_norm, layer_norm_backward
from .loss import (binary_cross_entropy_with_logits, categorical_cross_entropy,
                   mean_squared_error, softmax_cross_entropy)
from .norm import BatchNormSaved, batch_norm, batch_norm_backward
from .optim import adagrad_step, adam_step, sgd_step
from .pool import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d,
                   global_avg_pool2d_backward, max_pool2d, max_pool2d_backward)
from .quant import (dequantize_u8, qconv2d, qdense, qgemm_s32, quantize_u8,
                    quantize_u8_dynamic, quantize_weight)
from .qrecurrent import qgru, qlstm
from .sparse_dense import sparse_dense
from .rnn import (gru, gru_backward, gru_from_torch, lstm, lstm_backward, lstm_from_torch,
                  simple_rnn, simple_rnn_backward, simple_rnn_from_torch)

__all__ = [name for name in dir() if not name.startswith("_") and callable(globals()[name])]
