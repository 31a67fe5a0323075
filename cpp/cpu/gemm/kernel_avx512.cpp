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

// 6×64 tiles: 24 accumulators + 4 B vectors + 1 broadcast of the 32 zmm registers, 24
// FMAs per 4 loads and 6 broadcasts. Against 8×32 tiles (16 FMAs per 2 loads and 8
// broadcasts), on the 2-core Xeon, bench/test_gemm_bench.py: 2048³ from 151 to 154
// GFLOP/s on one thread and from 265 to 326 on two; 64x784 -> 128 forward 262 -> 359 on two.
const Kernel& kernel_avx512() {
  static const Kernel k = Impl<VecAvx512, 6, 4>::make("avx512", 96, 384, 4096);
  return k;
}

// 8×32 tiles for products into at most 32 columns: a 6×64 tile there keeps only 6 or 12
// running sums, too few for the FMA latency (the forward into 10 columns fell from 1.26x
// NumPy's speed to 1.05-1.13x). Each element gets the same sums in the same order.
const Kernel& kernel_avx512_narrow() {
  static const Kernel k = Impl<VecAvx512, 8, 2>::make("avx512", 96, 384, 4096);
  return k;
}

}  // namespace fastnn::gemm_detail

#else  // not built for AVX-512: never selected, but keep the symbol for the driver.
namespace fastnn::gemm_detail {
const Kernel& kernel_avx512() { return kernel_generic(); }
const Kernel& kernel_avx512_narrow() { return kernel_generic(); }
}  // namespace fastnn::gemm_detail
#endif
