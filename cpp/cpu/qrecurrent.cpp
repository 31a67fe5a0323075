// Int8 LSTM and GRU inference (see qrecurrent.h for the contract).
//
// Structure: the input projection of all N·T steps is one int8 product (qdense_forward);
// then, step by step over the whole batch, h_prev (N,U) is gathered, quantized per tensor
// and multiplied by the packed recurrent kernel (one int8 product over all N rows, which
// the GEMM driver spreads over threads), and one fused float pass per row computes the
// gates and the state update. Steps run over the whole batch (not per thread chunk, as
// the float kernels do) because the dynamic scale of a step is that of all N rows.
// The products are exact in int32 and every other operation is elementwise per row, so
// results are the same for any thread count.
#include "fastnn/qrecurrent.h"

#include "fastnn/qgemm.h"
#include "recurrent.h"

namespace fastnn {

namespace {

using rnn::Steps;
using M = rnn::FastMath;

// LSTM, one row: a = xa + ra; c = f·cp + i·g; h = o·tanh(c).
FASTNN_CLONES void qlstm_cell(float* __restrict c, float* __restrict h,
                              const float* __restrict xa, const float* __restrict ra,
                              const float* __restrict cp, int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float i = M::sigmoid(xa[u] + ra[u]);
    const float f = M::sigmoid(xa[U + u] + ra[U + u]);
    const float g = M::tanh(xa[2 * U + u] + ra[2 * U + u]);
    const float o = M::sigmoid(xa[3 * U + u] + ra[3 * U + u]);
    const float cn = f * cp[u] + i * g;
    c[u] = cn;
    h[u] = o * M::tanh(cn);
  }
}

// GRU reset_after, one row: ra holds hp·R + b[1].
FASTNN_CLONES void qgru_cell_after(float* __restrict h, const float* __restrict xa,
                                   const float* __restrict ra, const float* __restrict hp,
                                   int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = M::sigmoid(xa[u] + ra[u]);
    const float r = M::sigmoid(xa[U + u] + ra[U + u]);
    const float hh = M::tanh(xa[2 * U + u] + r * ra[2 * U + u]);
    h[u] = z * hp[u] + (1.0f - z) * hh;
  }
}

// GRU original form, first pass of one row: hn = σ(xa_r + ra_r) ⊙ hp.
FASTNN_CLONES void qgru_reset(float* __restrict hn, const float* __restrict xa,
                              const float* __restrict ra, const float* __restrict hp, int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) hn[u] = M::sigmoid(xa[U + u] + ra[U + u]) * hp[u];
}

// GRU original form, second pass of one row: rz = hp·R_zr, rh = hn·R_h.
FASTNN_CLONES void qgru_cell_before(float* __restrict h, const float* __restrict xa,
                                    const float* __restrict rz, const float* __restrict rh,
                                    const float* __restrict hp, int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = M::sigmoid(xa[u] + rz[u]);
    const float hh = M::tanh(xa[2 * U + u] + rh[u]);
    h[u] = z * hp[u] + (1.0f - z) * hh;
  }
}

// q (n) = x quantized with (scale, zp), or dynamically (scale == 0); the parameters used
// are returned in *s, *z. False for a non-finite x under dynamic quantization.
bool quantize(uint8_t* q, float* s, int32_t* z, const float* x, int64_t n, float scale,
              int32_t zp) {
  if (scale == 0.0f) return quantize_u8_dynamic(q, s, z, x, n);
  *s = scale, *z = zp;
  quantize_u8(q, x, n, scale, zp);
  return true;
}

// The input projection xa (N·T, G) = Q(x)·W + b.
bool input_projection(float* xa, const float* x, const uint8_t* Wp, const float* w_scale,
                      const float* b, float x_scale, int32_t x_zp, int64_t rows, int64_t G,
                      int64_t C) {
  if (x_scale == 0.0f && !quantize_range_u8(&x_scale, &x_zp, x, rows * C)) return false;
  qdense_forward_f32(xa, x, Wp, w_scale, b, x_scale, x_zp, rows, G, C, Act::linear);
  return true;
}

