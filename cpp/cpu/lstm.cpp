// LSTM forward and backward through time (see lstm.h for the contract and recurrent.h
// for the structure shared with the GRU and SimpleRNN kernels).
//
// Forward: gates = x·W + b for all steps in one GEMM; then per chunk of samples and per
// step, gates[:, t] += h_prev·R (a GEMM over the chunk's rows, strided through y) and one
// fused pass computes the four nonlinearities and both state updates in place.
// Backward: per chunk, steps in reverse processing order: dh += dy[:, t]; one fused pass
// gives the pre-activation gradients dz[:, t] and carries dc; dh = dz[:, t]·Rᵀ. Then
// dx += dz·Wᵀ, dW += xᵀ·dz, dR += h_prevᵀ·dz and db += Σ dz over all N·T rows at once.
#include "fastnn/lstm.h"

#include "recurrent.h"

namespace fastnn {

namespace {

using rnn::Steps;

// One sample, one step: a (4U) holds the pre-activations and receives i, f, g, o;
// c = f·cp + i·g; h = o·tanh(c).
template <class M>
FASTNN_INLINE void cell_forward(float* __restrict a, float* __restrict c, float* __restrict h,
                                const float* __restrict cp, int64_t U) {
  float* __restrict ai = a;
  float* __restrict af = a + U;
  float* __restrict ag = a + 2 * U;
  float* __restrict ao = a + 3 * U;
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float i = M::sigmoid(ai[u]), f = M::sigmoid(af[u]);
    const float g = M::tanh(ag[u]), o = M::sigmoid(ao[u]);
    const float cn = f * cp[u] + i * g;
    ai[u] = i, af[u] = f, ag[u] = g, ao[u] = o;
    c[u] = cn;
    h[u] = o * M::tanh(cn);
  }
}

// One sample, one step backward: dh (U) is the gradient of h_t, dc (U) that of c_t on
// entry and of c_prev on return; dz (4U) receives the pre-activation gradients.
template <class M>
FASTNN_INLINE void cell_backward(float* __restrict dz, float* __restrict dc,
                                 const float* __restrict dh, const float* __restrict gate,
                                 const float* __restrict c, const float* __restrict cp,
                                 int64_t U) {
  const float* __restrict gi = gate;
  const float* __restrict gf = gate + U;
  const float* __restrict gg = gate + 2 * U;
  const float* __restrict go = gate + 3 * U;
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float i = gi[u], f = gf[u], g = gg[u], o = go[u];
    const float tc = M::tanh(c[u]);
    const float dct = dc[u] + dh[u] * o * (1.0f - tc * tc);
    dz[u] = dct * g * i * (1.0f - i);
    dz[U + u] = dct * cp[u] * f * (1.0f - f);
    dz[2 * U + u] = dct * i * (1.0f - g * g);
    dz[3 * U + u] = dh[u] * tc * o * (1.0f - o);
    dc[u] = dct * f;
  }
}

FASTNN_CLONES void cell_forward_fast(float* a, float* c, float* h, const float* cp, int64_t U) {
  cell_forward<rnn::FastMath>(a, c, h, cp, U);
}
FASTNN_CLONES void cell_backward_fast(float* dz, float* dc, const float* dh, const float* gate,
                                      const float* c, const float* cp, int64_t U) {
  cell_backward<rnn::FastMath>(dz, dc, dh, gate, c, cp, U);
}
void cell_forward_plain(float* a, float* c, float* h, const float* cp, int64_t U) {
  cell_forward<rnn::PlainMath>(a, c, h, cp, U);
}
void cell_backward_plain(float* dz, float* dc, const float* dh, const float* gate,
                         const float* c, const float* cp, int64_t U) {
  cell_backward<rnn::PlainMath>(dz, dc, dh, gate, c, cp, U);
}

