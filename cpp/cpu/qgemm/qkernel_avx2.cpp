// Int8 kernels for AVX2 (compiled with -mavx2 -mfma, see cmake/isa.cmake; the driver
// calls them only when the CPU reports AVX2 and FMA).
//
// vpmaddubsw (u8·s8 pairs summed into int16) saturates: 255·127 + 255·127 > 32767. So
// B is packed widened to int16 and A widened to uint16 while it is packed, and vpmaddwd
// multiplies int16 pairs into int32 exactly (|a·b| ≤ 255·128). Micro-tile: 6 rows × 2
// panels of 8 columns = 12 ymm accumulators; one K pair costs 2 loads of B (32 bytes:
// 8 columns × 2 int16), 6 32-bit broadcasts of A (2 uint16), 12 vpmaddwd and 12 vpaddd.
#include "qgemm_internal.h"

#if defined(FASTNN_X86) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../vmath.h"

namespace fastnn::qgemm_detail {
namespace {

constexpr int kMR = 6, kNV = 2, kPanel = 8;

inline __m256i tail_mask(int64_t cols) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int32_t n = int32_t(std::min<int64_t>(cols, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
}

// acc (MR×NV ymm) = [C +] A tile · NV panels over `groups` K pairs (apart from the
// epilogue, so that the accumulators stay in registers).
template <int MR, int NV>
__attribute__((noinline)) void kloop(__m256i* out, const uint8_t* a, const uint8_t* b,
                                     int64_t ps, int64_t groups, const int32_t* c,
                                     int64_t ldc, bool first, const __m256i* mask) {
  __m256i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      acc[r][v] = first ? _mm256_setzero_si256() : _mm256_maskload_epi32(c + r * ldc + 8 * v, mask[v]);
  for (int64_t g = 0; g < groups; ++g) {
    __m256i bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + v * ps + g * 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256i av =
          _mm256_set1_epi32(*reinterpret_cast<const int32_t*>(a + (g * kMR + r) * 4));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(av, bv[v]));
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) out[r * NV + v] = acc[r][v];
}

template <int MR, int NV>
void micro(const Block& blk, const uint8_t* a, const uint8_t* b, int32_t* c, int64_t j,
           int64_t cols) {
  __m256i mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask(cols - 8 * v);
  __m256i accs[MR * NV];
  kloop<MR, NV>(accs, a, b, blk.b_panel_stride, (blk.kc + 1) / 2, c, blk.ldc, blk.first, mask);
  auto acc = [&](int r, int v) { return accs[r * NV + v]; };
  if (!(blk.last && blk.epi)) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) _mm256_maskstore_epi32(c + r * blk.ldc + 8 * v, mask[v], acc(r, v));
    return;
  }
  const Epilogue& e = *blk.epi;
  const int64_t n0 = blk.j0 + j;
  const __m256 xs = _mm256_set1_ps(e.x_scale);
  const __m256i zp = _mm256_set1_epi32(e.x_zp);
  __m256i corr[NV];
  __m256 s[NV], bias[NV];
  for (int v = 0; v < NV; ++v) {
    corr[v] = _mm256_mullo_epi32(zp, _mm256_maskload_epi32(e.colsum + n0 + 8 * v, mask[v]));
    s[v] = _mm256_mul_ps(xs, _mm256_maskload_ps(e.w_scale + n0 + 8 * v, mask[v]));
    bias[v] = e.bias ? _mm256_maskload_ps(e.bias + n0 + 8 * v, mask[v]) : _mm256_setzero_ps();
  }
  const bool relu = e.act == Act::relu;
  for (int r = 0; r < MR; ++r) {
    float* y = reinterpret_cast<float*>(c + r * blk.ldc);
    for (int v = 0; v < NV; ++v) {
      __m256 z = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc(r, v), corr[v])), s[v]);
      if (e.bias) z = _mm256_add_ps(z, bias[v]);
      if (relu) z = _mm256_max_ps(z, _mm256_setzero_ps());
      _mm256_maskstore_ps(y + 8 * v, mask[v], z);
    }
    if (!relu && e.act != Act::linear) vmath::act_span(y, y, cols, e.act);
  }
}

using MicroFn = void (*)(const Block&, const uint8_t*, const uint8_t*, int32_t*, int64_t,
                         int64_t);

template <int MR>
constexpr MicroFn pick_nv(int nv) {
  return nv == 1 ? micro<MR, 1> : micro<MR, 2>;
}