// hp (N,U) = the h_prev rows of step s: y[:, tp] (row stride T·U), h0, or zeros; returns
// whether there is one (false: zeros, no product needed).
bool gather_prev(float* hp, const float* y, const float* h0, int64_t s, int64_t tp, int64_t N,
                 int64_t T, int64_t U) {
  if (s == 0 && !h0) return false;
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(hp + n * U, s ? y + (n * T + tp) * U : h0 + n * U, size_t(U) * sizeof(float));
  return true;
}

// rec (N, width; row stride ld) = Q(h)·packed (+ bias) through the epilogue, or bias
// (zeros when nullptr) when there is no h_prev.
bool recurrent_product(float* rec, uint8_t* hq, const float* h, bool has_prev,
                       const uint8_t* packed, const float* scale, const float* bias,
                       float h_scale, int32_t h_zp, int64_t N, int64_t width, int64_t U) {
  if (!has_prev) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < width; ++j) rec[n * width + j] = bias ? bias[j] : 0.0f;
    return true;
  }
  float s;
  int32_t z;
  if (!quantize(hq, &s, &z, h, N * U, h_scale, h_zp)) return false;
  qdense_forward(rec, hq, packed, scale, bias, s, z, N, width, U, Act::linear);
  return true;
}

// ra_out[:, t, col0:col0+width] = rec (N, width), when ra_out is given.
void save_rows(float* out, const float* rec, int64_t N, int64_t T, int64_t t, int64_t ld,
               int64_t col0, int64_t width) {
  if (!out) return;
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + (n * T + t) * ld + col0, rec + n * width, size_t(width) * sizeof(float));
}

// Rows of one step's float pass per thread: enough work to be worth a thread.
int64_t row_grain(int64_t G) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(G, 1)); }

struct Work {
  float *zeros, *hp, *rec, *rec2, *hn;
  uint8_t* hq;
};

Work split_work(float* work, int64_t N, int64_t U, int64_t G) {
  Work w;
  w.zeros = work;             // U
  w.hp = w.zeros + U;         // N·U  h_prev of the step
  w.rec = w.hp + N * U;       // N·G  recurrent product (original GRU: its 2U columns)
  w.rec2 = w.rec + N * G;     // N·U  original GRU: hn·R_h
  w.hn = w.rec2 + N * U;      // N·U  original GRU: r ⊙ h_prev
  w.hq = reinterpret_cast<uint8_t*>(w.hn + N * U);  // N·U bytes
  std::memset(w.zeros, 0, size_t(U) * sizeof(float));
  return w;
}

int64_t work_floats(int64_t N, int64_t U, int64_t G) {
  return U + N * U + N * G + 2 * N * U + (N * U + 3) / 4 + 16;
}

}  // namespace

int64_t qlstm_forward_work(int64_t N, int64_t U) { return work_floats(N, U, 4 * U); }
int64_t qgru_forward_work(int64_t N, int64_t U) { return work_floats(N, U, 3 * U); }

