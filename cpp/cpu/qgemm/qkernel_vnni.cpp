// Int8 kernels for AVX-512 VNNI (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl
// -mavx512vnni -mavx2 -mfma, see cmake/isa.cmake; the driver calls them only when the
// CPU reports all of these).
//
// Micro-tile: 6 rows × 4 panels of 16 columns = 24 zmm accumulators of 16 int32. One
// K group (4 values) costs 4 loads of B (64 bytes each: 16 columns × 4 int8), 6 32-bit
// broadcasts of A (4 uint8) and 24 vpdpbusd, each adding four exact u8·s8 products to
// each int32 lane (no saturation).
#include "qgemm_internal.h"

#if defined(FASTNN_X86) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__AVX512DQ__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qepilogue_avx512.h"

namespace fastnn::qgemm_detail {
namespace {

constexpr int kMR = 6, kNV = 4, kPanel = 16;

// acc (MR×NV zmm) = [C +] A tile · NV panels over `groups` K groups. Kept apart from the
// epilogue so that the 24 accumulators, 4 B vectors and the broadcast stay in registers.
template <int MR, int NV>
__attribute__((noinline)) void kloop(__m512i* out, const uint8_t* a, int64_t rs, int64_t gs,
                                     int64_t seg, int64_t jump, const uint8_t* b, int64_t ps,
                                     int64_t groups, const int32_t* c, int64_t ldc, bool first,
                                     const __mmask16* mask) {
  __m512i acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = first ? _mm512_setzero_si512()
                        : _mm512_maskz_loadu_epi32(mask[v], c + r * ldc + 16 * v);
  if (seg <= 0) seg = groups;
  for (int64_t g0 = 0; g0 < groups; g0 += seg) {
    const int64_t ge = std::min(groups, g0 + seg);
    for (int64_t g = g0; g < ge; ++g, a += gs, b += 64) {
      __m512i bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(b + v * ps);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        int32_t a4;
        std::memcpy(&a4, a + r * rs, 4);
        const __m512i av = _mm512_set1_epi32(a4);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
      }
    }
    a += jump;
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) out[r * NV + v] = acc[r][v];
}

// C[0:MR, 0:cols] (+)= A tile · NV panels; then the epilogue or the int32 store.
template <int MR, int NV>
void micro(const Block& blk, const uint8_t* a, const uint8_t* b, int32_t* c, int64_t j,
           int64_t cols) {
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask(cols - 16 * v);
  __m512i accs[MR * NV];
  kloop<MR, NV>(accs, a, blk.a_rs, blk.a_gs, blk.a_seg, blk.a_jump, b, blk.b_panel_stride,
                (blk.kc + 3) / 4, c, blk.ldc, blk.first, mask);
  if (!(blk.last && blk.epi)) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_epi32(c + r * blk.ldc + 16 * v, mask[v], accs[r * NV + v]);
    return;
  }
  const EpilogueVectors<NV> ev(*blk.epi, blk.j0 + j, mask);
  for (int r = 0; r < MR; ++r)
    ev.row(reinterpret_cast<float*>(c + r * blk.ldc), accs + r * NV, mask, cols);
}

using MicroFn = void (*)(const Block&, const uint8_t*, const uint8_t*, int32_t*, int64_t,
                         int64_t);

