// Int8 kernels for AMX (Intel Advanced Matrix Extensions: eight tile registers and
// TDPBUSD), compiled with -mamx-tile -mamx-int8 and the AVX-512 flags of the VNNI file
// (see cmake/isa.cmake), whose quantizer and min/max it reuses; the epilogue is
// qepilogue_avx512.h. The driver calls it only when the CPU reports AMX-TILE and AMX-INT8
// besides the VNNI set and the kernel has granted this process the tile state
// (qgemm.cpp).
//
// One TDPBUSD multiplies a 16×64 uint8 tile of A (16 rows, 64 K values) by a 16×64 int8
// tile of B (16 K groups of 4 values × 16 columns) into a 16×16 int32 tile of C: 16,384
// exact u8·s8 products added in int32 with no saturation, as vpdpbusd does. A B tile is
// 16 consecutive K groups of a packed panel in the VNNI layout (qgemm_internal.h), so the
// packed B is the VNNI one with K padded to a multiple of 64 (kalign).
//
// Micro-tile: 32 rows × 32 columns, four C tiles, with two A tiles and two B tiles per
// step of 64 K values: the eight tile registers. A is read row-major, rows padded to 64
// readable bytes (the driver quantizes or copies it so; kalign).
#include "qgemm_internal.h"

#if defined(FASTNN_X86) && defined(__AMX_TILE__) && defined(__AMX_INT8__) && \
    defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__AVX512DQ__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "qepilogue_avx512.h"

namespace fastnn::qgemm_detail {
namespace {

constexpr int kRows = 32, kCols = 32, kStep = 64;

// The LDTILECFG operand (palette 1): every tile 16 rows of 64 bytes.
struct TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// C tiles 0-3 (rows 0-15 / 16-31 × columns 0-15 / 16-31) += Σ over `steps` steps of 64
// K values: A tiles 4, 5 (row halves), B tiles 6, 7 (panels). R and P: row halves and
// panels present (1 or 2).
template <int R, int P>
void kloop(const uint8_t* a, int64_t a_rs, const uint8_t* b0, const uint8_t* b1,
           int64_t steps) {
  for (int64_t s = 0; s < steps; ++s, a += kStep, b0 += 16 * kStep, b1 += 16 * kStep) {
    _tile_loadd(4, a, a_rs);
    _tile_loadd(6, b0, kStep);
    if constexpr (P == 2) _tile_loadd(7, b1, kStep);
    if constexpr (R == 2) _tile_loadd(5, a + 16 * a_rs, a_rs);
    _tile_dpbusd(0, 4, 6);
    if constexpr (P == 2) _tile_dpbusd(1, 4, 7);
    if constexpr (R == 2) _tile_dpbusd(2, 5, 6);
    if constexpr (R == 2 && P == 2) _tile_dpbusd(3, 5, 7);
  }
}

using KLoop = void (*)(const uint8_t*, int64_t, const uint8_t*, const uint8_t*, int64_t);
constexpr KLoop kLoops[2][2] = {{kloop<1, 1>, kloop<1, 2>}, {kloop<2, 1>, kloop<2, 2>}};

// C block = A block · B block in 32×32 tiles (column groups outer, row tiles inner); the
// int32 sums go through `acc` (32×32) to the epilogue, or to C when the block is not the
// last in K (and come back from C for the next one).
void macro_amx(const Block& blk) {
  static const TileConfig cfg = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
      c.colsb[t] = 64;
      c.rows[t] = 16;
    }
    return c;
  }();
  _tile_loadconfig(&cfg);
  alignas(64) int32_t acc[kRows * kCols];
  const int64_t steps = (blk.kc + kStep - 1) / kStep;
  for (int64_t j = 0; j < blk.nc; j += kCols) {
    const int64_t cols = std::min<int64_t>(kCols, blk.nc - j);
    const int np = cols > 16 ? 2 : 1;
    const __mmask16 mask[2] = {tail_mask(cols), cols > 16 ? tail_mask(cols - 16) : __mmask16(0)};
    const uint8_t* b0 = blk.b + (j / 16) * blk.b_panel_stride;
    const uint8_t* b1 = b0 + blk.b_panel_stride;
    for (int64_t i = 0; i < blk.mc; i += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, blk.mc - i);
      int32_t* c = blk.c + i * blk.ldc + j;
      if (blk.first) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      } else {
        for (int64_t r = 0; r < kRows; ++r)
          for (int v = 0; v < 2; ++v)
            _mm512_store_si512(acc + r * kCols + 16 * v,
                               r < rows ? _mm512_maskz_loadu_epi32(mask[v], c + r * blk.ldc + 16 * v)
                                        : _mm512_setzero_si512());
        _tile_loadd(0, acc, 4 * kCols);
        _tile_loadd(1, acc + 16, 4 * kCols);
        _tile_loadd(2, acc + 16 * kCols, 4 * kCols);
        _tile_loadd(3, acc + 16 * kCols + 16, 4 * kCols);
      }
      kLoops[rows > 16][np - 1](blk.a + i * blk.a_rs, blk.a_rs, b0, b1, steps);
      _tile_stored(0, acc, 4 * kCols);
      _tile_stored(1, acc + 16, 4 * kCols);
      _tile_stored(2, acc + 16 * kCols, 4 * kCols);
      _tile_stored(3, acc + 16 * kCols + 16, 4 * kCols);
      if (!(blk.last && blk.epi)) {
        for (int64_t r = 0; r < rows; ++r)
          for (int v = 0; v < np; ++v)
            _mm512_mask_storeu_epi32(c + r * blk.ldc + 16 * v, mask[v],
                                     _mm512_load_si512(acc + r * kCols + 16 * v));
        continue;
      }
      const EpilogueVectors<2> ev(*blk.epi, blk.j0 + j, mask);
      for (int64_t r = 0; r < rows; ++r) {
        const __m512i sums[2] = {_mm512_load_si512(acc + r * kCols),
                                 _mm512_load_si512(acc + r * kCols + 16)};
        ev.row(reinterpret_cast<float*>(c + r * blk.ldc), sums, mask, cols);
      }
    }
  }
  _tile_release();
}

}  // namespace

// mc 64 rows × kc ≤ 2048 K values of A (≤ 128 KiB, L2); one K block up to K = 2048, so
// the int32 sums rarely leave the tiles before the epilogue.
const QKernel& qkernel_amx() {
  static const QKernel k = [] {
    QKernel q{"amx", 16, 4, 1, kRows, 2048, 64, macro_amx, qkernel_vnni().quantize,
              qkernel_vnni().minmax, true};
    q.kalign = kStep;
    return q;
  }();
  return k;
}

}  // namespace fastnn::qgemm_detail

#else  // not built for AMX: never selected, but keep the symbol for the driver.
namespace fastnn::qgemm_detail {
const QKernel& qkernel_amx() { return qkernel_vnni(); }
}  // namespace fastnn::qgemm_detail
#endif
