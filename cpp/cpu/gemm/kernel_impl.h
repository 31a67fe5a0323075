// The GEMM's inner loops, written once over a tiny vector type V and compiled once per
// ISA (kernel_generic.cpp, kernel_avx2.cpp, kernel_avx512.cpp). Only V differs between
// ISAs; everything here is plain C++.
//
// V provides: type T holding W floats; zero(), load(p), store(p, v) (unaligned),
// load_n(p, n) (lanes [0, n) from p, the others 0, reading nothing past p + n; 0 < n < W),
// bcast(p) (all lanes = *p), fma(a, b, c) (a*b + c), add(a, b); and a block transpose
// transpose_tb(dst, ds, src, ss): dst[r*ds + c] = src[c*ss + r] for r, c < TB.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "gemm_internal.h"

namespace fastnn::gemm_detail {

template <class V, int MR_, int NV_>
struct Impl {
  static constexpr int W = V::W, MR = MR_, NV = NV_, NR = NV * W, TB = V::TB;
  static_assert(NR % TB == 0, "the block transpose must tile a B panel");
  using T = typename V::T;
  using TileFn = void (*)(int64_t kc, const float* a, int64_t as, const float* b,
                          int64_t bs, float* c, int64_t ldc, int n, bool add);

  // C tile (M rows, n <= NV2*W columns) = [C +] Σ_k a(:,k) ⊗ b(k,:).
  // a(i,k) = a[k*as + i] (KM, k-major) or a[i*as + k]; b(k,:) = b + k*bs, NV2*W floats.
  template <int M, int NV2, bool KM>
  static void tile(int64_t kc, const float* a, int64_t as, const float* b, int64_t bs,
                   float* c, int64_t ldc, int n, bool add) {
    T acc[M][NV2];
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) {
      __builtin_prefetch(c + i * ldc, 1);
      __builtin_prefetch(c + i * ldc + NV2 * W - 1, 1);
#pragma GCC unroll 32
      for (int j = 0; j < NV2; ++j) acc[i][j] = V::zero();
    }
    if constexpr (KM) {
#pragma GCC unroll 4
      for (int64_t k = 0; k < kc; ++k) {
        T bv[NV2];
#pragma GCC unroll 32
        for (int j = 0; j < NV2; ++j) bv[j] = V::load(b + j * W);
#pragma GCC unroll 32
        for (int i = 0; i < M; ++i) {
          const T av = V::bcast(a + i);
#pragma GCC unroll 32
          for (int j = 0; j < NV2; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
        }
        a += as;
        b += bs;
      }
    } else {
      const float* ar[M];
#pragma GCC unroll 32
      for (int i = 0; i < M; ++i) ar[i] = a + i * as;
#pragma GCC unroll 4
      for (int64_t k = 0; k < kc; ++k) {
        T bv[NV2];
#pragma GCC unroll 32
        for (int j = 0; j < NV2; ++j) bv[j] = V::load(b + j * W);
#pragma GCC unroll 32
        for (int i = 0; i < M; ++i) {
          const T av = V::bcast(ar[i] + k);
#pragma GCC unroll 32
          for (int j = 0; j < NV2; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
        }
        b += bs;
      }
    }
    if (n == NV2 * W) {
#pragma GCC unroll 32
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 32
        for (int j = 0; j < NV2; ++j) {
          float* p = c + i * ldc + j * W;
          V::store(p, add ? V::add(V::load(p), acc[i][j]) : acc[i][j]);
        }
    } else {
      alignas(64) float t[M][NV2 * W];
#pragma GCC unroll 32
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 32
        for (int j = 0; j < NV2; ++j) V::store(&t[i][j * W], acc[i][j]);
      for (int i = 0; i < M; ++i) {
        float* p = c + i * ldc;
        if (add)
          for (int j = 0; j < n; ++j) p[j] = p[j] + t[i][j];
        else
          for (int j = 0; j < n; ++j) p[j] = t[i][j];
      }
    }
  }

  // tiles[KM][NV2-1][M-1]: one instantiation per row count, so edge tiles read only
  // the rows that exist and do no wasted work.
  template <int NV2, bool KM, int... I>
  static constexpr std::array<TileFn, MR> row_tiles(std::integer_sequence<int, I...>) {
    return {{&tile<I + 1, NV2, KM>...}};
  }
  template <bool KM, int... J>
  static constexpr std::array<std::array<TileFn, MR>, NV> tiles_km(
      std::integer_sequence<int, J...>) {
    return {{row_tiles<J + 1, KM>(std::make_integer_sequence<int, MR>{})...}};
  }
  static constexpr std::array<std::array<TileFn, MR>, NV> tiles[2] = {
      tiles_km<false>(std::make_integer_sequence<int, NV>{}),
      tiles_km<true>(std::make_integer_sequence<int, NV>{})};

  // Rows of the tile that starts at row ir of an mc-row block: mr, except that a last
  // tile of at most mr/2 rows is merged with the one before and the pair split evenly.
  static int64_t tile_rows(int64_t mc, int64_t ir) {
    const int64_t left = mc - ir;
    if (left > MR && left < 2 * MR && left - MR <= MR / 2) return (left + 1) / 2;
    return std::min<int64_t>(MR, left);
  }

  // C (mc,nc) = [C +] A-block (mc,kc) · B-block (kc,nc): B panels outer (one stays in L1
  // while the A tiles stream past it), row tiles inner. See Kernel::macro.
  //
  // A single row (a matrix-vector product, e.g. inference on one sample) with B read in
  // place runs WIDE panels per tile: one row has only NV running sums per panel, each a
  // chain of dependent FMAs, so the FMA latency, not the arithmetic, bounded it (7.8 us
  // for 1x784 -> 128 on Zen 4, against 15 us for eight rows). The sums and their order
  // are those of the narrow tile, so the results are bitwise the same.
  static constexpr int WIDE = 4;
  static void macro(float* C, int64_t ldc, const ABlock& A, const BBlock& B, int64_t mc,
                    int64_t nc, int64_t kc, bool add) {
    const auto& tk = tiles[A.k_major ? 1 : 0];
    int64_t jr = 0, p = 0;
    if (mc == 1 && B.panel_step == NR && B.row_stride >= WIDE * NR) {
      const TileFn wide = A.k_major ? &tile<1, WIDE * NV, true> : &tile<1, WIDE * NV, false>;
      for (; jr + WIDE * NR <= nc; jr += WIDE * NR, p += WIDE)
        wide(kc, A.a, A.stride, B.b + p * B.panel_step, B.row_stride, C + jr, ldc,
             WIDE * NR, add);
    }
    for (; jr < nc; jr += NR, ++p) {
      const int n = int(std::min<int64_t>(NR, nc - jr));
      const float* b = B.b + p * B.panel_step;
      int64_t bs = B.row_stride;
      if (n < NR && B.edge) b = B.edge, bs = NR;
      const auto& tn = tk[(n + W - 1) / W - 1];
      const TileFn full = tn[MR - 1];
      for (int64_t ir = 0, q = 0, m; ir < mc; ir += m, ++q) {
        m = tile_rows(mc, ir);
        (m == MR ? full : tn[m - 1])(kc, A.a + q * A.panel_step + ir * A.row_step, A.stride,
                                     b, bs, C + ir * ldc + jr, ldc, int(n), add);
      }
    }
  }

  // dst[r*ds + c] = src[c*ss + r] for r < R, c < Cn: TB×TB blocks, then the rest.
  static void transpose_copy(float* dst, int64_t ds, const float* src, int64_t ss,
                             int64_t R, int64_t Cn) {
    int64_t c = 0;
    for (; c + TB <= Cn; c += TB) {
      int64_t r = 0;
      for (; r + TB <= R; r += TB) V::transpose_tb(dst + r * ds + c, ds, src + c * ss + r, ss);
      for (; r < R; ++r)
        for (int64_t cc = c; cc < c + TB; ++cc) dst[r * ds + cc] = src[cc * ss + r];
    }
    if (c < Cn)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t cc = c; cc < Cn; ++cc) dst[r * ds + cc] = src[cc * ss + r];
  }

