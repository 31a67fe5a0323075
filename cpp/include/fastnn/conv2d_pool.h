#pragma once
#include <cstdint>

#include "fastnn/activation.h"
#include "fastnn/pool.h"

namespace fastnn {

// Inference form of Conv2D followed by MaxPooling2D (the usual pair of an image model):
//
//   y (N,PH,PW,OC) = max_pool(act(conv(x, w) + b))
//
// with the convolution's arguments as in conv2d_forward (its output (N,OH,OW,OC) is
// never written to memory as a whole) and `pool` the pooling's geometry over that output:
// pool.N, pool.H, pool.W, pool.C must be N, OH, OW, OC (pool2d_geometry fills the rest).
// Only the rows and columns of that output some window reads are computed (a valid pool
// of an odd size skips the last). The batch is cut into chunks of images whose
// convolution output fits a per-thread scratch buffer that stays in the L2 cache; each
// chunk is convolved and pooled in turn. With enough images, each thread owns whole
// chunks; with few, every chunk uses all the threads. Results equal conv2d_forward
// followed by max_pool2d_forward bit for bit (both give every output the same sum in the
// same order for any batch size), for any thread count. b may be nullptr; y must not
// overlap x, w or b.
void conv2d_max_pool2d_forward(float* y, const float* x, const float* w, const float* b,
                               int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC,
                               int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                               int64_t pad_top, int64_t pad_left, int64_t OH, int64_t OW,
                               int64_t dil_h, int64_t dil_w, int64_t groups, Act act,
                               const Pool2d& pool);

// The same with conv2d_forward_naive and max_pool2d_forward_naive over the whole batch.
void conv2d_max_pool2d_forward_naive(float* y, const float* x, const float* w,
                                     const float* b, int64_t N, int64_t H, int64_t W,
                                     int64_t C, int64_t OC, int64_t KH, int64_t KW,
                                     int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                     int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h,
                                     int64_t dil_w, int64_t groups, Act act,
                                     const Pool2d& pool);

}  // namespace fastnn
