// Attention core: scores, masks, online softmax and weighted sum fused in one tiled pass
// (forward), and the FlashAttention-2 backward that recomputes the probabilities block by
// block from q, k and the saved log-sum-exp. No T×T buffer anywhere.
#include "fastnn/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "fastnn/common.h"

namespace fastnn {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Does query i see key j? mrow: the key-padding row of this sequence, or nullptr.
inline bool visible(const uint8_t* mrow, int64_t i, int64_t j, bool causal) {
  return (!mrow || mrow[j]) && (!causal || j <= i);
}

inline float dot_plain(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

// ===================================================================== naive twins

// o (N,Tq,NH,D), lse (N,NH,Tq) from q (N,Tq,NH,D), k, v (N,Tk,NH,D): one row at a time,
// three passes over the keys (max, then sum and weighted sum), scores recomputed.
void attention_forward_naive(float* o, float* lse, const float* q, const float* k,
                             const float* v, const uint8_t* mask, int64_t N, int64_t Tq,
                             int64_t Tk, int64_t NH, int64_t D, float scale, bool causal) {
  const int64_t C = NH * D;
  parallel_for(N * NH, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / NH, h = p % NH;
      const uint8_t* mrow = mask ? mask + n * Tk : nullptr;
      for (int64_t i = 0; i < Tq; ++i) {
        const float* qi = q + (n * Tq + i) * C + h * D;
        float* oi = o + (n * Tq + i) * C + h * D;
        float m = -kInf;
        for (int64_t j = 0; j < Tk; ++j)
          if (visible(mrow, i, j, causal))
            m = std::max(m, scale * dot_plain(qi, k + (n * Tk + j) * C + h * D, D));
        for (int64_t d = 0; d < D; ++d) oi[d] = 0.0f;
        float l = 0.0f;
        if (m != -kInf) {
          for (int64_t j = 0; j < Tk; ++j) {
            if (!visible(mrow, i, j, causal)) continue;
            const float* kj = k + (n * Tk + j) * C + h * D;
            const float* vj = v + (n * Tk + j) * C + h * D;
            const float pij = std::exp(scale * dot_plain(qi, kj, D) - m);
            l += pij;
            for (int64_t d = 0; d < D; ++d) oi[d] += pij * vj[d];
          }
          for (int64_t d = 0; d < D; ++d) oi[d] /= l;
        }
        if (lse) lse[(n * NH + h) * Tq + i] = m == -kInf ? kInf : m + std::log(l);
      }
    }
  });
}

// dq (N,Tq,NH,D), dk, dv (N,Tk,NH,D) += gradients; p_ij = exp(s_ij − lse_i) recomputed.
void attention_backward_naive(float* dq, float* dk, float* dv, const float* dout,
                              const float* o, const float* lse, const float* q,
                              const float* k, const float* v, const uint8_t* mask,
                              int64_t N, int64_t Tq, int64_t Tk, int64_t NH, int64_t D,
                              float scale, bool causal) {
  const int64_t C = NH * D;
  parallel_for(N * NH, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / NH, h = p % NH;
      const uint8_t* mrow = mask ? mask + n * Tk : nullptr;
      for (int64_t i = 0; i < Tq; ++i) {
        const float L = lse[(n * NH + h) * Tq + i];
        if (L == kInf) continue;  // no visible key: every p_ij is 0
        const int64_t qoff = (n * Tq + i) * C + h * D;
        const float* qi = q + qoff;
        const float* doi = dout + qoff;
        const float Di = dot_plain(doi, o + qoff, D);
        for (int64_t j = 0; j < Tk; ++j) {
          if (!visible(mrow, i, j, causal)) continue;
          const int64_t koff = (n * Tk + j) * C + h * D;
          const float* kj = k + koff;
          const float pij = std::exp(scale * dot_plain(qi, kj, D) - L);
          if (dv)
            for (int64_t d = 0; d < D; ++d) dv[koff + d] += pij * doi[d];
          if (dq || dk) {
            const float ds = pij * (dot_plain(doi, v + koff, D) - Di) * scale;
            if (dq)
              for (int64_t d = 0; d < D; ++d) dq[qoff + d] += ds * kj[d];
            if (dk)
              for (int64_t d = 0; d < D; ++d) dk[koff + d] += ds * qi[d];
          }
        }
      }
    }
  });
}

