// Internal to the int8 kernels: what each ISA file (qkernel_generic/avx2/vnni.cpp)
// provides to the driver (qgemm.cpp).
//
// Packed layouts, described by (panel, kgroup, eb) and shared by the driver's pack
// routines:
//   B: column panels of `panel` columns, K rounded up to a multiple of kgroup (Kp) and
//      zero-padded, as are the columns past N. Panel p starts at p·Kp·panel·eb bytes; in
//      it, element (k, c) sits at ((k/kgroup)·panel + c)·kgroup + k%kgroup elements of eb
//      bytes (int8 for eb = 1, int16 for eb = 2).
//        amx:        panel 16, kgroup 4, eb 1, K padded to 64 (kalign: a tile is 16 groups)
//        avx512vnni: panel 16, kgroup 4, eb 1  (one 64-byte zmm per group: vpdpbusd)
//        avx2:       panel 8,  kgroup 2, eb 2  (one 32-byte ymm per group: vpmaddwd)
//        generic:    panel 16, kgroup 1, eb 1  (row-major within the panel)
//   A (one mc×kc block, packed per thread): row tiles of mr rows; tile t at
//      t·mr·kcp·eb bytes (kcp = kc rounded up to kgroup), element (i, k) of a tile at
//      ((k/kgroup)·mr + i)·kgroup + k%kgroup elements of eb bytes (uint8 or uint16),
//      zero-padded in k. Rows past the block in the last tile are not written or read.
#pragma once
#include <cstdint>

#include "fastnn/activation.h"

namespace fastnn::qgemm_detail {

// The fused epilogue's per-call data (see qgemm.h for the formula).
struct Epilogue {
  const int32_t* colsum;  // (N) column sums of B
  const float* w_scale;   // (N)
  const float* bias;      // (N) or nullptr
  float x_scale;
  int32_t x_zp;
  Act act;
};

// One macro-kernel call: C[0:mc, 0:nc] (row stride ldc, in elements) over one K block.
struct Block {
  int32_t* c;           // int32 partial sums, or float32 y when last && epi
  int64_t ldc;
  const uint8_t* a;     // packed A block
  // Where A's values sit (used by kernels with direct_a): row r, K group g of tile t at
  // a + t·a_ts + r·a_rs + g·a_gs bytes. Packed: a_rs = kgroup·eb, a_gs = mr·kgroup·eb,
  // a_ts = mr·kcp·eb; direct (row-major A, row stride lda): a_rs = lda, a_gs = 4,
  // a_ts = mr·lda.
  int64_t a_rs, a_gs, a_ts;
  // Direct A only: after every a_seg K groups (0: never) the A position jumps a_jump
  // more bytes (an implicit-GEMM convolution: one segment per kernel row).
  int64_t a_seg = 0, a_jump = 0;
  const uint8_t* b;     // packed B: the block's first panel, at the K block's first group
  int64_t b_panel_stride;  // bytes from one panel to the next
  int64_t mc, nc, kc;   // rows, columns, K values of the block (kc padded inside)
  int64_t j0;           // first column of the block (index into the epilogue's arrays)
  bool first, last;     // first K block: start from 0; last: finish (epilogue or store)
  const Epilogue* epi;  // nullptr: C receives the int32 sums
};

struct QKernel {
  const char* isa;
  int panel, kgroup, eb;  // packed B layout (above); packed A uses kgroup, eb, mr
  int mr;                 // rows per micro-tile
  int64_t kc_max, mc_max; // cache blocks: A block mc×kc (L2), B micro-panel kc×(4 panels)
  // C block = A block · B block, tile by tile (column groups outer, row tiles inner).
  void (*macro)(const Block& blk);
  // q (n) = clamp(rint(x / scale) + zp, 0, 255), NaN → 0.
  void (*quantize)(uint8_t* q, const float* x, int64_t n, float scale, float zp);
  // mn = min(x), mx = max(x); returns false when x holds a NaN or an infinity.
  bool (*minmax)(float* mn, float* mx, const float* x, int64_t n);
  // The macro-kernel reads A through a_rs/a_gs/a_ts, so a row-major uint8 A whose rows
  // hold a multiple of kgroup readable bytes needs no packing.
  bool direct_a = false;
  // K padding of the B panels and of the K blocks when it is more than kgroup (AMX: 64,
  // the K of one tile), else 0. Such a kernel reads A row-major only (a_rs; no segments),
  // every row with a multiple of kalign readable bytes and the rows of the block rounded
  // up to 16 readable.
  int kalign = 0;
};

const QKernel& qkernel_generic();
const QKernel& qkernel_avx2();  // only called when the CPU has AVX2 and FMA
const QKernel& qkernel_vnni();  // only called when the CPU has AVX-512F/BW/DQ/VL/VNNI
const QKernel& qkernel_amx();   // only called when, besides, AMX tiles are usable

// The scalar epilogue of one element (used by the generic kernel and the plain twin).
inline float epilogue_z(int32_t acc, int32_t colsum, float x_scale, float w_scale,
                        const float* bias, int64_t n, int32_t x_zp) {
  const int32_t d = acc - x_zp * colsum;
  const float s = x_scale * w_scale;
  float z = float(d) * s;
  if (bias) z = z + bias[n];
  return z;
}

}  // namespace fastnn::qgemm_detail
