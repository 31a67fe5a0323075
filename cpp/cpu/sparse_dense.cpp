// Dense layer forward with a sparse (pruned) kernel stored by output column (CSC), for
// inference: y = act(x·w + b) touching only w's nonzeros. See sparse_dense.h.
//
// Both paths give every output element to one thread (threads own ranges of output
// columns) and sum it in an order fixed by the nonzeros alone, so results do not depend
// on the thread count.
//
//  * Small batches (N < kSparseDenseBatchVec): for each column, the nonzeros are taken
//    16 at a time; lane l of a 16-wide accumulator per row gathers x[n, indices[p + l]]
//    (AVX2/AVX-512 gather loads, through the FASTNN_CLONES versions), 4 rows share each
//    load of indices and values; the 16 lanes are summed by a fixed tree.
//  * Larger batches: x is transposed once into blocks of 16 rows, (IC, 16) each (50 KB
//    at IC = 784: one block stays in L1), then for each block each column accumulates
//    values[p] · xt_j[indices[p], :] over its nonzeros: one contiguous 16-float load and
//    one FMA per nonzero, no gathers, 4 partial sums against the FMA latency.
// The bias is added to the sum and the activation runs afterwards as one elementwise
// pass (act_forward) over y.
#include "fastnn/sparse_dense.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastnn/common.h"
#include "vmath.h"

#if defined(FASTNN_X86) && defined(__GNUC__)
#include <immintrin.h>
#define FASTNN_SPARSE_AVX512 1
#endif

namespace fastnn {

namespace {

constexpr int64_t kLanes = 16;  // accumulator lanes of the small-batch path
constexpr int64_t kRows = 4;    // rows sharing one load of indices/values
constexpr int64_t kBlock = 16;  // batch rows per block of xt on the large-batch path

// Σ of 16 lanes by a fixed tree: (l, l+8), then (l, l+4), (l, l+2), (l, l+1).
inline float tree16(const float* a) {
  float s8[8], s4[4];
  for (int l = 0; l < 8; ++l) s8[l] = a[l] + a[l + 8];
  for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// Columns o0..o1 of y (N < kSparseDenseBatchVec rows): gather-dot per (n, o).
FASTNN_CLONES void columns_gather(float* __restrict y, const float* __restrict x,
                                  const int32_t* __restrict indptr,
                                  const int32_t* __restrict indices,
                                  const float* __restrict values, const float* b, int64_t N,
                                  int64_t IC, int64_t OC, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    const int64_t p0 = indptr[o], p1 = indptr[o + 1];
    const int64_t full = p0 + (p1 - p0) / kLanes * kLanes;
    const float bias = b ? b[o] : 0.0f;
    for (int64_t n0 = 0; n0 < N; n0 += kRows) {
      const int64_t nr = N - n0 < kRows ? N - n0 : kRows;
      float acc[kRows][kLanes] = {};
      const float* xr[kRows];
      for (int64_t r = 0; r < kRows; ++r) xr[r] = x + (n0 + (r < nr ? r : 0)) * IC;
      for (int64_t p = p0; p < full; p += kLanes) {
        const int32_t* ip = indices + p;
        const float* vp = values + p;
        if (nr == kRows) {
#pragma omp simd
          for (int64_t l = 0; l < kLanes; ++l) {
            const float v = vp[l];
            const int32_t k = ip[l];
            acc[0][l] += v * xr[0][k];
            acc[1][l] += v * xr[1][k];
            acc[2][l] += v * xr[2][k];
            acc[3][l] += v * xr[3][k];
          }
        } else {
          for (int64_t r = 0; r < nr; ++r) {
            const float* xrr = xr[r];
#pragma omp simd
            for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += vp[l] * xrr[ip[l]];
          }
        }
      }
      // The remaining < 16 nonzeros go to lanes 0.. in order.
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t p = full; p < p1; ++p) acc[r][p - full] += values[p] * xr[r][indices[p]];
      for (int64_t r = 0; r < nr; ++r) y[(n0 + r) * OC + o] = tree16(acc[r]) + bias;
    }
  }
}

#if defined(FASTNN_SPARSE_AVX512)
// columns_gather for rows n0..n0+R with AVX-512: the same lanes and tree. The last < 16
// nonzeros of a column are read with masked loads and gathers (nothing past the end).
template <int R>
__attribute__((target("avx512f,fma"))) inline void column_rows_avx512(
    float* __restrict y, const float* const* xr, const int32_t* __restrict indices,
    const float* __restrict values, int64_t p0, int64_t p1, float bias, int64_t OC) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t p = p0;
  for (; p + kLanes <= p1; p += kLanes) {
    const __m512i vi = _mm512_loadu_si512(indices + p);
    const __m512 vv = _mm512_loadu_ps(values + p);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(vv, _mm512_i32gather_ps(vi, xr[r], 4), acc[r]);
  }
  if (p < p1) {
    const __mmask16 m = __mmask16((1u << (p1 - p)) - 1u);
    const __m512i vi = _mm512_maskz_loadu_epi32(m, indices + p);
    const __m512 vv = _mm512_maskz_loadu_ps(m, values + p);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(
          vv, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, vi, xr[r], 4), acc[r]);
  }
  alignas(64) float lanes[kLanes];
  for (int r = 0; r < R; ++r) {
    _mm512_store_ps(lanes, acc[r]);
    y[r * OC] = tree16(lanes) + bias;
  }
}

