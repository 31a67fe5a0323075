// Loss functions: value (sum over rows/elements, in double) and gradient (added, scaled).
//
// Each kernel splits its rows/elements into blocks whose size depends only on the
// problem size, computes one double partial sum per block (blocks run in parallel), and
// adds the partials in block order: the loss and the gradients are the same for any
// thread count. Softmax cross-entropy uses log-sum-exp with the row maximum subtracted,
// so no exponent is positive and ±1e4 logits give finite losses and gradients. The
// *_naive twins at the end are the plain serial <cmath> versions.
#include "fastnn/loss.h"

#include <cmath>

#include "fastnn/common.h"
#include "vmath.h"

namespace fastnn {

namespace {

// Probabilities below this are clipped in xent_probs (as Keras' epsilon).
constexpr float kProbEps = 1e-7f;

// Σ over [0, n) of f(begin, end) -> double, in blocks of at least min_block items and at
// most kMaxBlocks blocks: the blocking depends on n only, the partials are added in order.
template <class F>
double blocked_sum(int64_t n, int64_t min_block, F f) {
  constexpr int64_t kMaxBlocks = 256;
  int64_t block = (n + kMaxBlocks - 1) / kMaxBlocks;
  if (block < min_block) block = min_block;
  const int64_t nblocks = (n + block - 1) / block;
  double part[kMaxBlocks];
  // parallel_for's chunks are [c·block, (c+1)·block); run serially, it hands over [0, n).
  parallel_for(n, block, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; s += block) part[s / block] = f(s, s + block < e ? s + block : e);
  });
  double total = 0.0;
  for (int64_t i = 0; i < nblocks; ++i) total += part[i];
  return total;
}

// Row max and Σ e^(x−max) of one row x (C); e^(x−max) is also stored in e when not null.
FASTNN_INLINE float row_max(const float* x, int64_t C) {
  float m = x[0];
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < C; ++c) m = x[c] > m ? x[c] : m;
  return m;
}
FASTNN_INLINE float row_expsum(float* e, const float* x, float m, int64_t C) {
  float s = 0.0f;
  if (e) {
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) {
      e[c] = vmath::vexp(x[c] - m);
      s += e[c];
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += vmath::vexp(x[c] - m);
  }
  return s;
}

// Rows [r0, r1) of softmax_xent; returns Σ_rows (logsumexp(x) − x[label]).
// The exponentials of the other classes are summed apart from the label's (s_other), so
// that 1 − p[label] = s_other / s and the loss log(s / e_label) stay accurate when the
// prediction is nearly certain (p[label] ≈ 1), where p − 1 and log(s) would cancel.
FASTNN_CLONES double xent_label_rows(float* dlogits, float* probs, const float* logits,
                                     const int32_t* labels, int64_t r0, int64_t r1,
                                     int64_t C, float scale) {
  double total = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = logits + r * C;
    float* p = probs ? probs + r * C : nullptr;
    const int32_t lab = labels[r];
    const float m = row_max(x, C);
    const float e_lab = vmath::vexp(x[lab] - m);
    const float s_other = row_expsum(p, x, m, lab) +
                          row_expsum(p ? p + lab + 1 : nullptr, x + lab + 1, m, C - lab - 1);
    const float s = s_other + e_lab;
    // log(s) − (x[label] − m) = (m − x[label]) + log1p(s − 1), with s − 1 formed exactly.
    total += (double(m) - double(x[lab])) +
             std::log1p(double(s_other) + (double(e_lab) - 1.0));
    const float inv = 1.0f / s;
    if (p) {
      p[lab] = e_lab;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) p[c] *= inv;
    }
    if (dlogits) {
      float* d = dlogits + r * C;
      const float d_lab = d[lab];
      if (p) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) d[c] += scale * p[c];
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) d[c] += scale * (vmath::vexp(x[c] - m) * inv);
      }
      d[lab] = d_lab + scale * (-s_other * inv);  // scale·(p[label] − 1)
    }
  }
  return total;
}