// ===================================================================== tiled kernels

namespace {

// The vector helpers below are always inlined, so the ABI of passing vectors by value
// (which -Wpsabi warns about for the baseline clone) never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
#define FASTNN_INLINE inline __attribute__((always_inline))

// Eight floats. GCC vector extensions: ymm registers in the AVX2 / AVX-512 clones, pairs
// of xmm in the baseline one; a·b + c contracts to FMA where the clone has it.
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
constexpr int VL = 8;

constexpr int64_t BK = 16;        // keys per block: two vectors of scores per row
constexpr int NV = BK / VL;
constexpr int64_t BQ = 32;        // query rows per forward task
constexpr int64_t BQB = 64;       // query rows per backward step
constexpr int64_t DMAX = 256;     // larger heads use the naive twins (stack scratch bound)

FASTNN_INLINE vf vload(const float* p) {
  vf x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
FASTNN_INLINE void vstore(float* p, const vf& x) { std::memcpy(p, &x, sizeof x); }
FASTNN_INLINE vf vset(float x) { return vf{} + x; }

// exp for x ≤ ~88 (Cephes expf: ln2 range reduction, degree-5 polynomial, ~1 ulp).
// x < −87 (−∞ included) gives exactly 0: masked scores, and no denormals.
FASTNN_INLINE vf vexp(const vf& x) {
  const vf lo = vset(-87.0f);
  const vf xc = x < lo ? lo : x;
  const vf n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x/ln2)
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const vf z = r * r;
  vf y = 1.9875691500e-4f * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  const vf res = y * (vf)e;
  return x < lo ? vf{} : res;
}

FASTNN_INLINE float hmax(const vf& x) {
  float m = x[0];
  for (int i = 1; i < VL; ++i) m = std::max(m, x[i]);
  return m;
}
FASTNN_INLINE float hsum(const vf& x) {
  float s = 0.0f;
  for (int i = 0; i < VL; ++i) s += x[i];
  return s;
}

// bt (D,BK) = bᵀ of rows [0, jn) of b (row stride ldb); columns jn..BK−1 zero.
FASTNN_INLINE void pack_t(float* bt, const float* b, int64_t ldb, int64_t jn, int64_t D) {
  if (jn < BK) std::memset(bt, 0, sizeof(float) * size_t(D * BK));
  for (int64_t j = 0; j < jn; ++j)
    for (int64_t d = 0; d < D; ++d) bt[d * BK + j] = b[j * ldb + d];
}

// s (R,BK) = scale · a (R,D; row stride lda) · bt (D,BK)
template <int R>
FASTNN_INLINE void dot_tile(float* s, const float* a, int64_t lda, const float* bt,
                            int64_t D, float scale) {
  vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = vf{};
  for (int64_t d = 0; d < D; ++d) {
    vf b[NV];
    for (int c = 0; c < NV; ++c) b[c] = vload(bt + d * BK + c * VL);
    for (int r = 0; r < R; ++r) {
      const vf x = vset(a[r * lda + d]);
      for (int c = 0; c < NV; ++c) acc[r][c] += x * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) vstore(s + r * BK + c * VL, acc[r][c] * scale);
}

template <int R>
FASTNN_INLINE void dot_tail(int64_t rem, float* s, const float* a, int64_t lda,
                            const float* bt, int64_t D, float scale) {
  if constexpr (R > 0) {
    if (rem == R) dot_tile<R>(s, a, lda, bt, D, scale);
    else dot_tail<R - 1>(rem, s, a, lda, bt, D, scale);
  }
}

// s (n,BK) = scale · a (n,D; row stride lda) · bt (D,BK)
FASTNN_INLINE void dot_rows(float* s, const float* a, int64_t lda, const float* bt,
                            int64_t n, int64_t D, float scale) {
  constexpr int R = 6;
  int64_t r = 0;
  for (; r + R <= n; r += R) dot_tile<R>(s + r * BK, a + r * lda, lda, bt, D, scale);
  dot_tail<R - 1>(n - r, s + r * BK, a + r * lda, lda, bt, D, scale);
}

// y (R, W·8; row stride ldy) += Σ_j A(r,j) · x (j, W·8; row stride ldx),
// A(r,j) = a[r·ars + j·acs], j in [0, J), summed in order of j.
template <int R, int W>
FASTNN_INLINE void axpy_tile(float* y, int64_t ldy, const float* a, int64_t ars, int64_t acs,
                             const float* x, int64_t ldx, int64_t J) {
  vf acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) acc[r][c] = vload(y + r * ldy + c * VL);
  for (int64_t j = 0; j < J; ++j) {
    vf xv[W];
    for (int c = 0; c < W; ++c) xv[c] = vload(x + j * ldx + c * VL);
    for (int r = 0; r < R; ++r) {
      const vf s = vset(a[r * ars + j * acs]);
      for (int c = 0; c < W; ++c) acc[r][c] += s * xv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) vstore(y + r * ldy + c * VL, acc[r][c]);
}

template <int R, int W>
FASTNN_INLINE void axpy_tail(int64_t rem, float* y, int64_t ldy, const float* a, int64_t ars,
                             int64_t acs, const float* x, int64_t ldx, int64_t J) {
  if constexpr (R > 0) {
    if (rem == R) axpy_tile<R, W>(y, ldy, a, ars, acs, x, ldx, J);
    else axpy_tail<R - 1, W>(rem, y, ldy, a, ars, acs, x, ldx, J);
  }
}

// Columns [0, W·8) of y (n rows) in tiles of R rows.
template <int R, int W>
FASTNN_INLINE void axpy_cols(float* y, int64_t ldy, const float* a, int64_t ars, int64_t acs,
                             const float* x, int64_t ldx, int64_t n, int64_t J) {
  int64_t r = 0;
  for (; r + R <= n; r += R)
    axpy_tile<R, W>(y + r * ldy, ldy, a + r * ars, ars, acs, x, ldx, J);
  axpy_tail<R - 1, W>(n - r, y + r * ldy, ldy, a + r * ars, ars, acs, x, ldx, J);
}

// y (n,D; row stride ldy) += A (n,J) · x (J,D; row stride ldx), A(r,j) = a[r·ars + j·acs].
// For each y element the j sum runs in order, on top of the old value.
FASTNN_INLINE void axpy_rows(float* y, int64_t ldy, const float* a, int64_t ars, int64_t acs,
                             const float* x, int64_t ldx, int64_t n, int64_t J, int64_t D) {
  int64_t c = 0;
  for (; c + 4 * VL <= D; c += 4 * VL) axpy_cols<3, 4>(y + c, ldy, a, ars, acs, x + c, ldx, n, J);
  if (c + 2 * VL <= D) {
    axpy_cols<6, 2>(y + c, ldy, a, ars, acs, x + c, ldx, n, J);
    c += 2 * VL;
  }
  if (c + VL <= D) {
    axpy_cols<8, 1>(y + c, ldy, a, ars, acs, x + c, ldx, n, J);
    c += VL;
  }
  if (c < D)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < J; ++j) {
        const float s = a[r * ars + j * acs];
        for (int64_t d = c; d < D; ++d) y[r * ldy + d] += s * x[j * ldx + d];
      }
}

// Column bias of the key block [j0, j0+jn): 0 where visible, −∞ for padding and for the
// columns past jn. Returns whether any key is visible.
FASTNN_INLINE bool block_bias(float* bias, const uint8_t* mrow, int64_t j0, int64_t jn) {
  bool any = false;
  for (int64_t j = 0; j < BK; ++j) {
    const bool vis = j < jn && (!mrow || mrow[j0 + j]);
    bias[j] = vis ? 0.0f : -kInf;
    any |= vis;
  }
  return any;
}

// Adds the column bias to a score row, and −∞ past the causal limit (key j0+j visible to
// query i iff j ≤ i − j0).
FASTNN_INLINE void mask_row(float* sr, const float* bias, bool causal, int64_t i, int64_t j0) {
  for (int c = 0; c < NV; ++c) vstore(sr + c * VL, vload(sr + c * VL) + vload(bias + c * VL));
  if (causal)
    for (int64_t j = std::max<int64_t>(i - j0 + 1, 0); j < BK; ++j) sr[j] = -kInf;
}

// One forward task: rows [i0, i0+qn) of one (n, head). q, o point at (n, 0, h, 0) (row
// stride C), k, v at (n, 0, h, 0), lse at (n, h, 0) or nullptr; mrow the padding row or
// nullptr. The unnormalised output accumulates in o itself.
FASTNN_CLONES
void attention_fwd_block(float* o, float* lse, const float* q, const float* k, const float* v,
                         const uint8_t* mrow, int64_t i0, int64_t qn, int64_t Tk, int64_t C,
                         int64_t D, float scale, bool causal) {
  alignas(32) float kt[DMAX * BK];
  alignas(32) float s[BQ * BK];
  alignas(32) float bias[BK];
  float m[BQ], l[BQ];
  const float* qb = q + i0 * C;
  float* ob = o + i0 * C;
  for (int64_t r = 0; r < qn; ++r) {
    m[r] = -kInf;
    l[r] = 0.0f;
    std::memset(ob + r * C, 0, sizeof(float) * size_t(D));
  }
  const int64_t kend = causal ? std::min(Tk, i0 + qn) : Tk;
  for (int64_t j0 = 0; j0 < kend; j0 += BK) {
    const int64_t jn = std::min(BK, kend - j0);
    if (!block_bias(bias, mrow, j0, jn)) continue;
    pack_t(kt, k + j0 * C, C, jn, D);
    dot_rows(s, qb, C, kt, qn, D, scale);
    for (int64_t r = 0; r < qn; ++r) {
      float* sr = s + r * BK;
      mask_row(sr, bias, causal, i0 + r, j0);
      vf mv = vload(sr);
      for (int c = 1; c < NV; ++c) mv = vload(sr + c * VL) > mv ? vload(sr + c * VL) : mv;
      const float mnew = std::max(m[r], hmax(mv));
      if (mnew == -kInf) {  // nothing visible to this row yet
        std::memset(sr, 0, sizeof(float) * BK);
        continue;
      }
      vf sum = vf{};
      for (int c = 0; c < NV; ++c) {
        const vf p = vexp(vload(sr + c * VL) - mnew);
        vstore(sr + c * VL, p);
        sum += p;
      }
      const float alpha = std::exp(m[r] - mnew);  // 0 on the first visible block
      if (alpha != 1.0f) {
        float* orow = ob + r * C;
        for (int64_t d = 0; d < D; ++d) orow[d] *= alpha;
      }
      l[r] = l[r] * alpha + hsum(sum);
      m[r] = mnew;
    }
    axpy_rows(ob, C, s, BK, 1, v + j0 * C, C, qn, jn, D);
  }
  for (int64_t r = 0; r < qn; ++r) {
    float* orow = ob + r * C;
    if (l[r] > 0.0f) {
      const float inv = 1.0f / l[r];
      for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
      if (lse) lse[i0 + r] = m[r] + std::log(l[r]);
    } else {
      std::memset(orow, 0, sizeof(float) * size_t(D));
      if (lse) lse[i0 + r] = kInf;
    }
  }
}

// Backward for one (n, head), which owns its rows of dq, dk and dv: query blocks outside,
// key blocks inside. Pointers as in attention_fwd_block.
FASTNN_CLONES
void attention_bwd_head(float* dq, float* dk, float* dv, const float* dout, const float* o,
                        const float* lse, const float* q, const float* k, const float* v,
                        const uint8_t* mrow, int64_t Tq, int64_t Tk, int64_t C, int64_t D,
                        float scale, bool causal) {
  alignas(32) float kt[DMAX * BK];
  alignas(32) float vt[DMAX * BK];
  alignas(32) float p[BQB * BK];
  alignas(32) float ds[BQB * BK];
  alignas(32) float bias[BK];
  float L[BQB], Di[BQB];
  const bool need_ds = dq || dk;
  for (int64_t i0 = 0; i0 < Tq; i0 += BQB) {
    const int64_t qn = std::min(BQB, Tq - i0);
    bool live = false;
    for (int64_t r = 0; r < qn; ++r) {
      L[r] = lse[i0 + r];
      live |= L[r] != kInf;
      const float* dor = dout + (i0 + r) * C;
      const float* orow = o + (i0 + r) * C;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t d = 0; d < D; ++d) acc += dor[d] * orow[d];
      Di[r] = acc;
    }
    if (!live) continue;  // no row of this block sees any key
    const float* qb = q + i0 * C;
    const float* dob = dout + i0 * C;
    const int64_t kend = causal ? std::min(Tk, i0 + qn) : Tk;
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
      const int64_t jn = std::min(BK, kend - j0);
      if (!block_bias(bias, mrow, j0, jn)) continue;
      pack_t(kt, k + j0 * C, C, jn, D);
      dot_rows(p, qb, C, kt, qn, D, scale);
      for (int64_t r = 0; r < qn; ++r) {
        float* pr = p + r * BK;
        mask_row(pr, bias, causal, i0 + r, j0);
        for (int c = 0; c < NV; ++c) vstore(pr + c * VL, vexp(vload(pr + c * VL) - L[r]));
      }
      // dv (jn,D) += pᵀ · dout
      if (dv) axpy_rows(dv + j0 * C, C, p, 1, BK, dob, C, jn, qn, D);
      if (!need_ds) continue;
      // ds = scale · p ⊙ (dout·vᵀ − Di)
      pack_t(vt, v + j0 * C, C, jn, D);
      dot_rows(ds, dob, C, vt, qn, D, 1.0f);
      for (int64_t r = 0; r < qn; ++r)
        for (int c = 0; c < NV; ++c) {
          float* dr = ds + r * BK + c * VL;
          vstore(dr, vload(p + r * BK + c * VL) * (vload(dr) - Di[r]) * scale);
        }
      // dq (qn,D) += ds · k;  dk (jn,D) += dsᵀ · q
      if (dq) axpy_rows(dq + i0 * C, C, ds, BK, 1, k + j0 * C, C, qn, jn, D);
      if (dk) axpy_rows(dk + j0 * C, C, ds, 1, BK, qb, C, jn, qn, D);
    }
  }
}

}  // namespace

