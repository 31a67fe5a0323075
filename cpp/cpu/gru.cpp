// GRU forward and backward through time, both Keras forms (see gru.h for the contract and
// recurrent.h for the structure shared with the LSTM and SimpleRNN kernels).
//
// reset_after: one recurrent product per step (hp·R, all three gates), then one fused
// pass. Original form: hp·R_zr, a pass for z and r and r ⊙ hp, the product (r ⊙ hp)·R_h,
// then a pass for hh and h. Backward mirrors the passes in reverse; the weight gradients
// are GEMMs over all N·T rows after the time loop.
#include "fastnn/gru.h"

#include "recurrent.h"

namespace fastnn {

namespace {

using rnn::Steps;

// reset_after, one sample, one step. a (3U): xa in, z, r, hh out; ra (3U) = hp·R;
// br (3U) the recurrent bias (zeros when none); hu the unmasked h_prev.
template <class M>
FASTNN_INLINE void cell_after(float* __restrict a, float* __restrict hn, float* __restrict h,
                              const float* __restrict ra, const float* __restrict br,
                              const float* __restrict hu, int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = M::sigmoid(a[u] + ra[u] + br[u]);
    const float r = M::sigmoid(a[U + u] + ra[U + u] + br[U + u]);
    const float inner = ra[2 * U + u] + br[2 * U + u];
    const float hh = M::tanh(a[2 * U + u] + r * inner);
    a[u] = z, a[U + u] = r, a[2 * U + u] = hh;
    hn[u] = inner;
    h[u] = z * hu[u] + (1.0f - z) * hh;
  }
}

// Original form, first pass: z, r from a (xa in) and rz = hp·R_zr; hn = r ⊙ hp.
template <class M>
FASTNN_INLINE void cell_before_zr(float* __restrict a, float* __restrict hn,
                                  const float* __restrict rz, const float* __restrict hp,
                                  int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = M::sigmoid(a[u] + rz[u]);
    const float r = M::sigmoid(a[U + u] + rz[U + u]);
    a[u] = z, a[U + u] = r;
    hn[u] = r * hp[u];
  }
}

// Original form, second pass: hh = tanh(xa_h + rh), h = z·hu + (1 − z)·hh.
template <class M>
FASTNN_INLINE void cell_before_h(float* __restrict a, float* __restrict h,
                                 const float* __restrict rh, const float* __restrict hu,
                                 int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = a[u];
    const float hh = M::tanh(a[2 * U + u] + rh[u]);
    a[2 * U + u] = hh;
    h[u] = z * hu[u] + (1.0f - z) * hh;
  }
}

// reset_after backward, one sample, one step. dh (U): gradient of h_t in, of h_prev's
// direct term (dh ⊙ z) out. dx (3U) the input pre-activation gradients, di (3U) those of
// ra (the recurrent product plus b[1]).
FASTNN_INLINE void back_after(float* __restrict dx, float* __restrict di, float* __restrict dh,
                              const float* __restrict g, const float* __restrict hn,
                              const float* __restrict hu, int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = g[u], r = g[U + u], hh = g[2 * U + u], d = dh[u];
    const float dzg = d * (hu[u] - hh) * z * (1.0f - z);
    const float dah = d * (1.0f - z) * (1.0f - hh * hh);
    const float dar = dah * hn[u] * r * (1.0f - r);
    dx[u] = dzg, dx[U + u] = dar, dx[2 * U + u] = dah;
    di[u] = dzg, di[U + u] = dar, di[2 * U + u] = dah * r;
    dh[u] = d * z;
  }
}

// Original form backward, first pass: dz and dah into dx; dh ← dh ⊙ z.
FASTNN_INLINE void back_before_zh(float* __restrict dx, float* __restrict dh,
                                  const float* __restrict g, const float* __restrict hu,
                                  int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float z = g[u], hh = g[2 * U + u], d = dh[u];
    dx[u] = d * (hu[u] - hh) * z * (1.0f - z);
    dx[2 * U + u] = d * (1.0f - z) * (1.0f - hh * hh);
    dh[u] = d * z;
  }
}

// Original form backward, second pass: drh = dah·R_hᵀ (gradient of r ⊙ hp) gives dar.
FASTNN_INLINE void back_before_r(float* __restrict dx, const float* __restrict drh,
                                 const float* __restrict g, const float* __restrict hp,
                                 int64_t U) {
#pragma omp simd
  for (int64_t u = 0; u < U; ++u) {
    const float r = g[U + u];
    dx[U + u] = drh[u] * hp[u] * r * (1.0f - r);
  }
}

