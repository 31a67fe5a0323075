// The int8 kernels' fused epilogue on AVX-512 (included by the VNNI and AMX kernel files,
// both compiled with AVX-512F/BW/DQ/VL): one row of up to NV 16-column vectors of int32
// sums becomes y = act(float(acc − x_zp·colsum) · (x_scale·w_scale) + bias), in exactly
// the order qgemm.h specifies (no fused multiply-add: the files are built with
// -ffp-contract=off).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "../vmath.h"
#include "qgemm_internal.h"

namespace fastnn::qgemm_detail {

inline __mmask16 tail_mask(int64_t cols) {
  return cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1u);
}

// The per-column factors of NV vectors from column n0 on (lanes past `mask` are 0).
template <int NV>
struct EpilogueVectors {
  __m512i corr[NV];  // x_zp·colsum
  __m512 s[NV];      // x_scale·w_scale
  __m512 bias[NV];
  const Epilogue* e;

  EpilogueVectors(const Epilogue& ep, int64_t n0, const __mmask16* mask) : e(&ep) {
    const __m512 xs = _mm512_set1_ps(ep.x_scale);
    const __m512i zp = _mm512_set1_epi32(ep.x_zp);
    for (int v = 0; v < NV; ++v) {
      corr[v] = _mm512_mullo_epi32(zp, _mm512_maskz_loadu_epi32(mask[v], ep.colsum + n0 + 16 * v));
      s[v] = _mm512_mul_ps(xs, _mm512_maskz_loadu_ps(mask[v], ep.w_scale + n0 + 16 * v));
      bias[v] = ep.bias ? _mm512_maskz_loadu_ps(mask[v], ep.bias + n0 + 16 * v)
                        : _mm512_setzero_ps();
    }
  }

  // y[0:cols] from the row's sums acc[0:NV].
  void row(float* y, const __m512i* acc, const __mmask16* mask, int64_t cols) const {
    const bool relu = e->act == Act::relu;
    for (int v = 0; v < NV; ++v) {
      __m512 z = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[v], corr[v])), s[v]);
      if (e->bias) z = _mm512_add_ps(z, bias[v]);
      if (relu) z = _mm512_max_ps(z, _mm512_setzero_ps());
      _mm512_mask_storeu_ps(y + 16 * v, mask[v], z);
    }
    if (!relu && e->act != Act::linear) vmath::act_span(y, y, cols, e->act);
  }
};

}  // namespace fastnn::qgemm_detail