template <int MR>
constexpr MicroFn pick_nv(int nv) {
  return nv == 1 ? micro<MR, 1> : nv == 2 ? micro<MR, 2> : nv == 3 ? micro<MR, 3> : micro<MR, 4>;
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

// C block = A block · B block: column groups of 4 panels outer, row tiles inner.
void macro_vnni(const Block& blk) {
  for (int64_t j = 0; j < blk.nc; j += kNV * kPanel) {
    const int64_t cols = std::min<int64_t>(kNV * kPanel, blk.nc - j);
    const int nv = int((cols + kPanel - 1) / kPanel);
    const uint8_t* b = blk.b + (j / kPanel) * blk.b_panel_stride;
    for (int64_t i = 0; i < blk.mc; i += kMR) {
      const int mr = int(std::min<int64_t>(kMR, blk.mc - i));
      pick(mr, nv)(blk, blk.a + (i / kMR) * blk.a_ts, b, blk.c + i * blk.ldc + j, j, cols);
    }
  }
}

// q = clamp(rint(x / scale) + zp, 0, 255), NaN → 0.
// The shifted quotient is first taken as r = fma(x, 1/scale, zp): while |x / scale| < 1024,
// 1/scale's rounding moves it by at most 2^-14, the fma's by at most 2^-14 more (|r| <
// 2048), and fl(x / scale) lies within 2^-14 of x / scale, so rint(r) = rint(x / scale) +
// zp unless r lies within 2^-12 of a half-integer (vreduceps gives r − rint(r) in one
// step); only vectors holding such a lane pay for the IEEE division (ties are rare but
// exact: the result is bit for bit that of rint(x / scale) + zp).
// Past 1024 either quotient clamps to the same end (min(1024, r) keeps a NaN r, which
// converts to INT_MIN and saturates to 0, as do −inf and large negative r). rint is the
// conversion's round-to-nearest-even; the clamp to [0, 255] is the unsigned saturation
// of the packs (vpackusdw, vpackuswb) or of max(i, 0) and vpmovusdb.
struct Quantizer {
  __m512 inv, vs, cap, near_lo, zpf;
  __m512i zp;
  bool use_inv;
  Quantizer(float scale, float zp_f) {
    const float inv_s = 1.0f / scale;
    use_inv = std::isfinite(inv_s) && inv_s >= 1.17549435e-38f;
    inv = _mm512_set1_ps(inv_s);
    vs = _mm512_set1_ps(scale);
    cap = _mm512_set1_ps(1024.0f);
    near_lo = _mm512_set1_ps(0.5f - 2.44140625e-4f);  // 0.5 − 2^-12
    zpf = _mm512_set1_ps(zp_f);
    zp = _mm512_set1_epi32(int32_t(zp_f));
  }
  // int32 rint(x / scale) + zp, not yet clamped (NaN: INT_MIN or INT_MIN + zp, below 0).
  __m512i operator()(__m512 xv) const {
    constexpr int kNear = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    if (use_inv) {
      // Past 1024 − zp the result clamps to 255 either way; below −2^31 the conversion
      // gives INT_MIN (0 after the clamp), as for NaN.
      const __m512 r = _mm512_min_ps(cap, _mm512_fmadd_ps(xv, inv, zpf));
      __m512i i = _mm512_cvt_roundps_epi32(r, kNear);
      const __m512 f = _mm512_abs_ps(_mm512_reduce_ps(r, _MM_FROUND_TO_NEAREST_INT));
      const __mmask16 near = _mm512_cmp_ps_mask(f, near_lo, _CMP_GE_OQ);
      if (near)
        i = _mm512_mask_add_epi32(
            i, near,
            _mm512_cvt_roundps_epi32(_mm512_min_ps(cap, _mm512_maskz_div_ps(near, xv, vs)),
                                     kNear),
            zp);
      return i;
    }
    return _mm512_add_epi32(
        _mm512_cvt_roundps_epi32(_mm512_min_ps(cap, _mm512_div_ps(xv, vs)), kNear), zp);
  }
};

void quantize_vnni(uint8_t* q, const float* x, int64_t n, float scale, float zp) {
  const Quantizer qz(scale, zp);
  // packus works per 128-bit lane: dword k of the packed vector holds 4 bytes of input
  // vector k % 4, lane k / 4; this permutation puts them back in order.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i a = qz(_mm512_loadu_ps(x + i)), b = qz(_mm512_loadu_ps(x + i + 16));
    const __m512i c = qz(_mm512_loadu_ps(x + i + 32)), d = qz(_mm512_loadu_ps(x + i + 48));
    const __m512i v = _mm512_packus_epi16(_mm512_packus_epi32(a, b), _mm512_packus_epi32(c, d));
    _mm512_storeu_si512(q + i, _mm512_permutexvar_epi32(order, v));
  }
  const __m512i zero = _mm512_setzero_si512();
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm512_cvtusepi32_epi8(_mm512_max_epi32(qz(_mm512_loadu_ps(x + i)), zero)));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm_mask_storeu_epi8(q + i, m,
                         _mm512_cvtusepi32_epi8(_mm512_max_epi32(
                             qz(_mm512_maskz_loadu_ps(m, x + i)), zero)));
  }
}