// Rows [r0, r1) of softmax_xent_dense; returns Σ_rows Σ_c t_c·(logsumexp(x) − x_c).
FASTNN_CLONES double xent_dense_rows(float* dlogits, float* probs, const float* logits,
                                     const float* targets, int64_t r0, int64_t r1,
                                     int64_t C, float scale) {
  double total = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = logits + r * C;
    const float* t = targets + r * C;
    float* p = probs ? probs + r * C : nullptr;
    const float m = row_max(x, C);
    const float s = row_expsum(p, x, m, C);
    const float ls = std::log(s);
    float loss = 0.0f, tsum = 0.0f;
    // Terms with t_c = 0 are 0 even where x_c = −inf.
#pragma omp simd reduction(+ : loss, tsum)
    for (int64_t c = 0; c < C; ++c) {
      loss += vmath::vsel(t[c] != 0.0f, t[c] * ((m - x[c]) + ls), 0.0f);
      tsum += t[c];
    }
    total += loss;
    const float inv = 1.0f / s;
    if (p) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) p[c] *= inv;
    }
    if (dlogits) {
      // ∂/∂x_c = p_c·Σt − t_c (= p − t for targets that sum to 1)
      float* d = dlogits + r * C;
      if (p) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) d[c] += scale * (p[c] * tsum - t[c]);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          d[c] += scale * ((vmath::vexp(x[c] - m) * inv) * tsum - t[c]);
      }
    }
  }
  return total;
}

// Elements [0, n) of xent_probs; returns Σ −t·log(max(p, eps)). (log is a libm call.)
double xent_probs_span(float* dp, const float* p, const float* t, int64_t n, float scale) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float pc = p[i] < kProbEps ? kProbEps : p[i];
    if (t[i] != 0.0f) total -= double(t[i]) * std::log(double(pc));
    if (dp) dp[i] += scale * (-t[i] / pc);
  }
  return total;
}

// The elementwise losses sum in float over spans of kSpan elements (an omp simd float
// reduction; a double one does not vectorise: GCC would need as many double lanes as
// float lanes) and add the spans' sums in double.
constexpr int64_t kSpan = 1024;

// Elements [0, n ≤ kSpan) of bce_logits; returns Σ max(x,0) − x·t + log(1 + e^−|x|).
FASTNN_INLINE float bce_span(float* dl, const float* x, const float* t, int64_t n,
                             float scale) {
  float total = 0.0f;
  if (dl) {
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      const float e = vmath::vexp(-std::fabs(x[i]));
      total += vmath::vsel(x[i] > 0.0f, x[i], 0.0f) - x[i] * t[i] + vmath::vlog1p01(e);
      const float r = 1.0f / (1.0f + e);
      const float sig = vmath::vsel(x[i] >= 0.0f, r, e * r);
      dl[i] += scale * (sig - t[i]);
    }
  } else {
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      const float e = vmath::vexp(-std::fabs(x[i]));
      total += vmath::vsel(x[i] > 0.0f, x[i], 0.0f) - x[i] * t[i] + vmath::vlog1p01(e);
    }
  }
  return total;
}

// Elements [0, n ≤ kSpan) of mse; returns Σ (p − t)².
FASTNN_INLINE float mse_span(float* dp, const float* p, const float* t, int64_t n,
                             float scale) {
  float total = 0.0f;
  if (dp) {
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      const float d = p[i] - t[i];
      total += d * d;
      dp[i] += scale * (2.0f * d);
    }
  } else {
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) {
      const float d = p[i] - t[i];
      total += d * d;
    }
  }
  return total;
}

// Elements [b, e) of bce_logits / mse: spans summed in double.
FASTNN_CLONES double bce_elems(float* dl, const float* x, const float* t, int64_t b, int64_t e,
                               float scale) {
  double total = 0.0;
  for (int64_t s = b; s < e; s += kSpan) {
    const int64_t n = e - s < kSpan ? e - s : kSpan;
    total += bce_span(dl ? dl + s : nullptr, x + s, t + s, n, scale);
  }
  return total;
}
FASTNN_CLONES double mse_elems(float* dp, const float* p, const float* t, int64_t b, int64_t e,
                               float scale) {
  double total = 0.0;
  for (int64_t s = b; s < e; s += kSpan) {
    const int64_t n = e - s < kSpan ? e - s : kSpan;
    total += mse_span(dp ? dp + s : nullptr, p + s, t + s, n, scale);
  }
  return total;
}

// Rows per block for a row-wise loss: at least ~8K elements of work.
int64_t rows_per_block(int64_t C) { return (8192 + C - 1) / C; }

}  // namespace

// logits (N,C), labels (N); dlogits (N,C) += scale·(softmax − onehot); probs = softmax
double softmax_xent(float* dlogits, float* probs, const float* logits, const int32_t* labels,
                    int64_t N, int64_t C, float grad_scale) {
  return blocked_sum(N, rows_per_block(C), [=](int64_t r0, int64_t r1) {
    return xent_label_rows(dlogits, probs, logits, labels, r0, r1, C, grad_scale);
  });
}

