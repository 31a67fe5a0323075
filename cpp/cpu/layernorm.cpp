// Layer normalisation over the last axis of x (M,C): statistics per row.
//
// Forward and dx are row-parallel: each row is owned by one thread and reduced over its C
// values in float32 with a two-pass mean/variance (a vector reduction whose order is fixed
// by the compiled code, not by the thread count). dgamma and dbeta sum over the M rows:
// in float64 over a fixed partition of the rows (kBlocks contiguous blocks, whatever the
// thread count), block sums then added in block order, channels in chunks of kChunk so
// the partial sums live on the stack. Results are identical for any thread count.
#include "fastnn/layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

namespace {

constexpr int64_t kBlocks = 16;    // fixed row partition of the parameter-gradient sums
constexpr int64_t kChunk = 128;    // channels per chunk of block sums
constexpr int64_t kGrainWork = 1 << 14;

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(C, 1)); }

inline int64_t block_start(int64_t b, int64_t M, int64_t P) { return b * M / P; }

// rows (rows,C) of y = (x − μ)·r·g + b; mean, rstd (rows) may be nullptr.
FASTNN_CLONES
void forward_rows(float* y, float* mean, float* rstd, const float* x, const float* g,
                  const float* b, int64_t rows, int64_t C, float eps) {
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = x + i * C;
    float* yr = y + i * C;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += xr[c];
    const float mu = s * inv_c;
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) {
      const float d = xr[c] - mu;
      v += d * d;
    }
    const float r = 1.0f / std::sqrt(v * inv_c + eps);
    if (mean) mean[i] = mu;
    if (rstd) rstd[i] = r;
    if (g && b) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * r * g[c] + b[c];
    } else if (g) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * r * g[c];
    } else if (b) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * r + b[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * r;
    }
  }
}

// dx rows (rows,C) (+)= r·(gdy − mean(gdy) − x̂·mean(gdy·x̂)), gdy = g·dy; g may be nullptr.
FASTNN_CLONES
void dx_rows(float* dx, const float* dy, const float* x, const float* mean, const float* rstd,
             const float* g, int64_t rows, int64_t C, bool add) {
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t i = 0; i < rows; ++i) {
    const float* d = dy + i * C;
    const float* xr = x + i * C;
    float* o = dx + i * C;
    const float mu = mean[i], r = rstd[i];
    float s1 = 0.0f, s2 = 0.0f;
    if (g) {
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t c = 0; c < C; ++c) {
        const float gd = g[c] * d[c];
        s1 += gd;
        s2 += gd * ((xr[c] - mu) * r);
      }
    } else {
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t c = 0; c < C; ++c) {
        s1 += d[c];
        s2 += d[c] * ((xr[c] - mu) * r);
      }
    }
    const float a = s1 * inv_c, b = s2 * inv_c;
    if (!add) std::memset(o, 0, size_t(C) * sizeof(float));  // one row, then +=
    if (g) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] += r * (g[c] * d[c] - a - ((xr[c] - mu) * r) * b);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] += r * (d[c] - a - ((xr[c] - mu) * r) * b);
    }
  }
}

// s1, s2 (cb) = Σ dy, Σ dy·x̂ in float64 over rows [r0, r1), channels [c0, c0 + cb).
FASTNN_CLONES
void param_sums_block(double* s1, double* s2, const float* dy, const float* x,
                      const float* mean, const float* rstd, int64_t r0, int64_t r1, int64_t C,
                      int64_t c0, int64_t cb) {
  for (int64_t c = 0; c < cb; ++c) s1[c] = s2[c] = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* d = dy + r * C + c0;
    const float* xr = x + r * C + c0;
    const float mu = mean[r], rs = rstd[r];
#pragma omp simd
    for (int64_t c = 0; c < cb; ++c) {
      const double g = d[c];
      s1[c] += g;
      s2[c] += g * static_cast<double>((xr[c] - mu) * rs);
    }
  }
}

}  // namespace

// y (M,C), mean (M), rstd (M) = layer_norm(x (M,C); gamma (C), beta (C))
void layer_norm_forward(float* y, float* mean, float* rstd, const float* x,
                        const float* gamma, const float* beta, int64_t M, int64_t C,
                        float eps) {
  parallel_for(M, row_grain(C), [&](int64_t b, int64_t e) {
    forward_rows(y + b * C, mean ? mean + b : nullptr, rstd ? rstd + b : nullptr, x + b * C,
                 gamma, beta, e - b, C, eps);
  });
}

