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

// One head's D columns of dq (Tq rows from qo) and of dk, dv (Tk rows from ko), rows C
// floats apart, set to 0: the backward's accumulate = false, done by the task that owns
// them, just before it adds into them.
static void zero_head_rows(float* dq, float* dk, float* dv, int64_t qo, int64_t ko,
                           int64_t Tq, int64_t Tk, int64_t C, int64_t D) {
  const size_t bytes = size_t(D) * sizeof(float);
  if (dq)
    for (int64_t i = 0; i < Tq; ++i) std::memset(dq + qo + i * C, 0, bytes);
  for (float* g : {dk, dv})
    if (g)
      for (int64_t j = 0; j < Tk; ++j) std::memset(g + ko + j * C, 0, bytes);
}

// dq (N,Tq,NH,D), dk, dv (N,Tk,NH,D) += gradients; p_ij = exp(s_ij − lse_i) recomputed.
void attention_backward_naive(float* dq, float* dk, float* dv, const float* dout,
                              const float* o, const float* lse, const float* q,
                              const float* k, const float* v, const uint8_t* mask,
                              int64_t N, int64_t Tq, int64_t Tk, int64_t NH, int64_t D,
                              float scale, bool causal, bool accumulate) {
  const int64_t C = NH * D;
  parallel_for(N * NH, 1, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t n = p / NH, h = p % NH;
      if (!accumulate)
        zero_head_rows(dq, dk, dv, n * Tq * C + h * D, n * Tk * C + h * D, Tq, Tk, C, D);
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
//
// Score tiles are stored keys × queries: a tile row holds one key's scores against BQ
// queries, so each SIMD lane is one query. The online-softmax statistics (running max
// and sum per query) are then plain vectors, the max and sum over keys are elementwise,
// and q is transposed once per task (Qᵀ, D × BQ) while k and v rows are read in place.
// Masked-out keys are dropped when a block is gathered, so padding costs nothing.

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

constexpr int64_t BK = 64;    // keys per block (rows of a score tile)
constexpr int64_t BQ = 32;    // queries per forward task (lanes of a score tile)
constexpr int64_t BQB = 64;   // queries per backward step
constexpr int64_t DMAX = 128; // larger heads use the naive twins (bounds the stack scratch)

FASTNN_INLINE vf vload(const float* p) {
  vf x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
FASTNN_INLINE void vstore(float* p, const vf& x) { std::memcpy(p, &x, sizeof x); }
// Broadcast: one vbroadcastss (from memory when x is loaded). Under target attributes
// GCC 12 expands the obvious forms, {x, x, ...} and x − vf{}, into eight element inserts,
// and vf{} + x keeps an add (−0 + 0 = +0); a shuffle of lane 0 does not.
FASTNN_INLINE vf vset(float x) {
  const vf v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
FASTNN_INLINE vf vmax(const vf& a, const vf& b) { return a > b ? a : b; }

// exp for x ≤ ~88 (Cephes expf: ln2 range reduction, degree-5 polynomial, ~1 ulp);
// exp(0) is exactly 1. x < −87 (−∞ included) gives exactly 0: masked scores, no denormals.
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

// The next block of visible keys from j on: up to BK indices below kend whose padding
// bit is set; j advances past them. Returns how many.
FASTNN_INLINE int64_t gather_keys(int64_t* idx, const uint8_t* mrow, int64_t& j,
                                  int64_t kend) {
  int64_t n = 0;
  if (!mrow) {
    n = std::min(BK, kend - j);
    for (int64_t t = 0; t < n; ++t) idx[t] = j + t;
    j += n;
    return n;
  }
  for (; j < kend && n < BK; ++j)
    if (mrow[j]) idx[n++] = j;
  return n;
}

// In-register 8×8 transpose: x[i][c] ↔ x[c][i] (unpack, shuffle, 128-bit swap).
FASTNN_INLINE void transpose8(vf* x) {
  vf t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(x[i], x[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(x[i], x[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      u[i + 2 * h] = __builtin_shufflevector(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * h + 1] =
          __builtin_shufflevector(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int c = 0; c < 4; ++c) {
    x[c] = __builtin_shufflevector(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    x[c + 4] = __builtin_shufflevector(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// bt (D, ld) = transpose of rows a (n, D; row stride lda); lanes n..ld−1 zero.
FASTNN_INLINE void pack_t(float* bt, int64_t ld, const float* a, int64_t lda, int64_t n,
                          int64_t D) {
  int64_t r0 = 0;
  for (; r0 + VL <= n; r0 += VL) {
    int64_t d0 = 0;
    for (; d0 + VL <= D; d0 += VL) {
      vf x[VL];
      for (int i = 0; i < VL; ++i) x[i] = vload(a + (r0 + i) * lda + d0);
      transpose8(x);
      for (int c = 0; c < VL; ++c) vstore(bt + (d0 + c) * ld + r0, x[c]);
    }
    for (; d0 < D; ++d0)
      for (int i = 0; i < VL; ++i) bt[d0 * ld + r0 + i] = a[(r0 + i) * lda + d0];
  }
  for (int64_t d = 0; d < D; ++d) {
    float* row = bt + d * ld;
    for (int64_t r = r0; r < n; ++r) row[r] = a[r * lda + d];
    for (int64_t r = n; r < ld; ++r) row[r] = 0.0f;
  }
}

// st (R, W·8; row stride lds) = scale · Σ_d a_r[d] · bt (d, W·8; row stride ldb)
template <int R, int W>
FASTNN_INLINE void dot_tile(float* st, int64_t lds, const float* const* a, const float* bt,
                            int64_t ldb, int64_t D, float scale) {
  vf acc[R][W];
  const float* ar[R];
  for (int r = 0; r < R; ++r) {
    ar[r] = a[r];
    for (int c = 0; c < W; ++c) acc[r][c] = vf{};
  }
#pragma GCC unroll 2
  for (int64_t d = 0; d < D; ++d) {
    vf b[W];
    for (int c = 0; c < W; ++c) b[c] = vload(bt + d * ldb + c * VL);
    for (int r = 0; r < R; ++r) {
      const vf x = vset(ar[r][d]);
      for (int c = 0; c < W; ++c) acc[r][c] += x * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) vstore(st + r * lds + c * VL, acc[r][c] * scale);
}

template <int R, int W>
FASTNN_INLINE void dot_tail(int64_t rem, float* st, int64_t lds, const float* const* a,
                            const float* bt, int64_t ldb, int64_t D, float scale) {
  if constexpr (R > 0) {
    if (rem == R) dot_tile<R, W>(st, lds, a, bt, ldb, D, scale);
    else dot_tail<R - 1, W>(rem, st, lds, a, bt, ldb, D, scale);
  }
}

template <int R, int W>
FASTNN_INLINE void dot_cols(float* st, int64_t lds, const float* const* a, const float* bt,
                            int64_t ldb, int64_t n, int64_t D, float scale) {
  int64_t r = 0;
  for (; r + R <= n; r += R) dot_tile<R, W>(st + r * lds, lds, a + r, bt, ldb, D, scale);
  dot_tail<R - 1, W>(n - r, st + r * lds, lds, a + r, bt, ldb, D, scale);
}

// st (n, nv·8; row stride lds) = scale · a (n rows of D, via row pointers) · bt (D, nv·8)
FASTNN_INLINE void dot_rows(float* st, int64_t lds, const float* const* a, const float* bt,
                            int64_t ldb, int64_t n, int64_t nv, int64_t D, float scale) {
  int64_t c = 0;
  for (; c + 2 <= nv; c += 2) dot_cols<6, 2>(st + c * VL, lds, a, bt + c * VL, ldb, n, D, scale);
  if (c < nv) dot_cols<8, 1>(st + c * VL, lds, a, bt + c * VL, ldb, n, D, scale);
}

// y_r[c0 + (0..W·8)] = alpha_r · y_r[..] + Σ_j A(r,j) · x_j[c0 + (0..W·8)] for R rows,
// A(r,j) = a[r·ARS + j·ACS], j in [0, J) in order; alpha nullptr means 1.
template <int R, int W, int64_t ARS, int64_t ACS>
FASTNN_INLINE void axpy_tile(float* const* y, int64_t c0, const float* alpha, const float* a,
                             const float* const* x, int64_t J) {
  vf acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) {
      acc[r][c] = vload(y[r] + c0 + c * VL);
      if (alpha) acc[r][c] *= alpha[r];
    }
#pragma GCC unroll 2
  for (int64_t j = 0; j < J; ++j) {
    vf xv[W];
    for (int c = 0; c < W; ++c) xv[c] = vload(x[j] + c0 + c * VL);
    for (int r = 0; r < R; ++r) {
      const vf s = vset(a[r * ARS + j * ACS]);
      for (int c = 0; c < W; ++c) acc[r][c] += s * xv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) vstore(y[r] + c0 + c * VL, acc[r][c]);
}

template <int R, int W, int64_t ARS, int64_t ACS>
FASTNN_INLINE void axpy_tail(int64_t rem, float* const* y, int64_t c0, const float* alpha,
                             const float* a, const float* const* x, int64_t J) {
  if constexpr (R > 0) {
    if (rem == R) axpy_tile<R, W, ARS, ACS>(y, c0, alpha, a, x, J);
    else axpy_tail<R - 1, W, ARS, ACS>(rem, y, c0, alpha, a, x, J);
  }
}

template <int R, int W, int64_t ARS, int64_t ACS>
FASTNN_INLINE void axpy_cols(float* const* y, int64_t c0, const float* alpha, const float* a,
                             const float* const* x, int64_t n, int64_t J) {
  int64_t r = 0;
  for (; r + R <= n; r += R)
    axpy_tile<R, W, ARS, ACS>(y + r, c0, alpha ? alpha + r : nullptr, a + r * ARS, x, J);
  axpy_tail<R - 1, W, ARS, ACS>(n - r, y + r, c0, alpha ? alpha + r : nullptr, a + r * ARS,
                                x, J);
}

// y (n rows of D, via row pointers) = alpha ⊙ y + A (n, J) · x (J rows of D, via row
// pointers), A(r,j) = a[r·ARS + j·ACS]. Each y element sums j in order.
template <int64_t ARS, int64_t ACS>
FASTNN_INLINE void axpy_rows(float* const* y, const float* alpha, const float* a,
                             const float* const* x, int64_t n, int64_t J, int64_t D) {
  int64_t c = 0;
  for (; c + 4 * VL <= D; c += 4 * VL) axpy_cols<2, 4, ARS, ACS>(y, c, alpha, a, x, n, J);
  if (c + 2 * VL <= D) {
    axpy_cols<6, 2, ARS, ACS>(y, c, alpha, a, x, n, J);
    c += 2 * VL;
  }
  if (c + VL <= D) {
    axpy_cols<8, 1, ARS, ACS>(y, c, alpha, a, x, n, J);
    c += VL;
  }
  if (c < D)
    for (int64_t r = 0; r < n; ++r) {
      float* yr = y[r];
      if (alpha)
        for (int64_t d = c; d < D; ++d) yr[d] *= alpha[r];
      for (int64_t j = 0; j < J; ++j) {
        const float s = a[r * ARS + j * ACS];
        for (int64_t d = c; d < D; ++d) yr[d] += s * x[j][d];
      }
    }
}

// Causal mask on a score tile: key idx[t] is hidden from query i0 + r when idx[t] > i0 + r.
FASTNN_INLINE void causal_mask(float* st, int64_t lds, const int64_t* idx, int64_t n,
                               int64_t nv, int64_t i0) {
  const vf lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const vf ninf = vset(-kInf);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t lim = idx[t] - i0;  // lanes r < lim are hidden
    for (int64_t g = 0; g < nv && g * VL < lim; ++g) {
      float* p = st + t * lds + g * VL;
      vstore(p, lane < vset(float(lim - g * VL)) ? ninf : vload(p));
    }
  }
}

// One forward task: queries [i0, i0+qn) of one (n, head). q, o, k, v point at (n, 0, h, 0)
// (row stride C), lse at (n, h, 0) or nullptr, mrow is the padding row or nullptr. The
// unnormalised output accumulates in o itself.
FASTNN_CLONES
void attention_fwd_block(float* o, float* lse, const float* q, const float* k, const float* v,
                         const uint8_t* mrow, int64_t i0, int64_t qn, int64_t Tk, int64_t C,
                         int64_t D, float scale, bool causal) {
  alignas(32) float qt[DMAX * BQ];  // Qᵀ (D, BQ)
  alignas(32) float st[BK * BQ];    // scores, then probabilities (keys × queries)
  alignas(32) float m[BQ], l[BQ], alpha[BQ];
  int64_t idx[BK];
  const float* krows[BK];
  const float* vrows[BK];
  float* orows[BQ];
  const int64_t nv = (qn + VL - 1) / VL;
  pack_t(qt, BQ, q + i0 * C, C, qn, D);
  for (int64_t r = 0; r < qn; ++r) {
    orows[r] = o + (i0 + r) * C;
    std::memset(orows[r], 0, sizeof(float) * size_t(D));
  }
  for (int64_t g = 0; g < nv; ++g) {
    vstore(m + g * VL, vset(-kInf));
    vstore(l + g * VL, vf{});
  }
  const int64_t kend = causal ? std::min(Tk, i0 + qn) : Tk;
  for (int64_t j = 0; j < kend;) {
    const int64_t jn = gather_keys(idx, mrow, j, kend);
    if (jn == 0) break;
    for (int64_t t = 0; t < jn; ++t) {
      krows[t] = k + idx[t] * C;
      vrows[t] = v + idx[t] * C;
    }
    dot_rows(st, BQ, krows, qt, BQ, jn, nv, D, scale);
    if (causal) causal_mask(st, BQ, idx, jn, nv, i0);
    // online softmax, eight queries at a time
    bool rescale = false;
    for (int64_t g = 0; g < nv; ++g) {
      float* sg = st + g * VL;
      vf mx = vload(sg);
      for (int64_t t = 1; t < jn; ++t) mx = vmax(mx, vload(sg + t * BQ));
      const vf mold = vload(m + g * VL);
      const vf mnew = vmax(mold, mx);
      const vf mu = mnew == vset(-kInf) ? vf{} : mnew;  // rows that have seen nothing yet
      vf sum = vf{};
      for (int64_t t = 0; t < jn; ++t) {
        const vf p = vexp(vload(sg + t * BQ) - mu);
        vstore(sg + t * BQ, p);
        sum += p;
      }
      const vf a = vexp(mold - mu);  // 1 when the max is unchanged, 0 on the first block
      vstore(alpha + g * VL, a);
      vstore(l + g * VL, vload(l + g * VL) * a + sum);
      vstore(m + g * VL, mnew);
      for (int i = 0; i < VL; ++i) rescale |= a[i] != 1.0f;
    }
    // o = alpha ⊙ o + Pᵀ v
    axpy_rows<1, BQ>(orows, rescale ? alpha : nullptr, st, vrows, qn, jn, D);
  }
  for (int64_t r = 0; r < qn; ++r) {
    float* orow = orows[r];
    if (l[r] > 0.0f) {
      const float inv = 1.0f / l[r];
      for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
      if (lse) lse[i0 + r] = m[r] + std::log(l[r]);
    } else {  // no visible key
      std::memset(orow, 0, sizeof(float) * size_t(D));
      if (lse) lse[i0 + r] = kInf;
    }
  }
}

// Backward for one (n, head), which owns its rows of dq, dk and dv: query blocks outside,
// key blocks inside. Pointers as in attention_fwd_block, dq/dk/dv like q/k/v.
FASTNN_CLONES
void attention_bwd_head(float* dq, float* dk, float* dv, const float* dout, const float* o,
                        const float* lse, const float* q, const float* k, const float* v,
                        const uint8_t* mrow, int64_t Tq, int64_t Tk, int64_t C, int64_t D,
                        float scale, bool causal) {
  alignas(32) float qt[DMAX * BQB];   // Qᵀ (D, BQB)
  alignas(32) float dot[DMAX * BQB];  // doutᵀ (D, BQB)
  alignas(32) float p[BK * BQB];      // probabilities (keys × queries)
  alignas(32) float ds[BK * BQB];     // dP, then dS
  alignas(32) float L[BQB], Di[BQB];
  int64_t idx[BK];
  const float* krows[BK];
  const float* vrows[BK];
  float* dkrows[BK];
  float* dvrows[BK];
  const float* qrows[BQB];
  const float* dorows[BQB];
  float* dqrows[BQB];
  const bool need_ds = dq || dk;
  for (int64_t i0 = 0; i0 < Tq; i0 += BQB) {
    const int64_t qn = std::min(BQB, Tq - i0), nv = (qn + VL - 1) / VL;
    bool live = false;
    for (int64_t r = 0; r < nv * VL; ++r) {
      if (r >= qn) {  // padding lanes: p = 0
        L[r] = kInf;
        Di[r] = 0.0f;
        continue;
      }
      L[r] = lse[i0 + r];
      live |= L[r] != kInf;
      qrows[r] = q + (i0 + r) * C;
      dorows[r] = dout + (i0 + r) * C;
      dqrows[r] = dq ? dq + (i0 + r) * C : nullptr;
      const float* orow = o + (i0 + r) * C;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t d = 0; d < D; ++d) acc += dorows[r][d] * orow[d];
      Di[r] = acc;
    }
    if (!live) continue;  // no query of this block sees any key
    pack_t(qt, BQB, q + i0 * C, C, qn, D);
    if (need_ds) pack_t(dot, BQB, dout + i0 * C, C, qn, D);
    const int64_t kend = causal ? std::min(Tk, i0 + qn) : Tk;
    for (int64_t j = 0; j < kend;) {
      const int64_t jn = gather_keys(idx, mrow, j, kend);
      if (jn == 0) break;
      for (int64_t t = 0; t < jn; ++t) {
        krows[t] = k + idx[t] * C;
        vrows[t] = v + idx[t] * C;
        dkrows[t] = dk ? dk + idx[t] * C : nullptr;
        dvrows[t] = dv ? dv + idx[t] * C : nullptr;
      }
      // p = exp(scale·k·qᵀ − lse)
      dot_rows(p, BQB, krows, qt, BQB, jn, nv, D, scale);
      if (causal) causal_mask(p, BQB, idx, jn, nv, i0);
      for (int64_t t = 0; t < jn; ++t)
        for (int64_t g = 0; g < nv; ++g) {
          float* pg = p + t * BQB + g * VL;
          vstore(pg, vexp(vload(pg) - vload(L + g * VL)));
        }
      // dv (jn, D) += p · dout
      if (dv) axpy_rows<BQB, 1>(dvrows, nullptr, p, dorows, jn, qn, D);
      if (!need_ds) continue;
      // ds = scale · p ⊙ (v·doutᵀ − Di)
      dot_rows(ds, BQB, vrows, dot, BQB, jn, nv, D, 1.0f);
      for (int64_t t = 0; t < jn; ++t)
        for (int64_t g = 0; g < nv; ++g) {
          float* dg = ds + t * BQB + g * VL;
          vstore(dg, vload(p + t * BQB + g * VL) * (vload(dg) - vload(Di + g * VL)) * scale);
        }
      // dq (qn, D) += dsᵀ · k;  dk (jn, D) += ds · q
      if (dq) axpy_rows<1, BQB>(dqrows, nullptr, ds, krows, qn, jn, D);
      if (dk) axpy_rows<BQB, 1>(dkrows, nullptr, ds, qrows, jn, qn, D);
    }
  }
}

}  // namespace

// o (N,Tq,NH,D), lse (N,NH,Tq): tasks (n, head, block of BQ queries).
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
                        int64_t D, float scale, bool causal, bool accumulate) {
  if (N <= 0 || Tq <= 0 || Tk <= 0 || NH <= 0 || D <= 0 || (!dq && !dk && !dv)) return;
  if (D > DMAX) {
    attention_backward_naive(dq, dk, dv, dout, o, lse, q, k, v, mask, N, Tq, Tk, NH, D,
                             scale, causal, accumulate);
    return;
  }
  const int64_t C = NH * D;
  parallel_for(N * NH, 1, [&](int64_t b, int64_t e) {
    for (int64_t pair = b; pair < e; ++pair) {
      const int64_t h = pair % NH, n = pair / NH;
      const int64_t qo = n * Tq * C + h * D, ko = n * Tk * C + h * D;
      if (!accumulate) zero_head_rows(dq, dk, dv, qo, ko, Tq, Tk, C, D);
      attention_bwd_head(dq ? dq + qo : nullptr, dk ? dk + ko : nullptr,
                         dv ? dv + ko : nullptr, dout + qo, o + qo, lse + pair * Tq, q + qo,
                         k + ko, v + ko, mask ? mask + n * Tk : nullptr, Tq, Tk, C, D, scale,
                         causal);
    }
  });
}

}  // namespace fastnn
