// 2-D convolution, channels-last (NHWC) images, HWIO kernels. See fastnn/conv2d.h.
//
// Four paths, chosen by shape (conv2d_algorithm):
//  * pointwise: 1x1, stride 1, no padding — x already is the im2col matrix; the GEMM runs
//    on it directly.
//  * im2col: the output pixels are cut into tiles (runs of whole images, or bands of one
//    image) whose im2col matrix fits a bounded per-thread buffer; each tile is one GEMM per
//    group for forward, backward-data (then a gathering col2im) and backward-weights, so
//    no buffer ever holds the whole batch. Threads own tiles: one parallel region per call.
//  * direct: few input channels (the first layer of an image model): vectorised over OC
//    with a register tile of pixels, reading the input rows in place (zero-padded copies
//    where a window reaches into the padding); its backward computes dz, db and dw row by
//    row in one pass, forming dz in the dw tiles' registers when no dx is wanted.
//  * depthwise: groups == C: vectorised over channels, no reduction over C at all.
// The im2col path's forward reads the windows in place instead (implicit GEMM, no
// matrix) when they all lie inside the image, dil_w is 1 and OC is a multiple of 16.
// The direct path also runs fused with a 2x2 max pooling (conv2d_direct_pool.h).
//
// Determinism: every output element is computed by one thread in a fixed order; sums over
// the batch (dw, db) are taken per fixed chunk of the batch (chunks depend only on the
// shape) and the chunk partials are added in chunk order; each GEMM call is the same for
// any thread count and sums K in an order that does not depend on it. Results are
// therefore bitwise identical for any number of threads.
#include "fastnn/conv2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "fastnn/common.h"
#include "conv2d_direct_pool.h"
#include "fastnn/gemm.h"
#include "vmath.h"

// The v8 helpers below are always inlined into FASTNN_CLONES kernels: no 32-byte vector
// crosses a call compiled for the baseline ISA, so GCC's ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastnn {

namespace {

// ---------------------------------------------------------------------------------------
// Geometry

struct Geom {
  int64_t N, H, W, C, OC, KH, KW, sh, sw, pt, pl, OH, OW, dh, dw, G;
  int64_t Cg, OCg, Kg;  // channels per group in and out, im2col row length per group
  int64_t P() const { return N * OH * OW; }
  int64_t R() const { return N * OH; }  // output rows (n, oh)
};

Geom make_geom(int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
               int64_t KW, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t OH,
               int64_t OW, int64_t dh, int64_t dw, int64_t G) {
  Geom g{N, H, W, C, OC, KH, KW, sh, sw, pt, pl, OH, OW, dh, dw, G, C / G, OC / G, 0};
  g.Kg = KH * KW * g.Cg;
  return g;
}

enum class Algo { pointwise, im2col, direct, depthwise };

constexpr int64_t kDirectMaxC = 4;

Algo choose(const Geom& g) {
  if (g.G > 1 && g.Cg == 1) return Algo::depthwise;
  if (g.G == 1 && g.C <= kDirectMaxC) return Algo::direct;
  if (g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 &&
      g.OH == g.H && g.OW == g.W)
    return Algo::pointwise;
  return Algo::im2col;
}

// Chunks of [0, n) for parallel_for: one per thread, at least min_grain each.
int64_t grain_for(int64_t n, int64_t min_grain) {
  const int64_t t = num_threads();
  const int64_t g = (n + t - 1) / t;
  return g > min_grain ? g : min_grain;
}

// Multiply-adds below which a forward runs on the calling thread alone: waking another
// costs more than it saves (MNIST's first layer on one image, 0.2 M: 9.3 us on one
// thread, 13 us on two, on the 2-core Xeon it was tuned on).
constexpr int64_t kMinParallelMacs = int64_t(1) << 20;

// The least rows per chunk for rows of `macs` multiply-adds each.
int64_t min_rows(int64_t macs) {
  return std::max<int64_t>(1, kMinParallelMacs / std::max<int64_t>(macs, 1));
}

// Fixed chunking of [0, n) for sums over the batch: at most `max_chunks` chunks, chosen
// from the shape only, so the summation order never depends on the thread count.
struct Chunks {
  int64_t n, count;
  int64_t begin(int64_t i) const { return i * n / count; }
  int64_t end(int64_t i) const { return (i + 1) * n / count; }
};
Chunks fixed_chunks(int64_t n, int64_t max_chunks) {
  return {n, n < max_chunks ? n : max_chunks};
}
constexpr int64_t kMaxChunks = 32;

// Work space: per-thread buffers grown on first use and reused (see conv2d.h). Slot 0
// and 2 are used by the calling thread, slot 1 inside parallel regions.
template <class T = float>
T* thread_buffer(int slot, int64_t n) {
  thread_local std::vector<T> bufs[3];
  std::vector<T>& v = bufs[slot];
  if (int64_t(v.size()) < n) v.resize(size_t(n));
  return v.data();
}

// ---------------------------------------------------------------------------------------
// Vectors (GCC vector extensions; the clone's ISA decides the registers they occupy)

typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));

__attribute__((always_inline)) inline v8 load8(const float* p) {
  return *reinterpret_cast<const v8*>(p);
}
__attribute__((always_inline)) inline void store8(float* p, v8 v) {
  *reinterpret_cast<v8*>(p) = v;
}
// 16 floats: one zmm register in the AVX-512 clone, two ymm in the AVX2 one.
typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));

// Unaligned load/store of a V (the aligned(4) of the typedefs is lost on a template
// argument, hence memcpy).
template <class V>
__attribute__((always_inline)) inline V loadv(const float* p) {
  V r;
  __builtin_memcpy(&r, p, sizeof(V));
  return r;
}
template <class V>
__attribute__((always_inline)) inline void storev(float* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// ---------------------------------------------------------------------------------------
// Epilogue (bias + activation, vectorised by vmath) and the activation's derivative

// n values of one pixel: v = acc + b (b may be nullptr); z = v when z; y = act(v).
// acc may alias y or z.
FASTNN_INLINE void epilogue_px(float* y, float* z, const float* acc, const float* b,
                               int64_t n, Act act) {
  float* v = z ? z : y;
  if (b) {
#pragma omp simd
    for (int64_t o = 0; o < n; ++o) v[o] = acc[o] + b[o];
  } else if (v != acc) {
    std::memcpy(v, acc, size_t(n) * sizeof(float));
  }
  vmath::act_span(y, v, n, act);
}

// acc (rows,OC) += b;  y (rows,OC) = act(acc). y may be acc. Like dense's epilogue: the
// activation runs over L1-sized blocks of rows as one flat span.
FASTNN_CLONES void bias_act_rows(float* y, float* acc, const float* b, int64_t rows,
                                 int64_t OC, Act act) {
  const int64_t block = OC >= 1024 ? 1 : 1024 / OC;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block);
    if (b)
      for (int64_t r = r0; r < r1; ++r) {
        float* ar = acc + r * OC;
#pragma omp simd
        for (int64_t o = 0; o < OC; ++o) ar[o] += b[o];
      }
    vmath::act_span(y + r0 * OC, acc + r0 * OC, (r1 - r0) * OC, act);
  }
}

// dz (n) = dy ⊙ act'(.): relu/sigmoid/tanh read y, gelu reads z. dz may alias dy.
FASTNN_CLONES void act_grad_set_span(float* dz, const float* dy, const float* z,
                                     const float* y, int64_t n, Act act) {
  vmath::act_grad_span<false>(dz, dy, z, y, n, act);
}

// part (OC) += Σ_rows g (rows,OC), rows in order. Blocks of 16 (then 8, then 1) channels
// keep their running sums in a register: kept in part, each row's add would wait on the
// previous row's store.
FASTNN_CLONES void sum_rows(float* part, const float* g, int64_t rows, int64_t OC) {
  int64_t o = 0;
  for (; o + 16 <= OC; o += 16) {
    v16 s = loadv<v16>(part + o);
    for (int64_t r = 0; r < rows; ++r) s += loadv<v16>(g + r * OC + o);
    storev<v16>(part + o, s);
  }
  for (; o + 8 <= OC; o += 8) {
    v8 s = load8(part + o);
    for (int64_t r = 0; r < rows; ++r) s += load8(g + r * OC + o);
    store8(part + o, s);
  }
  for (; o < OC; ++o) {
    float s = part[o];
    for (int64_t r = 0; r < rows; ++r) s += g[r * OC + o];
    part[o] = s;
  }
}

// out (n) += Σ_{i<count} parts[i·stride ...], parts added in order.
void reduce_parts(float* out, const float* parts, int64_t count, int64_t stride, int64_t n) {
  const int64_t grain = grain_for(n, std::max<int64_t>(256, 65536 / count));
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    constexpr int64_t kBlock = 256;
    float s[kBlock];
    for (int64_t j0 = b; j0 < e; j0 += kBlock) {
      const int64_t nb = std::min(kBlock, e - j0);
      std::fill(s, s + nb, 0.0f);
      for (int64_t i = 0; i < count; ++i) {
        const float* p = parts + i * stride + j0;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) s[j] += p[j];
      }
#pragma omp simd
      for (int64_t j = 0; j < nb; ++j) out[j0 + j] += s[j];
    }
  });
}

// First backward pass of the pointwise and depthwise paths: dz = dy ⊙ act'(.) (when act
// is not linear) and db += Σ dz, over fixed chunks of pixels. Returns the gradient the
// rest reads.
const float* grad_and_bias(float* db, float* dz, const float* dy, const float* y,
                           const float* z, int64_t P, int64_t OC, Act act) {
  const bool need_dz = act != Act::linear;
  const float* g = need_dz ? dz : dy;
  if (!need_dz && !db) return g;
  const Chunks ch = fixed_chunks(P, kMaxChunks);
  float* parts = db ? thread_buffer(2, ch.count * OC) : nullptr;
  parallel_for(ch.count, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t p0 = ch.begin(c), p1 = ch.end(c);
      // Blocks of pixels so dz is still in cache when summed.
      float* part = parts ? parts + c * OC : nullptr;
      if (part) std::fill(part, part + OC, 0.0f);
      for (int64_t pa = p0; pa < p1; pa += 64) {
        const int64_t pb = std::min(p1, pa + 64);
        if (need_dz)
          act_grad_set_span(dz + pa * OC, dy + pa * OC, z ? z + pa * OC : nullptr,
                            y ? y + pa * OC : nullptr, (pb - pa) * OC, act);
        if (part) sum_rows(part, g + pa * OC, pb - pa, OC);
      }
    }
  });
  if (db) reduce_parts(db, parts, ch.count, OC, OC);
  return g;
}

// ---------------------------------------------------------------------------------------
// im2col path

