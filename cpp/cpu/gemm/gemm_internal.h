// Internal to the GEMM: the micro-kernel interface each ISA file implements.
#pragma once
#include <cstdint>

namespace fastnn::gemm_detail {

// Tile sizes of one ISA's micro-kernel.
struct MicroKernel {
  int mr, nr;  // C tile rows, columns
  // C (mr,nr tile, row stride ldc) = [C +] Ap (packed mr×kc, column by column) ·
  //                                       Bp (packed kc×nr, row by row)
  // Only the top-left m×n corner of the tile is written (m ≤ mr, n ≤ nr).
  void (*run)(float* C, int64_t ldc, const float* Ap, const float* Bp, int64_t kc,
              int64_t m, int64_t n, bool accumulate);
};

MicroKernel micro_kernel_generic();
MicroKernel micro_kernel_avx2();
MicroKernel micro_kernel_avx512();

}  // namespace fastnn::gemm_detail