bool minmax_vnni(float* mn, float* mx, const float* x, int64_t n) {
  if (n <= 0) {
    *mn = *mx = 0.0f;
    return true;
  }
  __m512 lo = _mm512_set1_ps(x[0]), hi = lo;
  __mmask16 bad = 0;
  const __m512 inf = _mm512_set1_ps(INFINITY);
  int64_t i = 0;
  // A head up to the next 64-byte boundary, so that the loads below do not straddle
  // cache lines (about 12% faster over data in L2).
  const int64_t head = std::min<int64_t>(
      n, int64_t((64 - (reinterpret_cast<uintptr_t>(x) & 63)) & 63) / 4);
  if (head > 0 && (reinterpret_cast<uintptr_t>(x) & 3) == 0) {
    const __mmask16 m = tail_mask(head);
    const __m512 v = _mm512_mask_loadu_ps(lo, m, x);
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, _mm512_mask_loadu_ps(hi, m, x));
    bad |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
    i = head;
  }
  // Four independent chains (min/max latency, not throughput, bounds one chain).
  __m512 lo1 = lo, lo2 = lo, lo3 = lo, hi1 = hi, hi2 = hi, hi3 = hi;
  for (; i + 64 <= n; i += 64) {
    const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
    const __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
    lo = _mm512_min_ps(lo, v0), hi = _mm512_max_ps(hi, v0);
    lo1 = _mm512_min_ps(lo1, v1), hi1 = _mm512_max_ps(hi1, v1);
    lo2 = _mm512_min_ps(lo2, v2), hi2 = _mm512_max_ps(hi2, v2);
    lo3 = _mm512_min_ps(lo3, v3), hi3 = _mm512_max_ps(hi3, v3);
    // NaN: unordered with itself (±inf shows in the final min or max).
    bad |= _mm512_cmp_ps_mask(v0, v1, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v2, v3, _CMP_UNORD_Q);
  }
  lo = _mm512_min_ps(_mm512_min_ps(lo, lo1), _mm512_min_ps(lo2, lo3));
  hi = _mm512_max_ps(_mm512_max_ps(hi, hi1), _mm512_max_ps(hi2, hi3));
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, v);
    bad |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_mask_loadu_ps(lo, m, x + i);
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, _mm512_mask_loadu_ps(hi, m, x + i));
    bad |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
  }
  // A NaN may have been dropped by a later min/max, but it set `bad`; an infinity stays.
  bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(lo), inf, _CMP_NLT_UQ) |
         _mm512_cmp_ps_mask(_mm512_abs_ps(hi), inf, _CMP_NLT_UQ);
  *mn = _mm512_reduce_min_ps(lo);
  *mx = _mm512_reduce_max_ps(hi);
  return bad == 0;
}

}  // namespace

// mc 96 rows × kc ≤ 1024 K values of A (≤ 96 KiB, L2); a micro-panel of B is kc × 64
// bytes per panel (L1/L2). One K block up to K = 1024 (784: the MNIST input) saves the
// int32 store and reload of the partial sums and a second quantizer call per row.
const QKernel& qkernel_vnni() {
  static const QKernel k{"avx512vnni", kPanel, 4, 1, kMR, 1024, 96,
                         macro_vnni, quantize_vnni, minmax_vnni, true};
  return k;
}

}  // namespace fastnn::qgemm_detail

#else  // not built for AVX-512 VNNI: never selected, but keep the symbol for the driver.
namespace fastnn::qgemm_detail {
const QKernel& qkernel_vnni() { return qkernel_generic(); }
}  // namespace fastnn::qgemm_detail
#endif