// Rows [p0,p1) of buf (·, Kg), the im2col matrix of the pixels from pbase on, for group
// gi; columns (kh, kw, c).
FASTNN_CLONES void im2col_pixels(float* buf, const float* x, const Geom& g, int64_t gi,
                                 int64_t pbase, int64_t p0, int64_t p1) {
  const int64_t C = g.C, Cg = g.Cg, KW = g.KW;
  const bool contiguous_kw = g.dw == 1 && Cg == C;  // a kh row is one run of KW·C floats
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t ow = p % g.OW, r = p / g.OW, oh = r % g.OH, n = r / g.OH;
    float* col = buf + (p - pbase) * g.Kg;
    const int64_t iw0 = ow * g.sw - g.pl;
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      float* ck = col + kh * KW * Cg;
      const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
      if (ih < 0 || ih >= g.H) {
        std::fill(ck, ck + KW * Cg, 0.0f);
        continue;
      }
      const float* xr = x + ((n * g.H + ih) * g.W) * C + gi * Cg;
      if (contiguous_kw && iw0 >= 0 && iw0 + KW <= g.W) {
        std::memcpy(ck, xr + iw0 * C, size_t(KW * C) * sizeof(float));
        continue;
      }
      for (int64_t kw = 0; kw < KW; ++kw) {
        const int64_t iw = iw0 + kw * g.dw;
        float* d = ck + kw * Cg;
        if (iw < 0 || iw >= g.W) std::fill(d, d + Cg, 0.0f);
        else std::memcpy(d, xr + iw * C, size_t(Cg) * sizeof(float));
      }
    }
  }
}

// dx row (n, ih), channels of group gi, += the entries of dcol (tile of pixels [p0,p1),
// (p1-p0, Kg)) that im2col took from it. Gathers, in the order kh, iw, kw.
FASTNN_CLONES void col2im_row(float* dx, const float* dcol, const Geom& g, int64_t gi,
                              int64_t n, int64_t ih, int64_t p0, int64_t p1) {
  const int64_t C = g.C, Cg = g.Cg;
  float* dxr = dx + ((n * g.H + ih) * g.W) * C + gi * Cg;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t t = ih + g.pt - kh * g.dh;
    if (t < 0 || t % g.sh) continue;
    const int64_t oh = t / g.sh;
    if (oh >= g.OH) continue;
    const int64_t rp = (n * g.OH + oh) * g.OW;  // first pixel of this output row
    const int64_t owa = std::max<int64_t>(0, p0 - rp), owb = std::min(g.OW, p1 - rp);
    if (owa >= owb) continue;
    for (int64_t iw = 0; iw < g.W; ++iw) {
      float* d = dxr + iw * C;
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t u = iw + g.pl - kw * g.dw;
        if (u < 0 || u % g.sw) continue;
        const int64_t ow = u / g.sw;
        if (ow < owa || ow >= owb) continue;
        const float* s = dcol + (rp + ow - p0) * g.Kg + (kh * g.KW + kw) * Cg;
#pragma omp simd
        for (int64_t c = 0; c < Cg; ++c) d[c] += s[c];
      }
    }
  }
}

void im2col_parallel(float* buf, const float* x, const Geom& g, int64_t gi, int64_t p0,
                     int64_t p1) {
  parallel_for(p1 - p0, grain_for(p1 - p0, 16), [&](int64_t a, int64_t b) {
    im2col_pixels(buf, x, g, gi, p0, p0 + a, p0 + b);
  });
}

// Tiles of output pixels for the im2col path, chosen from the shape only. When one image's
// im2col matrix fits conv2d_tile_bytes, a tile is a run of whole images (at most N/8 of
// them, so there are tiles to share out); otherwise a band of output pixels of one image.
// Tiles never share an image with another unit, so units own the rows of dx they touch.
// Units (images in band mode, tiles otherwise) are grouped into chunks: the unit of
// parallel work in backward, each with its own partial sums of dw and db.
struct ColTiles {
  int64_t per_img;       // output pixels per image
  bool whole;            // tiles of whole images, else bands of one image
  int64_t imgs;          // images per tile (whole)
  int64_t band, bands;   // pixels per band, bands per image (band mode)
  int64_t count, units;  // tiles; units of parallel work (tiles, or images)
  int64_t chunks;        // groups of consecutive units

  std::pair<int64_t, int64_t> tile(const Geom& g, int64_t i) const {
    if (whole)
      return {i * imgs * per_img, std::min(g.N, (i + 1) * imgs) * per_img};
    const int64_t n = i / bands, b = i % bands;
    return {n * per_img + b * band, n * per_img + std::min(per_img, (b + 1) * band)};
  }
  // Tiles [first, last) of chunk c.
  int64_t chunk_tile(int64_t c) const {
    const int64_t u = c * units / chunks;
    return whole ? u : u * bands;
  }
};

constexpr int64_t kTileChunks = 16;               // at most this many chunks
constexpr int64_t kPartialBytes = int64_t(32) << 20;  // cap on the chunks' dw partials

// partial_bytes: size of one chunk's partial sums (0 when there are none).
ColTiles col_tiles(const Geom& g, int64_t partial_bytes) {
  ColTiles t{};
  t.per_img = g.OH * g.OW;
  const int64_t budget = std::max<int64_t>(1, conv2d_tile_bytes / int64_t(sizeof(float)));
  if (t.per_img * g.Kg <= budget) {
    t.whole = true;
    t.imgs = std::max<int64_t>(1, std::min(budget / (t.per_img * g.Kg), (g.N + 7) / 8));
    t.count = t.units = (g.N + t.imgs - 1) / t.imgs;
    t.band = t.bands = 0;
  } else {
    t.whole = false;
    t.band = std::min(t.per_img, std::max<int64_t>(16, budget / g.Kg));
    t.bands = (t.per_img + t.band - 1) / t.band;
    t.count = g.N * t.bands;
    t.units = g.N;
    t.imgs = 0;
  }
  t.chunks = std::min(t.units, kTileChunks);
  if (partial_bytes > 0)
    t.chunks = std::max<int64_t>(1, std::min(t.chunks, kPartialBytes / partial_bytes));
  return t;
}

// Runs body(i) for i in [0, n): in one parallel region when there are threads and at least
// two items (the work inside then runs serially on its thread), else in order, with the
// work inside free to use every thread itself.
template <class Body>
void for_units(int64_t n, Body&& body) {
  parallel_for(n, grain_for(n, 1), [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) body(i);
  });
}

// Forward, one tile: im2col per group, GEMM into y (or z), bias and activation.
void forward_tile(float* y, float* z, const float* x, const float* w, const float* b,
                  const Geom& g, Act act, int64_t p0, int64_t p1) {
  const int64_t OC = g.OC, m = p1 - p0;
  float* acc = z ? z : y;
  float* buf = thread_buffer(1, m * g.Kg);
  for (int64_t gi = 0; gi < g.G; ++gi) {
    im2col_parallel(buf, x, g, gi, p0, p1);
    // acc_g (m, OCg) = col (m, Kg) · w_g (Kg, OCg), w_g with row stride OC
    gemm_ld(acc + p0 * OC + gi * g.OCg, buf, w + gi * g.OCg, m, g.OCg, g.Kg, OC, g.Kg, OC,
            false, false, false);
  }
  if (b || act != Act::linear || acc != y)
    parallel_for(m, grain_for(m, 16), [&](int64_t a, int64_t e) {
      bias_act_rows(y + (p0 + a) * OC, acc + (p0 + a) * OC, b, e - a, OC, act);
    });
}

void forward_im2col(float* y, float* z, const float* x, const float* w, const float* b,
                    const Geom& g, Act act) {
  const ColTiles t = col_tiles(g, 0);
  for_units(t.count, [&](int64_t i) {
    const std::pair<int64_t, int64_t> r = t.tile(g, i);
    forward_tile(y, z, x, w, b, g, act, r.first, r.second);
  });
}

// Pointwise (1x1, stride 1, no padding): x is the im2col matrix; tiles of rows of it.
void forward_pointwise(float* y, float* z, const float* x, const float* w, const float* b,
                       const Geom& g, Act act) {
  const int64_t P = g.P(), OC = g.OC;
  const int64_t Pt = std::min<int64_t>(P, std::max<int64_t>(64, conv2d_tile_bytes / 4 / OC));
  float* acc = z ? z : y;
  for_units((P + Pt - 1) / Pt, [&](int64_t i) {
    const int64_t p0 = i * Pt, m = std::min(P, p0 + Pt) - p0;
    for (int64_t gi = 0; gi < g.G; ++gi)
      gemm_ld(acc + p0 * OC + gi * g.OCg, x + p0 * g.C + gi * g.Cg, w + gi * g.OCg, m, g.OCg,
              g.Cg, OC, g.C, OC, false, false, false);
    if (b || act != Act::linear || acc != y)
      parallel_for(m, grain_for(m, 16), [&](int64_t a, int64_t e) {
        bias_act_rows(y + (p0 + a) * OC, acc + (p0 + a) * OC, b, e - a, OC, act);
      });
  });
}

void backward_pointwise(float* dx, float* dw, const float* gz, const float* x, const float* w,
                        const Geom& g) {
  const int64_t P = g.P(), OC = g.OC;
  for (int64_t gi = 0; gi < g.G; ++gi) {
    // dw_g (Cg, OCg) += x_gᵀ (Cg, P) · dz_g (P, OCg)
    if (dw)
      gemm_ld(dw + gi * g.OCg, x + gi * g.Cg, gz + gi * g.OCg, g.Cg, g.OCg, P, OC, g.C, OC,
              true, false, true);
    // dx_g (P, Cg) += dz_g (P, OCg) · w_gᵀ (OCg, Cg)
    if (dx)
      gemm_ld(dx + gi * g.Cg, gz + gi * g.OCg, w + gi * g.OCg, P, g.Cg, g.OCg, g.C, OC, OC,
              false, true, true);
  }
}

