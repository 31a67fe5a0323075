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
//
// Adam and AdaGrad divide by √v + eps. On x86 the exact loops are bound by that square
// root and division (vsqrtps and vdivps share one unit, whose throughput does not grow
// with the vector width), not by memory; their AVX-512 and AVX2 passes further down keep
// the exact square root and replace the division by a reciprocal estimate refined by
// Newton-Raphson, which is within 1 ulp of the quotient. The ISA is the one gemm_isa()
// names (set_gemm_isa forces one); "generic" runs the exact loops.
#include "fastnn/optim.h"

#include <cmath>
#include <cstring>

#include "fastnn/common.h"

#if defined(FASTNN_X86) && defined(__GNUC__)
#include <immintrin.h>
#define FASTNN_OPTIM_X86 1
// Functions compiled for one ISA. The helpers are always inlined into their callers,
// which have the same target.
#define FASTNN_AVX512 __attribute__((target("avx512f,fma")))
#define FASTNN_AVX512_INLINE __attribute__((target("avx512f,fma"), always_inline)) inline
#define FASTNN_AVX2 __attribute__((target("avx2,fma")))
#define FASTNN_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline
#endif

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
// element loops so each loop body is straight-line code. adam_range and adagrad_range,
// with the exact square root and division, are the "generic" ISA's passes and the
// reference of the AVX-512 / AVX2 passes below.

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

#if defined(FASTNN_OPTIM_X86)
// GCC 12 warns inside the AVX-512 intrinsics that read _mm512_undefined_ps() (GCC bug
// 105593, a false positive fixed in GCC 13).
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// ---- x86: AVX-512 and AVX2 passes with a refined reciprocal ----------------------------
// The formulas of adam_range / adagrad_range with their products fused the way GCC fuses
// them there (m, v and d come out bitwise equal), 16 (AVX-512) or 8 (AVX2) elements per
// step; only the quotient q = m / d is computed differently:
//
//   x  ≈ 1/d              rcp14 (AVX-512), relative error < 2^-14; rcp (AVX2), < 1.5·2^-12,
//                          then refined once: x += x·(1 − d·x), error < 2^-22
//   q0 = m·x
//   q  = q0 + x·(m − d·q0) one Newton-Raphson step on the quotient: before its final
//                          rounding q is within (error of x)² of m/d, under 2^-28
//
// so q is m/d correctly rounded or 1 ulp away (AVX-512: about 0.3% of random quotients
// are 1 ulp away; AVX2: none found in 32 million). The residual m − d·q0 is about
// 2^-14·m (AVX2: 2^-22·m); for |m| below 2^-112 (AVX2: 2^-104), about 1e-34, it is
// flushed to 0 (FlushDenormals) and q keeps the estimate's error: |q| < 2^-104/eps there,
// so p moves by less than step_size·2^-104/eps, below its last bit unless eps is tiny.
// Special values: √v is exact (v = 0 gives d = eps). q is NaN exactly when m or d is ±inf
// or NaN (v = +inf after g² overflowed, a NaN gradient, ...) or m·x overflowed: the
// residual then meets inf − inf or 0·inf. Those lanes, rare, take the IEEE quotient
// instead, so every special value comes out as in the exact loops (m/inf = ±0: p does
// not move); the test is one compare per vector, the division runs only when it hits.
// The last n % W elements go through zero-padded copies (TailBlocks) and see the same
// instructions as a full vector, so no element's result depends on where a chunk starts.

// Copies of the last k < 16 elements of p, a, b (nullptr: unused) and g, zero-padded to 16.
struct TailBlocks {
  alignas(64) float p[16] = {}, a[16] = {}, b[16] = {}, g[16] = {};
  TailBlocks(const float* p_, const float* a_, const float* b_, const float* g_, int64_t k) {
    const size_t bytes = size_t(k) * sizeof(float);
    std::memcpy(p, p_, bytes);
    std::memcpy(a, a_, bytes);
    if (b_) std::memcpy(b, b_, bytes);
    std::memcpy(g, g_, bytes);
  }
  void store(float* p_, float* a_, float* b_, int64_t k) const {
    const size_t bytes = size_t(k) * sizeof(float);
    std::memcpy(p_, p, bytes);
    std::memcpy(a_, a, bytes);
    if (b_) std::memcpy(b_, b, bytes);
  }
};

