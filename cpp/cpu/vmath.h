// Vectorisable float math and activation loops shared by activation.cpp, dense.cpp and
// loss.cpp (internal to cpp/cpu, not a public header).
//
// libm's expf/erfcf/tanhf are scalar calls, so a loop that uses them does not vectorise
// (glibc only offers vector variants under -ffast-math, which we do not use). The
// functions below are straight-line code (no branches, no calls), so loops calling them
// vectorise under '#pragma omp simd' for whatever ISA the enclosing FASTNN_CLONES clone
// targets. Accuracy against libm in double (sweeps of 2M points, baseline and AVX2):
// vexp ≤ 1 ulp (subnormal results included), vsigmoid ≤ 2.6 ulp, vtanh ≤ 1.5 ulp,
// vlog1p01 ≤ 2.8 ulp; verfc has relative error ≤ 1.2e-7 plus the ~2·eps·x² that
// rounding x² carries into e^(−x²) (4e-6 at x = 8), so vgelu is within 1.4e-6 relative
// on [-3, 3] and 2e-5 in the far negative tail, where |gelu| < 1e-30.
//
// The plain twins of each kernel (the *_naive functions) use <cmath> instead.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastnn/activation.h"

#define FASTNN_INLINE inline __attribute__((always_inline))

namespace fastnn::vmath {

// Branch-free select: c ? a : b. A plain ?: whose result feeds more arithmetic does
// not vectorise: GCC sinks that arithmetic into the arms, and under the default
// -ftrapping-math it may not then speculate it. Bit operations are never sunk.
FASTNN_INLINE float vsel(bool c, float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof ia);
  std::memcpy(&ib, &b, sizeof ib);
  const int32_t m = -static_cast<int32_t>(c);
  const int32_t r = (ia & m) | (ib & ~m);
  float f;
  std::memcpy(&f, &r, sizeof f);
  return f;
}

// 2^k for k in [-126, 127], built in the exponent field.
FASTNN_INLINE float pow2i(int32_t k) {
  const int32_t bits = (k + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// e^x: x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by Cephes' expf
// polynomial, then scaled by 2^n as 2^(n>>1)·2^(n−(n>>1)) so that results in the
// subnormal range round correctly and n = 128 overflows to +inf. Only the input is
// clamped (to [-104, 89], beyond which e^x is 0 or +inf in float); NaN stays NaN.
FASTNN_INLINE float vexp(float x) {
  float xc = vsel(x < -104.0f, -104.0f, x);
  xc = vsel(xc > 89.0f, 89.0f, xc);
  const float kRound = 12582912.0f;  // 1.5·2^23: adding and subtracting it rounds to int
  const float n = (xc * 1.44269504088896341f + kRound) - kRound;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * (r * r) + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(n);  // in [-150, 128]
  const int32_t n1 = ni >> 1;
  return er * pow2i(n1) * pow2i(ni - n1);
}

// log(1 + u) for u in [0, 1]: 2·atanh(s) with s = u/(2+u) ≤ 1/3, odd series to s^15.
FASTNN_INLINE float vlog1p01(float u) {
  const float s = u / (2.0f + u);
  const float s2 = s * s;
  float p = 1.0f / 15;
  p = p * s2 + 1.0f / 13;
  p = p * s2 + 1.0f / 11;
  p = p * s2 + 1.0f / 9;
  p = p * s2 + 1.0f / 7;
  p = p * s2 + 1.0f / 5;
  p = p * s2 + 1.0f / 3;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

// 1/(1+e^-x) computed from e^-|x| ≤ 1, so it never overflows.
FASTNN_INLINE float vsigmoid(float x) {
  const float e = vexp(-std::fabs(x));
  const float r = 1.0f / (1.0f + e);
  return vsel(x >= 0.0f, r, e * r);
}

// tanh: Cephes' odd polynomial for |x| < 0.625, (1 − e)/(1 + e) with e = e^-2|x| above.
FASTNN_INLINE float vtanh(float x) {
  const float a = std::fabs(x);
  const float s = x * x;
  float p = -5.70498872745e-3f;
  p = p * s + 2.06390887954e-2f;
  p = p * s - 5.37397155531e-2f;
  p = p * s + 1.33314422036e-1f;
  p = p * s - 3.33332819422e-1f;
  const float small = p * s * x + x;
  const float e = vexp(-2.0f * a);
  const float big = std::copysign((1.0f - e) / (1.0f + e), x);
  return vsel(a < 0.625f, small, big);
}

// erfc(x): Numerical Recipes' erfcc (Chebyshev fit, relative error < 1.2e-7 everywhere).
FASTNN_INLINE float verfc(float x) {
  const float z = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float ans = t * vexp(p - z * z);
  return vsel(x >= 0.0f, ans, 2.0f - ans);
}

// Exact GELU x·Φ(x) = x·½·erfc(−x/√2) (erfc keeps the negative tail accurate), and
// its derivative Φ(x) + x·φ(x).
FASTNN_INLINE float vgelu(float x) { return x * (0.5f * verfc(-x * 0.70710678118654752f)); }
FASTNN_INLINE float vgelu_grad(float x) {
  return 0.5f * verfc(-x * 0.70710678118654752f) +
         x * (0.39894228040143268f * vexp(-0.5f * x * x));
}

// y (n) = act(x); y may alias x.
FASTNN_INLINE void act_span(float* y, const float* x, int64_t n, Act act) {
  switch (act) {
    case Act::linear:
      if (y != x) std::memcpy(y, x, sizeof(float) * n);
      break;
    case Act::relu:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = vsel(x[i] > 0.0f, x[i], 0.0f);
      break;
    case Act::sigmoid:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = vsigmoid(x[i]);
      break;
    case Act::tanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = vtanh(x[i]);
      break;
    case Act::gelu:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = vgelu(x[i]);
      break;
  }
}

// out (n) [+]= dy ⊙ act'(.): relu/sigmoid/tanh read y (forward output), gelu reads x
// (forward input). kAdd=false overwrites out, which may then alias dy.
template <bool kAdd>
FASTNN_INLINE void act_grad_span(float* out, const float* dy, const float* x, const float* y,
                                 int64_t n, Act act) {
  switch (act) {
    case Act::linear:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) out[i] = kAdd ? out[i] + dy[i] : dy[i];
      break;
    case Act::relu:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float g = vsel(y[i] > 0.0f, dy[i], 0.0f);
        out[i] = kAdd ? out[i] + g : g;
      }
      break;
    case Act::sigmoid:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float g = dy[i] * (y[i] * (1.0f - y[i]));
        out[i] = kAdd ? out[i] + g : g;
      }
      break;
    case Act::tanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float g = dy[i] * (1.0f - y[i] * y[i]);
        out[i] = kAdd ? out[i] + g : g;
      }
      break;
    case Act::gelu:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const float g = dy[i] * vgelu_grad(x[i]);
        out[i] = kAdd ? out[i] + g : g;
      }
      break;
  }
}