// Backward of the im2col path in one pass over the tiles, chunk by chunk (in parallel
// over chunks when there are threads): dz for the tile (when act is not linear), its
// column sums into the chunk's db partial, dw into the chunk's partial (or straight into
// dw when there is one chunk) by an accumulating GEMM on the tile's im2col matrix, and
// dx by a GEMM into the same buffer and a gathering col2im. Partials are added in chunk
// order at the end.
void backward_im2col(float* dx, float* dw, float* db, float* dz, const float* dy,
                     const float* x, const float* w, const float* y, const float* z,
                     const Geom& g, Act act) {
  const int64_t OC = g.OC, KO = g.Kg * OC;  // dw is (Kg, OC) = (KH·KW·Cg, OC)
  const ColTiles t = col_tiles(g, dw ? KO * int64_t(sizeof(float)) : 0);
  const bool dw_parts = dw && t.chunks > 1;
  float* pw = dw_parts ? thread_buffer(0, t.chunks * KO) : nullptr;
  float* pb = db ? thread_buffer(2, t.chunks * OC) : nullptr;
  const bool need_dz = act != Act::linear;
  const float* gz = need_dz ? dz : dy;
  for_units(t.chunks, [&](int64_t c) {
    float* cw = dw_parts ? pw + c * KO : dw;
    float* cb = db ? pb + c * OC : nullptr;
    if (cb) std::fill(cb, cb + OC, 0.0f);
    const int64_t t0 = t.chunk_tile(c), t1 = t.chunk_tile(c + 1);
    for (int64_t i = t0; i < t1; ++i) {
      const std::pair<int64_t, int64_t> r = t.tile(g, i);
      const int64_t p0 = r.first, p1 = r.second, m = p1 - p0;
      if (need_dz) {
        const int64_t e0 = p0 * OC, n = m * OC;
        parallel_for(n, grain_for(n, 16384), [&](int64_t a, int64_t e) {
          act_grad_set_span(dz + e0 + a, dy + e0 + a, z ? z + e0 + a : nullptr,
                            y ? y + e0 + a : nullptr, e - a, act);
        });
      }
      if (cb) sum_rows(cb, gz + p0 * OC, m, OC);
      if (!dw && !dx) continue;
      float* buf = thread_buffer(1, m * g.Kg);
      for (int64_t gi = 0; gi < g.G; ++gi) {
        const float* gzt = gz + p0 * OC + gi * g.OCg;  // (m, OCg), row stride OC
        if (dw) {
          // dw_g (Kg, OCg) [+]= colᵀ (Kg, m) · dz (m, OCg); a chunk's partial starts at its
          // first tile, dw itself is only ever added to.
          im2col_parallel(buf, x, g, gi, p0, p1);
          gemm_ld(cw + gi * g.OCg, buf, gzt, g.Kg, g.OCg, m, OC, g.Kg, OC, true, false,
                  !dw_parts || i > t0);
        }
        if (dx) {
          // dcol (m, Kg) = dz (m, OCg) · w_gᵀ (OCg, Kg), then gathered back into dx.
          gemm_ld(buf, gzt, w + gi * g.OCg, m, g.Kg, g.OCg, g.Kg, OC, OC, false, true, false);
          const int64_t n0 = p0 / t.per_img, n1 = (p1 - 1) / t.per_img + 1;
          const int64_t rows = (n1 - n0) * g.H;
          parallel_for(rows, grain_for(rows, 1), [&](int64_t a, int64_t e) {
            for (int64_t r = a; r < e; ++r)
              col2im_row(dx, buf, g, gi, n0 + r / g.H, r % g.H, p0, p1);
          });
        }
      }
    }
  });
  if (db) reduce_parts(db, pb, t.chunks, OC, OC);
  if (dw_parts) reduce_parts(dw, pw, t.chunks, KO, KO);
}

// ---------------------------------------------------------------------------------------
// Zero-padded input rows (direct and depthwise paths)

// Fills dst (Wq, CE) with input row (n, ih) shifted by pad_left, zeros outside the image.
// CE = C, or OC for the depthwise path, where input channel c is repeated OC/C times.
void padded_row(float* dst, const float* x, const Geom& g, int64_t n, int64_t ih, int64_t Wq,
                int64_t CE) {
  const float* xr = x + (n * g.H + ih) * g.W * g.C;
  const int64_t mult = CE / g.C;
  // Columns q in [qa, qb) hold the image (iw = q - pad_left), the others zeros.
  const int64_t qa = std::min(Wq, g.pl), qb = std::max(qa, std::min(Wq, g.pl + g.W));
  std::fill(dst, dst + qa * CE, 0.0f);
  std::fill(dst + qb * CE, dst + Wq * CE, 0.0f);
  if (mult == 1) {
    std::memcpy(dst + qa * CE, xr + (qa - g.pl) * g.C, size_t((qb - qa) * CE) * sizeof(float));
  } else {
    for (int64_t q = qa; q < qb; ++q) {
      const float* s = xr + (q - g.pl) * g.C;
      float* d = dst + q * CE;
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t j = 0; j < mult; ++j) d[c * mult + j] = s[c];
    }
  }
}

// Builds the padded rows of output row (n, oh) into buf (KH, Wq, CE); returns the kh
// whose input row exists (the others only read padding) in khs, their count as result.
int64_t padded_rows(float* buf, int64_t* khs, const float* x, const Geom& g, int64_t n,
                    int64_t oh, int64_t Wq, int64_t CE) {
  int64_t k = 0;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t ih = oh * g.sh - g.pt + kh * g.dh;
    if (ih < 0 || ih >= g.H) continue;
    padded_row(buf + k * Wq * CE, x, g, n, ih, Wq, CE);
    khs[k++] = kh;
  }
  return k;
}

// ---------------------------------------------------------------------------------------
// direct path: few input channels, vectorised over OC

constexpr int kPB = 6;  // pixels per register tile (forward)

// One term of an output row's sum: offset of input column 0 for tap (kh, kw, c) from the
// first of the window's rows (nkh rows, kernel rows khs, rs floats apart: the padded rows
// (nkh, Wq, C), or rows of x read in place), and of that tap's weight row in the padded
// weights.
struct Tap {
  int64_t x, w;
};

int64_t direct_taps(Tap* taps, const int64_t* khs, int64_t nkh, int64_t rs, const Geom& g,
                    int64_t OCp) {
  int64_t t = 0;
  for (int64_t i = 0; i < nkh; ++i)
    for (int64_t kw = 0; kw < g.KW; ++kw)
      for (int64_t c = 0; c < g.C; ++c)
        taps[t++] = {i * rs + kw * g.dw * g.C + c, ((khs[i] * g.KW + kw) * g.C + c) * OCp};
  return t;
}

// The window of one output row: its input rows (nkh of them, kernel rows khs) start at
// x0, rs floats apart; taps lists its T terms (for tiles that take taps from a list);
// runs says the backward's tiles of 3-float runs apply (see dw_tile_runs).
struct Window {
  const float* x0;
  int64_t rs;
  const int64_t* khs;
  int64_t nkh;
  const Tap* taps;
  int64_t T;
  bool runs;
};

// The window of output row (n, oh), reading columns [0, Wq) of padded rows: its rows are
// read in place in x when every kernel row lies inside the image and in_cols (no padded
// column is read: pad_left is 0 and Wq <= W), else copied with zero padding into rows
// (KH, Wq, C). khs (KH) and taps (KH·KW·C) are per-thread buffers; the taps are listed
// when list_taps.
Window direct_window(float* rows, int64_t* khs, Tap* taps, const float* x, const Geom& g,
                     int64_t n, int64_t oh, int64_t Wq, int64_t OCp, bool in_cols,
                     bool list_taps) {
  Window win{};
  const int64_t ih0 = oh * g.sh - g.pt;
  if (in_cols && ih0 >= 0 && ih0 + (g.KH - 1) * g.dh < g.H) {
    win.x0 = x + (n * g.H + ih0) * g.W * g.C;
    win.rs = g.dh * g.W * g.C;
    win.nkh = g.KH;
    for (int64_t i = 0; i < g.KH; ++i) khs[i] = i;
  } else {
    win.x0 = rows;
    win.rs = Wq * g.C;
    win.nkh = padded_rows(rows, khs, x, g, n, oh, Wq, g.C);
  }
  win.khs = khs;
  win.taps = taps;
  win.T = list_taps ? direct_taps(taps, khs, win.nkh, win.rs, g, OCp) : 0;
  win.runs = false;
  return win;
}

// The epilogue of a PB × NV·L accumulator tile (V: L floats) of which the first np pixels
// and no channels are real: y (and z) rows ld floats apart. Full tiles with linear/relu go
// straight from registers; the rest through epilogue_px.
template <class V, int PB, int NV>
__attribute__((always_inline)) inline void store_tile(float* yo, float* zo, int64_t ld,
                                                      const V (&acc)[PB][NV], int64_t np,
                                                      int64_t no, Act act) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  if (np == PB && no == L * NV && (act == Act::linear || act == Act::relu)) {
    const V zero{};
    for (int j = 0; j < PB; ++j)
      for (int v = 0; v < NV; ++v) {
        V r = acc[j][v];
        if (zo) storev<V>(zo + j * ld + L * v, r);
        if (act == Act::relu) r = r > zero ? r : zero;
        storev<V>(yo + j * ld + L * v, r);
      }
    return;
  }
  alignas(64) float tile[PB * NV * L];
  for (int j = 0; j < PB; ++j)
    for (int v = 0; v < NV; ++v) storev<V>(tile + (j * NV + v) * L, acc[j][v]);
  for (int64_t j = 0; j < np; ++j)
    epilogue_px(yo + j * ld, zo ? zo + j * ld : nullptr, tile + j * NV * L, nullptr, no, act);
}

// PB pixels × NV·L channels (V holds L floats): acc = bias + Σ_taps x · w in tap order
// (direct_acc), then (direct_fwd_tile) the epilogue into y (and z) of the first no
// channels, straight from registers for full tiles with linear/relu. xq0 points at the input column of the tile's first pixel
// in the window's first row; pixel j reads sC floats further per pixel. Each output gets
// the same sum in the same order whatever the tile, so the tiles (chosen by ISA and by
// the row's width) never change the result.
template <class V, int PB, int NV>
__attribute__((always_inline)) inline void direct_acc(V (&acc)[PB][NV], const float* xq0,
                                                      const Tap* taps, int64_t T,
                                                      const float* wp, const float* bp,
                                                      int64_t sC) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  for (int v = 0; v < NV; ++v) {
    const V bv = loadv<V>(bp + L * v);
    for (int j = 0; j < PB; ++j) acc[j][v] = bv;
  }
  for (int64_t t = 0; t < T; ++t) {
    const float* wq = wp + taps[t].w;
    const float* xq = xq0 + taps[t].x;
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = loadv<V>(wq + L * v);
    for (int j = 0; j < PB; ++j) {
      const float xv = xq[j * sC];
      for (int v = 0; v < NV; ++v) acc[j][v] += xv * wv[v];
    }
  }
}

template <class V, int PB, int NV>
__attribute__((always_inline)) inline void direct_fwd_tile(
    float* yo, float* zo, int64_t ldy, int64_t no, const float* xq0, const Tap* taps,
    int64_t T, const float* wp, const float* bp, int64_t sC, Act act) {
  V acc[PB][NV];
  direct_acc<V, PB, NV>(acc, xq0, taps, T, wp, bp, sC);
  store_tile<V, PB, NV>(yo, zo, ldy, acc, PB, no, act);
}

// PB pixels of one output row from pixel ow0 on, every channel block: with wide (zmm)
// tiles 32 channels (two 16-float vectors: twelve zmm accumulators for 6 pixels), then 16
// (two 8-float vectors), then 8; otherwise 16 (twelve ymm accumulators, which fit AVX2's
// 16 registers: a 16-float vector is two ymm there, and GCC builds its broadcasts through
// memory), then 8.
template <int PB>
FASTNN_INLINE void direct_fwd_pixels(float* yr, float* zr, int64_t ow0, const Window& win,
                                     const float* wp, const float* bp, const Geom& g,
                                     int64_t OCp, Act act, bool wide) {
  const int64_t OC = g.OC, sC = g.sw * g.C;
  const float* xq0 = win.x0 + ow0 * sC;
  for (int64_t o0 = 0; o0 < OCp;) {
    float* yo = yr + ow0 * OC + o0;
    float* zo = zr ? zr + ow0 * OC + o0 : nullptr;
    if (wide && OCp - o0 >= 32) {
      direct_fwd_tile<v16, PB, 2>(yo, zo, OC, std::min<int64_t>(32, OC - o0), xq0, win.taps,
                                  win.T, wp + o0, bp + o0, sC, act);
      o0 += 32;
    } else if (OCp - o0 >= 16) {
      direct_fwd_tile<v8, PB, 2>(yo, zo, OC, std::min<int64_t>(16, OC - o0), xq0, win.taps,
                                 win.T, wp + o0, bp + o0, sC, act);
      o0 += 16;
    } else {
      direct_fwd_tile<v8, PB, 1>(yo, zo, OC, std::min<int64_t>(8, OC - o0), xq0, win.taps,
                                 win.T, wp + o0, bp + o0, sC, act);
      o0 += 8;
    }
  }
}