// -- AVX-512
namespace avx512 {
#define FASTNN_SIMD FASTNN_AVX512
#define FASTNN_SIMD_INLINE FASTNN_AVX512_INLINE
struct Vec {
  static constexpr int W = 16;
  using T = __m512;
  FASTNN_SIMD_INLINE static T set1(float x) { return _mm512_set1_ps(x); }
  FASTNN_SIMD_INLINE static T load(const float* p) { return _mm512_loadu_ps(p); }
  FASTNN_SIMD_INLINE static void store(float* p, T x) { _mm512_storeu_ps(p, x); }
  FASTNN_SIMD_INLINE static T add(T a, T b) { return _mm512_add_ps(a, b); }
  FASTNN_SIMD_INLINE static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  FASTNN_SIMD_INLINE static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  FASTNN_SIMD_INLINE static T fnmadd(T a, T b, T c) { return _mm512_fnmadd_ps(a, b, c); }
  FASTNN_SIMD_INLINE static T sqrt(T a) { return _mm512_sqrt_ps(a); }
  // m / d (d >= eps > 0 unless infinite or NaN), see above.
  FASTNN_SIMD_INLINE static T div(T m, T d) {
    const T x = _mm512_rcp14_ps(d);
    const T q0 = _mm512_mul_ps(m, x);
    const T q = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, q0, m), x, q0);
    const __mmask16 special = _mm512_cmp_ps_mask(q, q, _CMP_UNORD_Q);
    if (__builtin_expect(special != 0, 0)) return _mm512_mask_div_ps(q, special, m, d);
    return q;
  }
};
#include "optim_simd.inc"
#undef FASTNN_SIMD
#undef FASTNN_SIMD_INLINE
}  // namespace avx512

// -- AVX2: the same with 8 lanes and the coarser rcp estimate refined once more.
namespace avx2 {
#define FASTNN_SIMD FASTNN_AVX2
#define FASTNN_SIMD_INLINE FASTNN_AVX2_INLINE
struct Vec {
  static constexpr int W = 8;
  using T = __m256;
  FASTNN_SIMD_INLINE static T set1(float x) { return _mm256_set1_ps(x); }
  FASTNN_SIMD_INLINE static T load(const float* p) { return _mm256_loadu_ps(p); }
  FASTNN_SIMD_INLINE static void store(float* p, T x) { _mm256_storeu_ps(p, x); }
  FASTNN_SIMD_INLINE static T add(T a, T b) { return _mm256_add_ps(a, b); }
  FASTNN_SIMD_INLINE static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  FASTNN_SIMD_INLINE static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  FASTNN_SIMD_INLINE static T fnmadd(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }
  FASTNN_SIMD_INLINE static T sqrt(T a) { return _mm256_sqrt_ps(a); }
  // m / d (d >= eps > 0 unless infinite or NaN), see above.
  FASTNN_SIMD_INLINE static T div(T m, T d) {
    T x = _mm256_rcp_ps(d);
    x = _mm256_fmadd_ps(x, _mm256_fnmadd_ps(d, x, _mm256_set1_ps(1.0f)), x);
    const T q0 = _mm256_mul_ps(m, x);
    const T q = _mm256_fmadd_ps(_mm256_fnmadd_ps(d, q0, m), x, q0);
    const T special = _mm256_cmp_ps(q, q, _CMP_UNORD_Q);
    if (__builtin_expect(_mm256_movemask_ps(special) != 0, 0))
      return _mm256_blendv_ps(q, _mm256_div_ps(m, d), special);
    return q;
  }
};
#include "optim_simd.inc"
#undef FASTNN_SIMD
#undef FASTNN_SIMD_INLINE
}  // namespace avx2
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // FASTNN_OPTIM_X86

using AdamRange = void (*)(float*, float*, float*, const float*, int64_t, const AdamScalars&);
using AdagradRange = void (*)(float*, float*, const float*, int64_t, float, float, float);

// The Adam / AdaGrad pass for the ISA gemm_isa() names: AVX-512, AVX2, else the exact loop.
AdamRange adam_range_for_isa() {
#if defined(FASTNN_OPTIM_X86)
  const char* isa = gemm_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::adam_range;
  if (std::strcmp(isa, "avx2") == 0) return avx2::adam_range;
#endif
  return adam_range;
}

AdagradRange adagrad_range_for_isa() {
#if defined(FASTNN_OPTIM_X86)
  const char* isa = gemm_isa();
  if (std::strcmp(isa, "avx512") == 0) return avx512::adagrad_range;
  if (std::strcmp(isa, "avx2") == 0) return avx2::adagrad_range;
#endif
  return adagrad_range;
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
  const AdamRange range = adam_range_for_isa();
  for_chunks(n, g, zero_grads, [&](int64_t b, int64_t e) {
    range(p + b, m + b, v + b, g + b, e - b, s);
  });
}

// p (n), acc (n), g (n)
void adagrad_step(float* p, float* acc, float* g, int64_t n, float lr, float eps,
                  float weight_decay, bool zero_grads) {
  const AdagradRange range = adagrad_range_for_isa();
  for_chunks(n, g, zero_grads, [&](int64_t b, int64_t e) {
    range(p + b, acc + b, g + b, e - b, lr, eps, weight_decay);
  });
}

}  // namespace fastnn