bool qlstm_forward(float* y, float* c, float* xa, float* ra_out, const float* x,
                   const float* h0, const float* c0, const uint8_t* mask, const uint8_t* Wp,
                   const float* w_scale, const uint8_t* Rp, const float* r_scale,
                   const float* b, float x_scale, int32_t x_zp, float h_scale, int32_t h_zp,
                   int64_t N, int64_t T, int64_t C, int64_t U, bool reverse, float* work) {
  const int64_t G = 4 * U;
  if (N <= 0 || T <= 0) return true;
  if (!input_projection(xa, x, Wp, w_scale, b, x_scale, x_zp, N * T, G, C)) return false;
  const Work w = split_work(work, N, U, G);
  const Steps st{T, reverse};
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = st.at(s), tp = st.prev(t);
    const bool has_prev = gather_prev(w.hp, y, h0, s, tp, N, T, U);
    if (!recurrent_product(w.rec, w.hq, w.hp, has_prev, Rp, r_scale, nullptr, h_scale, h_zp, N,
                           G, U))
      return false;
    save_rows(ra_out, w.rec, N, T, t, G, 0, G);
    parallel_for(N, row_grain(G), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t o = n * T + t;
        const float* hpr = has_prev ? w.hp + n * U : w.zeros;
        const float* cpr = s ? c + (n * T + tp) * U : (c0 ? c0 + n * U : w.zeros);
        if (mask && !mask[o]) {  // padding: carry both states
          std::memcpy(y + o * U, hpr, size_t(U) * sizeof(float));
          std::memcpy(c + o * U, cpr, size_t(U) * sizeof(float));
          continue;
        }
        qlstm_cell(c + o * U, y + o * U, xa + o * G, w.rec + n * G, cpr, U);
      }
    });
  }
  return true;
}

bool qgru_forward(float* y, float* xa, float* ra_out, float* hn_out, const float* x,
                  const float* h0, const uint8_t* mask, const uint8_t* Wp,
                  const float* w_scale, const uint8_t* Rp, const float* r_scale,
                  const uint8_t* Rhp, const float* rh_scale, const float* b, float x_scale,
                  int32_t x_zp, float h_scale, int32_t h_zp, int64_t N, int64_t T, int64_t C,
                  int64_t U, bool reverse, bool reset_after, float* work) {
  const int64_t G = 3 * U;
  if (N <= 0 || T <= 0) return true;
  if (!input_projection(xa, x, Wp, w_scale, b, x_scale, x_zp, N * T, G, C)) return false;
  const Work w = split_work(work, N, U, G);
  const float* br = reset_after && b ? b + G : nullptr;
  const int64_t width = reset_after ? G : 2 * U;  // columns of the first product
  const Steps st{T, reverse};
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = st.at(s), tp = st.prev(t);
    const bool has_prev = gather_prev(w.hp, y, h0, s, tp, N, T, U);
    const float* hprev = has_prev ? w.hp : nullptr;
    auto prev_row = [&](int64_t n) { return hprev ? hprev + n * U : w.zeros; };
    if (!recurrent_product(w.rec, w.hq, w.hp, has_prev, Rp, r_scale, br, h_scale, h_zp, N,
                           width, U))
      return false;
    save_rows(ra_out, w.rec, N, T, t, G, 0, width);
    auto carry = [&](int64_t n) {
      const int64_t o = n * T + t;
      if (!(mask && !mask[o])) return false;
      std::memcpy(y + o * U, prev_row(n), size_t(U) * sizeof(float));
      return true;
    };
    if (reset_after) {
      parallel_for(N, row_grain(G), [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t o = n * T + t;
          if (!carry(n)) qgru_cell_after(y + o * U, xa + o * G, w.rec + n * G, prev_row(n), U);
        }
      });
      continue;
    }
    parallel_for(N, row_grain(G), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        qgru_reset(w.hn + n * U, xa + (n * T + t) * G, w.rec + n * width, prev_row(n), U);
    });
    save_rows(hn_out, w.hn, N, T, t, U, 0, U);
    // hn = r ⊙ h_prev is zero where h_prev is: no product without an h_prev.
    if (!recurrent_product(w.rec2, w.hq, w.hn, has_prev, Rhp, rh_scale, nullptr, h_scale, h_zp,
                           N, U, U))
      return false;
    save_rows(ra_out, w.rec2, N, T, t, G, 2 * U, U);
    parallel_for(N, row_grain(G), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t o = n * T + t;
        if (carry(n)) continue;
        qgru_cell_before(y + o * U, xa + o * G, w.rec + n * width, w.rec2 + n * U,
                         prev_row(n), U);
      }
    });
  }
  return true;
}

}  // namespace fastnn