// One output row (n, oh): y, z rows (OW, OC) from its window. Tiles of kPB pixels, then
// the last OW mod kPB pixels in tiles of 3, 2, 1, so no tile reads past the row's last
// window (the rows can then be read in place).
FASTNN_CLONES void direct_fwd_row(float* yr, float* zr, const Window& win, const float* wp,
                                  const float* bp, const Geom& g, int64_t OCp, Act act,
                                  bool wide) {
  int64_t ow0 = 0;
  for (; ow0 + kPB <= g.OW; ow0 += kPB)
    direct_fwd_pixels<kPB>(yr, zr, ow0, win, wp, bp, g, OCp, act, wide);
  for (; ow0 + 3 <= g.OW; ow0 += 3)
    direct_fwd_pixels<3>(yr, zr, ow0, win, wp, bp, g, OCp, act, wide);
  for (; ow0 + 2 <= g.OW; ow0 += 2)
    direct_fwd_pixels<2>(yr, zr, ow0, win, wp, bp, g, OCp, act, wide);
  for (; ow0 < g.OW; ++ow0) direct_fwd_pixels<1>(yr, zr, ow0, win, wp, bp, g, OCp, act, wide);
}

int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

// Whether register tiles may be sized for AVX-512's 32 zmm registers (else for AVX2's 16
// ymm): gemm_isa() is "avx512" on the CPUs where FASTNN_CLONES runs its x86-64-v4 clone
// (a native build runs what it was compiled for). set_gemm_isa("avx2") picks the narrow
// tiles there too (tests), with the same results.
bool wide_tiles() {
#if defined(FASTNN_NATIVE_BUILD) && !defined(__AVX512F__)
  return false;
#else
  return std::strcmp(gemm_isa(), "avx512") == 0;
#endif
}

// Weights (KH,KW,C,OC) copied with OC padded to OCp (zeros), bias likewise.
void pad_weights(float* wp, float* bp, const float* w, const float* b, const Geom& g,
                 int64_t OCp) {
  const int64_t rows = g.KH * g.KW * g.C;
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(wp + r * OCp, w + r * g.OC, size_t(g.OC) * sizeof(float));
    std::fill(wp + r * OCp + g.OC, wp + (r + 1) * OCp, 0.0f);
  }
  for (int64_t o = 0; o < OCp; ++o) bp[o] = (b && o < g.OC) ? b[o] : 0.0f;
}

// ---------------------------------------------------------------------------------------
// implicit-GEMM forward (the im2col shapes whose windows all lie inside the image): the
// product of the im2col path without its matrix. A register tile of PB output pixels ×
// NV vectors of channels reads each pixel's window in place (KH runs of KW·C contiguous
// floats when dil_w == 1) against the weights (read in place, or repacked per channel
// block when there are many pixels), and sums the K = KH·KW·C terms from zero in im2col's
// column order before adding the bias, as the GEMM does for K up to its K block. The tile
// depends on the registers: with wide tiles (AVX-512's 32 zmm) 6 pixels × 64 channels
// (24 accumulators, 24 FMAs per 4 weight loads and 6 broadcasts), then 8 pixels × 32
// channels (16); otherwise 6 pixels × 16 channels in 8-float vectors (12 of AVX2's 16
// ymm: a 16-float vector there is two ymm, and 8 × 32 channels would spill). Every
// output gets the same sum in the same order whatever the tile.

constexpr int64_t kImPackMinP = 512;  // pack the weights from this many output pixels on

bool implicit_fits(const Geom& g) {
  return g.G == 1 && g.dw == 1 && g.OC % 16 == 0 && g.pt == 0 && g.pl == 0 &&
         (g.OH - 1) * g.sh + (g.KH - 1) * g.dh < g.H &&
         (g.OW - 1) * g.sw + (g.KW - 1) < g.W;
}

// PB pixels (px: their windows' first floats; the first np real) × NV vectors V of
// channels: y (and z) rows ldy floats apart, no real channels. wb: this block's weights
// (K rows, ldw floats apart).
template <class V, int PB, int NV>
__attribute__((always_inline)) inline void implicit_tile(float* yo, float* zo, int64_t ldy,
                                                        const float* const* px, int64_t np,
                                                        int64_t no, const float* wb,
                                                        int64_t ldw, const float* bo,
                                                        const Geom& g, Act act) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  V acc[PB][NV];
  for (int j = 0; j < PB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v] = V{};
  const int64_t run = g.KW * g.C, step = g.dh * g.W * g.C;
  const float* wq = wb;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const float* p[PB];
    for (int j = 0; j < PB; ++j) p[j] = px[j] + kh * step;
#pragma GCC unroll 4
    for (int64_t t = 0; t < run; ++t, wq += ldw) {
      V wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = loadv<V>(wq + L * v);
      for (int j = 0; j < PB; ++j) {
        const float xv = p[j][t];
        for (int v = 0; v < NV; ++v) acc[j][v] += xv * wv[v];
      }
    }
  }
  if (bo)
    for (int v = 0; v < NV; ++v) {
      const V bv = loadv<V>(bo + L * v);
      for (int j = 0; j < PB; ++j) acc[j][v] = acc[j][v] + bv;
    }
  store_tile<V, PB, NV>(yo, zo, ldy, acc, np, no, act);
}

// Pixels [p0, p1) × the NV·L channels from o0 (weights wb, ldw floats apart), in tiles
// of PB pixels; a last tile of at most PB / 2 pixels takes the half tile.
template <class V, int PB, int NV>
FASTNN_INLINE void implicit_run(float* y, float* z, const float* x, const float* wb,
                                int64_t ldw, const float* b, const Geom& g, Act act,
                                int64_t p0, int64_t p1, int64_t o0) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  const int64_t OC = g.OC;
  for (int64_t q = p0; q < p1; q += PB) {
    const int64_t np = std::min<int64_t>(PB, p1 - q);
    // The tile's windows: pixel q's by division, the next ones by stepping (ow, oh, n).
    const float* px[PB];
    int64_t ow = q % g.OW, oh = (q / g.OW) % g.OH, n = q / (g.OW * g.OH);
    for (int j = 0; j < PB; ++j) {
      px[j] = x + ((n * g.H + oh * g.sh) * g.W + ow * g.sw) * g.C;
      if (j + 1 < np && ++ow == g.OW) {
        ow = 0;
        if (++oh == g.OH) oh = 0, ++n;
      }
    }
    float* yo = y + q * OC + o0;
    float* zo = z ? z + q * OC + o0 : nullptr;
    const float* bo = b ? b + o0 : nullptr;
    if (np > PB / 2)
      implicit_tile<V, PB, NV>(yo, zo, OC, px, np, NV * L, wb, ldw, bo, g, act);
    else
      implicit_tile<V, PB / 2, NV>(yo, zo, OC, px, np, NV * L, wb, ldw, bo, g, act);
  }
}

// Width of the channel block from o0 on (of `left` channels, a multiple of 16): with
// wide tiles 64 (6 pixels × 4 zmm: 24 FMAs per 10 loads), then 32, then 16.
int64_t implicit_block(int64_t left, bool wide) {
  return wide && left >= 64 ? 64 : left >= 32 ? 32 : 16;
}

// Pixels [p0, p1) of y (and z), channel blocks of implicit_block's widths. Weights w
// (K, OC), or packed (wpk != nullptr: block o0 is (K, width) at wpk + o0·K).
FASTNN_CLONES void implicit_pixels(float* y, float* z, const float* x, const float* w,
                                   const float* wpk, const float* b, const Geom& g, Act act,
                                   int64_t p0, int64_t p1, bool wide) {
  const int64_t OC = g.OC, K = g.KH * g.KW * g.C;
  for (int64_t o0 = 0; o0 < OC;) {
    const int64_t bw = implicit_block(OC - o0, wide);
    const float* wb = wpk ? wpk + o0 * K : w + o0;
    const int64_t ldw = wpk ? bw : OC;
    if (bw == 64)
      implicit_run<v16, 6, 4>(y, z, x, wb, ldw, b, g, act, p0, p1, o0);
    else if (wide && bw == 32)
      implicit_run<v16, 8, 2>(y, z, x, wb, ldw, b, g, act, p0, p1, o0);
    else if (wide)
      implicit_run<v16, 8, 1>(y, z, x, wb, ldw, b, g, act, p0, p1, o0);
    else
      for (int64_t c = 0; c < bw; c += 16)
        implicit_run<v8, 6, 2>(y, z, x, wb + c, ldw, b, g, act, p0, p1, o0 + c);
    o0 += bw;
  }
}

void forward_implicit(float* y, float* z, const float* x, const float* w, const float* b,
                      const Geom& g, Act act) {
  const int64_t OC = g.OC, K = g.KH * g.KW * g.C;
  // With many pixels, the weights are repacked as blocks of implicit_block's widths, each
  // (K, width) and contiguous: 5-10% faster than reading them with row stride OC.
  const bool wide = wide_tiles();
  float* wpk = nullptr;
  if (g.P() >= kImPackMinP) {
    wpk = thread_buffer(0, K * OC);
    for (int64_t o0 = 0; o0 < OC;) {
      const int64_t bw = implicit_block(OC - o0, wide);
      for (int64_t k = 0; k < K; ++k)
        std::memcpy(wpk + o0 * K + k * bw, w + k * OC + o0, size_t(bw) * sizeof(float));
      o0 += bw;
    }
  }
  // Units of pixels, in parallel, one thread each: 96 (a multiple of every tile) when
  // there are many; with fewer, one unit per thread (a multiple of 8 pixels, so the
  // threads share a single image evenly), or one in all when the product is too small to
  // pay for waking another thread.
  constexpr int64_t kUnit = 96;
  const int64_t P = g.P(), threads = num_threads();
  int64_t unit = kUnit;
  if (P * K * OC < kMinParallelMacs)
    unit = P;
  else if (P < kUnit * threads)
    unit = ((P + threads - 1) / threads + 7) / 8 * 8;
  const int64_t units = (P + unit - 1) / unit;
  parallel_for(units, grain_for(units, 1), [&](int64_t a, int64_t e) {
    implicit_pixels(y, z, x, w, wpk, b, g, act, a * unit, std::min(P, e * unit), wide);
  });
}