__attribute__((target("avx512f,fma"))) void columns_gather_avx512(
    float* __restrict y, const float* __restrict x, const int32_t* __restrict indptr,
    const int32_t* __restrict indices, const float* __restrict values, const float* b,
    int64_t N, int64_t IC, int64_t OC, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    const int64_t p0 = indptr[o], p1 = indptr[o + 1];
    const float bias = b ? b[o] : 0.0f;
    int64_t n0 = 0;
    for (; n0 + kRows <= N; n0 += kRows) {
      const float* xr[kRows] = {x + n0 * IC, x + (n0 + 1) * IC, x + (n0 + 2) * IC,
                                x + (n0 + 3) * IC};
      column_rows_avx512<kRows>(y + n0 * OC + o, xr, indices, values, p0, p1, bias, OC);
    }
    const float* xr[3] = {x + n0 * IC, x + (n0 + 1) * IC, x + (n0 + 2) * IC};
    switch (N - n0) {
      case 3: column_rows_avx512<3>(y + n0 * OC + o, xr, indices, values, p0, p1, bias, OC); break;
      case 2: column_rows_avx512<2>(y + n0 * OC + o, xr, indices, values, p0, p1, bias, OC); break;
      case 1: column_rows_avx512<1>(y + n0 * OC + o, xr, indices, values, p0, p1, bias, OC); break;
      default: break;
    }
  }
}
#endif

// Blocks j0..j1 of xt: block j is x[16j .. 16j+16, :]ᵀ as (IC, 16), rows past N zero.
FASTNN_CLONES void transpose_blocks(float* __restrict xt, const float* __restrict x, int64_t N,
                                    int64_t IC, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    float* d = xt + j * IC * kBlock;
    const int64_t n0 = j * kBlock, nb = N - n0 < kBlock ? N - n0 : kBlock;
    for (int64_t i0 = 0; i0 < IC; i0 += 64) {
      const int64_t i1 = i0 + 64 < IC ? i0 + 64 : IC;
      for (int64_t r = 0; r < kBlock; ++r) {
        const float* s = x + (n0 + r) * IC;
        if (r < nb) {
          for (int64_t i = i0; i < i1; ++i) d[i * kBlock + r] = s[i];
        } else {
          for (int64_t i = i0; i < i1; ++i) d[i * kBlock + r] = 0.0f;
        }
      }
    }
  }
}