// logits, targets (N,C); dlogits (N,C) += scale·(softmax·Σt − t); probs = softmax
double softmax_xent_dense(float* dlogits, float* probs, const float* logits,
                          const float* targets, int64_t N, int64_t C, float grad_scale) {
  return blocked_sum(N, rows_per_block(C), [=](int64_t r0, int64_t r1) {
    return xent_dense_rows(dlogits, probs, logits, targets, r0, r1, C, grad_scale);
  });
}

// probs, targets (N,C); dprobs (N,C) += scale·(−t / max(p, eps))
double xent_probs(float* dprobs, const float* probs, const float* targets, int64_t N,
                  int64_t C, float grad_scale) {
  const int64_t n = N * C;
  return blocked_sum(n, 4096, [=](int64_t b, int64_t e) {
    return xent_probs_span(dprobs ? dprobs + b : nullptr, probs + b, targets + b, e - b,
                           grad_scale);
  });
}

// logits, targets (n); dlogits (n) += scale·(σ(x) − t)
double bce_logits(float* dlogits, const float* logits, const float* targets, int64_t n,
                  float grad_scale) {
  return blocked_sum(n, 16 * kSpan, [=](int64_t b, int64_t e) {
    return bce_elems(dlogits, logits, targets, b, e, grad_scale);
  });
}

// pred, target (n); dpred (n) += scale·2(p − t)
double mse(float* dpred, const float* pred, const float* target, int64_t n,
           float grad_scale) {
  return blocked_sum(n, 16 * kSpan, [=](int64_t b, int64_t e) {
    return mse_elems(dpred, pred, target, b, e, grad_scale);
  });
}

// ---- plain twins ----------------------------------------------------------------

// logits (N,C), labels (N); dlogits += scale·(softmax − onehot); probs = softmax
double softmax_xent_naive(float* dlogits, float* probs, const float* logits,
                          const int32_t* labels, int64_t N, int64_t C, float grad_scale) {
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) {
    const float* x = logits + r * C;
    float m = x[0];
    for (int64_t c = 1; c < C; ++c) m = x[c] > m ? x[c] : m;
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(double(x[c]) - m);
    const double lse = m + std::log(s);
    total += lse - x[labels[r]];
    for (int64_t c = 0; c < C; ++c) {
      const double p = std::exp(double(x[c]) - lse);
      if (probs) probs[r * C + c] = static_cast<float>(p);
      if (dlogits)
        dlogits[r * C + c] += static_cast<float>(grad_scale * (p - (c == labels[r] ? 1 : 0)));
    }
  }
  return total;
}

// logits, targets (N,C); dlogits += scale·(softmax·Σt − t); probs = softmax
double softmax_xent_dense_naive(float* dlogits, float* probs, const float* logits,
                                const float* targets, int64_t N, int64_t C,
                                float grad_scale) {
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) {
    const float* x = logits + r * C;
    const float* t = targets + r * C;
    float m = x[0];
    for (int64_t c = 1; c < C; ++c) m = x[c] > m ? x[c] : m;
    double s = 0.0, tsum = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      s += std::exp(double(x[c]) - m);
      tsum += t[c];
    }
    const double lse = m + std::log(s);
    for (int64_t c = 0; c < C; ++c) {
      if (t[c] != 0.0f) total += t[c] * (lse - x[c]);
      const double p = std::exp(double(x[c]) - lse);
      if (probs) probs[r * C + c] = static_cast<float>(p);
      if (dlogits) dlogits[r * C + c] += static_cast<float>(grad_scale * (p * tsum - t[c]));
    }
  }
  return total;
}

// probs, targets (N,C); dprobs += scale·(−t / max(p, eps))
double xent_probs_naive(float* dprobs, const float* probs, const float* targets, int64_t N,
                        int64_t C, float grad_scale) {
  return xent_probs_span(dprobs, probs, targets, N * C, grad_scale);
}

// logits, targets (n); dlogits += scale·(σ(x) − t)
double bce_logits_naive(float* dlogits, const float* logits, const float* targets, int64_t n,
                        float grad_scale) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = logits[i], t = targets[i];
    total += (x > 0 ? x : 0.0) - x * t + std::log1p(std::exp(-std::fabs(x)));
    if (dlogits) dlogits[i] += static_cast<float>(grad_scale * (vmath::exact_sigmoid(logits[i]) - t));
  }
  return total;
}

// pred, target (n); dpred += scale·2(p − t)
double mse_naive(float* dpred, const float* pred, const float* target, int64_t n,
                 float grad_scale) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(pred[i]) - target[i];
    total += d * d;
    if (dpred) dpred[i] += static_cast<float>(grad_scale * 2.0 * d);
  }
  return total;
}

}  // namespace fastnn