// Forward of the direct path, in parallel over output rows: each row's window (input rows
// in place, or zero-padded copies) against the weights padded to OCp channels.
// What the direct path's forwards share: the channels padded to OCp, the padded row width
// Wq a window reads, whether rows are read in place (in_cols), the tile width, and the
// weights and bias padded to OCp channels (wp, bp: the calling thread's buffer).
struct DirectSetup {
  int64_t OCp, Wq;
  bool in_cols, wide;
  float *wp, *bp;
};

DirectSetup direct_setup(const float* w, const float* b, const Geom& g) {
  DirectSetup d{};
  d.OCp = round8(g.OC);
  d.Wq = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1;
  d.in_cols = g.pl == 0 && d.Wq <= g.W;
  d.wide = wide_tiles();
  d.wp = thread_buffer(0, g.KH * g.KW * g.C * d.OCp + d.OCp);
  d.bp = d.wp + g.KH * g.KW * g.C * d.OCp;
  pad_weights(d.wp, d.bp, w, b, g, d.OCp);
  return d;
}

void forward_direct(float* y, float* z, const float* x, const float* w, const float* b,
                    const Geom& g, Act act) {
  const DirectSetup d = direct_setup(w, b, g);
  const int64_t R = g.R();
  const int64_t grain = grain_for(R, min_rows(g.OW * g.OC * g.KH * g.KW * g.C));
  parallel_for(R, grain, [&](int64_t ra, int64_t rb) {
    float* rows = thread_buffer(1, g.KH * d.Wq * g.C);
    int64_t* khs = thread_buffer<int64_t>(1, g.KH);
    Tap* taps = thread_buffer<Tap>(1, g.KH * g.KW * g.C);
    for (int64_t r = ra; r < rb; ++r) {
      const Window win = direct_window(rows, khs, taps, x, g, r / g.OH, r % g.OH, d.Wq, d.OCp,
                                       d.in_cols, true);
      direct_fwd_row(y + r * g.OW * g.OC, z ? z + r * g.OW * g.OC : nullptr, win, d.wp, d.bp,
                     g, d.OCp, act, d.wide);
    }
  });
}

// ---------------------------------------------------------------------------------------
// direct path + 2x2 max pooling (stride 2) in registers (conv2d_direct_max_pool2x2)

// relu(v) as the unfused epilogues compute it (a NaN gives 0), and the larger of two
// such values: max_pool2d's rule (the first of equals; a NaN wins) needs no NaN test on
// them. (GCC makes scalar code of a NaN test on these vectors.)
template <class V>
__attribute__((always_inline)) inline V relu_v(V v) {
  const V zero{};
  return v > zero ? v : zero;
}
template <class V>
__attribute__((always_inline)) inline V max_v(V best, V v) {
  return v > best ? v : best;
}

// PP pooled pixels × NV·L channels of one pooled row: the 2·PP conv pixels of each of its
// two conv rows (windows a and b, from conv column `off`/sC on) as direct_acc computes
// them, relu, and pooled in window order (a's pair, then b's), so each result equals the
// unfused kernels' bit for bit; the first no channels are stored.
template <class V, int PP, int NV>
__attribute__((always_inline)) inline void direct_pool_tile(float* yo, int64_t ldy,
                                                            int64_t no, const Window& a,
                                                            const Window& b, int64_t off,
                                                            const float* wp, const float* bp,
                                                            int64_t sC) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  V best[PP][NV], acc[2 * PP][NV];
  direct_acc<V, 2 * PP, NV>(acc, a.x0 + off, a.taps, a.T, wp, bp, sC);
  for (int j = 0; j < PP; ++j)
    for (int v = 0; v < NV; ++v)
      best[j][v] = max_v(relu_v(acc[2 * j][v]), relu_v(acc[2 * j + 1][v]));
  direct_acc<V, 2 * PP, NV>(acc, b.x0 + off, b.taps, b.T, wp, bp, sC);
  for (int j = 0; j < PP; ++j)
    for (int v = 0; v < NV; ++v)
      best[j][v] = max_v(max_v(best[j][v], relu_v(acc[2 * j][v])), relu_v(acc[2 * j + 1][v]));
  if (no == L * NV) {
    for (int j = 0; j < PP; ++j)
      for (int v = 0; v < NV; ++v) storev<V>(yo + j * ldy + L * v, best[j][v]);
    return;
  }
  alignas(64) float tile[NV * L];
  for (int j = 0; j < PP; ++j) {
    for (int v = 0; v < NV; ++v) storev<V>(tile + v * L, best[j][v]);
    std::memcpy(yo + j * ldy, tile, size_t(no) * sizeof(float));
  }
}

// PP pooled pixels from pw0 on, every channel block, with the tiles of direct_fwd_pixels.
template <int PP>
FASTNN_INLINE void direct_pool_pixels(float* yr, int64_t pw0, const Window& a,
                                      const Window& b, const float* wp, const float* bp,
                                      const Geom& g, int64_t OCp, bool wide) {
  const int64_t OC = g.OC, sC = g.sw * g.C, off = 2 * pw0 * sC;
  for (int64_t o0 = 0; o0 < OCp;) {
    float* yo = yr + pw0 * OC + o0;
    if (wide && OCp - o0 >= 32) {
      direct_pool_tile<v16, PP, 2>(yo, OC, std::min<int64_t>(32, OC - o0), a, b, off,
                                   wp + o0, bp + o0, sC);
      o0 += 32;
    } else if (OCp - o0 >= 16) {
      direct_pool_tile<v8, PP, 2>(yo, OC, std::min<int64_t>(16, OC - o0), a, b, off,
                                  wp + o0, bp + o0, sC);
      o0 += 16;
    } else {
      direct_pool_tile<v8, PP, 1>(yo, OC, std::min<int64_t>(8, OC - o0), a, b, off,
                                  wp + o0, bp + o0, sC);
      o0 += 8;
    }
  }
}

// One pooled row (PW pixels) from the windows of its two conv rows: tiles of 3 pooled
// pixels (6 conv pixels, as direct_fwd_row's) with zmm registers, 2 otherwise (AVX2 has
// 16 registers: 8 accumulators and 4 maxima per 16 channels), then single ones.
FASTNN_CLONES void direct_pool_row(float* yr, int64_t PW, const Window& a, const Window& b,
                                   const float* wp, const float* bp, const Geom& g,
                                   int64_t OCp, bool wide) {
  int64_t pw0 = 0;
  if (wide)
    for (; pw0 + 3 <= PW; pw0 += 3) direct_pool_pixels<3>(yr, pw0, a, b, wp, bp, g, OCp, wide);
  for (; pw0 + 2 <= PW; pw0 += 2) direct_pool_pixels<2>(yr, pw0, a, b, wp, bp, g, OCp, wide);
  for (; pw0 < PW; ++pw0) direct_pool_pixels<1>(yr, pw0, a, b, wp, bp, g, OCp, wide);
}
// Forward of the direct path with relu and a 2x2, stride-2 max pooling of its output, in
// parallel over pooled rows: each takes the windows of its two conv rows.
void forward_direct_pool2(float* y, const float* x, const float* w, const float* b,
                          const Geom& g, const Pool2d& pool) {
  const DirectSetup d = direct_setup(w, b, g);
  const int64_t R = g.N * pool.OH, rows_n = g.KH * d.Wq * g.C, taps_n = g.KH * g.KW * g.C;
  const int64_t grain = grain_for(R, min_rows(2 * g.OW * g.OC * taps_n));
  parallel_for(R, grain, [&](int64_t ra, int64_t rb) {
    float* rows = thread_buffer(1, 2 * rows_n);
    int64_t* khs = thread_buffer<int64_t>(1, 2 * g.KH);
    Tap* taps = thread_buffer<Tap>(1, 2 * taps_n);
    for (int64_t r = ra; r < rb; ++r) {
      const int64_t n = r / pool.OH, oh = 2 * (r % pool.OH);
      const Window a =
          direct_window(rows, khs, taps, x, g, n, oh, d.Wq, d.OCp, d.in_cols, true);
      const Window c = direct_window(rows + rows_n, khs + g.KH, taps + taps_n, x, g, n, oh + 1,
                                     d.Wq, d.OCp, d.in_cols, true);
      direct_pool_row(y + r * pool.OW * g.OC, pool.OW, a, c, d.wp, d.bp, g, d.OCp, d.wide);
    }
  });
}

// Backward weights, one output row at a time: part (KH,KW,C,OCp) += Σ_ow x(ow; tap) · g(ow)
// for the taps of the row's window, where g(ow) is the row gr (OW, OCp) of dz or, with
// kMask, relu's dz = yr > 0 ? gr : 0 formed in registers from the rows of dy and y; with
// kSum also sum (OCp) += Σ_ow g(ow) (db). Register tiles of taps × NV vectors of L
// channels sum the row's pixels from zero in order and are then added to part; sum adds
// the pixels in order as sum_rows does. Every element therefore gets the same sums in the
// same order whatever the tiles (chosen by ISA and geometry) and whether dz was formed
// here or in a buffer: neither changes the result.

// Floats ahead in dy and y (6.5 KB: two rows of MNIST's first layer) that the fused
// backward asks for while it computes. That pass is bound by reading dy and y (11 MB at
// batch 64), and the L2 streamer alone keeps too few lines in flight: on the 2-core Xeon
// VM this was tuned on, a plain read of both from DRAM on 2 threads took 0.83x the time
// with these prefetches, and the layer's backward in a training step about 0.85x.
constexpr int64_t kPrefetchFloats = 1664;

// The dz vectors of pixel ow (NV·L channels), and with kSum sv += them. With pf, asks for
// the lines kPrefetchFloats further on in gr (and yr).
template <class V, int NV, bool kMask, bool kSum>
FASTNN_INLINE void dz_vectors(V (&gv)[NV], V (&sv)[NV], const float* gr, const float* yr,
                              int64_t ow, int64_t OCp, bool pf) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  if (pf)
    for (int v = 0; v < NV * L; v += 16) {
      __builtin_prefetch(gr + ow * OCp + kPrefetchFloats + v);
      if (kMask) __builtin_prefetch(yr + ow * OCp + kPrefetchFloats + v);
    }
  for (int v = 0; v < NV; ++v) {
    gv[v] = loadv<V>(gr + ow * OCp + L * v);
    if (kMask) gv[v] = loadv<V>(yr + ow * OCp + L * v) > V{} ? gv[v] : V{};
    if (kSum) sv[v] += gv[v];
  }
}