#if defined(FASTNN_SPARSE_AVX512)
// transpose_blocks with AVX-512: 16 rows × 16 columns at a time, transposed in registers
// (pairs of rows interleaved, then 4-float groups, then 128-bit lanes), columns past IC
// read under a mask and not stored, rows past N zero.
__attribute__((target("avx512f"))) void transpose_blocks_avx512(float* __restrict xt,
                                                                const float* __restrict x,
                                                                int64_t N, int64_t IC,
                                                                int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    float* d = xt + j * IC * kBlock;
    const int64_t n0 = j * kBlock, nb = N - n0 < kBlock ? N - n0 : kBlock;
    for (int64_t i0 = 0; i0 < IC; i0 += 16) {
      const int64_t nc = IC - i0 < 16 ? IC - i0 : 16;
      const __mmask16 m = __mmask16((1u << nc) - 1u);
      __m512 r[16], t[16];
      for (int k = 0; k < 16; ++k)
        r[k] = k < nb ? _mm512_maskz_loadu_ps(m, x + (n0 + k) * IC + i0) : _mm512_setzero_ps();
      // t[2k], t[2k+1]: rows 2k, 2k+1 interleaved; per 128-bit lane L (columns 4L..4L+3),
      // columns 4L, 4L+1 and 4L+2, 4L+3.
      for (int k = 0; k < 8; ++k) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
      }
      // q[g][c]: rows 4g..4g+3 of column 4L + c in lane L.
      __m512 q[4][4];
      for (int g = 0; g < 4; ++g) {
        const __m512 a0 = t[4 * g], b0 = t[4 * g + 1], a1 = t[4 * g + 2], b1 = t[4 * g + 3];
        q[g][0] = _mm512_shuffle_ps(a0, a1, 0x44);
        q[g][1] = _mm512_shuffle_ps(a0, a1, 0xEE);
        q[g][2] = _mm512_shuffle_ps(b0, b1, 0x44);
        q[g][3] = _mm512_shuffle_ps(b0, b1, 0xEE);
      }
      // Column 4L + c: lane L of q[0][c], q[1][c], q[2][c], q[3][c].
      for (int c = 0; c < 4; ++c) {
        const __m512 u0 = _mm512_shuffle_f32x4(q[0][c], q[1][c], 0x44);
        const __m512 u1 = _mm512_shuffle_f32x4(q[0][c], q[1][c], 0xEE);
        const __m512 u2 = _mm512_shuffle_f32x4(q[2][c], q[3][c], 0x44);
        const __m512 u3 = _mm512_shuffle_f32x4(q[2][c], q[3][c], 0xEE);
        const __m512 col[4] = {_mm512_shuffle_f32x4(u0, u2, 0x88),
                               _mm512_shuffle_f32x4(u0, u2, 0xDD),
                               _mm512_shuffle_f32x4(u1, u3, 0x88),
                               _mm512_shuffle_f32x4(u1, u3, 0xDD)};
        for (int L = 0; L < 4; ++L)
          if (4 * L + c < nc) _mm512_storeu_ps(d + (i0 + 4 * L + c) * kBlock, col[L]);
      }
    }
  }
}
#endif

// Rows of blocks j0..j1 of y: y[16j + r, o] = Σ_p values[p] · xt_j[indices[p], r] + b[o],
// the nonzeros going round-robin to 4 partial sums (p mod 4) added as
// ((s0 + s1) + (s2 + s3)).
FASTNN_CLONES void columns_axpy(float* __restrict y, const float* __restrict xt,
                                const int32_t* __restrict indptr,
                                const int32_t* __restrict indices,
                                const float* __restrict values, const float* b, int64_t N,
                                int64_t IC, int64_t OC, int64_t j0, int64_t j1) {
  for (int64_t n0 = j0 * kBlock; n0 < std::min(N, j1 * kBlock); n0 += kBlock) {
    const int64_t nb = N - n0 < kBlock ? N - n0 : kBlock;
    const float* base = xt + (n0 / kBlock) * IC * kBlock;
    for (int64_t o = 0; o < OC; ++o) {
      float acc[4][kBlock] = {};
      const int64_t p0 = indptr[o], p1 = indptr[o + 1];
      int64_t p = p0;
      for (; p + 4 <= p1; p += 4)
        for (int k = 0; k < 4; ++k) {
          const float v = values[p + k];
          const float* row = base + int64_t(indices[p + k]) * kBlock;
#pragma omp simd
          for (int64_t r = 0; r < kBlock; ++r) acc[k][r] += v * row[r];
        }
      for (int k = 0; p < p1; ++p, ++k) {
        const float v = values[p];
        const float* row = base + int64_t(indices[p]) * kBlock;
#pragma omp simd
        for (int64_t r = 0; r < kBlock; ++r) acc[k][r] += v * row[r];
      }
      const float bias = b ? b[o] : 0.0f;
      for (int64_t r = 0; r < nb; ++r)
        y[(n0 + r) * OC + o] = ((acc[0][r] + acc[1][r]) + (acc[2][r] + acc[3][r])) + bias;
    }
  }
}

