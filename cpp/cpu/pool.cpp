// Pooling over NHWC images: max (with saved positions), average, global average.
//
// Forward kernels parallelise over output rows (n, oh); each row is one call of an inner
// function that walks the windows with the channels as the vector axis, keeping blocks of
// 8/16 channels in registers. Backward kernels own rows of dx (average) or whole images /
// channel ranges of dx (max), clear them first when not accumulating, and add into each
// dx element in output order, so results are identical for any thread count.
#include "fastnn/pool.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

namespace {

// Elements of work per parallel chunk: enough to pay for waking a thread and for reading
// an input another core just wrote (at 1 << 14, MNIST's first pooling on one image took
// 3.4 us on two threads against 2.8 on one, and 16 us after its conv against 11).
constexpr int64_t kGrainWork = 1 << 16;

int64_t grain_for(int64_t work_per_unit) {
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(work_per_unit, 1));
}

// Real (unpadded) extent [*a, *b) of the window of output o along one axis.
inline void window(int64_t o, int64_t S, int64_t P, int64_t K, int64_t In, int64_t* a,
                   int64_t* b) {
  const int64_t s = o * S - P;
  *a = s > 0 ? s : 0;
  *b = s + K < In ? s + K : In;
}

// Channel blocks for kernels that own (image, channel range) units: split the channels
// only when there are too few images to keep the threads busy. Any split gives the same
// result; this only affects speed.
int64_t channel_block(int64_t N, int64_t C) {
  if (N >= 4 || C < 32) return C;
  const int64_t nb = std::min<int64_t>(C / 16, 4);
  return ((C + nb - 1) / nb + 15) / 16 * 16;
}

// ---- register blocks ----------------------------------------------------------------------

// Eight floats / int32 in one AVX2 register (the baseline clone uses two SSE registers,
// the AVX-512 clone one half register). The window loops keep a block of 8 or 16 channels
// of the running max / sum in registers instead of re-reading the output per element.
typedef float f8 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));
// The same with 4-byte alignment, to load and store at any float address. GCC lets a
// vector type alias its element type.
typedef float f8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t i8u __attribute__((vector_size(32), aligned(4)));
#define FASTNN_INLINE inline __attribute__((always_inline))

#define FASTNN_SPLAT8(p) (i8{(p), (p), (p), (p), (p), (p), (p), (p)})

// ---- max pool ---------------------------------------------------------------------------

// One output pixel, channels [c, c + 8·NV): max of xi (H,W,C) over rows [h0, h1) and
// columns [w0, w1), and its position. v wins when greater, or when NaN unless a NaN
// already won; ties keep the first in row-major order.
// (GCC 12 warns, wrongly, that the lanes of `at` may be used uninitialized once the 32-byte
// vectors are split for the baseline clone.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int NV>
FASTNN_INLINE void max_block(float* yo, int32_t* io, const float* xi, int64_t C, int64_t W,
                             int64_t h0, int64_t h1, int64_t w0, int64_t w1, int64_t c) {
  f8 b[NV];
  i8 at[NV];
  const int32_t p0 = static_cast<int32_t>(h0 * W + w0);
  const i8 s0 = FASTNN_SPLAT8(p0);
  for (int k = 0; k < NV; ++k) {
    b[k] = *reinterpret_cast<const f8u*>(xi + p0 * C + c + 8 * k);
    at[k] = s0;
  }
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
      const int32_t p = static_cast<int32_t>(h * W + w);
      const float* xp = xi + p * C + c;
      for (int k = 0; k < NV; ++k) {
        const f8 v = *reinterpret_cast<const f8u*>(xp + 8 * k);
        const i8 t = ~(v <= b[k]) & (b[k] == b[k]);
        b[k] = t ? v : b[k];
        at[k] = t ? FASTNN_SPLAT8(p) : at[k];
      }
    }
  }
  for (int k = 0; k < NV; ++k) {
    *reinterpret_cast<f8u*>(yo + c + 8 * k) = b[k];
    *reinterpret_cast<i8u*>(io + c + 8 * k) = at[k];
  }
}
#pragma GCC diagnostic pop