template <bool Plain>
void forward_impl(float* y, float* c, float* gates, const float* x, const float* h0,
                  const float* c0, const uint8_t* mask, const float* rmask, const float* W,
                  const float* R, const float* b, int64_t N, int64_t T, int64_t C, int64_t U,
                  bool reverse, float* work) {
  const int64_t G = 4 * U;
  const rnn::GemmFn mm = rnn::gemm_fn(Plain);
  const auto cell = Plain ? cell_forward_plain : cell_forward_fast;
  // Input projection of every step at once.
  mm(gates, x, W, N * T, G, C, G, C, G, false, false, false);
  if (b) rnn::add_bias(gates, b, N * T, G, G);

  float* const zeros = work;      // U: the state before the first step when not given
  float* const hmask = work + U;  // N·U: h_prev ⊙ rmask of one step
  std::memset(zeros, 0, size_t(U) * sizeof(float));
  const Steps st{T, reverse};
  rnn::batch_chunks(N, double(T) * G * (U + C), Plain, [&](int64_t n0, int64_t n1) {
    const int64_t m = n1 - n0;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = st.at(s), tp = st.prev(t);
      // This chunk's previous states: rows of y and c (stride T·U), or of h0 and c0.
      const float* hp = s ? y + (n0 * T + tp) * U : (h0 ? h0 + n0 * U : nullptr);
      const float* cp = s ? c + (n0 * T + tp) * U : (c0 ? c0 + n0 * U : nullptr);
      const int64_t ld = s ? T * U : U;
      float* a = gates + (n0 * T + t) * G;
      const rnn::Prev he = rnn::masked_prev(hp, ld, rmask ? rmask + n0 * U : nullptr,
                                            hmask + n0 * U, m, U);
      if (he.p) mm(a, he.p, R, m, G, U, T * G, he.ld, G, false, false, true);
      for (int64_t r = 0; r < m; ++r) {
        const int64_t o = (n0 + r) * T + t;
        const float* hpr = hp ? hp + r * ld : zeros;
        const float* cpr = cp ? cp + r * ld : zeros;
        if (mask && !mask[o]) {  // padding: carry both states
          std::memcpy(y + o * U, hpr, size_t(U) * sizeof(float));
          std::memcpy(c + o * U, cpr, size_t(U) * sizeof(float));
          std::memset(gates + o * G, 0, size_t(G) * sizeof(float));
          continue;
        }
        cell(gates + o * G, c + o * U, y + o * U, cpr, U);
      }
    }
  });
}

template <bool Plain>
void backward_impl(float* dx, float* dW, float* dR, float* db, float* dh0, float* dc0,
                   const float* dy, const float* dhT, const float* dcT, const float* y,
                   const float* c, const float* gates, const float* x, const float* h0,
                   const float* c0, const uint8_t* mask, const float* rmask, const float* W,
                   const float* R, int64_t N, int64_t T, int64_t C, int64_t U, bool reverse,
                   float* work) {
  const int64_t G = 4 * U;
  const rnn::GemmFn mm = rnn::gemm_fn(Plain);
  const auto cell = Plain ? cell_backward_plain : cell_backward_fast;
  float* const dz = work;              // N·T·4U pre-activation gradients
  float* const hpe = dz + N * T * G;   // N·T·U  h_prev ⊙ rmask of every step (for dR)
  float* const dh = hpe + N * T * U;   // N·U    running gradient of h
  float* const dc = dh + N * U;        // N·U    running gradient of c
  float* const tmp = dc + N * U;       // N·U    dz[:, t]·Rᵀ
  float* const zeros = tmp + N * U;    // U
  float* const Rt = zeros + U;         // 4U·U  Rᵀ
  std::memset(zeros, 0, size_t(U) * sizeof(float));
  rnn::transpose(Rt, R, U, G, G);
  const Steps st{T, reverse};
  rnn::batch_chunks(N, double(T) * G * U, Plain, [&](int64_t n0, int64_t n1) {
    const int64_t m = n1 - n0;
    rnn::copy_rows(dh + n0 * U, U, dhT ? dhT + n0 * U : nullptr, U, m, U);
    rnn::copy_rows(dc + n0 * U, U, dcT ? dcT + n0 * U : nullptr, U, m, U);
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = st.at(s), tp = st.prev(t);
      const float* hp = s ? y + (n0 * T + tp) * U : (h0 ? h0 + n0 * U : nullptr);
      const float* cp = s ? c + (n0 * T + tp) * U : (c0 ? c0 + n0 * U : nullptr);
      const int64_t ld = s ? T * U : U;
      for (int64_t r = 0; r < m; ++r) {
        const int64_t n = n0 + r, o = n * T + t;
        float* dhr = dh + n * U;
        rnn::add_output_grad(dhr, dy ? dy + o * U : nullptr, U);
        float* hpr = hpe + o * U;
        if (mask && !mask[o]) {  // padding: dh and dc pass through, no weight gradient
          std::memset(dz + o * G, 0, size_t(G) * sizeof(float));
          std::memset(hpr, 0, size_t(U) * sizeof(float));
          continue;
        }
        rnn::save_prev(hpr, hp ? hp + r * ld : nullptr, rmask ? rmask + n * U : nullptr, U);
        cell(dz + o * G, dc + n * U, dhr, gates + o * G, c + o * U, cp ? cp + r * ld : zeros,
             U);
      }
      if (s == 0 && !dh0) continue;
      mm(tmp + n0 * U, dz + (n0 * T + t) * G, Rt, m, U, G, U, T * G, U, false, false, false);
      rnn::set_prev_grad(dh, tmp, rmask, mask, n0, m, T, t, U);
    }
    for (int64_t i = n0 * U; i < n1 * U; ++i) {
      if (dh0) dh0[i] += dh[i];
      if (dc0) dc0[i] += dc[i];
    }
  });
  const int64_t rows = N * T;
  if (dx) mm(dx, dz, W, rows, C, G, C, G, G, false, true, true);
  if (dW) mm(dW, x, dz, C, G, rows, G, C, G, true, false, true);
  if (dR) mm(dR, hpe, dz, U, G, rows, G, U, G, true, false, true);
  if (db) rnn::colsum_add(db, dz, rows, G, G, Plain);
}

}  // namespace

