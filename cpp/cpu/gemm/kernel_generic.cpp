// Portable GEMM kernels: no intrinsics. The fallback for CPUs without AVX2 and for
// non-x86 builds. With GCC/Clang the four lanes are a generic vector type (one SSE or
// NEON register, mapped by the compiler); elsewhere a plain struct.
#include <cstring>

#include "kernel_impl.h"

namespace fastnn::gemm_detail {
namespace {

struct VecGeneric {
  static constexpr int W = 4, TB = 4;
#if defined(__GNUC__) || defined(__clang__)
  typedef float T __attribute__((vector_size(16)));
  static T zero() { return T{0.0f, 0.0f, 0.0f, 0.0f}; }
  static T load(const float* p) {
    T r;
    std::memcpy(&r, p, sizeof r);
    return r;
  }
  static void store(float* p, T x) { std::memcpy(p, &x, sizeof x); }
  static T load_n(const float* p, int n) {
    T r = zero();
    for (int l = 0; l < n; ++l) r[l] = p[l];
    return r;
  }
  static T bcast(const float* p) {
    const float s = *p;
    return T{s, s, s, s};
  }
  static T fma(T a, T b, T c) { return a * b + c; }
  static T add(T a, T b) { return a + b; }
#else
  struct T {
    float v[W];
  };
  static T zero() { return T{{0.0f, 0.0f, 0.0f, 0.0f}}; }
  static T load(const float* p) {
    T r;
    for (int l = 0; l < W; ++l) r.v[l] = p[l];
    return r;
  }
  static void store(float* p, const T& x) {
    for (int l = 0; l < W; ++l) p[l] = x.v[l];
  }
  static T load_n(const float* p, int n) {
    T r = zero();
    for (int l = 0; l < n; ++l) r.v[l] = p[l];
    return r;
  }
  static T bcast(const float* p) {
    const float s = *p;
    return T{{s, s, s, s}};
  }
  static T fma(const T& a, const T& b, const T& c) {
    T r;
    for (int l = 0; l < W; ++l) r.v[l] = a.v[l] * b.v[l] + c.v[l];
    return r;
  }
  static T add(const T& a, const T& b) {
    T r;
    for (int l = 0; l < W; ++l) r.v[l] = a.v[l] + b.v[l];
    return r;
  }
#endif
  static void transpose_tb(float* d, int64_t ds, const float* s, int64_t ss) {
    for (int r = 0; r < TB; ++r)
      for (int c = 0; c < TB; ++c) d[r * ds + c] = s[c * ss + r];
  }
};

}  // namespace

// 4×8 tiles (8 four-lane accumulators: fits the 16 SSE registers of baseline x86-64).
const Kernel& kernel_generic() {
  static const Kernel k = Impl<VecGeneric, 4, 2>::make("generic", 128, 256, 4096);
  return k;
}

}  // namespace fastnn::gemm_detail
