#pragma once
#include <cstdint>

namespace fastnn {

// Padding of a pooling window, with Keras/TensorFlow's rules:
//   valid: OH = (H − KH)/SH + 1 (needs H ≥ KH), no padding;
//   same:  OH = ⌈H/SH⌉, PT = max((OH−1)·SH + KH − H, 0)/2 rows of padding on top (the
//          rest at the bottom); likewise OW, PL. Padded positions never take part: a max
//          ignores them, an average divides by the number of real elements only.
enum class Padding : int { valid = 0, same = 1 };

// Geometry of a 2-D pooling over NHWC images: input (N,H,W,C), window KH×KW, strides
// SH, SW, output (N,OH,OW,C), PT/PL padding rows/columns before the first input one.
struct Pool2d {
  int64_t N, H, W, C;
  int64_t KH, KW, SH, SW;
  int64_t OH, OW, PT, PL;
};

// Fills the output size and padding. Returns false (OH = OW = 0) when a size or stride
// is < 1, or when the window is larger than the input with Padding::valid.
bool pool2d_geometry(Pool2d* g, int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH,
                     int64_t KW, int64_t SH, int64_t SW, Padding padding);

// y (N,OH,OW,C) = max of x (N,H,W,C) over each window. idx (N,OH,OW,C), when not nullptr,
// receives the position h·W + w of the max within its image (int32): the first one in
// row-major window order on ties; a NaN wins and propagates (the first NaN).
void max_pool2d_forward(float* y, int32_t* idx, const float* x, const Pool2d& g);
void max_pool2d_forward_naive(float* y, int32_t* idx, const float* x, const Pool2d& g);

// In every backward kernel here, accumulate=false overwrites dx instead of adding into it
// (each thread clears the part of dx it owns while it is in cache, which saves the caller
// a separate zeroing pass over dx).

// dx (N,HW,C) += dy (N,OHW,C) routed to the saved positions: dx[n, idx[n,o,c], c] += dy[n,o,c].
// Each thread owns whole images (or channel ranges of one) and adds in output order, so
// the result is the same for any thread count. A position outside [0, HW) is skipped and
// counted: the return value is the number skipped (0 for indices saved by the forward).
int64_t max_pool2d_backward(float* dx, const float* dy, const int32_t* idx, int64_t N,
                            int64_t HW, int64_t OHW, int64_t C, bool accumulate);
int64_t max_pool2d_backward_naive(float* dx, const float* dy, const int32_t* idx, int64_t N,
                                  int64_t HW, int64_t OHW, int64_t C, bool accumulate);

// y (N,OH,OW,C) = mean of x (N,H,W,C) over the real (unpadded) elements of each window.
void avg_pool2d_forward(float* y, const float* x, const Pool2d& g);
void avg_pool2d_forward_naive(float* y, const float* x, const Pool2d& g);

// dx (N,H,W,C) += each dy (N,OH,OW,C) spread evenly over the real elements of its window.
// Each thread owns rows of dx and gathers from the windows covering them.
void avg_pool2d_backward(float* dx, const float* dy, const Pool2d& g, bool accumulate);
void avg_pool2d_backward_naive(float* dx, const float* dy, const Pool2d& g, bool accumulate);

// y (N,C) = mean of x (N,HW,C) over HW.
void global_avg_pool2d_forward(float* y, const float* x, int64_t N, int64_t HW, int64_t C);
void global_avg_pool2d_forward_naive(float* y, const float* x, int64_t N, int64_t HW,
                                     int64_t C);

// dx (N,HW,C) += dy (N,C) / HW
void global_avg_pool2d_backward(float* dx, const float* dy, int64_t N, int64_t HW, int64_t C,
                                bool accumulate);
void global_avg_pool2d_backward_naive(float* dx, const float* dy, int64_t N, int64_t HW,
                                      int64_t C, bool accumulate);

}  // namespace fastnn