// dx (M,C) +=, dgamma (C) +=, dbeta (C) += from dy (M,C), mean/rstd (M), x (M,C), gamma (C)
void layer_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                         const float* mean, const float* rstd, const float* x,
                         const float* gamma, int64_t M, int64_t C, bool accumulate_dx) {
  if (dx) {
    parallel_for(M, row_grain(C), [&](int64_t b, int64_t e) {
      dx_rows(dx + b * C, dy + b * C, x + b * C, mean + b, rstd + b, gamma, e - b, C,
              accumulate_dx);
    });
  }
  if (!dgamma && !dbeta) return;
  const int64_t P = std::min<int64_t>(kBlocks, M);
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t cb = std::min(kChunk, C - c0);
    double part[kBlocks][2][kChunk];
    const int64_t grain = M * cb >= 2 * kGrainWork ? 1 : P;  // small: one thread
    parallel_for(P, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        param_sums_block(part[b][0], part[b][1], dy, x, mean, rstd, block_start(b, M, P),
                         block_start(b + 1, M, P), C, c0, cb);
    });
    for (int64_t c = 0; c < cb; ++c) {
      double s1 = 0.0, s2 = 0.0;
      for (int64_t b = 0; b < P; ++b) {
        s1 += part[b][0][c];
        s2 += part[b][1][c];
      }
      if (dbeta) dbeta[c0 + c] += static_cast<float>(s1);
      if (dgamma) dgamma[c0 + c] += static_cast<float>(s2);
    }
  }
}

// ---- plain twins -------------------------------------------------------------------

// y (M,C), mean (M), rstd (M) = layer_norm(x (M,C); gamma (C), beta (C)), float64 statistics
void layer_norm_forward_naive(float* y, float* mean, float* rstd, const float* x,
                              const float* gamma, const float* beta, int64_t M, int64_t C,
                              float eps) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * C;
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += xr[c];
    const double mu = s / static_cast<double>(C);
    double v = 0.0;
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - mu) * (xr[c] - mu);
    const double r = 1.0 / std::sqrt(v / static_cast<double>(C) + static_cast<double>(eps));
    for (int64_t c = 0; c < C; ++c)
      y[m * C + c] = static_cast<float>((xr[c] - mu) * r * (gamma ? gamma[c] : 1.0f) +
                                        (beta ? beta[c] : 0.0f));
    if (mean) mean[m] = static_cast<float>(mu);
    if (rstd) rstd[m] = static_cast<float>(r);
  }
}

// dx (M,C) +=, dgamma (C) +=, dbeta (C) += (float64 sums)
void layer_norm_backward_naive(float* dx, float* dgamma, float* dbeta, const float* dy,
                               const float* mean, const float* rstd, const float* x,
                               const float* gamma, int64_t M, int64_t C, bool accumulate_dx) {
  for (int64_t m = 0; m < M; ++m) {
    const float* d = dy + m * C;
    const float* xr = x + m * C;
    const double mu = mean[m], r = rstd[m];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double gd = (gamma ? gamma[c] : 1.0f) * static_cast<double>(d[c]);
      s1 += gd;
      s2 += gd * (xr[c] - mu) * r;
    }
    if (!dx) continue;
    for (int64_t c = 0; c < C; ++c) {
      const double gd = (gamma ? gamma[c] : 1.0f) * static_cast<double>(d[c]);
      const double xh = (xr[c] - mu) * r;
      const float v = static_cast<float>(r * (gd - s1 / C - xh * s2 / C));
      dx[m * C + c] = accumulate_dx ? dx[m * C + c] + v : v;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t m = 0; m < M; ++m) {
      s1 += dy[m * C + c];
      s2 += static_cast<double>(dy[m * C + c]) * (x[m * C + c] - static_cast<double>(mean[m])) *
            rstd[m];
    }
    if (dbeta) dbeta[c] += static_cast<float>(s1);
    if (dgamma) dgamma[c] += static_cast<float>(s2);
  }
}

}  // namespace fastnn
