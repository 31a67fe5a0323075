// Pieces shared by the recurrent kernels (lstm.cpp, gru.cpp, simple_rnn.cpp); internal
// to cpp/cpu.
//
// Every recurrent kernel has the same shape:
//  1. the input projection of all N·T steps as one GEMM on all threads (x·W, plus bias);
//  2. the recurrence, split over the batch: each thread takes a contiguous chunk of
//     samples and runs it through all T steps on its own (a per-step product of its rows
//     with the recurrent kernel, then one fused pass over the gates). Samples do not
//     interact, so no step needs a barrier; and each row is computed by the same code
//     whatever the chunk, so results are bitwise the same for any thread count;
//  3. in backward, the weight gradients as single GEMMs over all N·T rows afterwards,
//     which sum over time without atomics.
// The plain twins run the same steps with gemm_naive, libm and one thread.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastnn/common.h"
#include "fastnn/gemm.h"
#include "vmath.h"

namespace fastnn::rnn {

// Steps in processing order: s = 0..T-1 visits t = s, or T-1-s when reverse.
struct Steps {
  int64_t T;
  bool reverse;
  int64_t at(int64_t s) const { return reverse ? T - 1 - s : s; }
  int64_t prev(int64_t t) const { return reverse ? t + 1 : t - 1; }  // step visited before t
};

// gemm_ld's signature: the tuned driver, or gemm_naive in the plain twins.
using GemmFn = void (*)(float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                        int64_t, int64_t, bool, bool, bool);
inline GemmFn gemm_fn(bool plain) { return plain ? gemm_naive : gemm_ld; }

// The nonlinearities: vectorisable (vmath) in the kernels, libm in the plain twins.
struct FastMath {
  static FASTNN_INLINE float sigmoid(float x) { return vmath::vsigmoid(x); }
  static FASTNN_INLINE float tanh(float x) { return vmath::vtanh(x); }
};
struct PlainMath {
  static inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
  static inline float tanh(float x) { return std::tanh(x); }
};

// Runs body(n0, n1) over contiguous chunks of the N samples: one chunk per thread, or
// one chunk in all when plain or when the recurrence is too little work to share
// (cost = multiply-adds per sample over all steps).
template <class Body>
void batch_chunks(int64_t N, double cost, bool plain, Body&& body) {
  constexpr double kMinCostPerThread = 1 << 16;
  int64_t parts = plain ? 1 : std::min<int64_t>(num_threads(), N);
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, int64_t(cost * N / kMinCostPerThread)));
  if (parts <= 1) {
    if (N > 0) {
      const FlushDenormals ftz;
      body(int64_t(0), N);
    }
    return;
  }
  parallel_for(N, (N + parts - 1) / parts, body);
}

// y (rows, cols; row stride ld) += b (cols), for every row.
[[maybe_unused]] FASTNN_CLONES static void add_bias(float* y, const float* b, int64_t rows, int64_t cols,
                                   int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * ld;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) yr[j] += b[j];
  }
}

// db (cols) += Σ_r src[r] over rows (row stride ld). Each thread owns a range of columns
// and sums its rows in increasing order (the plain twin's order).
[[maybe_unused]] FASTNN_CLONES static void colsum_cols(float* db, const float* src, int64_t rows, int64_t ld,
                                      int64_t j0, int64_t j1) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) db[j] += s[j];
  }
}
[[maybe_unused]] static void colsum_add(float* db, const float* src, int64_t rows, int64_t cols, int64_t ld,
                       bool plain) {
  if (plain || rows * cols < (1 << 16)) {
    colsum_cols(db, src, rows, ld, 0, cols);
    return;
  }
  // Column ranges of whole cache lines, so that two threads never write one line of db.
  const int64_t grain = std::max<int64_t>(16, (cols / std::max(num_threads(), 1) + 15) / 16 * 16);
  parallel_for(cols, grain, [&](int64_t j0, int64_t j1) { colsum_cols(db, src, rows, ld, j0, j1); });
}

// dst (cols, rows) = srcᵀ for src (rows, cols; row stride ld). The backward passes use
// Rᵀ once per call instead of a transposed operand in every step's product, which the
// GEMM would have to pack again at every step.
inline void transpose(float* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) dst[j * rows + i] = src[i * ld + j];
}

// dst (m, U) = src (m, U; row stride ld) ⊙ rmask (m, U)
inline void masked_copy(float* dst, const float* src, int64_t ld, const float* rmask,
                        int64_t m, int64_t U) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t u = 0; u < U; ++u) dst[r * U + u] = src[r * ld + u] * rmask[r * U + u];
}

// The operand of a step's recurrent product for m rows of h_prev (row stride ld): h_prev
// itself, or h_prev ⊙ rmask copied into buf (m, U); p is null when there is no h_prev.
struct Prev {
  const float* p;
  int64_t ld;
};
inline Prev masked_prev(const float* hp, int64_t ld, const float* rmask, float* buf, int64_t m,
                        int64_t U) {
  if (!hp || !rmask) return {hp, ld};
  masked_copy(buf, hp, ld, rmask, m, U);
  return {buf, U};
}

// dst (m, U) = src (m, U; row stride ld), or zeros when src is null.
inline void copy_rows(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t m,
                      int64_t U) {
  for (int64_t r = 0; r < m; ++r) {
    if (src)
      std::memcpy(dst + r * ldd, src + r * lds, size_t(U) * sizeof(float));
    else
      std::memset(dst + r * ldd, 0, size_t(U) * sizeof(float));
  }
}

// dh (U) += dy (U) when dy is given: the output's gradient at this step.
inline void add_output_grad(float* dh, const float* dy, int64_t U) {
  if (dy)
    for (int64_t u = 0; u < U; ++u) dh[u] += dy[u];
}

// hpe (U) = h_prev ⊙ rmask, the operand the step's recurrent product read: hp is the row
// of h_prev (nullptr: zeros), rmask its row of the recurrent-dropout mask or nullptr.
inline void save_prev(float* hpe, const float* hp, const float* rmask, int64_t U) {
  if (!hp)
    std::memset(hpe, 0, size_t(U) * sizeof(float));
  else if (rmask)
    masked_copy(hpe, hp, U, rmask, 1, U);
  else
    std::memcpy(hpe, hp, size_t(U) * sizeof(float));
}

// For the chunk's rows [n0, n0 + m) at step t: dh = back ⊙ rmask, the gradient that
// reaches h_prev through the recurrent product (back: (·)·Rᵀ of the step); padded steps
// keep their dh, which passes through unchanged.
inline void set_prev_grad(float* dh, const float* back, const float* rmask, const uint8_t* mask,
                          int64_t n0, int64_t m, int64_t T, int64_t t, int64_t U) {
  for (int64_t n = n0; n < n0 + m; ++n) {
    if (mask && !mask[n * T + t]) continue;
    for (int64_t u = 0; u < U; ++u)
      dh[n * U + u] = rmask ? back[n * U + u] * rmask[n * U + u] : back[n * U + u];
  }
}

}  // namespace fastnn::rnn
