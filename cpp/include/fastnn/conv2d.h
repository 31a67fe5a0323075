#pragma once
#include <cstdint>

#include "fastnn/activation.h"

namespace fastnn {

// 2-D convolution (cross-correlation, as in Keras/PyTorch) over channels-last images.
//
//   x (N,H,W,C)  images            w (KH,KW,C/groups,OC)  kernel, HWIO as in Keras
//   b (OC)       bias or nullptr   y, z (N,OH,OW,OC)      output, pre-activation
//
// Output pixel (oh, ow) reads input rows ih = oh·stride_h − pad_top + kh·dil_h and columns
// iw = ow·stride_w − pad_left + kw·dil_w; positions outside the image read 0, so padding at
// the bottom/right is implied by OH/OW (the caller computes them, e.g. 'same' padding).
// Groups: output channel o belongs to group g = o / (OC/groups) and reads input channels
// [g·C/groups, (g+1)·C/groups). C and OC must be divisible by groups.
//
// Work space: kernels keep per-thread buffers, grown on first use and then reused (like
// the GEMM's packing buffers); none grows with the batch size N:
//  * im2col path: one tile of the im2col matrix per working thread, at most
//    max(conv2d_tile_bytes, 16 rows of KH·KW·C/groups floats); backward adds partial sums
//    of dw for at most 16 chunks of the batch (together at most 32 MiB, else fewer
//    chunks) and of db;
//  * direct path: the weights with OC rounded up to 8, KH zero-padded input rows per
//    thread, and partial sums of dw and db for at most 32 chunks of the batch;
//  * depthwise path: KH padded input rows (channels repeated OC/C times) per thread and
//    partial sums of dw and db for at most 32 chunks.
// Results are bitwise identical for any thread count: chunks depend on the shape only
// and their partial sums are added in chunk order.
constexpr int64_t conv2d_tile_bytes = int64_t(1) << 20;

// y (N,OH,OW,OC) = act(conv(x, w) + b). z (N,OH,OW,OC), when not nullptr, receives the
// pre-activation conv(x, w) + b (gelu backward needs it). b may be nullptr. y must not
// overlap x or w.
void conv2d_forward(float* y, float* z, const float* x, const float* w, const float* b,
                    int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                    int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                    int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h, int64_t dil_w,
                    int64_t groups, Act act);

// With dz (N,OH,OW,OC) = dy ⊙ act'(.):
//   dx (N,H,W,C) += backward-data(dz, w);  dw (KH,KW,C/groups,OC) += backward-weights(x, dz);
//   db (OC) += Σ_{N,OH,OW} dz.
// Any of dx, dw, db may be nullptr. dz is caller scratch (it may alias dy, which is then
// overwritten); with act == linear it is not touched and may be nullptr. y is the forward
// output (relu, sigmoid, tanh), z the pre-activation (gelu); nullptr for the one not read.
// x may be nullptr when dw is, w when dx is.
void conv2d_backward(float* dx, float* dw, float* db, float* dz, const float* dy,
                     const float* x, const float* w, const float* y, const float* z,
                     int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                     int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                     int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h, int64_t dil_w,
                     int64_t groups, Act act);

// The path conv2d_forward/backward take for these sizes: "pointwise" (1x1, stride 1, no
// padding: the GEMM straight on x), "im2col" (tiles of the im2col matrix on the GEMM),
// "direct" (few input channels: vectorised over OC, no GEMM) or "depthwise" (groups == C).
const char* conv2d_algorithm(int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC,
                             int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                             int64_t pad_top, int64_t pad_left, int64_t OH, int64_t OW,
                             int64_t dil_h, int64_t dil_w, int64_t groups);

// Plain loops with the same contracts: the reference and the reader's first stop.
void conv2d_forward_naive(float* y, float* z, const float* x, const float* w, const float* b,
                          int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                          int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                          int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h,
                          int64_t dil_w, int64_t groups, Act act);
void conv2d_backward_naive(float* dx, float* dw, float* db, float* dz, const float* dy,
                           const float* x, const float* w, const float* y, const float* z,
                           int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                           int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                           int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h,
                           int64_t dil_w, int64_t groups, Act act);

}  // namespace fastnn
