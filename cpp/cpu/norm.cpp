// Batch normalisation over the last axis of x (M,C).
//
// Per-channel sums over the M rows are taken in float64 over a fixed partition of the rows
// (kBlocks contiguous blocks, whatever the thread count), then the block sums are added in
// block order: the statistics, and so every output, are identical for any thread count.
// The variance uses sums of d = x − x[0] (a per-channel shift) so that a large mean does
// not cancel the digits of a small variance. Channels are processed in chunks of kChunk
// so the block sums fit on the stack (kernels never allocate).
#include "fastnn/norm.h"

#include <algorithm>
#include <cmath>

#include "fastnn/common.h"

namespace fastnn {

namespace {

constexpr int64_t kBlocks = 16;    // fixed row partition of the reductions
constexpr int64_t kChunk = 128;    // channels per chunk of block sums
constexpr int64_t kGrainWork = 1 << 14;

int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(C, 1)); }

// Rows [begin, end) of block b of M rows in P blocks.
inline int64_t block_start(int64_t b, int64_t M, int64_t P) { return b * M / P; }

// s1, s2 (cb) = Σ_rows d, Σ_rows d² in float64, d = x − shift, over rows [r0, r1) and
// channels [c0, c0 + cb) of x (M,C).
FASTNN_CLONES
void moments_block(double* s1, double* s2, const float* x, const float* shift, int64_t r0,
                   int64_t r1, int64_t C, int64_t c0, int64_t cb) {
  for (int64_t c = 0; c < cb; ++c) s1[c] = s2[c] = 0.0;
  const float* k = shift + c0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * C + c0;
#pragma omp simd
    for (int64_t c = 0; c < cb; ++c) {
      const double d = static_cast<double>(xr[c]) - static_cast<double>(k[c]);
      s1[c] += d;
      s2[c] += d * d;
    }
  }
}

// s1, s2 (cb) = Σ_rows dy, Σ_rows dy·(x − mean) in float64 over rows [r0, r1), channels
// [c0, c0 + cb).
FASTNN_CLONES
void dy_sums_block(double* s1, double* s2, const float* dy, const float* x, const float* mean,
                   int64_t r0, int64_t r1, int64_t C, int64_t c0, int64_t cb) {
  for (int64_t c = 0; c < cb; ++c) s1[c] = s2[c] = 0.0;
  const float* m = mean + c0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* d = dy + r * C + c0;
    const float* xr = x + r * C + c0;
#pragma omp simd
    for (int64_t c = 0; c < cb; ++c) {
      const double g = d[c];
      s1[c] += g;
      s2[c] += g * (static_cast<double>(xr[c]) - static_cast<double>(m[c]));
    }
  }
}

// y rows (rows,C) = (x − m)·(r·g) + b; g, b may be nullptr (1, 0).
FASTNN_CLONES
void apply_rows(float* y, const float* x, const float* m, const float* r, const float* g,
                const float* b, int64_t rows, int64_t C) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = x + i * C;
    float* yr = y + i * C;
    if (g && b) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m[c]) * (r[c] * g[c]) + b[c];
    } else if (g) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m[c]) * (r[c] * g[c]);
    } else if (b) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m[c]) * r[c] + b[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m[c]) * r[c];
    }
  }
}

// Training-mode dx rows, channels [c0, c0 + cb): dx [+]= k·(dy − a − (x − m)·s), with the
// per-channel constants k, a, s (cb) of this chunk.
FASTNN_CLONES
void dx_train_rows(float* dx, const float* dy, const float* x, const float* m, const float* k,
                   const float* a, const float* s, int64_t rows, int64_t C, int64_t c0,
                   int64_t cb, bool accumulate) {
  const float* mc = m + c0;
  for (int64_t i = 0; i < rows; ++i) {
    float* o = dx + i * C + c0;
    const float* d = dy + i * C + c0;
    const float* xr = x + i * C + c0;
    if (accumulate) {
#pragma omp simd
      for (int64_t c = 0; c < cb; ++c) o[c] += k[c] * (d[c] - a[c] - (xr[c] - mc[c]) * s[c]);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cb; ++c) o[c] = k[c] * (d[c] - a[c] - (xr[c] - mc[c]) * s[c]);
    }
  }
}

// Inference-mode dx rows: dx [+]= (g·r)·dy; g may be nullptr (1).
FASTNN_CLONES
void dx_infer_rows(float* dx, const float* dy, const float* r, const float* g, int64_t rows,
                   int64_t C, bool accumulate) {
  for (int64_t i = 0; i < rows; ++i) {
    float* o = dx + i * C;
    const float* d = dy + i * C;
    if (accumulate) {
      if (g) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += (r[c] * g[c]) * d[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] += r[c] * d[c];
      }
    } else {
      if (g) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = (r[c] * g[c]) * d[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) o[c] = r[c] * d[c];
      }
    }
  }
}

