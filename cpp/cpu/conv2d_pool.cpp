// Conv2D + MaxPooling2D in one pass over the batch (inference). See fastnn/conv2d_pool.h.
//
// Unfused, the convolution writes its whole output and the pooling reads it back: for
// MNIST's first layer at batch 32 that is 2.7 MB, more than the L2 cache, so both passes
// run at memory speed. Here chunks of images are convolved into a per-thread scratch
// buffer of at most kScratchBytes and pooled from it while it is still in cache. The
// direct path (few input channels) under a 2x2 pooling skips even that: it pools its
// register tiles (conv2d_direct_pool.h).
#include "fastnn/conv2d_pool.h"

#include <algorithm>
#include <vector>

#include "conv2d_direct_pool.h"
#include "fastnn/common.h"
#include "fastnn/conv2d.h"

namespace fastnn {

namespace {

constexpr int64_t kScratchBytes = int64_t(256) << 10;  // well inside any L2 cache
constexpr int64_t kChunksPerThread = 4;                // for balance when threads own chunks

float* scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

}  // namespace

void conv2d_max_pool2d_forward(float* y, const float* x, const float* w, const float* b,
                               int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC,
                               int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                               int64_t pad_top, int64_t pad_left, int64_t OH, int64_t OW,
                               int64_t dil_h, int64_t dil_w, int64_t groups, Act act,
                               const Pool2d& pool) {
  if (N == 0 || OC == 0 || pool.OH * pool.OW == 0) return;
  if (conv2d_direct_max_pool2x2_forward(y, x, w, b, N, H, W, C, OC, KH, KW, stride_h, stride_w,
                                        pad_top, pad_left, OH, OW, dil_h, dil_w, groups, act,
                                        pool))
    return;
  // Only the rows and columns some window reads are computed: with valid pooling of an
  // odd size the last one is not (MNIST's 11x11 -> 5x5: 100 of 121 pixels). The conv
  // kernels then see a smaller output, which changes no sum.
  const int64_t CH = std::min(OH, (pool.OH - 1) * pool.SH - pool.PT + pool.KH);
  const int64_t CW = std::min(OW, (pool.OW - 1) * pool.SW - pool.PL + pool.KW);
  const int64_t conv_image = CH * CW * OC, x_image = H * W * C;
  const int64_t y_image = pool.OH * pool.OW * OC;
  const int threads = num_threads();
  // Images per chunk: as many as the scratch holds, but no fewer chunks than the threads
  // can share evenly when they own chunks.
  const int64_t fit = std::max<int64_t>(1, kScratchBytes / int64_t(sizeof(float)) / conv_image);
  const bool own = N >= 2 * int64_t(threads);
  const int64_t per = own ? std::clamp<int64_t>(N / (kChunksPerThread * threads), 1, fit)
                          : std::min(fit, N);
  const int64_t chunks = (N + per - 1) / per;
  auto run = [&](int64_t c) {  // inside a parallel region, the kernels below run serially
    const int64_t n0 = c * per, nn = std::min(per, N - n0);
    float* s = scratch(nn * conv_image);
    conv2d_forward(s, nullptr, x + n0 * x_image, w, b, nn, H, W, C, OC, KH, KW, stride_h,
                   stride_w, pad_top, pad_left, CH, CW, dil_h, dil_w, groups, act);
    Pool2d g = pool;
    g.N = nn, g.H = CH, g.W = CW;
    max_pool2d_forward(y + n0 * y_image, nullptr, s, g);
  };
  if (own)
    parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) run(c);
    });
  else
    for (int64_t c = 0; c < chunks; ++c) run(c);
}

void conv2d_max_pool2d_forward_naive(float* y, const float* x, const float* w,
                                     const float* b, int64_t N, int64_t H, int64_t W,
                                     int64_t C, int64_t OC, int64_t KH, int64_t KW,
                                     int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                     int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h,
                                     int64_t dil_w, int64_t groups, Act act,
                                     const Pool2d& pool) {
  std::vector<float> conv(size_t(N * OH * OW * OC));
  conv2d_forward_naive(conv.data(), nullptr, x, w, b, N, H, W, C, OC, KH, KW, stride_h,
                       stride_w, pad_top, pad_left, OH, OW, dil_h, dil_w, groups, act);
  Pool2d g = pool;
  g.N = N;
  max_pool2d_forward_naive(y, nullptr, conv.data(), g);
}

}  // namespace fastnn