#if defined(FASTNN_SPARSE_AVX512)
// columns_axpy with AVX-512: one register per partial sum.
__attribute__((target("avx512f,fma"))) void columns_axpy_avx512(
    float* __restrict y, const float* __restrict xt, const int32_t* __restrict indptr,
    const int32_t* __restrict indices, const float* __restrict values, const float* b,
    int64_t N, int64_t IC, int64_t OC, int64_t j0, int64_t j1) {
  alignas(64) float out[kBlock];
  for (int64_t n0 = j0 * kBlock; n0 < std::min(N, j1 * kBlock); n0 += kBlock) {
    const int64_t nb = N - n0 < kBlock ? N - n0 : kBlock;
    const float* base = xt + (n0 / kBlock) * IC * kBlock;
    for (int64_t o = 0; o < OC; ++o) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const int64_t p0 = indptr[o], p1 = indptr[o + 1];
      int64_t p = p0;
      for (; p + 4 <= p1; p += 4) {
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(values[p]),
                             _mm512_loadu_ps(base + int64_t(indices[p]) * kBlock), a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(values[p + 1]),
                             _mm512_loadu_ps(base + int64_t(indices[p + 1]) * kBlock), a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(values[p + 2]),
                             _mm512_loadu_ps(base + int64_t(indices[p + 2]) * kBlock), a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(values[p + 3]),
                             _mm512_loadu_ps(base + int64_t(indices[p + 3]) * kBlock), a3);
      }
      __m512* a[4] = {&a0, &a1, &a2, &a3};
      for (int k = 0; p < p1; ++p, ++k)
        *a[k] = _mm512_fmadd_ps(_mm512_set1_ps(values[p]),
                                _mm512_loadu_ps(base + int64_t(indices[p]) * kBlock), *a[k]);
      _mm512_store_ps(out, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
      const float bias = b ? b[o] : 0.0f;
      for (int64_t r = 0; r < nb; ++r) y[(n0 + r) * OC + o] = out[r] + bias;
    }
  }
}
#endif

// Columns per parallel chunk: an even share per thread, but at least ~32K multiply-adds
// (below that, waking a second thread costs more than it saves; measured at batch 1).
int64_t column_grain(int64_t OC, int64_t nnz, int64_t N) {
  const int64_t t = num_threads();
  int64_t g = t > 1 ? (OC + t - 1) / t : OC;
  const int64_t per_col = (nnz * N) / (OC > 0 ? OC : 1) + 1;
  const int64_t lo = (32768 + per_col - 1) / per_col;
  return g < lo ? lo : g;
}

}  // namespace

// y (N,OC) = act(x (N,IC) · w + b), w (IC,OC) as CSC (indptr, indices, values)
void sparse_dense_forward(float* y, float* xt, const float* x, const int32_t* indptr,
                          const int32_t* indices, const float* values, const float* b,
                          int64_t N, int64_t IC, int64_t OC, Act act) {
  if (N <= 0 || OC <= 0) return;
  const int64_t nnz = indptr[OC];
  const int64_t grain = column_grain(OC, nnz, N);
  if (N < kSparseDenseBatchVec) {
#if defined(FASTNN_SPARSE_AVX512)
    if (std::strcmp(gemm_isa(), "avx512") == 0) {
      parallel_for(OC, grain, [=](int64_t o0, int64_t o1) {
        columns_gather_avx512(y, x, indptr, indices, values, b, N, IC, OC, o0, o1);
      });
    } else
#endif
    parallel_for(OC, grain, [=](int64_t o0, int64_t o1) {
      columns_gather(y, x, indptr, indices, values, b, N, IC, OC, o0, o1);
    });
  } else {
    // Threads own blocks of 16 rows: each transposes its blocks and sums every column
    // for them, so no thread reads what another wrote. (Columns split between threads
    // over a shared xt were slower on two threads than on one at every batch up to 256.)
    const int64_t blocks = (N + kBlock - 1) / kBlock;
    xt += (64 - reinterpret_cast<uintptr_t>(xt) % 64) % 64 / sizeof(float);  // see the header
#if defined(FASTNN_SPARSE_AVX512)
    const bool avx512 = std::strcmp(gemm_isa(), "avx512") == 0;
#endif
    parallel_for(blocks, 1, [=](int64_t j0, int64_t j1) {
#if defined(FASTNN_SPARSE_AVX512)
      if (avx512) {
        transpose_blocks_avx512(xt, x, N, IC, j0, j1);
        columns_axpy_avx512(y, xt, indptr, indices, values, b, N, IC, OC, j0, j1);
        return;
      }
#endif
      transpose_blocks(xt, x, N, IC, j0, j1);
      columns_axpy(y, xt, indptr, indices, values, b, N, IC, OC, j0, j1);
    });
  }
  if (act != Act::linear) act_forward(y, y, N * OC, act);
}

// ---- plain twin -------------------------------------------------------------------


// y[n, o] = act(Σ_p values[p] · x[n, indices[p]] + b[o]), p in order
void sparse_dense_forward_naive(float* y, float* /*xt*/, const float* x,
                                const int32_t* indptr, const int32_t* indices,
                                const float* values, const float* b, int64_t N, int64_t IC,
                                int64_t OC, Act act) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < OC; ++o) {
      float acc = 0.0f;
      for (int64_t p = indptr[o]; p < indptr[o + 1]; ++p)
        acc += values[p] * x[n * IC + indices[p]];
      if (b) acc += b[o];
      y[n * OC + o] = vmath::exact_act(acc, act);
    }
  }
}

}  // namespace fastnn
