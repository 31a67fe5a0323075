// AVX2 + FMA GEMM kernels (this file is compiled with -mavx2 -mfma, see cmake/isa.cmake;
// the driver calls it only when the CPU reports both).
#include "gemm_internal.h"

#if defined(FASTNN_X86) && defined(__AVX2__) && defined(__FMA__)
#include "kernel_impl.h"
#include "kernel_x86.h"

namespace fastnn::gemm_detail {
namespace {

struct VecAvx2 {
  static constexpr int W = 8, TB = 8;
  using T = __m256;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T load_n(const float* p, int n) {  // masked lanes are not read (no fault)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane));
  }
  static void store(float* p, T x) { _mm256_storeu_ps(p, x); }
  static T bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static void transpose_tb(float* d, int64_t ds, const float* s, int64_t ss) {
    transpose8x8(d, ds, s, ss);
  }
};

}  // namespace

// 6×16 tiles: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
// A block 96×384 (144 KiB, L2), B micro-panel 384×16 (24 KiB, L1).
const Kernel& kernel_avx2() {
  static const Kernel k = Impl<VecAvx2, 6, 2>::make("avx2", 96, 384, 4096);
  return k;
}

}  // namespace fastnn::gemm_detail

#else  // not built for AVX2: never selected, but keep the symbol for the driver.
namespace fastnn::gemm_detail {
const Kernel& kernel_avx2() { return kernel_generic(); }
}  // namespace fastnn::gemm_detail
#endif
