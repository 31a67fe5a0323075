// Fused optimizer updates: SGD (momentum, Nesterov), Adam / AdamW, AdaGrad.
//
// Each step is one pass over flat buffers: every element reads its parameter, gradient and
// state once and writes them once, with the step's scalars (bias corrections, decay
// factors) computed once outside the loop. The formulas are PyTorch's (torch.optim.SGD,
// Adam, AdamW, Adagrad with default options), in float32.
//
// Threads own disjoint contiguous chunks of elements and the work per element does not
// depend on the chunk, so results are bitwise identical for any thread count. Chunks are
// multiples of 16 floats (64 bytes), so a chunk split moves no element between a vector
// body and a scalar remainder, and chunk starts keep the buffers' alignment.
//
// With zero_grads each thread zeroes its chunk of g right after updating it: the chunk
// (32 KiB of g) is still in cache, and the zeroing is split between the threads, where a
// separate memset of the whole gradient buffer would be one more pass on one thread.
#include "fastnn/optim.h"

#include <cmath>
#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

constexpr int64_t kGrain = 8192;
static_assert(kGrain % 16 == 0, "chunk boundaries must keep the SIMD layout");

// ---- plain twins: the definition, read these first ----------------------------------
// Serial, element by element, textbook form. The tuned kernels below compute the same
// thing in one vectorised parallel pass.

// p (n), v (n) or nullptr, g (n)
void sgd_step_ref(float* p, float* v, float* g, int64_t n, float lr, float momentum,
                  bool nesterov, float weight_decay, bool zero_grads) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if (weight_decay != 0.0f) gi += weight_decay * p[i];
    if (momentum != 0.0f) {
      v[i] = momentum * v[i] + gi;
      gi = nesterov ? gi + momentum * v[i] : v[i];
    }
    p[i] -= lr * gi;
    if (zero_grads) g[i] = 0.0f;
  }
}

// p (n), m (n), v (n), g (n)
void adam_step_ref(float* p, float* m, float* v, float* g, int64_t n, float lr,
                   float beta1, float beta2, float eps, float weight_decay, bool decoupled,
                   int64_t step, bool zero_grads) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if (weight_decay != 0.0f) {
      if (decoupled) p[i] *= float(1.0 - double(lr) * weight_decay);
      else gi += weight_decay * p[i];
    }
    m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    const float m_hat = float(m[i] / bc1), v_hat = float(v[i] / bc2);
    p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    if (zero_grads) g[i] = 0.0f;
  }
}

// p (n), acc (n), g (n)
void adagrad_step_ref(float* p, float* acc, float* g, int64_t n, float lr, float eps,
                      float weight_decay, bool zero_grads) {
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    if (weight_decay != 0.0f) gi += weight_decay * p[i];
    acc[i] += gi * gi;
    p[i] -= lr * gi / (std::sqrt(acc[i]) + eps);
    if (zero_grads) g[i] = 0.0f;
  }
}

namespace {

// Runs update(b, e) over [0, n) in parallel chunks of at most kGrain, as many for every
// thread (13 chunks of 8192 would leave one thread 7 and the other 6); with zero_grads,
// zeroes each chunk of g after its update. Chunks stay multiples of 16 elements, so the
// split never changes an element's arithmetic.
template <class Update>
void for_chunks(int64_t n, float* g, bool zero_grads, Update update) {
  const int64_t t = num_threads();
  const int64_t chunks = (n + t * kGrain - 1) / (t * kGrain) * t;
  const int64_t grain = ((n + chunks - 1) / chunks + 15) / 16 * 16;
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    update(b, e);
    if (zero_grads) std::memset(g + b, 0, size_t(e - b) * sizeof(float));
  });
}

// ---- tuned: one vectorised pass per chunk, cloned per ISA ------------------------------
// The loop-invariant options (wd == 0, momentum, nesterov) are branched on outside the
// element loops so each loop body is straight-line code.

// p (n), g (n): p -= lr·(g + wd·p)
FASTNN_CLONES
void sgd_plain_range(float* __restrict p, const float* __restrict g, int64_t n, float lr,
                     float wd) {
  if (wd == 0.0f) {
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
  } else {
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
  }
}

// p (n), v (n), g (n): v = mu·v + g'; p -= lr·(nesterov ? g' + mu·v : v)
FASTNN_CLONES
void sgd_momentum_range(float* __restrict p, float* __restrict v, const float* __restrict g,
                        int64_t n, float lr, float mu, bool nesterov, float wd) {
  if (nesterov) {
    for (int64_t i = 0; i < n; ++i) {
      const float gi = wd == 0.0f ? g[i] : g[i] + wd * p[i];
      const float vi = mu * v[i] + gi;
      v[i] = vi;
      p[i] -= lr * (gi + mu * vi);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float gi = wd == 0.0f ? g[i] : g[i] + wd * p[i];
      const float vi = mu * v[i] + gi;
      v[i] = vi;
      p[i] -= lr * vi;
    }
  }
}