// Per-channel float64 sums over the M rows for channels [c0, c0 + cb): block b's sums go
// to part[b][0..1][0..cb), then t1, t2 (cb) receive the total in block order.
// fn(s1, s2, r0, r1) computes one block's sums.
template <class Fn>
void blocked_sums(double* t1, double* t2, int64_t M, int64_t cb, Fn&& fn) {
  double part[kBlocks][2][kChunk];
  const int64_t P = std::min<int64_t>(kBlocks, M);
  const int64_t grain = M * cb >= 2 * kGrainWork ? 1 : P;  // small: one thread
  parallel_for(P, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      fn(part[b][0], part[b][1], block_start(b, M, P), block_start(b + 1, M, P));
  });
  for (int64_t c = 0; c < cb; ++c) {
    double a = 0.0, s = 0.0;
    for (int64_t b = 0; b < P; ++b) {
      a += part[b][0][c];
      s += part[b][1][c];
    }
    t1[c] = a;
    t2[c] = s;
  }
}

}  // namespace

// y (M,C) = gamma·(x − μ)/√(σ² + eps) + beta with batch statistics; updates running stats
void batch_norm_forward_train(float* y, float* mean, float* invstd, float* running_mean,
                              float* running_var, const float* x, const float* gamma,
                              const float* beta, int64_t M, int64_t C, float momentum,
                              float eps) {
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t cb = std::min(kChunk, C - c0);
    double s1[kChunk], s2[kChunk];
    blocked_sums(s1, s2, M, cb, [&](double* a, double* b, int64_t r0, int64_t r1) {
      moments_block(a, b, x, x, r0, r1, C, c0, cb);
    });
    for (int64_t c = 0; c < cb; ++c) {
      const double d = s1[c] / static_cast<double>(M);
      const double mu = static_cast<double>(x[c0 + c]) + d;
      const double var = std::max(s2[c] / static_cast<double>(M) - d * d, 0.0);
      mean[c0 + c] = static_cast<float>(mu);
      invstd[c0 + c] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
      if (running_mean)
        running_mean[c0 + c] = static_cast<float>(
            momentum * static_cast<double>(running_mean[c0 + c]) + (1.0 - momentum) * mu);
      if (running_var)
        running_var[c0 + c] = static_cast<float>(
            momentum * static_cast<double>(running_var[c0 + c]) + (1.0 - momentum) * var);
    }
  }
  parallel_for(M, row_grain(C), [&](int64_t b, int64_t e) {
    apply_rows(y + b * C, x + b * C, mean, invstd, gamma, beta, e - b, C);
  });
}

// Training-mode forward (plain loops, float64 two-pass statistics)
void batch_norm_forward_train_naive(float* y, float* mean, float* invstd,
                                    float* running_mean, float* running_var, const float* x,
                                    const float* gamma, const float* beta, int64_t M,
                                    int64_t C, float momentum, float eps) {
  for (int64_t c = 0; c < C; ++c) {
    double s = 0.0;
    for (int64_t r = 0; r < M; ++r) s += x[r * C + c];
    const double mu = s / static_cast<double>(M);
    double v = 0.0;
    for (int64_t r = 0; r < M; ++r) {
      const double d = x[r * C + c] - mu;
      v += d * d;
    }
    const double var = v / static_cast<double>(M);
    mean[c] = static_cast<float>(mu);
    invstd[c] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
    if (running_mean)
      running_mean[c] = static_cast<float>(momentum * static_cast<double>(running_mean[c]) +
                                           (1.0 - momentum) * mu);
    if (running_var)
      running_var[c] = static_cast<float>(momentum * static_cast<double>(running_var[c]) +
                                          (1.0 - momentum) * var);
  }
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < C; ++c)
      y[r * C + c] = (x[r * C + c] - mean[c]) * (invstd[c] * (gamma ? gamma[c] : 1.0f)) +
                     (beta ? beta[c] : 0.0f);
}