// The same without positions (inference), channels [c, c + 8·NV). Addresses step by
// whole pixels, with no int32 position to form per element as above. (8-float vectors:
// GCC 12 builds the comparisons of 16-float ones through ymm halves in the AVX-512 clone.)
template <int NV>
FASTNN_INLINE void max_values(float* yo, const float* xi, int64_t C, int64_t W, int64_t h0,
                              int64_t h1, int64_t w0, int64_t w1, int64_t c) {
  f8 b[NV];
  const float* x0 = xi + (h0 * W + w0) * C + c;
  for (int k = 0; k < NV; ++k) b[k] = *reinterpret_cast<const f8u*>(x0 + 8 * k);
  for (int64_t h = h0; h < h1; ++h) {
    const float* xr = xi + h * W * C + c;
    for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w)
      for (int k = 0; k < NV; ++k) {
        const f8 v = *reinterpret_cast<const f8u*>(xr + w * C + 8 * k);
        b[k] = (~(v <= b[k]) & (b[k] == b[k])) ? v : b[k];
      }
  }
  for (int k = 0; k < NV; ++k) *reinterpret_cast<f8u*>(yo + c + 8 * k) = b[k];
}

// Same for channels [c0, C) one at a time (the last C mod 8).
FASTNN_INLINE void max_tail(float* yo, int32_t* io, const float* xi, int64_t C, int64_t W,
                            int64_t h0, int64_t h1, int64_t w0, int64_t w1, int64_t c0) {
  for (int64_t c = c0; c < C; ++c) {
    const int32_t p0 = static_cast<int32_t>(h0 * W + w0);
    float b = xi[p0 * C + c];
    int32_t at = p0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
        const int32_t p = static_cast<int32_t>(h * W + w);
        const float v = xi[p * C + c];
        if (!(v <= b) && b == b) {
          b = v;
          at = p;
        }
      }
    yo[c] = b;
    if (io) io[c] = at;
  }
}

// y, idx (OW,C) = output row oh of one image xi (H,W,C). idx may be nullptr.
FASTNN_CLONES
void max_row(float* y, int32_t* idx, const float* xi, const Pool2d& g, int64_t oh) {
  const int64_t C = g.C, W = g.W;
  int64_t h0, h1;
  window(oh, g.SH, g.PT, g.KH, g.H, &h0, &h1);
  for (int64_t ow = 0; ow < g.OW; ++ow) {
    int64_t w0, w1;
    window(ow, g.SW, g.PL, g.KW, g.W, &w0, &w1);
    float* yo = y + ow * C;
    int32_t* io = idx ? idx + ow * C : nullptr;
    int64_t c = 0;
    if (io) {
      for (; c + 16 <= C; c += 16) max_block<2>(yo, io, xi, C, W, h0, h1, w0, w1, c);
      for (; c + 8 <= C; c += 8) max_block<1>(yo, io, xi, C, W, h0, h1, w0, w1, c);
    } else {
      for (; c + 32 <= C; c += 32) max_values<4>(yo, xi, C, W, h0, h1, w0, w1, c);
      for (; c + 16 <= C; c += 16) max_values<2>(yo, xi, C, W, h0, h1, w0, w1, c);
      for (; c + 8 <= C; c += 8) max_values<1>(yo, xi, C, W, h0, h1, w0, w1, c);
    }
    max_tail(yo, io, xi, C, W, h0, h1, w0, w1, c);
  }
}

// dx (HW,C) [+]= dy (OHW,C) scattered to idx, channels [c0, c1) of one image; returns
// the number of positions outside [0, HW) (skipped).
FASTNN_CLONES
int64_t max_scatter(float* dx, const float* dy, const int32_t* idx, int64_t HW, int64_t OHW,
                    int64_t C, int64_t c0, int64_t c1, bool accumulate) {
  if (!accumulate) {
    if (c0 == 0 && c1 == C) {
      std::memset(dx, 0, sizeof(float) * HW * C);
    } else {
      for (int64_t p = 0; p < HW; ++p)
        for (int64_t c = c0; c < c1; ++c) dx[p * C + c] = 0.0f;
    }
  }
  int64_t bad = 0;
  for (int64_t o = 0; o < OHW; ++o) {
    const float* d = dy + o * C;
    const int32_t* ii = idx + o * C;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t p = ii[c];
      if (static_cast<uint64_t>(p) < static_cast<uint64_t>(HW)) dx[p * C + c] += d[c];
      else ++bad;
    }
  }
  return bad;
}

// ---- average pool -----------------------------------------------------------------------