  // A tiles (mc,kc) -> k-major panels; see Kernel::pack_a.
  static void pack_a(float* dst, const float* A, int64_t lda, bool trans_a, int64_t i0,
                     int64_t k0, int64_t mc, int64_t kc) {
    for (int64_t ir = 0, m; ir < mc; ir += m, dst += MR * kc) {
      m = tile_rows(mc, ir);
      if (trans_a) {
        const float* s = A + k0 * lda + i0 + ir;
        if (m == MR) {
          for (int64_t k = 0; k < kc; ++k)
            for (int i = 0; i < MR; ++i) dst[k * MR + i] = s[k * lda + i];
        } else {
          for (int64_t k = 0; k < kc; ++k)
            for (int64_t i = 0; i < m; ++i) dst[k * MR + i] = s[k * lda + i];
        }
      } else {
        transpose_copy(dst, MR, A + (i0 + ir) * lda + k0, lda, kc, m);
      }
    }
  }

  // One row of a B panel: d[0, n) = s[0, n) and zeros up to the end of the vector that
  // holds column n-1 (the tiles of an n-wide panel read no further; see Kernel::pack_b).
  // Whole vectors, then one partial load: the element-by-element copy and zero fill of a
  // 10-column panel cost more than the product itself (32x128 -> 10: 3.1 us against 1.7).
  static void copy_row(float* d, const float* s, int64_t n) {
    int64_t j = 0;
    for (; j + W <= n; j += W) V::store(d + j, V::load(s + j));
    if (j < n) V::store(d + j, V::load_n(s + j, int(n - j)));
  }