FASTNN_CLONES void cell_after_fast(float* a, float* hn, float* h, const float* ra,
                                   const float* br, const float* hu, int64_t U) {
  cell_after<rnn::FastMath>(a, hn, h, ra, br, hu, U);
}
FASTNN_CLONES void cell_before_zr_fast(float* a, float* hn, const float* rz, const float* hp,
                                       int64_t U) {
  cell_before_zr<rnn::FastMath>(a, hn, rz, hp, U);
}
FASTNN_CLONES void cell_before_h_fast(float* a, float* h, const float* rh, const float* hu,
                                      int64_t U) {
  cell_before_h<rnn::FastMath>(a, h, rh, hu, U);
}
void cell_after_plain(float* a, float* hn, float* h, const float* ra, const float* br,
                      const float* hu, int64_t U) {
  cell_after<rnn::PlainMath>(a, hn, h, ra, br, hu, U);
}
void cell_before_zr_plain(float* a, float* hn, const float* rz, const float* hp, int64_t U) {
  cell_before_zr<rnn::PlainMath>(a, hn, rz, hp, U);
}
void cell_before_h_plain(float* a, float* h, const float* rh, const float* hu, int64_t U) {
  cell_before_h<rnn::PlainMath>(a, h, rh, hu, U);
}
FASTNN_CLONES void back_after_fast(float* dx, float* di, float* dh, const float* g,
                                   const float* hn, const float* hu, int64_t U) {
  back_after(dx, di, dh, g, hn, hu, U);
}
FASTNN_CLONES void back_before_zh_fast(float* dx, float* dh, const float* g, const float* hu,
                                       int64_t U) {
  back_before_zh(dx, dh, g, hu, U);
}

template <bool Plain>
void forward_impl(float* y, float* gates, float* hn, const float* x, const float* h0,
                  const uint8_t* mask, const float* rmask, const float* W, const float* R,
                  const float* b, int64_t N, int64_t T, int64_t C, int64_t U, bool reverse,
                  bool reset_after, float* work) {
  const int64_t G = 3 * U;
  const rnn::GemmFn mm = rnn::gemm_fn(Plain);
  mm(gates, x, W, N * T, G, C, G, C, G, false, false, false);
  if (b) rnn::add_bias(gates, b, N * T, G, G);
  float* const zeros = work;          // 3U
  float* const hmask = zeros + G;     // N·U   h_prev ⊙ rmask of one step
  float* const rec = hmask + N * U;   // N·3U  the recurrent products of one step
  std::memset(zeros, 0, size_t(G) * sizeof(float));
  const float* br = reset_after && b ? b + G : zeros;
  const Steps st{T, reverse};
  rnn::batch_chunks(N, double(T) * G * (U + C), Plain, [&](int64_t n0, int64_t n1) {
    const int64_t m = n1 - n0;
    float* const rc = rec + n0 * G;
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = st.at(s), tp = st.prev(t);
      const float* hu = s ? y + (n0 * T + tp) * U : (h0 ? h0 + n0 * U : nullptr);
      const int64_t ld = s ? T * U : U;
      const rnn::Prev hp = rnn::masked_prev(hu, ld, rmask ? rmask + n0 * U : nullptr,
                                            hmask + n0 * U, m, U);
      const int64_t width = reset_after ? G : 2 * U;  // columns of the first product
      if (hp.p)
        mm(rc, hp.p, R, m, width, U, G, hp.ld, G, false, false, false);
      else
        for (int64_t r = 0; r < m; ++r) std::memset(rc + r * G, 0, size_t(width) * sizeof(float));
      auto masked = [&](int64_t r) { return mask && !mask[(n0 + r) * T + t]; };
      auto carry = [&](int64_t r) {  // padding: carry the state, zero the saved values
        const int64_t o = (n0 + r) * T + t;
        std::memcpy(y + o * U, hu ? hu + r * ld : zeros, size_t(U) * sizeof(float));
        std::memset(gates + o * G, 0, size_t(G) * sizeof(float));
        std::memset(hn + o * U, 0, size_t(U) * sizeof(float));
      };
      if (reset_after) {
        for (int64_t r = 0; r < m; ++r) {
          const int64_t o = (n0 + r) * T + t;
          if (masked(r)) {
            carry(r);
            continue;
          }
          (Plain ? cell_after_plain : cell_after_fast)(gates + o * G, hn + o * U, y + o * U,
                                                       rc + r * G, br, hu ? hu + r * ld : zeros, U);
        }
        continue;
      }
      for (int64_t r = 0; r < m; ++r) {
        const int64_t o = (n0 + r) * T + t;
        (Plain ? cell_before_zr_plain : cell_before_zr_fast)(
            gates + o * G, hn + o * U, rc + r * G, hp.p ? hp.p + r * hp.ld : zeros, U);
      }
      if (hp.p)  // (r ⊙ hp)·R_h into the third block of rc
        mm(rc + 2 * U, hn + (n0 * T + t) * U, R + 2 * U, m, U, U, G, T * U, G, false, false,
           false);
      else
        for (int64_t r = 0; r < m; ++r) std::memset(rc + r * G + 2 * U, 0, size_t(U) * sizeof(float));
      for (int64_t r = 0; r < m; ++r) {
        const int64_t o = (n0 + r) * T + t;
        if (masked(r)) {
          carry(r);
          continue;
        }
        (Plain ? cell_before_h_plain : cell_before_h_fast)(gates + o * G, y + o * U,
                                                           rc + r * G + 2 * U,
                                                           hu ? hu + r * ld : zeros, U);
      }
    }
  });
}