// TB taps from a list (any geometry): tap t reads x at x0 + taps[t].x + ow·sC. TB may be 0
// (only the sum: a row whose window reads nothing but padding).
template <class V, int TB, int NV, bool kMask, bool kSum>
FASTNN_INLINE void dw_tile_taps(float* part, float* sum, const float* x0, const Tap* taps,
                                const float* gr, const float* yr, bool pf, int64_t OW,
                                int64_t sC, int64_t OCp) {
  constexpr int L = int(sizeof(V) / sizeof(float)), TA = TB > 0 ? TB : 1;
  V acc[TA][NV], sv[NV];
  const float* xt[TA];
  for (int t = 0; t < TB; ++t) {
    xt[t] = x0 + taps[t].x;
    for (int v = 0; v < NV; ++v) acc[t][v] = V{};
  }
  for (int v = 0; v < NV; ++v) sv[v] = kSum ? loadv<V>(sum + L * v) : V{};
  for (int64_t ow = 0; ow < OW; ++ow) {
    V gv[NV];
    dz_vectors<V, NV, kMask, kSum>(gv, sv, gr, yr, ow, OCp, pf);
    for (int t = 0; t < TB; ++t) {
      const float xv = xt[t][ow * sC];
      for (int v = 0; v < NV; ++v) acc[t][v] += xv * gv[v];
    }
  }
  for (int t = 0; t < TB; ++t)
    for (int v = 0; v < NV; ++v) {
      float* p = part + taps[t].w + L * v;
      storev<V>(p, loadv<V>(p) + acc[t][v]);
    }
  if (kSum)
    for (int v = 0; v < NV; ++v) storev<V>(sum + L * v, sv[v]);
}

// RH window rows × RW taps when a window row is one run of RW = KW·C floats (dil_w == 1):
// tap (i, j) reads x at x0 + i·rs + ow·sC + j and adds into part row khs[i]·RW + j. The
// taps sit at fixed offsets from RH row pointers, where a tap list needs a register per
// tap (with 9 taps, more than x86-64 has: the offsets then move in from vector registers,
// one uop each on the FMA ports).
template <class V, int RH, int RW, int NV, bool kMask, bool kSum>
FASTNN_INLINE void dw_tile_runs(float* part, float* sum, const float* x0, int64_t rs,
                                const int64_t* khs, const float* gr, const float* yr, bool pf,
                                int64_t OW, int64_t sC, int64_t OCp) {
  constexpr int L = int(sizeof(V) / sizeof(float));
  V acc[RH][RW][NV], sv[NV];
  for (int i = 0; i < RH; ++i)
    for (int j = 0; j < RW; ++j)
      for (int v = 0; v < NV; ++v) acc[i][j][v] = V{};
  for (int v = 0; v < NV; ++v) sv[v] = kSum ? loadv<V>(sum + L * v) : V{};
  for (int64_t ow = 0; ow < OW; ++ow) {
    V gv[NV];
    dz_vectors<V, NV, kMask, kSum>(gv, sv, gr, yr, ow, OCp, pf);
    for (int i = 0; i < RH; ++i) {
      const float* xq = x0 + i * rs + ow * sC;
      for (int j = 0; j < RW; ++j)
        for (int v = 0; v < NV; ++v) acc[i][j][v] += xq[j] * gv[v];
    }
  }
  for (int i = 0; i < RH; ++i)
    for (int j = 0; j < RW; ++j)
      for (int v = 0; v < NV; ++v) {
        float* p = part + (khs[i] * RW + j) * OCp + L * v;
        storev<V>(p, loadv<V>(p) + acc[i][j][v]);
      }
  if (kSum)
    for (int v = 0; v < NV; ++v) storev<V>(sum + L * v, sv[v]);
}

// Taps per generic tile: a whole 3x3 kernel of one input channel. 9 taps × 2 zmm = 18
// accumulators (AVX-512), 9 taps × 1 ymm = 9 (AVX2, 16 registers): enough independent
// sums to hide the FMA latency. Remainders go by 3 taps, then 1. Tiles of runs take up to
// 3 rows of 3 taps.
constexpr int kDwTaps = 9;

// One channel block (NV vectors of V) of one output row, from window row (runs) or tap
// (list) k on. The first tile prefetches (pf) and, with kSum, takes the sum; the rest of
// the block goes on without (a tile of no taps takes the sum when there are none).
template <class V, int NV, bool kMask, bool kSum>
FASTNN_INLINE void dw_block(float* part, float* sum, const Window& win, int64_t k,
                            const float* gr, const float* yr, bool pf, int64_t OW, int64_t sC,
                            int64_t OCp) {
  while (win.runs ? k < win.nkh : k < win.T) {
    if (win.runs) {
      const float* x0 = win.x0 + k * win.rs;
      const int64_t* khs = win.khs + k;
      const int64_t rs = win.rs, rh = std::min<int64_t>(3, win.nkh - k);
      if (rh == 3)
        dw_tile_runs<V, 3, 3, NV, kMask, kSum>(part, sum, x0, rs, khs, gr, yr, pf, OW, sC, OCp);
      else if (rh == 2)
        dw_tile_runs<V, 2, 3, NV, kMask, kSum>(part, sum, x0, rs, khs, gr, yr, pf, OW, sC, OCp);
      else
        dw_tile_runs<V, 1, 3, NV, kMask, kSum>(part, sum, x0, rs, khs, gr, yr, pf, OW, sC, OCp);
      k += rh;
    } else {
      const Tap* taps = win.taps + k;
      const int64_t tb = win.T - k >= kDwTaps ? kDwTaps : win.T - k >= 3 ? 3 : 1;
      if (tb == kDwTaps)
        dw_tile_taps<V, kDwTaps, NV, kMask, kSum>(part, sum, win.x0, taps, gr, yr, pf, OW, sC,
                                                  OCp);
      else if (tb == 3)
        dw_tile_taps<V, 3, NV, kMask, kSum>(part, sum, win.x0, taps, gr, yr, pf, OW, sC, OCp);
      else
        dw_tile_taps<V, 1, NV, kMask, kSum>(part, sum, win.x0, taps, gr, yr, pf, OW, sC, OCp);
      k += tb;
    }
    pf = false;
    if (kSum) return dw_block<V, NV, kMask, false>(part, sum, win, k, gr, yr, false, OW, sC, OCp);
  }
  if (kSum)
    dw_tile_taps<V, 0, NV, kMask, true>(part, sum, win.x0, win.taps, gr, yr, pf, OW, sC, OCp);
}

// One output row's contribution to part (KH,KW,C,OCp) and, unless sum is nullptr, to sum
// (OCp): the gradient is the row gr (OW, OCp) of dz, or, when yr is not nullptr, relu's dz
// formed from the rows gr of dy and yr of y (then OC == OCp). pf: prefetch further on in
// gr and yr (the caller checks that those lines are inside the tensors). Channel blocks:
// with wide (zmm) tiles 32 channels (two 16-float vectors), then 16, then 8; otherwise 8
// at a time (one ymm vector, so that 9 taps fit AVX2's registers).
template <class V, int NV, bool kMask>
FASTNN_INLINE void dw_channels(float* part, float* sum, const Window& win, const float* gr,
                               const float* yr, bool pf, int64_t OW, int64_t sC, int64_t OCp) {
  if (sum) dw_block<V, NV, kMask, true>(part, sum, win, 0, gr, yr, pf, OW, sC, OCp);
  else dw_block<V, NV, kMask, false>(part, nullptr, win, 0, gr, yr, pf, OW, sC, OCp);
}

template <bool kMask>
FASTNN_INLINE void dw_blocks(float* part, float* sum, const Window& win, const float* gr,
                             const float* yr, bool pf, const Geom& g, int64_t OCp, bool wide) {
  const int64_t sC = g.sw * g.C, OW = g.OW;
  int64_t o = 0;
  if (wide) {
    for (; o + 32 <= OCp; o += 32)
      dw_channels<v16, 2, kMask>(part + o, sum ? sum + o : nullptr, win, gr + o,
                                 kMask ? yr + o : nullptr, pf, OW, sC, OCp);
    for (; o + 16 <= OCp; o += 16)
      dw_channels<v16, 1, kMask>(part + o, sum ? sum + o : nullptr, win, gr + o,
                                 kMask ? yr + o : nullptr, pf, OW, sC, OCp);
  }
  for (; o < OCp; o += 8)
    dw_channels<v8, 1, kMask>(part + o, sum ? sum + o : nullptr, win, gr + o,
                              kMask ? yr + o : nullptr, pf, OW, sC, OCp);
}

FASTNN_CLONES void direct_dw_row(float* part, float* sum, const Window& win,
                                 const float* gr, const float* yr, bool pf, const Geom& g,
                                 int64_t OCp, bool wide) {
  if (yr) dw_blocks<true>(part, sum, win, gr, yr, pf, g, OCp, wide);
  else dw_blocks<false>(part, sum, win, gr, nullptr, pf, g, OCp, wide);
}

// dx row (n, ih) += Σ_{kh,kw,o} dz(n,oh,ow,o) · w(kh,kw,c,o) (groups == 1), gathering.
FASTNN_CLONES void gather_dx_row(float* dx, const float* gz, const float* w, const Geom& g,
                                 int64_t n, int64_t ih) {
  const int64_t C = g.C, OC = g.OC;
  float* dxr = dx + (n * g.H + ih) * g.W * C;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t t = ih + g.pt - kh * g.dh;
    if (t < 0 || t % g.sh) continue;
    const int64_t oh = t / g.sh;
    if (oh >= g.OH) continue;
    const float* grow = gz + (n * g.OH + oh) * g.OW * OC;
    for (int64_t iw = 0; iw < g.W; ++iw) {
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t u = iw + g.pl - kw * g.dw;
        if (u < 0 || u % g.sw) continue;
        const int64_t ow = u / g.sw;
        if (ow >= g.OW) continue;
        const float* gp = grow + ow * OC;
        for (int64_t c = 0; c < C; ++c) {
          const float* wq = w + ((kh * g.KW + kw) * C + c) * OC;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t o = 0; o < OC; ++o) s += gp[o] * wq[o];
          dxr[iw * C + c] += s;
        }
      }
    }
  }
}