  // B block (kc,nc) -> row-major nr-wide panels; see Kernel::pack_b.
  static void pack_b(float* dst, const float* B, int64_t ldb, bool trans_b, int64_t k0,
                     int64_t j0, int64_t kc, int64_t nc) {
    for (int64_t jr = 0; jr < nc; jr += NR, dst += NR * kc) {
      const int64_t n = std::min<int64_t>(NR, nc - jr);
      if (trans_b) {
        transpose_copy(dst, NR, B + (j0 + jr) * ldb + k0, ldb, kc, n);
        const int64_t padded = (n + W - 1) / W * W;
        if (n < padded)
          for (int64_t k = 0; k < kc; ++k)
            for (int64_t j = n; j < padded; ++j) dst[k * NR + j] = 0.0f;
      } else {
        const float* s = B + k0 * ldb + j0 + jr;
        if (n == NR) {
          for (int64_t k = 0; k < kc; ++k)
            for (int j = 0; j < NV; ++j) V::store(dst + k * NR + j * W, V::load(s + k * ldb + j * W));
        } else {
          for (int64_t k = 0; k < kc; ++k) copy_row(dst + k * NR, s + k * ldb, n);
        }
      }
    }
  }

  // B block (kc,nc) with row k from row rows[k0+k] -> panels; see Kernel::pack_b_rows.
  static void pack_b_rows(float* dst, const float* B, int64_t ldb, const int32_t* rows,
                          int64_t k0, int64_t j0, int64_t kc, int64_t nc) {
    for (int64_t jr = 0; jr < nc; jr += NR, dst += NR * kc) {
      const int64_t n = std::min<int64_t>(NR, nc - jr);
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = B + int64_t(rows[k0 + k]) * ldb + j0 + jr;
        if (n == NR) {
          for (int j = 0; j < NV; ++j) V::store(dst + k * NR + j * W, V::load(s + j * W));
        } else {
          copy_row(dst + k * NR, s, n);
        }
      }
    }
  }

  static Kernel make(const char* isa, int mc, int kc_max, int nc) {
    static_assert(MR >= 1 && NV >= 1, "tile sizes");
    return Kernel{isa, MR, NR, mc, kc_max, nc, &pack_a, &pack_b, &pack_b_rows, &macro};
  }
};

}  // namespace fastnn::gemm_detail