// o (N,Tq,NH,D), lse (N,NH,Tq): tasks (n, head, block of BQ query rows).
void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                       const uint8_t* mask, int64_t N, int64_t Tq, int64_t Tk, int64_t NH,
                       int64_t D, float scale, bool causal) {
  if (N <= 0 || Tq <= 0 || NH <= 0 || D <= 0) return;
  if (D > DMAX || Tk <= 0) {
    attention_forward_naive(o, lse, q, k, v, mask, N, Tq, Tk, NH, D, scale, causal);
    return;
  }
  const int64_t C = NH * D, nqb = (Tq + BQ - 1) / BQ;
  parallel_for(N * NH * nqb, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t qb = t % nqb, pair = t / nqb, h = pair % NH, n = pair / NH;
      const int64_t i0 = qb * BQ, qn = std::min(BQ, Tq - i0);
      attention_fwd_block(o + n * Tq * C + h * D, lse ? lse + pair * Tq : nullptr,
                          q + n * Tq * C + h * D, k + n * Tk * C + h * D,
                          v + n * Tk * C + h * D, mask ? mask + n * Tk : nullptr, i0, qn, Tk,
                          C, D, scale, causal);
    }
  });
}

// dq, dk, dv += gradients: tasks (n, head), each owning its rows of all three.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o,
                        const float* lse, const float* q, const float* k, const float* v,
                        const uint8_t* mask, int64_t N, int64_t Tq, int64_t Tk, int64_t NH,
                        int64_t D, float scale, bool causal) {
  if (N <= 0 || Tq <= 0 || Tk <= 0 || NH <= 0 || D <= 0 || (!dq && !dk && !dv)) return;
  if (D > DMAX) {
    attention_backward_naive(dq, dk, dv, dout, o, lse, q, k, v, mask, N, Tq, Tk, NH, D,
                             scale, causal);
    return;
  }
  const int64_t C = NH * D;
  parallel_for(N * NH, 1, [&](int64_t b, int64_t e) {
    for (int64_t pair = b; pair < e; ++pair) {
      const int64_t h = pair % NH, n = pair / NH;
      const int64_t qo = n * Tq * C + h * D, ko = n * Tk * C + h * D;
      attention_bwd_head(dq ? dq + qo : nullptr, dk ? dk + ko : nullptr,
                         dv ? dv + ko : nullptr, dout + qo, o + qo, lse + pair * Tq, q + qo,
                         k + ko, v + ko, mask ? mask + n * Tk : nullptr, Tq, Tk, C, D, scale,
                         causal);
    }
  });
}

}  // namespace fastnn
