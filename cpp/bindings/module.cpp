// The _core extension module: one bind_* call per operator file.
#include "check.h"

#ifndef FASTNN_VERSION
#define FASTNN_VERSION "0+unknown"
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastnn C++ kernels (float32, row-major, OpenMP)";
  m.attr("__version__") = FASTNN_VERSION;
  using namespace fastnn::bind;
  bind_runtime(m);
  bind_gemm(m);
  bind_dense(m);
  bind_sparse_dense(m);
  bind_activation(m);
  bind_loss(m);
  bind_optim(m);
  bind_dropout(m);
  bind_pool(m);
  bind_norm(m);
  bind_attention(m);
  bind_embedding(m);
  bind_layernorm(m);
  bind_conv2d(m);
  bind_recurrent(m);
  bind_quant(m);
  bind_qrecurrent(m);
}
