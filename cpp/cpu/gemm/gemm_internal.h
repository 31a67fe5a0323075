// Internal to the GEMM: what each ISA file (kernel_generic/avx2/avx512.cpp) provides to
// the driver (gemm.cpp). The loops that touch every element (packing, the macro-kernel
// over mr×nr tiles, the micro-kernel) live in kernel_impl.h, one template compiled once
// per ISA; the driver only blocks, decides what to pack and splits work between threads.
#pragma once
#include <cstdint>

namespace fastnn::gemm_detail {

// One kc×nc block of op(B) as the macro-kernel reads it: nr-wide panels, panel p at
// b + p*panel_step, row k of a panel at + k*row_stride, columns contiguous. Packed:
// row_stride = nr, panel_step = kc*nr. Read in place from a row-major B (no trans_b):
// row_stride = ldb, panel_step = nr. A last panel narrower than nr comes from `edge`
// (packed, row stride nr, zero-padded) when set, so that nothing past column N is read.
struct BBlock {
  const float* b;
  int64_t row_stride, panel_step;
  const float* edge;
};

// One mc×kc block of op(A), cut into row tiles of mr rows, except that a short last tile
// is merged with the one before and the two split evenly (see Kernel::pack_a): a 2-row
// tile runs at a third of the speed. Tile t, starting at row r, is at
// a + t*panel_step + r*row_step. Element (i, k) of a tile is at a[k*stride + i] when
// k_major (packed: stride = mr, panel_step = mr*kc; Aᵀ read in place: stride = lda,
// row_step = 1), else at a[i*stride + k] (A read in place: stride = row_step = lda).
struct ABlock {
  const float* a;
  int64_t stride, panel_step, row_step;
  bool k_major;
};

// One ISA's kernels and block sizes.
struct Kernel {
  const char* isa;
  int mr, nr;          // micro-tile of C
  int mc, kc_max, nc;  // cache blocks: A block mc×kc (L2), B block kc×nc (L3)

  // dst (row tiles as in ABlock, k-major, panel step mr*kc) = op(A)[i0:i0+mc, k0:k0+kc]
  // op(A)(i,k) = trans_a ? A[k*lda + i] : A[i*lda + k]. Rows of a panel past its tile
  // are left unwritten (the kernels never read them).
  void (*pack_a)(float* dst, const float* A, int64_t lda, bool trans_a, int64_t i0,
                 int64_t k0, int64_t mc, int64_t kc);
  // dst (nr-wide panels, row-major, panel step kc*nr) = op(B)[k0:k0+kc, j0:j0+nc];
  // op(B)(k,j) = trans_b ? B[j*ldb + k] : B[k*ldb + j]. A last panel of n < nr columns is
  // zero-padded to the next multiple of the vector width, which is all its tiles read;
  // the rest of its rows is left unwritten.
  void (*pack_b)(float* dst, const float* B, int64_t ldb, bool trans_b, int64_t k0,
                 int64_t j0, int64_t kc, int64_t nc);
  // As pack_b (no trans_b), with row k of the block taken from row rows[k0 + k] of B.
  void (*pack_b_rows)(float* dst, const float* B, int64_t ldb, const int32_t* rows,
                      int64_t k0, int64_t j0, int64_t kc, int64_t nc);
  // C (mc,nc; row stride ldc) = [C +] A-block · B-block, tile by tile (jr outer, ir
  // inner). Each element: acc = Σ_k a·b in k order (fused multiply-add where the ISA has
  // it), then C = acc or C = C + acc. The same element always gets the same operations,
  // whatever tile, block or thread it falls in.
  void (*macro)(float* C, int64_t ldc, const ABlock& A, const BBlock& B, int64_t mc,
                int64_t nc, int64_t kc, bool add);
};

const Kernel& kernel_generic();
const Kernel& kernel_avx2();    // only called when the CPU has AVX2 and FMA
const Kernel& kernel_avx512();  // only called when the CPU has AVX-512F/VL
const Kernel& kernel_avx512_narrow();  // the same, for products into <= 32 columns

}  // namespace fastnn::gemm_detail