// Scalar <cmath> versions for the plain twins.
inline float exact_sigmoid(float x) {
  const float e = std::exp(-std::fabs(x));
  return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
inline float exact_gelu(float x) {
  return x * (0.5f * std::erfc(-x * 0.70710678118654752f));
}
inline float exact_gelu_grad(float x) {
  return 0.5f * std::erfc(-x * 0.70710678118654752f) +
         x * (0.39894228040143268f * std::exp(-0.5f * x * x));
}

// Elements per parallel chunk of an elementwise loop over n: an even share per thread,
// rounded up to a cache line, but at least kMin (below that, waking a second thread
// costs more than it saves). Elementwise results do not depend on the chunking.
inline int64_t elementwise_grain(int64_t n, int64_t threads, int64_t kMin = 16384) {
  int64_t g = threads > 1 ? (n + threads - 1) / threads : n;
  g = (g + 15) / 16 * 16;
  return g < kMin ? kMin : g;
}

// The activation of one value with <cmath>'s functions: what the plain twins
// (dense, conv2d, sparse_dense *_naive) apply after their sums.
inline float exact_act(float v, Act act) {
  switch (act) {
    case Act::relu: return v > 0.0f ? v : 0.0f;
    case Act::sigmoid: return exact_sigmoid(v);
    case Act::tanh: return std::tanh(v);
    case Act::gelu: return exact_gelu(v);
    case Act::linear: break;
  }
  return v;
}

// Rows per parallel chunk of a row-wise loop over N rows of C elements: an even share
// per thread, but at least kMin elements' worth. Only for loops whose rows are
// independent (a reduction across rows must use a chunking that ignores threads).
inline int64_t row_grain(int64_t N, int64_t C, int64_t threads, int64_t kMin = 16384) {
  const int64_t lo = (kMin + C - 1) / C;
  const int64_t g = threads > 1 ? (N + threads - 1) / threads : N;
  return g < lo ? lo : g;
}

}  // namespace fastnn::vmath