// y (M,C) = gamma·(x − running_mean)/√(running_var + eps) + beta
void batch_norm_forward_infer(float* y, float* mean, float* invstd, const float* x,
                              const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int64_t M,
                              int64_t C, float eps) {
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t cb = std::min(kChunk, C - c0);
    float r[kChunk];
    for (int64_t c = 0; c < cb; ++c) {
      r[c] = static_cast<float>(
          1.0 / std::sqrt(static_cast<double>(running_var[c0 + c]) + static_cast<double>(eps)));
      if (mean) mean[c0 + c] = running_mean[c0 + c];
      if (invstd) invstd[c0 + c] = r[c];
    }
    // One chunk of channels at a time keeps r on the stack; rows of C ≤ kChunk (the usual
    // case) are then processed in a single pass.
    const float* g = gamma ? gamma + c0 : nullptr;
    const float* b = beta ? beta + c0 : nullptr;
    if (cb == C) {
      parallel_for(M, row_grain(C), [&](int64_t i, int64_t e) {
        apply_rows(y + i * C, x + i * C, running_mean, r, g, b, e - i, C);
      });
    } else {
      parallel_for(M, row_grain(cb), [&](int64_t i, int64_t e) {
        for (int64_t k = i; k < e; ++k)
          apply_rows(y + k * C + c0, x + k * C + c0, running_mean + c0, r, g, b, 1, cb);
      });
    }
  }
}

// Inference-mode forward (plain loops)
void batch_norm_forward_infer_naive(float* y, float* mean, float* invstd, const float* x,
                                    const float* gamma, const float* beta,
                                    const float* running_mean, const float* running_var,
                                    int64_t M, int64_t C, float eps) {
  for (int64_t c = 0; c < C; ++c) {
    const float r = static_cast<float>(
        1.0 / std::sqrt(static_cast<double>(running_var[c]) + static_cast<double>(eps)));
    if (mean) mean[c] = running_mean[c];
    if (invstd) invstd[c] = r;
    for (int64_t i = 0; i < M; ++i)
      y[i * C + c] = (x[i * C + c] - running_mean[c]) * (r * (gamma ? gamma[c] : 1.0f)) +
                     (beta ? beta[c] : 0.0f);
  }
}

// dx (M,C) += ..., dgamma (C) += Σ dy·x̂, dbeta (C) += Σ dy
void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                         const float* mean, const float* invstd, const float* x,
                         const float* gamma, int64_t M, int64_t C, bool training,
                         bool accumulate) {
  const bool need_sums = dgamma || dbeta || (dx && training);
  for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
    const int64_t cb = std::min(kChunk, C - c0);
    double s1[kChunk], s2[kChunk];
    if (need_sums) {
      blocked_sums(s1, s2, M, cb, [&](double* a, double* b, int64_t r0, int64_t r1) {
        dy_sums_block(a, b, dy, x, mean, r0, r1, C, c0, cb);
      });
      for (int64_t c = 0; c < cb; ++c) {
        if (dgamma) dgamma[c0 + c] += static_cast<float>(s2[c] * invstd[c0 + c]);
        if (dbeta) dbeta[c0 + c] += static_cast<float>(s1[c]);
      }
    }
    if (dx && training) {
      float k[kChunk], a[kChunk], s[kChunk];
      for (int64_t c = 0; c < cb; ++c) {
        const double r = invstd[c0 + c];
        k[c] = static_cast<float>(r * (gamma ? gamma[c0 + c] : 1.0f));
        a[c] = static_cast<float>(s1[c] / static_cast<double>(M));
        s[c] = static_cast<float>(r * r * s2[c] / static_cast<double>(M));
      }
      parallel_for(M, row_grain(cb), [&](int64_t b, int64_t e) {
        dx_train_rows(dx + b * C, dy + b * C, x + b * C, mean, k, a, s, e - b, C, c0, cb,
                      accumulate);
      });
    }
  }
  if (dx && !training) {
    parallel_for(M, row_grain(C), [&](int64_t b, int64_t e) {
      dx_infer_rows(dx + b * C, dy + b * C, invstd, gamma, e - b, C, accumulate);
    });
  }
}

// Backward (plain loops, float64 sums)
void batch_norm_backward_naive(float* dx, float* dgamma, float* dbeta, const float* dy,
                               const float* mean, const float* invstd, const float* x,
                               const float* gamma, int64_t M, int64_t C, bool training,
                               bool accumulate) {
  for (int64_t c = 0; c < C; ++c) {
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t i = 0; i < M; ++i) {
      sdy += dy[i * C + c];
      sdyx += static_cast<double>(dy[i * C + c]) *
              (static_cast<double>(x[i * C + c]) - static_cast<double>(mean[c]));
    }
    const double r = invstd[c], g = gamma ? gamma[c] : 1.0f;
    if (dgamma) dgamma[c] += static_cast<float>(sdyx * r);
    if (dbeta) dbeta[c] += static_cast<float>(sdy);
    if (!dx) continue;
    for (int64_t i = 0; i < M; ++i) {
      double d = dy[i * C + c];
      if (training)
        d -= sdy / M + (static_cast<double>(x[i * C + c]) - mean[c]) * r * r * sdyx / M;
      const float v = static_cast<float>(g * r * d);
      dx[i * C + c] = accumulate ? dx[i * C + c] + v : v;
    }
  }
}

}  // namespace fastnn
