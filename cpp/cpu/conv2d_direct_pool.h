// Internal to the kernels: the direct convolution path (few input channels) with a 2x2,
// stride-2 max pooling of its output done in registers, for conv2d_max_pool2d_forward.
#pragma once
#include <cstdint>

#include "fastnn/activation.h"
#include "fastnn/pool.h"

namespace fastnn {

// y (N,pool.OH,pool.OW,OC) = max_pool(act(conv(x, w) + b)), arguments as in
// conv2d_max_pool2d_forward, when the convolution takes the direct path, act is relu and
// the pooling is 2x2 with stride 2 and no padding: each pair of conv rows is computed
// into registers and pooled there, so the conv output never reaches memory. Equal bit
// for bit to conv2d_forward then max_pool2d_forward (the same sums in the same order, the
// same relu, then the max in window order). Returns false, writing nothing, for any other
// shape or activation.
bool conv2d_direct_max_pool2x2_forward(float* y, const float* x, const float* w,
                                       const float* b, int64_t N, int64_t H, int64_t W,
                                       int64_t C, int64_t OC, int64_t KH, int64_t KW,
                                       int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                       int64_t pad_left, int64_t OH, int64_t OW,
                                       int64_t dil_h, int64_t dil_w, int64_t groups, Act act,
                                       const Pool2d& pool);

}  // namespace fastnn