// Step scalars of Adam, computed once per call in double.
struct AdamScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;      // lr / (1 − β1^t)
  float inv_bc2_sqrt;   // 1 / √(1 − β2^t)
  float eps;
  float l2;             // wd added to the gradient (Adam), 0 for AdamW
  float decay;          // 1 − lr·wd multiplying p (AdamW), 1 for Adam
};

// p (n), m (n), v (n), g (n): m, v moments; p = decay·p − step_size·m / (√v·inv_bc2_sqrt + eps)
FASTNN_CLONES
void adam_range(float* __restrict p, float* __restrict m, float* __restrict v,
                const float* __restrict g, int64_t n, const AdamScalars& s_) {
  const AdamScalars s = s_;
  if (s.l2 == 0.0f && s.decay == 1.0f) {
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      const float mi = s.beta1 * m[i] + s.one_minus_beta1 * gi;
      const float vi = s.beta2 * v[i] + s.one_minus_beta2 * (gi * gi);
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) * s.inv_bc2_sqrt + s.eps;
      p[i] -= s.step_size * (mi / denom);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float pi = p[i];
      const float gi = g[i] + s.l2 * pi;
      const float mi = s.beta1 * m[i] + s.one_minus_beta1 * gi;
      const float vi = s.beta2 * v[i] + s.one_minus_beta2 * (gi * gi);
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) * s.inv_bc2_sqrt + s.eps;
      p[i] = pi * s.decay - s.step_size * (mi / denom);
    }
  }
}

// p (n), acc (n), g (n): acc += g'²; p -= lr·g'/(√acc + eps)
FASTNN_CLONES
void adagrad_range(float* __restrict p, float* __restrict acc, const float* __restrict g,
                   int64_t n, float lr, float eps, float wd) {
  if (wd == 0.0f) {
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      const float ai = acc[i] + gi * gi;
      acc[i] = ai;
      p[i] -= lr * (gi / (std::sqrt(ai) + eps));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i] + wd * p[i];
      const float ai = acc[i] + gi * gi;
      acc[i] = ai;
      p[i] -= lr * (gi / (std::sqrt(ai) + eps));
    }
  }
}

}  // namespace

// p (n), v (n) or nullptr when momentum == 0, g (n)
void sgd_step(float* p, float* v, float* g, int64_t n, float lr, float momentum,
              bool nesterov, float weight_decay, bool zero_grads) {
  if (momentum == 0.0f) {
    for_chunks(n, g, zero_grads, [&](int64_t b, int64_t e) {
      sgd_plain_range(p + b, g + b, e - b, lr, weight_decay);
    });
  } else {
    for_chunks(n, g, zero_grads, [&](int64_t b, int64_t e) {
      sgd_momentum_range(p + b, v + b, g + b, e - b, lr, momentum, nesterov, weight_decay);
    });
  }
}

// p (n), m (n), v (n), g (n); step >= 1
void adam_step(float* p, float* m, float* v, float* g, int64_t n, float lr,
               float beta1, float beta2, float eps, float weight_decay, bool decoupled,
               int64_t step, bool zero_grads) {
  const double t = double(step);
  const double bc1 = 1.0 - std::pow(double(beta1), t);
  const double bc2 = 1.0 - std::pow(double(beta2), t);
  AdamScalars s;
  s.beta1 = beta1;
  s.one_minus_beta1 = 1.0f - beta1;
  s.beta2 = beta2;
  s.one_minus_beta2 = 1.0f - beta2;
  s.step_size = float(double(lr) / bc1);
  s.inv_bc2_sqrt = float(1.0 / std::sqrt(bc2));
  s.eps = eps;
  s.l2 = decoupled ? 0.0f : weight_decay;
  s.decay = decoupled ? float(1.0 - double(lr) * double(weight_decay)) : 1.0f;
  for_chunks(n, g, zero_grads, [&](int64_t b, int64_t e) {
    adam_range(p + b, m + b, v + b, g + b, e - b, s);
  });
}

// p (n), acc (n), g (n)
void adagrad_step(float* p, float* acc, float* g, int64_t n, float lr, float eps,
                  float weight_decay, bool zero_grads) {
  for_chunks(n, g, zero_grads, [&](int64_t b, int64_t e) {
    adagrad_range(p + b, acc + b, g + b, e - b, lr, eps, weight_decay);
  });
}

}  // namespace fastnn