// Backward of the direct path in one pass over the output rows, in parallel over fixed
// chunks of rows: dz for the row, its column sums into the chunk's db partial, and its
// contribution to the chunk's dw partial; partials are added in chunk order. dx then
// gathers from dz. When dz is not kept (no dx: the first layer), act is linear or relu and
// OC is a multiple of 8, dz is formed in registers by the dw tiles, which also take the
// column sums: one pass over dy and y, the memory traffic this layer is bound by. Else dz
// goes through a per-thread row buffer (or into dz when dx needs all of it afterwards);
// both ways give the same sums in the same order. The window's input rows are read in
// place when they lie inside the image (no padding to fill in), else from zero-padded
// copies.
void backward_direct(float* dx, float* dw, float* db, float* dz, const float* dy,
                     const float* x, const float* w, const float* y, const float* z,
                     const Geom& g, Act act) {
  const int64_t OC = g.OC, OCp = round8(OC), K = g.KH * g.KW * g.C, row = g.OW * OC;
  const int64_t Wq = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1;
  const bool need_dz = act != Act::linear, keep_dz = need_dz && dx;
  const float* gz = need_dz ? dz : dy;
  const int64_t R = g.R();
  if (dw || db || keep_dz) {
    const Chunks ch = fixed_chunks(R, kMaxChunks);
    float* parts = dw ? thread_buffer(0, ch.count * K * OCp) : nullptr;
    float* pdb = db ? thread_buffer(2, ch.count * OC) : nullptr;
    const bool padc = OCp != OC, wide = wide_tiles();
    const bool fused = dw && !keep_dz && !padc && (act == Act::linear || act == Act::relu);
    const bool runs = g.dw == 1 && g.KW * g.C == 3;
    const bool in_cols = g.pl == 0 && Wq <= g.W;
    parallel_for(ch.count, 1, [&](int64_t ca, int64_t cb) {
      const int64_t nrows = dw ? g.KH * Wq * g.C : 0;
      float* rows = thread_buffer(1, nrows + g.OW * OCp + row);
      float* gp = rows + nrows;       // dz row with channels padded to OCp
      float* gbuf = gp + g.OW * OCp;  // dz row, when dz is not kept
      int64_t* khs = thread_buffer<int64_t>(1, g.KH);
      Tap* taps = thread_buffer<Tap>(1, g.KH * g.KW * g.C);
      // The window of output row (n, oh) for the dw tiles.
      auto window = [&](int64_t n, int64_t oh) {
        Window win = direct_window(rows, khs, taps, x, g, n, oh, Wq, OCp, in_cols, !runs);
        win.runs = runs;
        return win;
      };
      for (int64_t c = ca; c < cb; ++c) {
        float* part = parts ? parts + c * K * OCp : nullptr;
        float* cdb = pdb ? pdb + c * OC : nullptr;
        if (part) std::fill(part, part + K * OCp, 0.0f);
        if (cdb) std::fill(cdb, cdb + OC, 0.0f);
        for (int64_t r = ch.begin(c); r < ch.end(c); ++r) {
          const int64_t n = r / g.OH, oh = r % g.OH;
          if (fused) {
            const bool pf = (r + 1) * row + kPrefetchFloats <= R * row;
            direct_dw_row(part, cdb, window(n, oh), dy + r * row,
                          act == Act::relu ? y + r * row : nullptr, pf, g, OCp, wide);
            continue;
          }
          const float* gr = dy + r * row;
          if (need_dz) {
            float* d = keep_dz ? dz + r * row : gbuf;
            act_grad_set_span(d, gr, z ? z + r * row : nullptr, y ? y + r * row : nullptr,
                              row, act);
            gr = d;
          }
          if (cdb) sum_rows(cdb, gr, g.OW, OC);
          if (!part) continue;
          if (padc) {  // channels padded to OCp for whole-vector loads
            for (int64_t ow = 0; ow < g.OW; ++ow) {
              std::memcpy(gp + ow * OCp, gr + ow * OC, size_t(OC) * sizeof(float));
              std::fill(gp + ow * OCp + OC, gp + (ow + 1) * OCp, 0.0f);
            }
            gr = gp;
          }
          direct_dw_row(part, nullptr, window(n, oh), gr, nullptr, false, g, OCp, wide);
        }
      }
    });
    if (db) reduce_parts(db, pdb, ch.count, OC, OC);
    if (dw) {
      // dw (K, OC) += Σ_chunks parts (K, OCp), in chunk order.
      parallel_for(K, grain_for(K, std::max<int64_t>(1, 16384 / (OC * ch.count))),
                   [&](int64_t ka, int64_t kb) {
                     for (int64_t k = ka; k < kb; ++k)
                       for (int64_t o = 0; o < OC; ++o) {
                         float s = 0.0f;
                         for (int64_t c = 0; c < ch.count; ++c)
                           s += parts[(c * K + k) * OCp + o];
                         dw[k * OC + o] += s;
                       }
                   });
    }
  }
  if (dx) {
    const int64_t rows = g.N * g.H;
    parallel_for(rows, grain_for(rows, 1), [&](int64_t a, int64_t e) {
      for (int64_t r = a; r < e; ++r) gather_dx_row(dx, gz, w, g, r / g.H, r % g.H);
    });
  }
}

// ---------------------------------------------------------------------------------------
// depthwise path: groups == C, output channel o reads input channel o / (OC/C)

// PB pixels × NV·8 channels [o0, ...) of one output row: acc = b + Σ_{kh,kw} x · w from the
// channel-expanded padded rows xrows (nkh, Wq, OC), starting at padded column q0; then
// the epilogue (from registers for linear/relu). xrows, w, b, yo, zo point at channel o0.
template <int PB, int NV>
__attribute__((always_inline)) inline void depthwise_fwd_tile(
    float* yo, float* zo, const float* xrows, const int64_t* khs, int64_t nkh, int64_t Wq,
    const float* w, const float* b, int64_t q0, const Geom& g, Act act) {
  const int64_t OC = g.OC, sx = g.sw * OC;
  v8 acc[PB][NV];
  for (int v = 0; v < NV; ++v) {
    const v8 bv = b ? load8(b + 8 * v) : v8{};
    for (int j = 0; j < PB; ++j) acc[j][v] = bv;
  }
  for (int64_t i = 0; i < nkh; ++i) {
    const float* xr = xrows + (i * Wq + q0) * OC;
    const float* wk = w + khs[i] * g.KW * OC;
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const float* xq = xr + kw * g.dw * OC;
      v8 wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = load8(wk + kw * OC + 8 * v);
      for (int j = 0; j < PB; ++j)
        for (int v = 0; v < NV; ++v) acc[j][v] += load8(xq + j * sx + 8 * v) * wv[v];
    }
  }
  store_tile<v8, PB, NV>(yo, zo, OC, acc, PB, NV * 8, act);
}

// Channels [o0, OC) (fewer than 8) of output pixel ow, one at a time.
FASTNN_INLINE void depthwise_fwd_tail(float* yr, float* zr, const float* xrows,
                                      const int64_t* khs, int64_t nkh, int64_t Wq,
                                      const float* w, const float* b, int64_t ow, int64_t o0,
                                      const Geom& g, Act act) {
  const int64_t OC = g.OC;
  float acc[8];
  for (int64_t o = o0; o < OC; ++o) {
    float s = b ? b[o] : 0.0f;
    for (int64_t i = 0; i < nkh; ++i)
      for (int64_t kw = 0; kw < g.KW; ++kw)
        s += xrows[(i * Wq + ow * g.sw + kw * g.dw) * OC + o] * w[(khs[i] * g.KW + kw) * OC + o];
    acc[o - o0] = s;
  }
  epilogue_px(yr + ow * OC + o0, zr ? zr + ow * OC + o0 : nullptr, acc, nullptr, OC - o0, act);
}

constexpr int kDwPB = 4;  // pixels per register tile (depthwise forward)

// One output row: register tiles of kDwPB pixels × 16 or 8 channels, then the tails.
FASTNN_CLONES void depthwise_fwd_row(float* yr, float* zr, const float* xrows,
                                     const int64_t* khs, int64_t nkh, int64_t Wq,
                                     const float* w, const float* b, const Geom& g, Act act) {
  const int64_t OC = g.OC;
  int64_t ow = 0;
  for (; ow + kDwPB <= g.OW; ow += kDwPB) {
    int64_t o = 0;
    float* zo = zr ? zr + ow * OC : nullptr;
    for (; o + 16 <= OC; o += 16)
      depthwise_fwd_tile<kDwPB, 2>(yr + ow * OC + o, zo ? zo + o : nullptr, xrows + o, khs,
                                   nkh, Wq, w + o, b ? b + o : nullptr, ow * g.sw, g, act);
    for (; o + 8 <= OC; o += 8)
      depthwise_fwd_tile<kDwPB, 1>(yr + ow * OC + o, zo ? zo + o : nullptr, xrows + o, khs,
                                   nkh, Wq, w + o, b ? b + o : nullptr, ow * g.sw, g, act);
    if (o < OC)
      for (int64_t j = 0; j < kDwPB; ++j)
        depthwise_fwd_tail(yr, zr, xrows, khs, nkh, Wq, w, b, ow + j, o, g, act);
  }
  for (; ow < g.OW; ++ow) {
    int64_t o = 0;
    float* zo = zr ? zr + ow * OC : nullptr;
    for (; o + 8 <= OC; o += 8)
      depthwise_fwd_tile<1, 1>(yr + ow * OC + o, zo ? zo + o : nullptr, xrows + o, khs, nkh,
                               Wq, w + o, b ? b + o : nullptr, ow * g.sw, g, act);
    if (o < OC) depthwise_fwd_tail(yr, zr, xrows, khs, nkh, Wq, w, b, ow, o, g, act);
  }
}

void forward_depthwise(float* y, float* z, const float* x, const float* w, const float* b,
                       const Geom& g, Act act) {
  const int64_t Wq = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1;
  const int64_t R = g.R();
  parallel_for(R, grain_for(R, 1), [&](int64_t ra, int64_t rb) {
    float* rows = thread_buffer(1, g.KH * Wq * g.OC);
    int64_t* khs = thread_buffer<int64_t>(1, g.KH);
    for (int64_t r = ra; r < rb; ++r) {
      const int64_t n = r / g.OH, oh = r % g.OH;
      const int64_t nkh = padded_rows(rows, khs, x, g, n, oh, Wq, g.OC);
      depthwise_fwd_row(y + r * g.OW * g.OC, z ? z + r * g.OW * g.OC : nullptr, rows,
                        khs, nkh, Wq, w, b, g, act);
    }
  });
}

// part (KW taps from kw0, NV·8 channels) += Σ_ow xr(ow; kw) · gr(ow) for one padded input
// row xr (Wq, OC) and dz row gr (OW, OC); xr, gr and part point at the first channel.
template <int TB, int NV>
__attribute__((always_inline)) inline void depthwise_dw_tile(float* part, const float* xr,
                                                            const float* gr, int64_t kw0,
                                                            const Geom& g) {
  const int64_t OC = g.OC, sx = g.sw * OC;
  v8 acc[TB][NV];
  for (int t = 0; t < TB; ++t)
    for (int v = 0; v < NV; ++v) acc[t][v] = v8{};
  const float* x0 = xr + kw0 * g.dw * OC;
  for (int64_t ow = 0; ow < g.OW; ++ow) {
    v8 gv[NV];
    for (int v = 0; v < NV; ++v) gv[v] = load8(gr + ow * OC + 8 * v);
    const float* xq = x0 + ow * sx;
    for (int t = 0; t < TB; ++t)
      for (int v = 0; v < NV; ++v) acc[t][v] += load8(xq + t * g.dw * OC + 8 * v) * gv[v];
  }
  for (int t = 0; t < TB; ++t)
    for (int v = 0; v < NV; ++v) {
      float* p = part + (kw0 + t) * OC + 8 * v;
      store8(p, load8(p) + acc[t][v]);
    }
}

template <int NV>
__attribute__((always_inline)) inline void depthwise_dw_taps(float* part, const float* xr,
                                                            const float* gr, const Geom& g) {
  int64_t kw = 0;
  for (; kw + 3 <= g.KW; kw += 3) depthwise_dw_tile<3, NV>(part, xr, gr, kw, g);
  for (; kw < g.KW; ++kw) depthwise_dw_tile<1, NV>(part, xr, gr, kw, g);
}