template <bool Plain>
void backward_impl(float* dx, float* dW, float* dR, float* db, float* dh0, const float* dy,
                   const float* dhT, const float* y, const float* gates, const float* hn,
                   const float* x, const float* h0, const uint8_t* mask, const float* rmask,
                   const float* W, const float* R, int64_t N, int64_t T, int64_t C, int64_t U,
                   bool reverse, bool reset_after, float* work) {
  const int64_t G = 3 * U, rows = N * T;
  const rnn::GemmFn mm = rnn::gemm_fn(Plain);
  float* const dxa = work;                                  // N·T·3U input pre-activation grads
  float* const dra = dxa + rows * G;                        // N·T·3U recurrent ones (reset_after)
  float* const hpe = dra + (reset_after ? rows * G : 0);    // N·T·U  h_prev ⊙ rmask
  float* const dh = hpe + rows * U;                         // N·U
  float* const tmp = dh + N * U;                            // N·U
  float* const drh = tmp + N * U;                           // N·U
  float* const zeros = drh + N * U;                         // U
  float* const Rt = zeros + U;                              // 3U·U  Rᵀ
  std::memset(zeros, 0, size_t(U) * sizeof(float));
  rnn::transpose(Rt, R, U, G, G);
  const Steps st{T, reverse};
  rnn::batch_chunks(N, double(T) * G * U, Plain, [&](int64_t n0, int64_t n1) {
    const int64_t m = n1 - n0;
    rnn::copy_rows(dh + n0 * U, U, dhT ? dhT + n0 * U : nullptr, U, m, U);
    auto masked = [&](int64_t n, int64_t t) { return mask && !mask[n * T + t]; };
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = st.at(s), tp = st.prev(t);
      const float* hu = s ? y + (n0 * T + tp) * U : (h0 ? h0 + n0 * U : nullptr);
      const int64_t ld = s ? T * U : U;
      for (int64_t r = 0; r < m; ++r) {
        const int64_t n = n0 + r, o = n * T + t;
        float* dhr = dh + n * U;
        rnn::add_output_grad(dhr, dy ? dy + o * U : nullptr, U);
        float* hpr = hpe + o * U;
        if (masked(n, t)) {
          std::memset(dxa + o * G, 0, size_t(G) * sizeof(float));
          if (reset_after) std::memset(dra + o * G, 0, size_t(G) * sizeof(float));
          std::memset(hpr, 0, size_t(U) * sizeof(float));
          continue;
        }
        rnn::save_prev(hpr, hu ? hu + r * ld : nullptr, rmask ? rmask + n * U : nullptr, U);
        const float* hur = hu ? hu + r * ld : zeros;
        if (reset_after)
          (Plain ? back_after : back_after_fast)(dxa + o * G, dra + o * G, dhr, gates + o * G,
                                                 hn + o * U, hur, U);
        else
          (Plain ? back_before_zh : back_before_zh_fast)(dxa + o * G, dhr, gates + o * G, hur, U);
      }
      const float* dprev = dra;  // the pre-activation gradients that reach hp through R
      if (!reset_after) {
        // drh = dah·R_hᵀ, then dar; the gradient reaching hp is [dz, dar]·R_zrᵀ + drh ⊙ r.
        const float* dah = dxa + (n0 * T + t) * G + 2 * U;
        mm(drh + n0 * U, dah, Rt + 2 * U * U, m, U, U, U, T * G, U, false, false, false);
        for (int64_t r = 0; r < m; ++r) {
          const int64_t n = n0 + r, o = n * T + t;
          if (!masked(n, t)) back_before_r(dxa + o * G, drh + n * U, gates + o * G, hpe + o * U, U);
        }
        dprev = dxa;
      }
      if (s == 0 && !dh0) continue;
      mm(tmp + n0 * U, dprev + (n0 * T + t) * G, Rt, m, U, reset_after ? G : 2 * U, U, T * G, U,
         false, false, false);
      for (int64_t r = 0; r < m; ++r) {
        const int64_t n = n0 + r, o = n * T + t;
        if (masked(n, t)) continue;
        float* dhr = dh + n * U;
        const float* tr = tmp + n * U;
        const float* mr = rmask ? rmask + n * U : nullptr;
        const float* g = gates + o * G;
        for (int64_t u = 0; u < U; ++u) {
          const float back = reset_after ? tr[u] : tr[u] + drh[n * U + u] * g[U + u];
          dhr[u] += mr ? back * mr[u] : back;
        }
      }
    }
    if (dh0)
      for (int64_t i = n0 * U; i < n1 * U; ++i) dh0[i] += dh[i];
  });
  if (dx) mm(dx, dxa, W, rows, C, G, C, G, G, false, true, true);
  if (dW) mm(dW, x, dxa, C, G, rows, G, C, G, true, false, true);
  if (reset_after) {
    if (dR) mm(dR, hpe, dra, U, G, rows, G, U, G, true, false, true);
    if (db) {
      rnn::colsum_add(db, dxa, rows, G, G, Plain);
      rnn::colsum_add(db + G, dra, rows, G, G, Plain);
    }
  } else {
    if (dR) {
      mm(dR, hpe, dxa, U, 2 * U, rows, G, U, G, true, false, true);
      mm(dR + 2 * U, hn, dxa + 2 * U, U, U, rows, G, U, G, true, false, true);
    }
    if (db) rnn::colsum_add(db, dxa, rows, G, G, Plain);
  }
}

}  // namespace