// One output pixel, channels [c, c + 8·NV): sum of xi (H,W,C) over rows [h0, h1) and
// columns [w0, w1) in row-major order, times inv.
template <int NV>
FASTNN_INLINE void avg_block(float* yo, const float* xi, int64_t C, int64_t W, int64_t h0,
                             int64_t h1, int64_t w0, int64_t w1, int64_t c, float inv) {
  f8 s[NV];
  for (int k = 0; k < NV; ++k) s[k] = *reinterpret_cast<const f8u*>(xi + (h0 * W + w0) * C + c + 8 * k);
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
      const float* xp = xi + (h * W + w) * C + c;
      for (int k = 0; k < NV; ++k) s[k] += *reinterpret_cast<const f8u*>(xp + 8 * k);
    }
  for (int k = 0; k < NV; ++k) *reinterpret_cast<f8u*>(yo + c + 8 * k) = s[k] * inv;
}

// y (OW,C) = output row oh of one image xi (H,W,C).
FASTNN_CLONES
void avg_row(float* y, const float* xi, const Pool2d& g, int64_t oh) {
  const int64_t C = g.C, W = g.W;
  int64_t h0, h1;
  window(oh, g.SH, g.PT, g.KH, g.H, &h0, &h1);
  for (int64_t ow = 0; ow < g.OW; ++ow) {
    int64_t w0, w1;
    window(ow, g.SW, g.PL, g.KW, g.W, &w0, &w1);
    float* yo = y + ow * C;
    const float inv = 1.0f / static_cast<float>((h1 - h0) * (w1 - w0));
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) avg_block<2>(yo, xi, C, W, h0, h1, w0, w1, c, inv);
    for (; c + 8 <= C; c += 8) avg_block<1>(yo, xi, C, W, h0, h1, w0, w1, c, inv);
    for (; c < C; ++c) {
      float s = xi[(h0 * W + w0) * C + c];
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) s += xi[(h * W + w) * C + c];
      yo[c] = s * inv;
    }
  }
}

// dx row h (W,C) of one image [+]= its share of every window covering it; dyi (OH,OW,C).
FASTNN_CLONES
void avg_back_row(float* dxr, const float* dyi, const Pool2d& g, int64_t h, bool accumulate) {
  const int64_t C = g.C;
  if (!accumulate) std::memset(dxr, 0, sizeof(float) * g.W * C);
  // Output rows oh with oh·SH − PT ≤ h < oh·SH − PT + KH, in increasing order.
  const int64_t num = h + g.PT - g.KH + 1;
  const int64_t lo = num <= 0 ? 0 : (num + g.SH - 1) / g.SH;
  const int64_t hi = std::min<int64_t>((h + g.PT) / g.SH, g.OH - 1);
  for (int64_t oh = lo; oh <= hi; ++oh) {
    int64_t h0, h1;
    window(oh, g.SH, g.PT, g.KH, g.H, &h0, &h1);
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      int64_t w0, w1;
      window(ow, g.SW, g.PL, g.KW, g.W, &w0, &w1);
      const float s = 1.0f / static_cast<float>((h1 - h0) * (w1 - w0));
      const float* d = dyi + (oh * g.OW + ow) * C;
      for (int64_t w = w0; w < w1; ++w) {
        float* dp = dxr + w * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dp[c] += d[c] * s;
      }
    }
  }
}

// ---- global average pool ----------------------------------------------------------------

// y[c0:c1] = mean over HW of one image x (HW,C).
FASTNN_CLONES
void gap_image(float* y, const float* x, int64_t HW, int64_t C, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) y[c] = x[c];
  for (int64_t p = 1; p < HW; ++p) {
    const float* xp = x + p * C;
#pragma omp simd
    for (int64_t c = c0; c < c1; ++c) y[c] += xp[c];
  }
  const float inv = 1.0f / static_cast<float>(HW);
#pragma omp simd
  for (int64_t c = c0; c < c1; ++c) y[c] *= inv;
}

// dx rows (rows,C) [+]= d (C) · s
FASTNN_CLONES
void add_rows(float* dx, const float* d, float s, int64_t rows, int64_t C, bool accumulate) {
  for (int64_t r = 0; r < rows; ++r) {
    float* p = dx + r * C;
    if (accumulate) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) p[c] += d[c] * s;
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) p[c] = d[c] * s;
    }
  }
}

}  // namespace

