// SimpleRNN forward and backward through time (see simple_rnn.h for the contract and
// recurrent.h for the structure shared with the LSTM and GRU kernels). The pre-activations
// are built in y itself: y = x·W + b for all steps in one GEMM, then per step
// y[:, t] += hp·R and y[:, t] = act(y[:, t]). Backward needs only y: tanh' = 1 − h²,
// relu' = [h > 0].
#include "fastnn/simple_rnn.h"

#include "recurrent.h"

namespace fastnn {

namespace {

using rnn::Steps;

template <class M>
FASTNN_INLINE void act_row(float* __restrict h, int64_t U, bool relu) {
  if (relu) {
#pragma omp simd
    for (int64_t u = 0; u < U; ++u) h[u] = h[u] > 0.0f ? h[u] : 0.0f;
  } else {
#pragma omp simd
    for (int64_t u = 0; u < U; ++u) h[u] = M::tanh(h[u]);
  }
}

// da (U) = dh ⊙ act'(h)
FASTNN_INLINE void act_grad_row(float* __restrict da, const float* __restrict dh,
                                const float* __restrict h, int64_t U, bool relu) {
  if (relu) {
#pragma omp simd
    for (int64_t u = 0; u < U; ++u) da[u] = h[u] > 0.0f ? dh[u] : 0.0f;
  } else {
#pragma omp simd
    for (int64_t u = 0; u < U; ++u) da[u] = dh[u] * (1.0f - h[u] * h[u]);
  }
}

FASTNN_CLONES void act_row_fast(float* h, int64_t U, bool relu) {
  act_row<rnn::FastMath>(h, U, relu);
}
void act_row_plain(float* h, int64_t U, bool relu) { act_row<rnn::PlainMath>(h, U, relu); }
FASTNN_CLONES void act_grad_row_fast(float* da, const float* dh, const float* h, int64_t U,
                                     bool relu) {
  act_grad_row(da, dh, h, U, relu);
}

template <bool Plain>
void forward_impl(float* y, const float* x, const float* h0, const uint8_t* mask,
                  const float* rmask, const float* W, const float* R, const float* b,
                  int64_t N, int64_t T, int64_t C, int64_t U, bool reverse, Act act,
                  float* work) {
  const rnn::GemmFn mm = rnn::gemm_fn(Plain);
  const bool relu = act == Act::relu;
  mm(y, x, W, N * T, U, C, U, C, U, false, false, false);
  if (b) rnn::add_bias(y, b, N * T, U, U);
  float* const hmask = work;  // N·U
  const Steps st{T, reverse};
  rnn::batch_chunks(N, double(T) * U * (U + C), Plain, [&](int64_t n0, int64_t n1) {
    const int64_t m = n1 - n0;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = st.at(s), tp = st.prev(t);
      const float* hp = s ? y + (n0 * T + tp) * U : (h0 ? h0 + n0 * U : nullptr);
      const int64_t ld = s ? T * U : U;
      const rnn::Prev he = rnn::masked_prev(hp, ld, rmask ? rmask + n0 * U : nullptr,
                                            hmask + n0 * U, m, U);
      if (he.p) mm(y + (n0 * T + t) * U, he.p, R, m, U, U, T * U, he.ld, U, false, false, true);
      for (int64_t r = 0; r < m; ++r) {
        float* h = y + ((n0 + r) * T + t) * U;
        if (mask && !mask[(n0 + r) * T + t]) {  // padding: carry the state
          if (hp)
            std::memcpy(h, hp + r * ld, size_t(U) * sizeof(float));
          else
            std::memset(h, 0, size_t(U) * sizeof(float));
          continue;
        }
        (Plain ? act_row_plain : act_row_fast)(h, U, relu);
      }
    }
  });
}

template <bool Plain>
void backward_impl(float* dx, float* dW, float* dR, float* db, float* dh0, const float* dy,
                   const float* dhT, const float* y, const float* x, const float* h0,
                   const uint8_t* mask, const float* rmask, const float* W, const float* R,
                   int64_t N, int64_t T, int64_t C, int64_t U, bool reverse, Act act,
                   float* work) {
  const rnn::GemmFn mm = rnn::gemm_fn(Plain);
  const bool relu = act == Act::relu;
  const int64_t rows = N * T;
  float* const da = work;            // N·T·U pre-activation gradients
  float* const hpe = da + rows * U;  // N·T·U h_prev ⊙ rmask
  float* const dh = hpe + rows * U;  // N·U
  float* const tmp = dh + N * U;     // N·U
  float* const Rt = tmp + N * U;     // U·U  Rᵀ
  rnn::transpose(Rt, R, U, U, U);
  const Steps st{T, reverse};
  rnn::batch_chunks(N, double(T) * U * U, Plain, [&](int64_t n0, int64_t n1) {
    const int64_t m = n1 - n0;
    rnn::copy_rows(dh + n0 * U, U, dhT ? dhT + n0 * U : nullptr, U, m, U);
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = st.at(s), tp = st.prev(t);
      const float* hp = s ? y + (n0 * T + tp) * U : (h0 ? h0 + n0 * U : nullptr);
      const int64_t ld = s ? T * U : U;
      for (int64_t r = 0; r < m; ++r) {
        const int64_t n = n0 + r, o = n * T + t;
        float* dhr = dh + n * U;
        rnn::add_output_grad(dhr, dy ? dy + o * U : nullptr, U);
        float* hpr = hpe + o * U;
        if (mask && !mask[o]) {
          std::memset(da + o * U, 0, size_t(U) * sizeof(float));
          std::memset(hpr, 0, size_t(U) * sizeof(float));
          continue;
        }
        rnn::save_prev(hpr, hp ? hp + r * ld : nullptr, rmask ? rmask + n * U : nullptr, U);
        (Plain ? act_grad_row : act_grad_row_fast)(da + o * U, dhr, y + o * U, U, relu);
      }
      if (s == 0 && !dh0) continue;
      mm(tmp + n0 * U, da + (n0 * T + t) * U, Rt, m, U, U, U, T * U, U, false, false, false);
      rnn::set_prev_grad(dh, tmp, rmask, mask, n0, m, T, t, U);
    }
    if (dh0)
      for (int64_t i = n0 * U; i < n1 * U; ++i) dh0[i] += dh[i];
  });
  if (dx) mm(dx, da, W, rows, C, U, C, U, U, false, true, true);
  if (dW) mm(dW, x, da, C, U, rows, U, C, U, true, false, true);
  if (dR) mm(dR, hpe, da, U, U, rows, U, U, U, true, false, true);
  if (db) rnn::colsum_add(db, da, rows, U, U, Plain);
}

}  // namespace

