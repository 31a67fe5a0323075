// AVX-512 GEMM kernels (compiled with -mavx512f -mavx512vl -mavx2 -mfma, see
// cmake/isa.cmake; the driver calls it only when the CPU reports AVX-512F/VL).
// Everything but the vector type below is the template shared with the AVX2 and generic
// kernels (kernel_impl.h), and the block transpose is the AVX2 one.
#include "gemm_internal.h"

#if defined(FASTNN_X86) && defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#include "kernel_impl.h"
#include "kernel_x86.h"

namespace fastnn::gemm_detail {
namespace {

struct VecAvx512 {
  static constexpr int W = 16, TB = 8;
  using T = __m512;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T load_n(const float* p, int n) {  // masked lanes are not read (no fault)
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
  }
  static void store(float* p, T x) { _mm512_storeu_ps(p, x); }
  static T bcast(const float* p) { return _mm512_set1_ps(*p); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static void transpose_tb(float* d, int64_t ds, const float* s, int64_t ss) {
    transpose8x8(d, ds, s, ss);
  }
};

}  // namespace

// 8×32 tiles: 16 accumulators + 2 B vectors + 1 broadcast of the 32 zmm registers.
const Kernel& kernel_avx512() {
  static const Kernel k = Impl<VecAvx512, 8, 2>::make("avx512", 96, 384, 4096);
  return k;
}

}  // namespace fastnn::gemm_detail

#else  // not built for AVX-512: never selected, but keep the symbol for the driver.
namespace fastnn::gemm_detail {
const Kernel& kernel_avx512() { return kernel_generic(); }
}  // namespace fastnn::gemm_detail
#endif