bool pool2d_geometry(Pool2d* g, int64_t N, int64_t H, int64_t W, int64_t C, int64_t KH,
                     int64_t KW, int64_t SH, int64_t SW, Padding padding) {
  *g = Pool2d{N, H, W, C, KH, KW, SH, SW, 0, 0, 0, 0};
  if (N < 1 || H < 1 || W < 1 || C < 1 || KH < 1 || KW < 1 || SH < 1 || SW < 1) return false;
  if (padding == Padding::valid) {
    if (H < KH || W < KW) return false;
    g->OH = (H - KH) / SH + 1;
    g->OW = (W - KW) / SW + 1;
  } else {
    g->OH = (H + SH - 1) / SH;
    g->OW = (W + SW - 1) / SW;
    g->PT = std::max<int64_t>((g->OH - 1) * SH + KH - H, 0) / 2;
    g->PL = std::max<int64_t>((g->OW - 1) * SW + KW - W, 0) / 2;
  }
  return true;
}

// ---- max pool ---------------------------------------------------------------------------

// y, idx (N,OH,OW,C) = max of x (N,H,W,C) over each window
void max_pool2d_forward(float* y, int32_t* idx, const float* x, const Pool2d& g) {
  const int64_t row = g.OW * g.C;
  parallel_for(g.N * g.OH, grain_for(row * g.KH * g.KW), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / g.OH, oh = r % g.OH;
      max_row(y + r * row, idx ? idx + r * row : nullptr, x + n * g.H * g.W * g.C, g, oh);
    }
  });
}

// y, idx (N,OH,OW,C) = max of x (N,H,W,C) over each window (plain loops)
void max_pool2d_forward_naive(float* y, int32_t* idx, const float* x, const Pool2d& g) {
  const int64_t C = g.C;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          int64_t h0, h1, w0, w1;
          window(oh, g.SH, g.PT, g.KH, g.H, &h0, &h1);
          window(ow, g.SW, g.PL, g.KW, g.W, &w0, &w1);
          float best = 0.0f;
          int64_t at = -1;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) {
              const float v = x[((n * g.H + h) * g.W + w) * C + c];
              if (at < 0 || (v > best && best == best) || (v != v && best == best)) {
                best = v;
                at = h * g.W + w;
              }
            }
          const int64_t o = ((n * g.OH + oh) * g.OW + ow) * C + c;
          y[o] = best;
          if (idx) idx[o] = static_cast<int32_t>(at);
        }
}

// dx (N,HW,C) += dy (N,OHW,C) at positions idx (N,OHW,C)
int64_t max_pool2d_backward(float* dx, const float* dy, const int32_t* idx, int64_t N,
                            int64_t HW, int64_t OHW, int64_t C, bool accumulate) {
  const int64_t cb = channel_block(N, C), nb = (C + cb - 1) / cb;
  // Only the count of bad positions is shared (it is an error report, not a result).
  std::atomic<int64_t> bad{0};
  parallel_for(N * nb, grain_for(OHW * cb), [&](int64_t b, int64_t e) {
    int64_t k = 0;
    for (int64_t u = b; u < e; ++u) {
      const int64_t n = u / nb, c0 = (u % nb) * cb, c1 = std::min(c0 + cb, C);
      k += max_scatter(dx + n * HW * C, dy + n * OHW * C, idx + n * OHW * C, HW, OHW, C, c0,
                       c1, accumulate);
    }
    if (k) bad.fetch_add(k, std::memory_order_relaxed);
  });
  return bad.load();
}

// dx (N,HW,C) += dy (N,OHW,C) at positions idx (N,OHW,C) (plain loops)
int64_t max_pool2d_backward_naive(float* dx, const float* dy, const int32_t* idx, int64_t N,
                                  int64_t HW, int64_t OHW, int64_t C, bool accumulate) {
  if (!accumulate) std::fill(dx, dx + N * HW * C, 0.0f);
  int64_t bad = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OHW; ++o)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (n * OHW + o) * C + c;
        if (idx[i] >= 0 && idx[i] < HW) dx[(n * HW + idx[i]) * C + c] += dy[i];
        else ++bad;
      }
  return bad;
}

// ---- average pool -----------------------------------------------------------------------

// y (N,OH,OW,C) = mean of x (N,H,W,C) over the real elements of each window
void avg_pool2d_forward(float* y, const float* x, const Pool2d& g) {
  const int64_t row = g.OW * g.C;
  parallel_for(g.N * g.OH, grain_for(row * g.KH * g.KW), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / g.OH, oh = r % g.OH;
      avg_row(y + r * row, x + n * g.H * g.W * g.C, g, oh);
    }
  });
}