int64_t simple_rnn_forward_work(int64_t N, int64_t U) { return N * U; }
int64_t simple_rnn_backward_work(int64_t N, int64_t T, int64_t U) {
  return 2 * N * T * U + 2 * N * U + U * U;
}

void simple_rnn_forward(float* y, const float* x, const float* h0, const uint8_t* mask,
                        const float* rmask, const float* W, const float* R, const float* b,
                        int64_t N, int64_t T, int64_t C, int64_t U, bool reverse, Act act,
                        float* work) {
  forward_impl<false>(y, x, h0, mask, rmask, W, R, b, N, T, C, U, reverse, act, work);
}
void simple_rnn_forward_naive(float* y, const float* x, const float* h0, const uint8_t* mask,
                              const float* rmask, const float* W, const float* R,
                              const float* b, int64_t N, int64_t T, int64_t C, int64_t U,
                              bool reverse, Act act, float* work) {
  forward_impl<true>(y, x, h0, mask, rmask, W, R, b, N, T, C, U, reverse, act, work);
}
void simple_rnn_backward(float* dx, float* dW, float* dR, float* db, float* dh0,
                         const float* dy, const float* dhT, const float* y, const float* x,
                         const float* h0, const uint8_t* mask, const float* rmask,
                         const float* W, const float* R, int64_t N, int64_t T, int64_t C,
                         int64_t U, bool reverse, Act act, float* work) {
  backward_impl<false>(dx, dW, dR, db, dh0, dy, dhT, y, x, h0, mask, rmask, W, R, N, T, C, U,
                       reverse, act, work);
}
void simple_rnn_backward_naive(float* dx, float* dW, float* dR, float* db, float* dh0,
                               const float* dy, const float* dhT, const float* y,
                               const float* x, const float* h0, const uint8_t* mask,
                               const float* rmask, const float* W, const float* R, int64_t N,
                               int64_t T, int64_t C, int64_t U, bool reverse, Act act,
                               float* work) {
  backward_impl<true>(dx, dW, dR, db, dh0, dy, dhT, y, x, h0, mask, rmask, W, R, N, T, C, U,
                      reverse, act, work);
}

}  // namespace fastnn