MicroFn pick(int mr, int nv) {
  switch (mr) {
    case 1: return pick_nv<1>(nv);
    case 2: return pick_nv<2>(nv);
    case 3: return pick_nv<3>(nv);
    case 4: return pick_nv<4>(nv);
    case 5: return pick_nv<5>(nv);
    default: return pick_nv<6>(nv);
  }
}

void macro_avx2(const Block& blk) {
  const int64_t kcp = (blk.kc + 1) / 2 * 2;
  for (int64_t j = 0; j < blk.nc; j += kNV * kPanel) {
    const int64_t cols = std::min<int64_t>(kNV * kPanel, blk.nc - j);
    const int nv = int((cols + kPanel - 1) / kPanel);
    const uint8_t* b = blk.b + (j / kPanel) * blk.b_panel_stride;
    for (int64_t i = 0; i < blk.mc; i += kMR) {
      const int mr = int(std::min<int64_t>(kMR, blk.mc - i));
      pick(mr, nv)(blk, blk.a + (i / kMR) * kMR * kcp * 2, b, blk.c + i * blk.ldc + j, j, cols);
    }
  }
}

// 8 floats → 8 bytes of q. As quantize_vnni: x · (1/scale) unless a lane lies near a
// half-integer, where the IEEE quotient decides.
struct Quant8 {
  __m256 vs, vz, inv;
  bool use_inv;
  void operator()(uint8_t* q, __m256 xv, int64_t count) const {
    const __m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    constexpr int kNear = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256 r;
    if (use_inv) {
      r = _mm256_mul_ps(xv, inv);
      const __m256 fr = _mm256_sub_ps(r, _mm256_round_ps(r, kNear));
      const __m256 dist =
          _mm256_and_ps(_mm256_sub_ps(_mm256_and_ps(fr, absmask), _mm256_set1_ps(0.5f)), absmask);
      const __m256 tol = _mm256_mul_ps(_mm256_and_ps(r, absmask), _mm256_set1_ps(9.5367431640625e-07f));
      const __m256 near = _mm256_cmp_ps(dist, tol, _CMP_LE_OQ);
      if (_mm256_movemask_ps(near)) r = _mm256_blendv_ps(r, _mm256_div_ps(xv, vs), near);
    } else {
      r = _mm256_div_ps(xv, vs);
    }
    __m256 v = _mm256_round_ps(r, kNear);
    v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), lo), hi);
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m128i i16 =
        _mm_packus_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    const __m128i u8 = _mm_packus_epi16(i16, i16);
    if (count == 8) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q), u8);
    } else {
      uint8_t tmp[16];
      _mm_storeu_si128(reinterpret_cast<__m128i*>(tmp), u8);
      std::memcpy(q, tmp, size_t(count));
    }
  }
};

void quantize_avx2(uint8_t* q, const float* x, int64_t n, float scale, float zp) {
  const float inv_s = 1.0f / scale;
  const Quant8 quant{_mm256_set1_ps(scale), _mm256_set1_ps(zp), _mm256_set1_ps(inv_s),
                     std::isfinite(inv_s) && inv_s >= 1.17549435e-38f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) quant(q + i, _mm256_loadu_ps(x + i), 8);
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    quant(q + i, _mm256_maskload_ps(x + i, m), n - i);
  }
}

bool minmax_avx2(float* mn, float* mx, const float* x, int64_t n) {
  if (n <= 0) {
    *mn = *mx = 0.0f;
    return true;
  }
  float lo = x[0], hi = x[0];
  __m256 vlo = _mm256_set1_ps(x[0]), vhi = vlo, bad = _mm256_setzero_ps();
  const __m256 inf = _mm256_set1_ps(INFINITY);
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(v, absmask), inf, _CMP_NLT_UQ));
  }
  float l[8], h[8];
  _mm256_storeu_ps(l, vlo);
  _mm256_storeu_ps(h, vhi);
  for (int k = 0; k < 8; ++k) lo = std::min(lo, l[k]), hi = std::max(hi, h[k]);
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *mn = lo;
  *mx = hi;
  return finite;
}

}  // namespace

// mc 96 rows × kc ≤ 512 K values of A (uint16: 96 KiB, L2).
const QKernel& qkernel_avx2() {
  static const QKernel k{"avx2", kPanel, 2, 2, kMR, 512, 96,
                         macro_avx2, quantize_avx2, minmax_avx2};
  return k;
}

}  // namespace fastnn::qgemm_detail

#else  // not built for AVX2: never selected, but keep the symbol for the driver.
namespace fastnn::qgemm_detail {
const QKernel& qkernel_avx2() { return qkernel_generic(); }
}  // namespace fastnn::qgemm_detail
#endif