int64_t lstm_forward_work(int64_t N, int64_t U) { return U + N * U; }
int64_t lstm_backward_work(int64_t N, int64_t T, int64_t U) {
  return N * T * 4 * U + N * T * U + 3 * N * U + U + 4 * U * U;
}

void lstm_forward(float* y, float* c, float* gates, const float* x, const float* h0,
                  const float* c0, const uint8_t* mask, const float* rmask, const float* W,
                  const float* R, const float* b, int64_t N, int64_t T, int64_t C, int64_t U,
                  bool reverse, float* work) {
  forward_impl<false>(y, c, gates, x, h0, c0, mask, rmask, W, R, b, N, T, C, U, reverse, work);
}
void lstm_forward_naive(float* y, float* c, float* gates, const float* x, const float* h0,
                        const float* c0, const uint8_t* mask, const float* rmask,
                        const float* W, const float* R, const float* b, int64_t N, int64_t T,
                        int64_t C, int64_t U, bool reverse, float* work) {
  forward_impl<true>(y, c, gates, x, h0, c0, mask, rmask, W, R, b, N, T, C, U, reverse, work);
}

void lstm_backward(float* dx, float* dW, float* dR, float* db, float* dh0, float* dc0,
                   const float* dy, const float* dhT, const float* dcT, const float* y,
                   const float* c, const float* gates, const float* x, const float* h0,
                   const float* c0, const uint8_t* mask, const float* rmask, const float* W,
                   const float* R, int64_t N, int64_t T, int64_t C, int64_t U, bool reverse,
                   float* work) {
  backward_impl<false>(dx, dW, dR, db, dh0, dc0, dy, dhT, dcT, y, c, gates, x, h0, c0, mask,
                       rmask, W, R, N, T, C, U, reverse, work);
}
void lstm_backward_naive(float* dx, float* dW, float* dR, float* db, float* dh0, float* dc0,
                         const float* dy, const float* dhT, const float* dcT, const float* y,
                         const float* c, const float* gates, const float* x, const float* h0,
                         const float* c0, const uint8_t* mask, const float* rmask,
                         const float* W, const float* R, int64_t N, int64_t T, int64_t C,
                         int64_t U, bool reverse, float* work) {
  backward_impl<true>(dx, dW, dR, db, dh0, dc0, dy, dhT, dcT, y, c, gates, x, h0, c0, mask,
                      rmask, W, R, N, T, C, U, reverse, work);
}

}  // namespace fastnn
