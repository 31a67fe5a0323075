// Int8 quantized kernels: C int32 = A uint8 · B int8 with exact int32 accumulation, the
// fused dense/conv epilogue that turns the sums into float32 outputs, and the activation
// quantizers that produce A.
//
// Quantization scheme (as ONNX Runtime's dynamic quantization, u8 activations × s8
// weights):
//   activations  x ≈ x_scale · (q − x_zp),  q uint8, x_zp in [0, 255], per tensor;
//   weights      w[:, n] ≈ w_scale[n] · wq[:, n],  wq int8 (symmetric, per column).
//
// B is a constant weight: qgemm_pack_b copies it once into an ISA-specific layout (plus
// its column sums, which the zero-point correction needs); every product then reads the
// packed copy. The packed buffer starts with a 64-byte header that records K, N and the
// ISA it was packed for; products run that ISA's kernel.
//
// Exactness: every u8·s8 product and every partial sum is exact in int32 for
// K ≤ kQgemmMaxK (255·128·K < 2^31), so the int32 results do not depend on the ISA, the
// blocking or the thread count, and the float epilogue is elementwise: all results are
// bitwise the same for any thread count.
#pragma once
#include <cstdint>

#include "fastnn/activation.h"

namespace fastnn {

// Largest K for which the int32 sums cannot overflow (255·128·K < 2^31).
constexpr int64_t kQgemmMaxK = 65793;

// Instruction set of the int8 kernels: "amx" (tdpbusd on tiles; products of fewer than 16
// rows run the VNNI kernel), "avx512vnni" (vpdpbusd), "avx2" (u8/s8 widened to
// int16, vpmaddwd) or "generic" (plain loops). The default is the best this CPU runs.
const char* qgemm_isa();
// Names the int8 ISAs this CPU can run, best first.
const char* const* qgemm_supported_isas(int* count);
// Force an int8 ISA (tests, benchmarks) for later packs and quantizers, every pack then
// in its layout (see qgemm_packed_size); false if this CPU cannot run it.
bool set_qgemm_isa(const char* name);

// Bytes of a packed (K,N) int8 weight for `isa` (nullptr: qgemm_isa(), except that with
// "amx" chosen by default, not by set_qgemm_isa, a K that padding to 64 would grow by more
// than a quarter, e.g. a first conv's 9, is packed for "avx512vnni"); -1 if unknown.
int64_t qgemm_packed_size(int64_t K, int64_t N, const char* isa);
// packed (qgemm_packed_size bytes) = B int8 (K,N) in isa's layout (nullptr: as above),
// zero-padded, with the column sums Σ_k B[k, n] and a header naming the ISA, K and N.
void qgemm_pack_b(uint8_t* packed, const int8_t* B, int64_t K, int64_t N, const char* isa);
// The ISA a packed buffer of `bytes` bytes was packed for, with its K and N; nullptr when
// it is not a valid packed buffer (wrong magic, size or ISA unknown to this CPU).
const char* qgemm_packed_info(const uint8_t* packed, int64_t bytes, int64_t* K, int64_t* N);
// The column sums (N) of a packed buffer.
const int32_t* qgemm_packed_colsum(const uint8_t* packed);

// C int32 (M,N) = A uint8 (M,K) · B int8 (K,N), B given packed.
void qgemm_s32(int32_t* C, const uint8_t* A, const uint8_t* packed, int64_t M, int64_t N,
               int64_t K);

// The fused epilogue ("qdense"), with acc = A·B as above:
//   y (M,N) float32 = act(z),  z = float(acc[m,n] − x_zp·colsum[n]) · s[n] + b[n]
// computed in float32 in exactly this order, each step rounded once (no fused
// multiply-add): the int32 difference d = acc − x_zp·colsum[n] is exact; float(d) rounds
// to nearest even; s[n] = x_scale · w_scale[n] (one float32 product); then the product
// float(d)·s[n]; then + b[n] (skipped when b is nullptr). act as in activation.h (relu:
// z > 0 ? z : 0; sigmoid, tanh, gelu: the vectorised ones of act_forward, within a few
// ulp of <cmath>). So relu/linear outputs match a float32 NumPy twin bit for bit.
void qdense_forward(float* y, const uint8_t* xq, const uint8_t* packed, const float* w_scale,
                    const float* b, float x_scale, int32_t x_zp, int64_t M, int64_t N,
                    int64_t K, Act act);

// The same y from the float input x (M,K): equal bit for bit to quantize_u8(xq, x, M·K,
// x_scale, x_zp) followed by qdense_forward(y, xq, ...), but each block of rows is
// quantized just before it is packed (no xq is written, x is read once, from cache).
void qdense_forward_f32(float* y, const float* x, const uint8_t* packed, const float* w_scale,
                        const float* b, float x_scale, int32_t x_zp, int64_t M, int64_t N,
                        int64_t K, Act act);

// q (n) = clamp(rint(x / scale) + zero_point, 0, 255) in float32: IEEE division, rint
// rounds half to even, NaN gives 0. scale > 0 finite, zero_point in [0, 255].
void quantize_u8(uint8_t* q, const float* x, int64_t n, float scale, int32_t zero_point);

// Dynamic per-tensor quantization: mn = min(min x, 0), mx = max(max x, 0) (the range
// always holds 0), scale = (mx − mn) / 255 in float32 (1 when that is 0),
// zero_point = clamp(rint(−mn / scale), 0, 255), then quantize_u8. Returns false, writing
// nothing, when x holds a NaN or an infinity.
bool quantize_u8_dynamic(uint8_t* q, float* scale, int32_t* zero_point, const float* x,
                         int64_t n);

// The (scale, zero_point) that quantize_u8_dynamic would use for x, without quantizing;
// false when x holds a NaN or an infinity.
bool quantize_range_u8(float* scale, int32_t* zero_point, const float* x, int64_t n);

// col (N·OH·OW, KH·KW·C) = patches of x uint8 (N,H,W,C) in (kh, kw, c) order, for a
// convolution with the given strides, top/left padding and dilation; pixels in the
// padding take the value zero_point (the quantized 0.0).
void qim2col_u8(uint8_t* col, const uint8_t* x, int64_t N, int64_t H, int64_t W, int64_t C,
                int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                uint8_t zero_point);

// y (N,OH,OW,OC) = act(conv(x_scale·(xq − x_zp), w_scale·wq) + b) for xq uint8 (N,H,W,C)
// and a packed (KH·KW·C, OC) weight (the float Conv2D kernel (KH,KW,C,OC) flattened),
// through qim2col_u8 into col (N·OH·OW·KH·KW·C bytes of scratch) and qdense_forward's
// epilogue. col may be nullptr for a 1×1 kernel with unit strides and no padding (xq is
// then the patch matrix itself). On the AVX-512 VNNI kernel, when every window lies
// inside the image (no padding), dil_w = 1 and KH·(KW·C rounded up to 4) ≤ 512, the
// product reads the windows of xq in place (implicit GEMM) and col is not written.
void qconv2d_forward(float* y, uint8_t* col, const uint8_t* xq, const uint8_t* packed,
                     const float* w_scale, const float* b, float x_scale, int32_t x_zp,
                     int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                     int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                     int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                     Act act);

// Plain twins with the same contracts, on the unpacked weight B / w int8 (K,N).
void qgemm_s32_naive(int32_t* C, const uint8_t* A, const int8_t* B, int64_t M, int64_t N,
                     int64_t K);
void qdense_forward_naive(float* y, const uint8_t* xq, const int8_t* w, const float* w_scale,
                          const float* b, float x_scale, int32_t x_zp, int64_t M, int64_t N,
                          int64_t K, Act act);
void quantize_u8_naive(uint8_t* q, const float* x, int64_t n, float scale, int32_t zero_point);
bool quantize_u8_dynamic_naive(uint8_t* q, float* scale, int32_t* zero_point, const float* x,
                               int64_t n);
void qconv2d_forward_naive(float* y, const uint8_t* xq, const int8_t* w, const float* w_scale,
                           const float* b, float x_scale, int32_t x_zp, int64_t N, int64_t H,
                           int64_t W, int64_t C, int64_t OC, int64_t KH, int64_t KW,
                           int64_t stride_h, int64_t stride_w, int64_t pad_top,
                           int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH,
                           int64_t OW, Act act);

}  // namespace fastnn