int64_t gru_forward_work(int64_t N, int64_t U) { return 3 * U + N * U + N * 3 * U; }
int64_t gru_backward_work(int64_t N, int64_t T, int64_t U, bool reset_after) {
  return N * T * 3 * U * (reset_after ? 2 : 1) + N * T * U + 3 * N * U + U + 3 * U * U;
}

void gru_forward(float* y, float* gates, float* hn, const float* x, const float* h0,
                 const uint8_t* mask, const float* rmask, const float* W, const float* R,
                 const float* b, int64_t N, int64_t T, int64_t C, int64_t U, bool reverse,
                 bool reset_after, float* work) {
  forward_impl<false>(y, gates, hn, x, h0, mask, rmask, W, R, b, N, T, C, U, reverse,
                      reset_after, work);
}
void gru_forward_naive(float* y, float* gates, float* hn, const float* x, const float* h0,
                       const uint8_t* mask, const float* rmask, const float* W,
                       const float* R, const float* b, int64_t N, int64_t T, int64_t C,
                       int64_t U, bool reverse, bool reset_after, float* work) {
  forward_impl<true>(y, gates, hn, x, h0, mask, rmask, W, R, b, N, T, C, U, reverse,
                     reset_after, work);
}
void gru_backward(float* dx, float* dW, float* dR, float* db, float* dh0, const float* dy,
                  const float* dhT, const float* y, const float* gates, const float* hn,
                  const float* x, const float* h0, const uint8_t* mask, const float* rmask,
                  const float* W, const float* R, int64_t N, int64_t T, int64_t C, int64_t U,
                  bool reverse, bool reset_after, float* work) {
  backward_impl<false>(dx, dW, dR, db, dh0, dy, dhT, y, gates, hn, x, h0, mask, rmask, W, R, N,
                       T, C, U, reverse, reset_after, work);
}
void gru_backward_naive(float* dx, float* dW, float* dR, float* db, float* dh0,
                        const float* dy, const float* dhT, const float* y, const float* gates,
                        const float* hn, const float* x, const float* h0, const uint8_t* mask,
                        const float* rmask, const float* W, const float* R, int64_t N,
                        int64_t T, int64_t C, int64_t U, bool reverse, bool reset_after,
                        float* work) {
  backward_impl<true>(dx, dW, dR, db, dh0, dy, dhT, y, gates, hn, x, h0, mask, rmask, W, R, N,
                      T, C, U, reverse, reset_after, work);
}

}  // namespace fastnn