// y (N,OH,OW,C) = mean of x (N,H,W,C) over the real elements of each window (plain loops)
void avg_pool2d_forward_naive(float* y, const float* x, const Pool2d& g) {
  const int64_t C = g.C;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t c = 0; c < C; ++c) {
          int64_t h0, h1, w0, w1;
          window(oh, g.SH, g.PT, g.KH, g.H, &h0, &h1);
          window(ow, g.SW, g.PL, g.KW, g.W, &w0, &w1);
          float s = 0.0f;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) s += x[((n * g.H + h) * g.W + w) * C + c];
          y[((n * g.OH + oh) * g.OW + ow) * C + c] =
              s * (1.0f / static_cast<float>((h1 - h0) * (w1 - w0)));
        }
}

// dx (N,H,W,C) += dy (N,OH,OW,C) spread over the real elements of each window
void avg_pool2d_backward(float* dx, const float* dy, const Pool2d& g, bool accumulate) {
  const int64_t row = g.W * g.C;
  const int64_t cover = (g.KH + g.SH - 1) / g.SH;  // windows covering one input row
  parallel_for(g.N * g.H, grain_for(row * cover), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / g.H, h = r % g.H;
      avg_back_row(dx + r * row, dy + n * g.OH * g.OW * g.C, g, h, accumulate);
    }
  });
}

// dx (N,H,W,C) += dy (N,OH,OW,C) spread over the real elements of each window (plain loops)
void avg_pool2d_backward_naive(float* dx, const float* dy, const Pool2d& g, bool accumulate) {
  const int64_t C = g.C;
  if (!accumulate) std::fill(dx, dx + g.N * g.H * g.W * C, 0.0f);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        int64_t h0, h1, w0, w1;
        window(oh, g.SH, g.PT, g.KH, g.H, &h0, &h1);
        window(ow, g.SW, g.PL, g.KW, g.W, &w0, &w1);
        const float s = 1.0f / static_cast<float>((h1 - h0) * (w1 - w0));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w)
            for (int64_t c = 0; c < C; ++c)
              dx[((n * g.H + h) * g.W + w) * C + c] +=
                  dy[((n * g.OH + oh) * g.OW + ow) * C + c] * s;
      }
}

// ---- global average pool ----------------------------------------------------------------

// y (N,C) = mean of x (N,HW,C) over HW
void global_avg_pool2d_forward(float* y, const float* x, int64_t N, int64_t HW, int64_t C) {
  const int64_t cb = channel_block(N, C), nb = (C + cb - 1) / cb;
  parallel_for(N * nb, grain_for(HW * cb), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t n = u / nb, c0 = (u % nb) * cb, c1 = std::min(c0 + cb, C);
      gap_image(y + n * C, x + n * HW * C, HW, C, c0, c1);
    }
  });
}

// y (N,C) = mean of x (N,HW,C) over HW (plain loops)
void global_avg_pool2d_forward_naive(float* y, const float* x, int64_t N, int64_t HW,
                                     int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int64_t p = 0; p < HW; ++p) s += x[(n * HW + p) * C + c];
      y[n * C + c] = s * (1.0f / static_cast<float>(HW));
    }
}

// dx (N,HW,C) += dy (N,C) / HW
void global_avg_pool2d_backward(float* dx, const float* dy, int64_t N, int64_t HW, int64_t C,
                                bool accumulate) {
  const float s = 1.0f / static_cast<float>(HW);
  parallel_for(N * HW, grain_for(C), [&](int64_t b, int64_t e) {
    // Rows [b, e) may span images: handle each image's part in one call.
    for (int64_t r = b; r < e;) {
      const int64_t n = r / HW, end = std::min(e, (n + 1) * HW);
      add_rows(dx + r * C, dy + n * C, s, end - r, C, accumulate);
      r = end;
    }
  });
}

// dx (N,HW,C) += dy (N,C) / HW (plain loops)
void global_avg_pool2d_backward_naive(float* dx, const float* dy, int64_t N, int64_t HW,
                                      int64_t C, bool accumulate) {
  const float s = 1.0f / static_cast<float>(HW);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) {
        float& o = dx[(n * HW + p) * C + c];
        o = (accumulate ? o : 0.0f) + dy[n * C + c] * s;
      }
}

}  // namespace fastnn
