// Embedding lookup (gather of table rows, plus an optional position row) and its backward
// (scatter-add into the table, sum over the batch into the position table).
//
// Forward is parallel over output rows. Backward must add many rows into the same table
// row without atomics and in a fixed order: the table rows [0, V) are split into one
// contiguous range per part, and each part scans all N·T ids, adding the rows that fall
// in its range. Every table row therefore receives its terms in increasing (n, t) order,
// which is exactly the order of the plain twin: the result is bitwise the same for any
// thread count. The scan of the ids is repeated per part, so the part count is the thread
// count (a few), not the number of rows.
#include "fastnn/embedding.h"

#include <algorithm>
#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

namespace {

constexpr int64_t kGrainWork = 1 << 14;  // floats moved per parallel chunk, at least

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(C, 1)); }

// y (C) = a (C) + b (C)
FASTNN_CLONES
void add_row(float* __restrict y, const float* __restrict a, const float* __restrict b,
             int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) y[c] = a[c] + b[c];
}

// y (C) += a (C)
FASTNN_CLONES
void acc_row(float* __restrict y, const float* __restrict a, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) y[c] += a[c];
}

// Rows [r0, r1) of the flattened (N·T, C) output.
void forward_rows(float* y, const int32_t* ids, const float* w, const float* pos, int64_t T,
                  int64_t C, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* src = w + static_cast<int64_t>(ids[r]) * C;
    if (pos)
      add_row(y + r * C, src, pos + (r % T) * C, C);
    else
      std::memcpy(y + r * C, src, static_cast<size_t>(C) * sizeof(float));
  }
}

// dw rows [v0, v1) += every dy row whose id falls in that range, in increasing row order.
void scatter_range(float* dw, const float* dy, const int32_t* ids, int64_t R, int64_t C,
                   int64_t v0, int64_t v1) {
  for (int64_t r = 0; r < R; ++r) {
    const int64_t v = ids[r];
    if (v >= v0 && v < v1) acc_row(dw + v * C, dy + r * C, C);
  }
}

// dpos rows [t0, t1) += Σ_n dy[n, t], n increasing.
void pos_range(float* dpos, const float* dy, int64_t N, int64_t T, int64_t C, int64_t t0,
               int64_t t1) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = t0; t < t1; ++t) acc_row(dpos + t * C, dy + (n * T + t) * C, C);
}

}  // namespace

// y (N,T,C) = w (V,C)[ids (N,T)] + pos (T,C)
void embedding_forward(float* y, const int32_t* ids, const float* w, const float* pos,
                       int64_t N, int64_t T, int64_t V, int64_t C) {
  (void)V;
  parallel_for(N * T, row_grain(C), [&](int64_t r0, int64_t r1) {
    forward_rows(y, ids, w, pos, T, C, r0, r1);
  });
}

// dw (V,C) += scatter of dy (N,T,C) by ids (N,T); dpos (T,C) += Σ_N dy
void embedding_backward(float* dw, float* dpos, const float* dy, const int32_t* ids,
                        int64_t N, int64_t T, int64_t V, int64_t C) {
  const int64_t R = N * T;
  if (dw) {
    // One part per thread when the work pays for waking them; any split gives the same bits.
    const int64_t parts = R * C >= 4 * kGrainWork ? std::min<int64_t>(num_threads(), V) : 1;
    parallel_for(parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        scatter_range(dw, dy, ids, R, C, p * V / parts, (p + 1) * V / parts);
    });
  }
  if (dpos) {
    parallel_for(T, std::max<int64_t>(1, row_grain(C) / std::max<int64_t>(N, 1)),
                 [&](int64_t t0, int64_t t1) { pos_range(dpos, dy, N, T, C, t0, t1); });
  }
}

// ---- plain twins -------------------------------------------------------------------

// y (N,T,C) = w (V,C)[ids (N,T)] + pos (T,C)
void embedding_forward_naive(float* y, const int32_t* ids, const float* w, const float* pos,
                             int64_t N, int64_t T, int64_t V, int64_t C) {
  (void)V;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = n * T + t;
      const float* src = w + static_cast<int64_t>(ids[r]) * C;
      for (int64_t c = 0; c < C; ++c) y[r * C + c] = pos ? src[c] + pos[t * C + c] : src[c];
    }
}

// dw (V,C) += scatter of dy (N,T,C) by ids (N,T); dpos (T,C) += Σ_N dy
void embedding_backward_naive(float* dw, float* dpos, const float* dy, const int32_t* ids,
                              int64_t N, int64_t T, int64_t V, int64_t C) {
  (void)V;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t r = n * T + t;
      for (int64_t c = 0; c < C; ++c) {
        if (dw) dw[static_cast<int64_t>(ids[r]) * C + c] += dy[r * C + c];
        if (dpos) dpos[t * C + c] += dy[r * C + c];
      }
    }
}

}  // namespace fastnn
