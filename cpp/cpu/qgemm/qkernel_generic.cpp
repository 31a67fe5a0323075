// Int8 kernels in plain C++ (baseline ISA): 16-column panels read row by row, one row of
// A at a time (mr = 1), int32 sums in a local array the compiler vectorises.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../vmath.h"
#include "qgemm_internal.h"

namespace fastnn::qgemm_detail {
namespace {

constexpr int kPanel = 16;

// C block = A block · B block (see qgemm_internal.h; mr = 1, kgroup = 1).
void macro_generic(const Block& blk) {
  const int64_t np = (blk.nc + kPanel - 1) / kPanel;
  for (int64_t p = 0; p < np; ++p) {
    const int64_t j = p * kPanel, cols = std::min<int64_t>(kPanel, blk.nc - j);
    const int8_t* b = reinterpret_cast<const int8_t*>(blk.b + p * blk.b_panel_stride);
    for (int64_t i = 0; i < blk.mc; ++i) {
      const uint8_t* a = blk.a + i * blk.kc;  // tile i (one row), k contiguous
      int32_t* c = blk.c + i * blk.ldc + j;
      int32_t acc[kPanel];
      if (blk.first)
        std::fill(acc, acc + kPanel, 0);
      else
        for (int64_t q = 0; q < cols; ++q) acc[q] = c[q];
      for (int64_t k = 0; k < blk.kc; ++k) {
        const int32_t av = a[k];
        const int8_t* bk = b + k * kPanel;
#pragma omp simd
        for (int q = 0; q < kPanel; ++q) acc[q] += av * int32_t(bk[q]);
      }
      if (blk.last && blk.epi) {
        const Epilogue& e = *blk.epi;
        float* y = reinterpret_cast<float*>(c);
        for (int64_t q = 0; q < cols; ++q) {
          const int64_t n = blk.j0 + j + q;
          y[q] = epilogue_z(acc[q], e.colsum[n], e.x_scale, e.w_scale[n], e.bias, n, e.x_zp);
        }
        if (e.act != Act::linear) vmath::act_span(y, y, cols, e.act);
      } else {
        std::memcpy(c, acc, size_t(cols) * sizeof(int32_t));
      }
    }
  }
}

void quantize_generic(uint8_t* q, const float* x, int64_t n, float scale, float zp) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::rint(x[i] / scale) + zp;
    q[i] = std::isnan(v) ? 0 : uint8_t(std::min(std::max(v, 0.0f), 255.0f));
  }
}

bool minmax_generic(float* mn, float* mx, const float* x, int64_t n) {
  float lo = x[0], hi = x[0];
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  *mn = lo;
  *mx = hi;
  return finite;
}

}  // namespace

const QKernel& qkernel_generic() {
  static const QKernel k{"generic", kPanel, 1, 1, 1, 4096, 64,
                         macro_generic, quantize_generic, minmax_generic};
  return k;
}

}  // namespace fastnn::qgemm_detail