// part (KH,KW,OC) += Σ_ow xrows(ow; kh,kw,o) · gr(ow, o) for one output row.
FASTNN_CLONES void depthwise_dw_row(float* part, const float* xrows, const int64_t* khs,
                                    int64_t nkh, int64_t Wq, const float* gr, const Geom& g) {
  const int64_t OC = g.OC;
  for (int64_t i = 0; i < nkh; ++i) {
    const float* xr = xrows + i * Wq * OC;
    float* pk = part + khs[i] * g.KW * OC;
    int64_t o = 0;
    for (; o + 16 <= OC; o += 16) depthwise_dw_taps<2>(pk + o, xr + o, gr + o, g);
    for (; o + 8 <= OC; o += 8) depthwise_dw_taps<1>(pk + o, xr + o, gr + o, g);
    if (o == OC) continue;
    for (int64_t kw = 0; kw < g.KW; ++kw)  // channel tail, one at a time
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const float* xq = xr + (ow * g.sw + kw * g.dw) * OC;
        const float* gq = gr + ow * OC;
        for (int64_t c = o; c < OC; ++c) pk[kw * OC + c] += xq[c] * gq[c];
      }
  }
}

// dx row (n, ih) += Σ_{kh,kw,j} dz(n,oh,ow,c·M+j) · w(kh,kw,0,c·M+j), M = OC/C.
FASTNN_CLONES void depthwise_dx_row(float* dx, const float* gz, const float* w, const Geom& g,
                                    int64_t n, int64_t ih) {
  const int64_t C = g.C, OC = g.OC, M = OC / C;
  float* dxr = dx + (n * g.H + ih) * g.W * C;
  for (int64_t kh = 0; kh < g.KH; ++kh) {
    const int64_t t = ih + g.pt - kh * g.dh;
    if (t < 0 || t % g.sh) continue;
    const int64_t oh = t / g.sh;
    if (oh >= g.OH) continue;
    const float* grow = gz + (n * g.OH + oh) * g.OW * OC;
    for (int64_t iw = 0; iw < g.W; ++iw) {
      float* d = dxr + iw * C;
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const int64_t u = iw + g.pl - kw * g.dw;
        if (u < 0 || u % g.sw) continue;
        const int64_t ow = u / g.sw;
        if (ow >= g.OW) continue;
        const float* gq = grow + ow * OC;
        const float* wq = w + (kh * g.KW + kw) * OC;
        if (M == 1) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) d[c] += gq[c] * wq[c];
        } else {
          for (int64_t c = 0; c < C; ++c) {
            float s = 0.0f;
            for (int64_t j = 0; j < M; ++j) s += gq[c * M + j] * wq[c * M + j];
            d[c] += s;
          }
        }
      }
    }
  }
}

void backward_depthwise(float* dx, float* dw, const float* gz, const float* x, const float* w,
                        const Geom& g) {
  if (dw) {
    const int64_t K = g.KH * g.KW * g.OC;
    const int64_t Wq = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1;
    const Chunks ch = fixed_chunks(g.R(), kMaxChunks);
    float* parts = thread_buffer(0, ch.count * K);
    parallel_for(ch.count, 1, [&](int64_t ca, int64_t cb) {
      float* rows = thread_buffer(1, g.KH * Wq * g.OC);
      int64_t* khs = thread_buffer<int64_t>(1, g.KH);
      for (int64_t c = ca; c < cb; ++c) {
        float* part = parts + c * K;
        std::fill(part, part + K, 0.0f);
        for (int64_t r = ch.begin(c); r < ch.end(c); ++r) {
          const int64_t nkh = padded_rows(rows, khs, x, g, r / g.OH, r % g.OH, Wq, g.OC);
          depthwise_dw_row(part, rows, khs, nkh, Wq, gz + r * g.OW * g.OC, g);
        }
      }
    });
    reduce_parts(dw, parts, ch.count, K, K);
  }
  if (dx) {
    const int64_t rows = g.N * g.H;
    parallel_for(rows, grain_for(rows, 1), [&](int64_t a, int64_t e) {
      for (int64_t r = a; r < e; ++r) depthwise_dx_row(dx, gz, w, g, r / g.H, r % g.H);
    });
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Public entry points

const char* conv2d_algorithm(int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC,
                             int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                             int64_t pad_top, int64_t pad_left, int64_t OH, int64_t OW,
                             int64_t dil_h, int64_t dil_w, int64_t groups) {
  const Geom g = make_geom(N, H, W, C, OC, KH, KW, stride_h, stride_w, pad_top, pad_left, OH,
                           OW, dil_h, dil_w, groups);
  switch (choose(g)) {
    case Algo::pointwise: return "pointwise";
    case Algo::direct: return "direct";
    case Algo::depthwise: return "depthwise";
    default: return "im2col";
  }
}

void conv2d_forward(float* y, float* z, const float* x, const float* w, const float* b,
                    int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                    int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                    int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h, int64_t dil_w,
                    int64_t groups, Act act) {
  const Geom g = make_geom(N, H, W, C, OC, KH, KW, stride_h, stride_w, pad_top, pad_left, OH,
                           OW, dil_h, dil_w, groups);
  if (g.P() == 0 || OC == 0) return;
  switch (choose(g)) {
    case Algo::pointwise: forward_pointwise(y, z, x, w, b, g, act); break;
    case Algo::im2col:
      // Forward only: backward keeps the im2col tiles (its GEMMs need the matrix).
      if (implicit_fits(g)) forward_implicit(y, z, x, w, b, g, act);
      else forward_im2col(y, z, x, w, b, g, act);
      break;
    case Algo::direct: forward_direct(y, z, x, w, b, g, act); break;
    case Algo::depthwise: forward_depthwise(y, z, x, w, b, g, act); break;
  }
}

bool conv2d_direct_max_pool2x2_forward(float* y, const float* x, const float* w,
                                       const float* b, int64_t N, int64_t H, int64_t W,
                                       int64_t C, int64_t OC, int64_t KH, int64_t KW,
                                       int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                       int64_t pad_left, int64_t OH, int64_t OW,
                                       int64_t dil_h, int64_t dil_w, int64_t groups, Act act,
                                       const Pool2d& pool) {
  const Geom g = make_geom(N, H, W, C, OC, KH, KW, stride_h, stride_w, pad_top, pad_left, OH,
                           OW, dil_h, dil_w, groups);
  if (choose(g) != Algo::direct || act != Act::relu ||
      pool.KH != 2 || pool.KW != 2 || pool.SH != 2 || pool.SW != 2 || pool.PT != 0 ||
      pool.PL != 0 || 2 * pool.OH > OH || 2 * pool.OW > OW)
    return false;
  if (g.P() > 0 && OC > 0 && pool.OH * pool.OW > 0) forward_direct_pool2(y, x, w, b, g, pool);
  return true;
}

void conv2d_backward(float* dx, float* dw, float* db, float* dz, const float* dy,
                     const float* x, const float* w, const float* y, const float* z,
                     int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                     int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                     int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h, int64_t dil_w,
                     int64_t groups, Act act) {
  const Geom g = make_geom(N, H, W, C, OC, KH, KW, stride_h, stride_w, pad_top, pad_left, OH,
                           OW, dil_h, dil_w, groups);
  if (g.P() == 0 || OC == 0) return;
  const Algo algo = choose(g);
  if (algo == Algo::im2col) {
    backward_im2col(dx, dw, db, dz, dy, x, w, y, z, g, act);
    return;
  }
  if (algo == Algo::direct) {
    backward_direct(dx, dw, db, dz, dy, x, w, y, z, g, act);
    return;
  }
  const float* gz = grad_and_bias(db, dz, dy, y, z, g.P(), OC, act);
  if (!dx && !dw) return;
  switch (algo) {
    case Algo::pointwise: backward_pointwise(dx, dw, gz, x, w, g); break;
    case Algo::im2col: break;
    case Algo::direct: break;
    case Algo::depthwise: backward_depthwise(dx, dw, gz, x, w, g); break;
  }
}

// ---------------------------------------------------------------------------------------
// Naive twins: one output element at a time, <cmath> activations.

namespace {
// act'(.) from the forward output y (relu, sigmoid, tanh) or pre-activation z (gelu).
float act_grad_naive(float y, float z, Act act) {
  switch (act) {
    case Act::relu: return y > 0.0f ? 1.0f : 0.0f;
    case Act::sigmoid: return y * (1.0f - y);
    case Act::tanh: return 1.0f - y * y;
    case Act::gelu: return vmath::exact_gelu_grad(z);
    default: return 1.0f;
  }
}
}  // namespace

void conv2d_forward_naive(float* y, float* z, const float* x, const float* w, const float* b,
                          int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                          int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                          int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h,
                          int64_t dil_w, int64_t groups, Act act) {
  const int64_t Cg = C / groups, OCg = OC / groups;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t o = 0; o < OC; ++o) {
          const int64_t c0 = (o / OCg) * Cg;
          float s = b ? b[o] : 0.0f;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * stride_h - pad_top + kh * dil_h;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = ow * stride_w - pad_left + kw * dil_w;
              if (iw < 0 || iw >= W) continue;
              for (int64_t c = 0; c < Cg; ++c)
                s += x[((n * H + ih) * W + iw) * C + c0 + c] *
                     w[((kh * KW + kw) * Cg + c) * OC + o];
            }
          }
          const int64_t i = ((n * OH + oh) * OW + ow) * OC + o;
          if (z) z[i] = s;
          y[i] = vmath::exact_act(s, act);
        }
}

void conv2d_backward_naive(float* dx, float* dw, float* db, float* dz, const float* dy,
                           const float* x, const float* w, const float* y, const float* z,
                           int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                           int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                           int64_t pad_left, int64_t OH, int64_t OW, int64_t dil_h,
                           int64_t dil_w, int64_t groups, Act act) {
  const int64_t Cg = C / groups, OCg = OC / groups, P = N * OH * OW;
  const float* g = dy;
  if (act != Act::linear) {
    for (int64_t i = 0; i < P * OC; ++i)
      dz[i] = dy[i] * act_grad_naive(y ? y[i] : 0.0f, z ? z[i] : 0.0f, act);
    g = dz;
  }
  if (db)
    for (int64_t o = 0; o < OC; ++o) {
      float s = 0.0f;
      for (int64_t p = 0; p < P; ++p) s += g[p * OC + o];
      db[o] += s;
    }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t o = 0; o < OC; ++o) {
          const float go = g[((n * OH + oh) * OW + ow) * OC + o];
          const int64_t c0 = (o / OCg) * Cg;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * stride_h - pad_top + kh * dil_h;
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = ow * stride_w - pad_left + kw * dil_w;
              if (iw < 0 || iw >= W) continue;
              for (int64_t c = 0; c < Cg; ++c) {
                const int64_t xi = ((n * H + ih) * W + iw) * C + c0 + c;
                const int64_t wi = ((kh * KW + kw) * Cg + c) * OC + o;
                if (dw) dw[wi] += x[xi] * go;
                if (dx) dx[xi] += w[wi] * go;
              }
            }
          }
        }
}

}  // namespace fastnn
