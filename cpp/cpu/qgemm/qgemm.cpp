// Int8 GEMM driver (packing, cache blocks, threads), quantizers, im2col and the plain
// twins. The loops over every element of the product live in the ISA files
// (qkernel_generic/avx2/vnni.cpp); see qgemm_internal.h for the packed layouts.
//
//   for pc in K step kc:                   K blocks (kc a multiple of the ISA's kgroup)
//     for ic in rows step mc:              A block mc×kc, packed per thread (L2)
//       macro-kernel: for jr step 4 panels, for ir step mr: micro-tile of C
//
// Threads own disjoint rectangles of C (a tm×tn grid, cut between row tiles and column
// panels). Integer sums are exact, so neither the blocking nor the split changes a bit.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(FASTNN_X86) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "fastnn/common.h"
#include "fastnn/qgemm.h"
#include "qgemm_internal.h"

#ifndef FASTNN_QGEMM_MIN_WORK_PER_THREAD
#define FASTNN_QGEMM_MIN_WORK_PER_THREAD 1048576  // u8·s8 products (~5 µs of one core)
#endif

namespace fastnn {

using qgemm_detail::Block;
using qgemm_detail::Epilogue;
using qgemm_detail::QKernel;

// ---- ISA choice -------------------------------------------------------------------

namespace {

// Whether AMX-TILE and AMX-INT8 can run: the CPU reports them (CPUID leaf 7, EDX bits 24
// and 25) and Linux grants this process the tile data state (ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA; without it the first tile instruction faults). Asked once.
bool amx_usable() {
#if defined(FASTNN_X86) && defined(__linux__)
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

// Whether this build has the AMX kernel (compiled with the AMX flags) rather than its stub.
bool amx_built() { return std::strcmp(qgemm_detail::qkernel_amx().isa, "amx") == 0; }

}  // namespace

const char* const* qgemm_supported_isas(int* count) {
  static const char* names[4];
  static int n = [] {
    int k = 0;
#if defined(FASTNN_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      if (amx_built() && amx_usable()) names[k++] = "amx";
      names[k++] = "avx512vnni";
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) names[k++] = "avx2";
#endif
    names[k++] = "generic";
    return k;
  }();
  *count = n;
  return names;
}

namespace {

const char* g_qisa = nullptr;
bool g_qisa_forced = false;  // set_qgemm_isa was called: packs follow it exactly

// The supported name equal to `name`, or nullptr.
const char* find_isa(const char* name) {
  int n = 0;
  const char* const* names = qgemm_supported_isas(&n);
  for (int i = 0; i < n; ++i)
    if (std::strcmp(names[i], name) == 0) return names[i];
  return nullptr;
}

const QKernel& kernel_for(const char* isa) {
#if defined(FASTNN_X86)
  if (std::strcmp(isa, "amx") == 0) return qgemm_detail::qkernel_amx();
  if (std::strcmp(isa, "avx512vnni") == 0) return qgemm_detail::qkernel_vnni();
  if (std::strcmp(isa, "avx2") == 0) return qgemm_detail::qkernel_avx2();
#endif
  (void)isa;
  return qgemm_detail::qkernel_generic();
}

}  // namespace

const char* qgemm_isa() {
  if (!g_qisa) {
    int n = 0;
    g_qisa = qgemm_supported_isas(&n)[0];
  }
  return g_qisa;
}

bool set_qgemm_isa(const char* name) {
  const char* isa = find_isa(name);
  if (isa) g_qisa = isa, g_qisa_forced = true;
  return isa != nullptr;
}

// ---- packed B -----------------------------------------------------------------------

namespace {

constexpr uint32_t kMagic = 0x38514e46;  // "FNQ8"
constexpr int64_t kHeader = 64;
constexpr int kIsaCount = 4;
const char* const kIsaNames[kIsaCount] = {"generic", "avx2", "avx512vnni", "amx"};

struct Header {
  uint32_t magic;
  int32_t isa;  // index into kIsaNames
  int64_t K, N;
};
static_assert(sizeof(Header) <= kHeader, "header fits");

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Column sums take N rounded up to 64 entries (zero-padded), then the panels, at a
// 64-byte offset.
int64_t colsum_bytes(int64_t N) { return round_up(N, 64) * 4; }
// K of a packed panel and the multiple that K blocks keep.
int64_t k_align(const QKernel& kr) { return kr.kalign ? kr.kalign : kr.kgroup; }
int64_t panel_bytes(const QKernel& kr, int64_t K) {
  return round_up(K, k_align(kr)) * kr.panel * kr.eb;
}
const uint8_t* panels_of(const uint8_t* packed, int64_t N) {
  return packed + kHeader + colsum_bytes(N);
}

int isa_index(const char* isa) {
  for (int i = 0; i < kIsaCount; ++i)
    if (std::strcmp(kIsaNames[i], isa) == 0) return i;
  return -1;
}

// The layout a weight of K rows is packed in when the caller names none: the current
// ISA's, except that AMX, unless set_qgemm_isa forced it, gives way to VNNI where padding
// K to its 64 would add more than a quarter to the products (a first conv's K = 9 becomes
// 64 there, 12 with VNNI: the MNIST CNN's first layer took 305 us at batch 32 in AMX
// panels, 2 threads).
const char* default_pack_isa(int64_t K) {
  const char* isa = qgemm_isa();
  if (!g_qisa_forced && std::strcmp(isa, "amx") == 0) {
    const QKernel& amx = kernel_for(isa);
    const QKernel& vnni = qgemm_detail::qkernel_vnni();
    if (4 * round_up(K, k_align(amx)) > 5 * round_up(K, k_align(vnni))) return vnni.isa;
  }
  return isa;
}

}  // namespace

int64_t qgemm_packed_size(int64_t K, int64_t N, const char* isa) {
  if (!isa) isa = default_pack_isa(K);
  if (isa_index(isa) < 0 || K <= 0 || N <= 0) return -1;
  const QKernel& kr = kernel_for(isa);
  // Four panels past the end are never read, but keep the last micro-tile's loads of a
  // whole zmm inside the buffer whatever the panel count.
  return kHeader + colsum_bytes(N) + ceil_div(N, kr.panel) * panel_bytes(kr, K);
}

void qgemm_pack_b(uint8_t* packed, const int8_t* B, int64_t K, int64_t N, const char* isa) {
  if (!isa) isa = default_pack_isa(K);
  const QKernel& kr = kernel_for(isa);
  Header h{kMagic, isa_index(isa), K, N};
  std::memset(packed, 0, kHeader);
  std::memcpy(packed, &h, sizeof h);
  int32_t* colsum = reinterpret_cast<int32_t*>(packed + kHeader);
  std::memset(colsum, 0, size_t(colsum_bytes(N)));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) colsum[n] += B[k * N + n];
  uint8_t* dst = packed + kHeader + colsum_bytes(N);
  const int64_t np = ceil_div(N, kr.panel), pb = panel_bytes(kr, K);
  const int64_t P = kr.panel, G = kr.kgroup;
  parallel_for(np, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint8_t* d = dst + p * pb;
      std::memset(d, 0, size_t(pb));
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t c = 0; c < P && p * P + c < N; ++c) {
          const int8_t v = B[k * N + p * P + c];
          const int64_t e = ((k / G) * P + c) * G + k % G;
          if (kr.eb == 1) {
            std::memcpy(d + e, &v, 1);
          } else {
            const int16_t w = v;
            std::memcpy(d + 2 * e, &w, 2);
          }
        }
      }
    }
  });
}

const char* qgemm_packed_info(const uint8_t* packed, int64_t bytes, int64_t* K, int64_t* N) {
  if (bytes < kHeader) return nullptr;
  Header h;
  std::memcpy(&h, packed, sizeof h);
  if (h.magic != kMagic || h.isa < 0 || h.isa >= kIsaCount || h.K <= 0 || h.N <= 0)
    return nullptr;
  const char* isa = find_isa(kIsaNames[h.isa]);
  if (!isa || qgemm_packed_size(h.K, h.N, isa) != bytes) return nullptr;
  *K = h.K;
  *N = h.N;
  return isa;
}

const int32_t* qgemm_packed_colsum(const uint8_t* packed) {
  return reinterpret_cast<const int32_t*>(packed + kHeader);
}

// ---- the product ------------------------------------------------------------------

namespace {

// A per-thread packing buffer: 64-byte aligned, grown to the largest size asked, reused.
class PackBuffer {
 public:
  ~PackBuffer() { std::free(p_); }
  uint8_t* get(int64_t n) {
    if (n > cap_) {
      const size_t bytes = (size_t(n) + 63) & ~size_t(63);
      auto* q = static_cast<uint8_t*>(std::aligned_alloc(64, bytes));
      if (!q) return nullptr;
      std::free(p_);
      p_ = q;
      cap_ = int64_t(bytes);
    }
    return p_;
  }

 private:
  uint8_t* p_ = nullptr;
  int64_t cap_ = 0;
};

thread_local PackBuffer t_pack_a;
thread_local PackBuffer t_quant_a;  // a quantized mc×kc block of A before packing

// dst = A[i0:i0+mc, k0:k0+kc] in the packed-A layout of kr (qgemm_internal.h).
void pack_a(const QKernel& kr, uint8_t* dst, const uint8_t* A, int64_t lda, int64_t mc,
            int64_t kc) {
  const int64_t mr = kr.mr, G = kr.kgroup, kcp = round_up(kc, G);
  for (int64_t t = 0; t * mr < mc; ++t) {
    const int64_t rows = std::min(mr, mc - t * mr);
    uint8_t* d = dst + t * mr * kcp * kr.eb;
    for (int64_t i = 0; i < rows; ++i) {
      const uint8_t* a = A + (t * mr + i) * lda;
      if (kr.eb == 1 && G == 4) {
        const int64_t full = kc / 4;
        for (int64_t g = 0; g < full; ++g) std::memcpy(d + (g * mr + i) * 4, a + 4 * g, 4);
        if (kc % 4) {
          uint8_t* t4 = d + (full * mr + i) * 4;
          for (int64_t k = 0; k < 4; ++k) t4[k] = 4 * full + k < kc ? a[4 * full + k] : 0;
        }
      } else if (kr.eb == 1) {  // G == 1
        for (int64_t k = 0; k < kc; ++k) d[k * mr + i] = a[k];
      } else {  // eb == 2, G == 2: uint16 pairs, one 32-bit store per pair
        const int64_t full = kc / 2;
        uint8_t* di = d + i * 4;
        for (int64_t g = 0; g < full; ++g, di += mr * 4) {
          const uint32_t v = uint32_t(a[2 * g]) | uint32_t(a[2 * g + 1]) << 16;
          std::memcpy(di, &v, 4);  // little-endian: the first value in the low half
        }
        if (kc % 2) {
          const uint32_t v = a[kc - 1];
          std::memcpy(di, &v, 4);
        }
      }
    }
  }
}

struct Problem {
  int32_t* C;  // or float y (same size)
  const uint8_t* A;
  const uint8_t* packed;
  int64_t M, N, K;
  const Epilogue* epi;
  int64_t kc;
  // When X is set, A is not given: each block of A is quantized from X (float, row
  // stride K) with (xs, xz) just before it is packed, as quantize_u8 would.
  const float* X = nullptr;
  float xs = 1.0f, xz = 0.0f;
};

// Rows [ic, ic+mc), K values [pc, pc+kc) of p.X quantized into qbuf with row stride
// kcb, each row's pad bytes zero (they meet B's zero rows).
void quantize_rows(const QKernel& kr, const Problem& p, uint8_t* qbuf, int64_t ic,
                   int64_t mc, int64_t pc, int64_t kc, int64_t kcb) {
  for (int64_t i = 0; i < mc; ++i) {
    kr.quantize(qbuf + i * kcb, p.X + (ic + i) * p.K + pc, kc, p.xs, p.xz);
    std::memset(qbuf + i * kcb + kc, 0, size_t(kcb - kc));
  }
}

// Block A of rows [ic, ic+mc), K values [pc, pc+kc) for kernels that read K groups
// (blk.a, a_rs, a_gs, a_ts): in place (a given A or the quantized rows, stride kcb) when
// the kernel reads A directly, else packed into abuf.
void a_groups(const QKernel& kr, const Problem& p, Block& blk, uint8_t* abuf, uint8_t* qbuf,
              int64_t ic, int64_t mc, int64_t pc, int64_t kc, int64_t kcb, bool direct) {
  const bool in_place = direct && (p.X || p.K % kr.kgroup == 0 || ic + mc < p.M);
  if (p.X) {
    quantize_rows(kr, p, qbuf, ic, mc, pc, kc, kcb);
    if (in_place) {
      blk.a = qbuf;
      blk.a_rs = kcb;
    } else {
      pack_a(kr, abuf, qbuf, kcb, mc, kc);
    }
  } else if (in_place) {
    blk.a = p.A + ic * p.K + pc;
    blk.a_rs = p.K;
  } else {
    pack_a(kr, abuf, p.A + ic * p.K + pc, p.K, mc, kc);
  }
  if (in_place) {
    blk.a_gs = kr.kgroup * kr.eb;
    blk.a_ts = kr.mr * blk.a_rs;
  } else {
    blk.a = abuf;
    blk.a_rs = kr.kgroup * kr.eb;
    blk.a_gs = kr.mr * kr.kgroup * kr.eb;
    blk.a_ts = kr.mr * kcb * kr.eb;  // pack_a rounds this block's kc
  }
}

// The same block for kernels that read whole rows as tiles (kalign: AMX), 16 rows of kcb
// bytes at a time: in place when those reads stay inside A, else from a zero-padded copy
// (the padding meets B's zero rows; rows past the block are computed and dropped).
void a_rows(const QKernel& kr, const Problem& p, Block& blk, uint8_t* abuf, uint8_t* qbuf,
            int64_t ic, int64_t mc, int64_t pc, int64_t kc, int64_t kcb) {
  const int64_t rows = round_up(mc, 16);
  if (p.X) {
    quantize_rows(kr, p, qbuf, ic, mc, pc, kc, kcb);
    blk.a = qbuf;
    blk.a_rs = kcb;
  } else if ((ic + rows - 1) * p.K + pc + kcb <= p.M * p.K) {
    blk.a = p.A + ic * p.K + pc;
    blk.a_rs = p.K;
  } else {
    for (int64_t i = 0; i < rows; ++i) {
      uint8_t* d = abuf + i * kcb;
      const int64_t n = i < mc ? kc : 0;
      if (n) std::memcpy(d, p.A + (ic + i) * p.K + pc, size_t(n));
      std::memset(d + n, 0, size_t(kcb - n));
    }
    blk.a = abuf;
    blk.a_rs = kcb;
  }
  blk.a_gs = kr.kgroup;
  blk.a_ts = kr.mr * blk.a_rs;
}

// Runs the loop nest on C[m0:m1, n0:n1] (n0 a multiple of the panel width) with kernel
// kr, on B panels packed for `layout` (kr itself, or AMX panels read by the VNNI kernel).
bool run_block(const QKernel& kr, const QKernel& layout, const Problem& p, int64_t m0,
               int64_t m1, int64_t n0, int64_t n1) {
  const int64_t mc_max = std::min<int64_t>(kr.mc_max, round_up(m1 - m0, kr.mr));
  const int64_t kcp = round_up(p.kc, k_align(kr));
  uint8_t* abuf = t_pack_a.get(mc_max * kcp * kr.eb);
  if (!abuf) return false;
  const int64_t pb = panel_bytes(layout, p.K);
  const uint8_t* panels = panels_of(p.packed, p.N) + (n0 / kr.panel) * pb;
  // Direct A: the kernel reads A in place (row-major), a whole K group at a time: the
  // quantized blocks (rows padded to kcp) and a given A. When K is not a multiple of
  // kgroup, the last group of a row also reads the first bytes of the next row, which
  // meet B's zero-padded rows (any value gives 0); only a block holding A's last row,
  // whose overhang would leave A, is packed instead.
  const bool direct = kr.direct_a && p.kc % kr.kgroup == 0;
  uint8_t* qbuf = nullptr;
  if (p.X) {
    qbuf = t_quant_a.get(mc_max * kcp);
    if (!qbuf) return false;
  }
  for (int64_t pc = 0; pc < p.K; pc += p.kc) {
    const int64_t kc = std::min(p.kc, p.K - pc);
    const int64_t kcb = round_up(kc, k_align(kr));
    for (int64_t ic = m0; ic < m1; ic += mc_max) {
      const int64_t mc = std::min(mc_max, m1 - ic);
      Block blk;
      if (kr.kalign)
        a_rows(kr, p, blk, abuf, qbuf, ic, mc, pc, kc, kcb);
      else
        a_groups(kr, p, blk, abuf, qbuf, ic, mc, pc, kc, kcb, direct);
      blk.c = p.C + ic * p.N + n0;
      blk.ldc = p.N;
      blk.b = panels + pc * kr.panel * kr.eb;
      blk.b_panel_stride = pb;
      blk.mc = mc;
      blk.nc = n1 - n0;
      blk.kc = kc;
      blk.j0 = n0;
      blk.first = pc == 0;
      blk.last = pc + kc == p.K;
      blk.epi = p.epi;
      kr.macro(blk);
    }
  }
  return true;
}

void run_qgemm(Problem p) {
  Header h;  // the bindings checked it (qgemm_packed_info)
  std::memcpy(&h, p.packed, sizeof h);
  const QKernel& layout = kernel_for(kIsaNames[h.isa]);
  // Below 16 rows most of an AMX tile would multiply padding: the VNNI kernel runs
  // instead, on the same panels (the VNNI layout; only their K padding differs, which
  // the panel stride carries). 784 -> 128 at one row: 2.9 us against 3.9.
  const QKernel& kr = layout.kalign && p.M < 16 ? qgemm_detail::qkernel_vnni() : layout;
  const int64_t M = p.M, N = p.N, K = p.K;
  // Equal K blocks of at most kc_max, each a multiple of kgroup.
  const int64_t nkb = ceil_div(K, kr.kc_max);
  p.kc = round_up(ceil_div(K, nkb), k_align(kr));

  const int64_t mt = ceil_div(M, kr.mr), ntl = ceil_div(N, kr.panel);
  int nt = 1;
#if defined(_OPENMP)
  if (!omp_in_parallel()) {
    // Few rows: streaming B from L2/L3 (~4 products' time per byte), not the products,
    // takes the time, and halves over threads that split the columns.
    // AMX does the products about four times as fast as VNNI, so a thread needs four
    // times as many to pay for itself (784 -> 128 at 32 rows: 12.1 us on two threads
    // against 9.3 on one).
    const double work = std::max(double(M), 4.0) * double(ntl * kr.panel) * double(K);
    const double min_work = double(FASTNN_QGEMM_MIN_WORK_PER_THREAD) * (kr.kalign ? 4 : 1);
    const double by_work = work / min_work;
    nt = by_work < 1.0 ? 1 : int(std::min<double>(by_work, num_threads()));
    nt = int(std::min<int64_t>(nt, mt * ntl));
  }
#endif
  if (nt <= 1) {
    const FlushDenormals ftz;
    if (!run_block(kr, layout, p, 0, M, 0, N)) throw std::bad_alloc();
    return;
  }
  // Grid: as many row blocks as the rows allow (each thread then reads all of B, which
  // is shared in L3, and packs only its own rows), the rest over column panels.
  int tm = 1, tn = nt;
  for (int cand = nt; cand >= 1; --cand) {
    if (nt % cand) continue;
    if (mt >= int64_t(cand) * 2 || (cand == 1)) {
      tm = cand;
      tn = nt / cand;
      break;
    }
  }
  if (tn > ntl) tn = int(ntl);
  const int blocks = tm * tn;
  auto row_split = [&](int bi) { return std::min(M, mt * bi / tm * kr.mr); };
  auto col_split = [&](int bj) { return std::min(N, ntl * bj / tn * kr.panel); };
  bool ok = true;
#if defined(_OPENMP)
#pragma omp parallel num_threads(blocks) reduction(&& : ok)
  {
    const FlushDenormals ftz;
    const int nth = omp_get_num_threads();
    for (int b = omp_get_thread_num(); b < blocks; b += nth) {
      const int bi = b / tn, bj = b % tn;
      const int64_t m0 = row_split(bi), m1 = row_split(bi + 1);
      const int64_t n0 = col_split(bj), n1 = col_split(bj + 1);
      if (m0 < m1 && n0 < n1) ok = run_block(kr, layout, p, m0, m1, n0, n1) && ok;
    }
  }
#endif
  if (!ok) throw std::bad_alloc();
}

}  // namespace

// C int32 (M,N) = A uint8 (M,K) · B int8 (K,N), B packed
void qgemm_s32(int32_t* C, const uint8_t* A, const uint8_t* packed, int64_t M, int64_t N,
               int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  run_qgemm(Problem{C, A, packed, M, N, K, nullptr, 0});
}

// y (M,N) = act(float(xq·w − x_zp·colsum) · (x_scale·w_scale) + b)
void qdense_forward(float* y, const uint8_t* xq, const uint8_t* packed, const float* w_scale,
                    const float* b, float x_scale, int32_t x_zp, int64_t M, int64_t N,
                    int64_t K, Act act) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  const Epilogue epi{qgemm_packed_colsum(packed), w_scale, b, x_scale, x_zp, act};
  run_qgemm(Problem{reinterpret_cast<int32_t*>(y), xq, packed, M, N, K, &epi, 0});
}

// y (M,N) = qdense_forward(quantize_u8(x, x_scale, x_zp), ...), quantized block by block
void qdense_forward_f32(float* y, const float* x, const uint8_t* packed, const float* w_scale,
                        const float* b, float x_scale, int32_t x_zp, int64_t M, int64_t N,
                        int64_t K, Act act) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  const Epilogue epi{qgemm_packed_colsum(packed), w_scale, b, x_scale, x_zp, act};
  Problem p{reinterpret_cast<int32_t*>(y), nullptr, packed, M, N, K, &epi, 0};
  p.X = x;
  p.xs = x_scale;
  p.xz = float(x_zp);
  run_qgemm(p);
}

// ---- quantizers -------------------------------------------------------------------

namespace {
const QKernel& current_qkernel() { return kernel_for(qgemm_isa()); }

// Threads for an elementwise pass over n floats.
int elementwise_threads(int64_t n) {
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
  const int64_t by_size = n / 65536;
  return int(std::max<int64_t>(1, std::min<int64_t>({by_size, num_threads(), 64})));
#else
  (void)n;
  return 1;
#endif
}

// Derives (scale, zero point) from a range that holds 0 (see qgemm.h).
void range_params(float mn, float mx, float* scale, int32_t* zp) {
  float s = (mx - mn) / 255.0f;
  if (s == 0.0f) s = 1.0f;
  float z = std::rint(-mn / s);
  z = std::min(std::max(z, 0.0f), 255.0f);
  *scale = s;
  *zp = int32_t(z);
}
}  // namespace

// q (n) = clamp(rint(x / scale) + zero_point, 0, 255)
void quantize_u8(uint8_t* q, const float* x, int64_t n, float scale, int32_t zero_point) {
  const QKernel& kr = current_qkernel();
  const int nt = elementwise_threads(n);
  if (nt <= 1) {
    kr.quantize(q, x, n, scale, float(zero_point));
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t b = n * t / T, e = n * (t + 1) / T;
    kr.quantize(q + b, x + b, e - b, scale, float(zero_point));
  }
#endif
}

// Dynamic per-tensor: one parallel region, min/max per thread, then every thread derives
// the same (scale, zero point) from all partial results and quantizes its chunk.
bool quantize_u8_dynamic(uint8_t* q, float* scale, int32_t* zero_point, const float* x,
                         int64_t n) {
  const QKernel& kr = current_qkernel();
  const int nt = elementwise_threads(n);
  if (nt <= 1) {
    float mn, mx;
    if (!kr.minmax(&mn, &mx, x, n)) return false;
    float s;
    int32_t z;
    range_params(std::min(mn, 0.0f), std::max(mx, 0.0f), &s, &z);
    kr.quantize(q, x, n, s, float(z));
    *scale = s;
    *zero_point = z;
    return true;
  }
  bool ok = true;
#if defined(_OPENMP)
  float mns[64], mxs[64];
  bool fin[64];
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t b = n * t / T, e = n * (t + 1) / T;
    fin[t] = kr.minmax(&mns[t], &mxs[t], x + b, e - b);
#pragma omp barrier
    float mn = 0.0f, mx = 0.0f;
    bool all = true;
    for (int i = 0; i < T; ++i) {
      all = all && fin[i];
      mn = std::min(mn, mns[i]);
      mx = std::max(mx, mxs[i]);
    }
    if (all) {
      float s;
      int32_t z;
      range_params(mn, mx, &s, &z);
      kr.quantize(q + b, x + b, e - b, s, float(z));
      if (t == 0) *scale = s, *zero_point = z;
    }
    if (t == 0) ok = all;
  }
#endif
  return ok;
}

// (scale, zero point) of the dynamic quantization of x, without quantizing it
bool quantize_range_u8(float* scale, int32_t* zero_point, const float* x, int64_t n) {
  const QKernel& kr = current_qkernel();
  const int nt = elementwise_threads(n);
  float mn = 0.0f, mx = 0.0f;
  bool ok = true;
  if (nt <= 1) {
    ok = kr.minmax(&mn, &mx, x, n);
  } else {
#if defined(_OPENMP)
    float mns[64], mxs[64];
    bool fin[64];
    int used = 0;
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), T = omp_get_num_threads();
      const int64_t b = n * t / T, e = n * (t + 1) / T;
      fin[t] = kr.minmax(&mns[t], &mxs[t], x + b, e - b);
      if (t == 0) used = T;
    }
    for (int i = 0; i < used; ++i) {
      ok = ok && fin[i];
      mn = std::min(mn, mns[i]);
      mx = std::max(mx, mxs[i]);
    }
#endif
  }
  if (!ok) return false;
  range_params(std::min(mn, 0.0f), std::max(mx, 0.0f), scale, zero_point);
  return true;
}

// ---- convolution ------------------------------------------------------------------

namespace {
// Byte runs for im2col: short ones inline (kept loops: GCC would turn them back into
// library calls), long ones by memcpy.
__attribute__((optimize("no-tree-loop-distribute-patterns"))) inline void copy_run(
    uint8_t* d, const uint8_t* src, int64_t n) {
  if (n >= 32) {
    std::memcpy(d, src, size_t(n));
    return;
  }
  for (int64_t i = 0; i < n; ++i) d[i] = src[i];
}
__attribute__((optimize("no-tree-loop-distribute-patterns"))) inline void fill_run(
    uint8_t* d, uint8_t v, int64_t n) {
  if (n >= 32) {
    std::memset(d, v, size_t(n));
    return;
  }
  for (int64_t i = 0; i < n; ++i) d[i] = v;
}
}  // namespace

namespace {
// One row of col (the patch of output pixel (n, oh, ow)), run by run, exact.
inline void im2col_pixel(uint8_t* d, const uint8_t* x, int64_t n, int64_t oh, int64_t ow,
                         int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW,
                         int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left,
                         int64_t dil_h, int64_t dil_w, uint8_t zero_point) {
  const int64_t iw0 = ow * stride_w - pad_left;
  const bool row_inside = dil_w == 1 && iw0 >= 0 && iw0 + KW <= W;
  for (int64_t kh = 0; kh < KH; ++kh) {
    const int64_t ih = oh * stride_h - pad_top + kh * dil_h;
    uint8_t* dk = d + kh * KW * C;
    if (ih < 0 || ih >= H) {
      fill_run(dk, zero_point, KW * C);
      continue;
    }
    const uint8_t* src = x + ((n * H + ih) * W) * C;
    if (row_inside) {
      copy_run(dk, src + iw0 * C, KW * C);
      continue;
    }
    for (int64_t kw = 0; kw < KW; ++kw) {
      const int64_t iw = iw0 + kw * dil_w;
      if (iw < 0 || iw >= W)
        fill_run(dk + kw * C, zero_point, C);
      else
        copy_run(dk + kw * C, src + iw * C, C);
    }
  }
}

// Output rows q0..q1 (q = n·OH + oh) of im2col for kernel rows of run = KW·C ≤ WIDE bytes
// (dil_w = 1, KH ≤ 16): a pixel whose kernel rows all lie inside the image width moves
// each as one WIDE-byte copy (or fill, for a padding row). The overhang past a run lands
// on the next run of the same col row or on the next col row, both written later, so
// the last pixel of each output row and any copy that would read past x go run by run.
template <int WIDE>
void im2col_short(uint8_t* col, const uint8_t* x, const uint8_t* xend, int64_t q0, int64_t q1,
                  int64_t H, int64_t W, int64_t C, int64_t KH, int64_t KW, int64_t stride_h,
                  int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h,
                  int64_t OH, int64_t OW, uint8_t zero_point) {
  const int64_t run = KW * C, K = KH * run;
  // Pixels ow in [lo, hi) have every kernel row inside the width; hi excludes OW − 1.
  const int64_t lo = std::min(OW, (pad_left + stride_w - 1) / stride_w);
  const int64_t hi = W - KW + pad_left < 0 ? 0
                     : std::min(OW - 1, (W - KW + pad_left) / stride_w + 1);
  uint8_t pad[16];
  std::memset(pad, zero_point, sizeof pad);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / OH, oh = q % OH;
    const uint8_t* rows[16];
    bool fast = hi > lo;
    for (int64_t kh = 0; kh < KH; ++kh) {
      const int64_t ih = oh * stride_h - pad_top + kh * dil_h;
      rows[kh] = ih < 0 || ih >= H ? nullptr : x + ((n * H + ih) * W) * C;
      if (rows[kh] && fast && rows[kh] + ((hi - 1) * stride_w - pad_left) * C + WIDE > xend)
        fast = false;
    }
    uint8_t* d = col + q * OW * K;
    int64_t ow = 0;
    if (fast) {
      for (; ow < lo; ++ow)
        im2col_pixel(d + ow * K, x, n, oh, ow, H, W, C, KH, KW, stride_h, stride_w, pad_top,
                     pad_left, dil_h, 1, zero_point);
      for (; ow < hi; ++ow) {
        uint8_t* dk = d + ow * K;
        const int64_t off = (ow * stride_w - pad_left) * C;
        for (int64_t kh = 0; kh < KH; ++kh, dk += run)
          std::memcpy(dk, rows[kh] ? rows[kh] + off : pad, WIDE);
      }
    }
    for (; ow < OW; ++ow)
      im2col_pixel(d + ow * K, x, n, oh, ow, H, W, C, KH, KW, stride_h, stride_w, pad_top,
                   pad_left, dil_h, 1, zero_point);
  }
}
}  // namespace

// col (N·OH·OW, KH·KW·C) = zero-point-padded patches of x (N,H,W,C)
void qim2col_u8(uint8_t* col, const uint8_t* x, int64_t N, int64_t H, int64_t W, int64_t C,
                int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                uint8_t zero_point) {
  const int64_t K = KH * KW * C;
  const int64_t grain = std::max<int64_t>(1, 262144 / std::max<int64_t>(K, 1));
  const int64_t run = KW * C;
  const uint8_t* const xend = x + N * H * W * C;
  // Short runs (C of 1 or 3 channels) are copied inline: a memcpy call per byte or
  // three cost more than the whole product. With dil_w = 1 a kernel row that lies
  // inside the image is one run of KW·C bytes.
  // Parallel over output rows (n, oh); each covers OW rows of col.
  parallel_for(N * OH, std::max<int64_t>(1, grain / std::max<int64_t>(OW, 1)),
               [=](int64_t q0, int64_t q1) {
    if (dil_w == 1 && KH <= 16 && run <= 16) {
      auto f = run <= 4 ? im2col_short<4> : run <= 8 ? im2col_short<8> : im2col_short<16>;
      f(col, x, xend, q0, q1, H, W, C, KH, KW, stride_h, stride_w, pad_top, pad_left, dil_h,
        OH, OW, zero_point);
      return;
    }
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / OH, oh = q % OH;
      for (int64_t ow = 0; ow < OW; ++ow)
        im2col_pixel(col + (q * OW + ow) * K, x, n, oh, ow, H, W, C, KH, KW, stride_h,
                     stride_w, pad_top, pad_left, dil_h, dil_w, zero_point);
    }
  });
}

namespace {
thread_local PackBuffer t_conv_b;     // B with kernel rows padded to whole K groups
thread_local PackBuffer t_conv_edge;  // the last output rows' windows, copied

// Implicit-GEMM convolution for kernels that read A in place by K groups (not AMX's
// whole-row tiles), when every window lies
// inside the image (no padding), dil_w = 1 and K fits one K block: the rows of A are
// the windows themselves. Output row (n, oh) is one block of OW rows, A row stride
// stride_w·C, and one K segment per kernel row. When a kernel row (KW·C bytes) is not
// whole K groups, B is first copied with each kernel row padded to KWCp = KW·C rounded
// up to kgroup by zero rows (small: only for small K·OC), so the overhang of the last
// group of a kernel row meets zeros; the few output rows whose overhang would leave xq
// read a copy of their windows instead. Returns false (nothing written) when it does
// not apply.
bool qconv2d_implicit(float* y, const uint8_t* xq, const uint8_t* packed, const Epilogue& epi,
                      int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                      int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                      int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW) {
  Header h;
  std::memcpy(&h, packed, sizeof h);
  const QKernel& kr = kernel_for(kIsaNames[h.isa]);
  const int64_t G = kr.kgroup, run = KW * C, runp = round_up(run, G), Kp = KH * runp;
  if (!kr.direct_a || kr.kalign || kr.eb != 1 || pad_top != 0 || pad_left != 0 || dil_w != 1 ||
      Kp > kr.kc_max || (OH - 1) * stride_h + (KH - 1) * dil_h >= H ||
      (OW - 1) * stride_w + KW > W)
    return false;
  const int64_t P = kr.panel, np = ceil_div(OC, P);
  int64_t pb = panel_bytes(kr, KH * run);
  const uint8_t* panels = panels_of(packed, OC);
  if (runp != run) {
    if (Kp * np * P > 65536) return false;
    const int64_t pbp = panel_bytes(kr, Kp);
    uint8_t* nb = t_conv_b.get(np * pbp);
    if (!nb) throw std::bad_alloc();
    std::memset(nb, 0, size_t(np * pbp));
    // Element (k, c) of a panel sits at ((k/G)·P + c)·G + k%G (qgemm_internal.h).
    for (int64_t p = 0; p < np; ++p)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t j = 0; j < run; ++j) {
          const int64_t k = kh * run + j, kp = kh * runp + j;
          for (int64_t c = 0; c < P; ++c)
            nb[p * pbp + ((kp / G) * P + c) * G + kp % G] =
                panels[p * pb + ((k / G) * P + c) * G + k % G];
        }
    panels = nb;
    pb = pbp;
  }
  const int64_t total = N * H * W * C, Q = N * OH;
  // Past the last byte a row's windows read, from the row's first window.
  const int64_t reach = (KH - 1) * dil_h * W * C + (OW - 1) * stride_w * C + runp;
  auto rows = [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t n = q / OH, oh = q % OH;
      const int64_t base = ((n * H + oh * stride_h) * W) * C;
      Block blk;
      blk.c = reinterpret_cast<int32_t*>(y + q * OW * OC);
      blk.ldc = OC;
      if (base + reach <= total) {
        blk.a = xq + base;
        blk.a_rs = stride_w * C;
        blk.a_seg = runp / G;
        blk.a_jump = dil_h * W * C - runp;
      } else {  // copy the windows, each kernel row zero-padded to runp
        uint8_t* e = t_conv_edge.get(OW * Kp);
        if (!e) throw std::bad_alloc();
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t kh = 0; kh < KH; ++kh) {
            uint8_t* d = e + ow * Kp + kh * runp;
            std::memcpy(d, xq + base + kh * dil_h * W * C + ow * stride_w * C, size_t(run));
            std::memset(d + run, 0, size_t(runp - run));
          }
        blk.a = e;
        blk.a_rs = Kp;
        blk.a_seg = 0;
        blk.a_jump = 0;
      }
      blk.a_gs = G;
      blk.a_ts = kr.mr * blk.a_rs;
      blk.b = panels;
      blk.b_panel_stride = pb;
      blk.mc = OW;
      blk.nc = OC;
      blk.kc = Kp;
      blk.j0 = 0;
      blk.first = blk.last = true;
      blk.epi = &epi;
      kr.macro(blk);
    }
  };
  int nt = 1;
#if defined(_OPENMP)
  if (!omp_in_parallel()) {
    const double work = double(Q * OW) * double(np * P) * double(Kp);
    const double by_work = work / double(FASTNN_QGEMM_MIN_WORK_PER_THREAD);
    nt = by_work < 1.0 ? 1 : int(std::min<double>({by_work, double(num_threads()), double(Q)}));
  }
#endif
  if (nt <= 1) {
    const FlushDenormals ftz;
    rows(0, Q);
    return true;
  }
  bool ok = true;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) reduction(&& : ok)
  {
    const FlushDenormals ftz;
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    try {
      rows(Q * t / T, Q * (t + 1) / T);
    } catch (const std::bad_alloc&) {
      ok = false;
    }
  }
#endif
  if (!ok) throw std::bad_alloc();
  return true;
}
}  // namespace

// y (N,OH,OW,OC) = act(qconv(xq, w) epilogue), via im2col into col
void qconv2d_forward(float* y, uint8_t* col, const uint8_t* xq, const uint8_t* packed,
                     const float* w_scale, const float* b, float x_scale, int32_t x_zp,
                     int64_t N, int64_t H, int64_t W, int64_t C, int64_t OC, int64_t KH,
                     int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                     int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH, int64_t OW,
                     Act act) {
  if (N <= 0 || OH <= 0 || OW <= 0 || OC <= 0) return;
  {
    const Epilogue epi{qgemm_packed_colsum(packed), w_scale, b, x_scale, x_zp, act};
    if (qconv2d_implicit(y, xq, packed, epi, N, H, W, C, OC, KH, KW, stride_h, stride_w,
                         pad_top, pad_left, dil_h, dil_w, OH, OW))
      return;
  }
  const uint8_t* a = xq;
  if (col) {
    qim2col_u8(col, xq, N, H, W, C, KH, KW, stride_h, stride_w, pad_top, pad_left, dil_h,
               dil_w, OH, OW, uint8_t(x_zp));
    a = col;
  }
  qdense_forward(y, a, packed, w_scale, b, x_scale, x_zp, N * OH * OW, OC, KH * KW * C, act);
}

// ---- plain twins ------------------------------------------------------------------

// C (M,N) = A (M,K) · B (K,N), int32
void qgemm_s32_naive(int32_t* C, const uint8_t* A, const int8_t* B, int64_t M, int64_t N,
                     int64_t K) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += int32_t(A[i * K + k]) * int32_t(B[k * N + j]);
      C[i * N + j] = acc;
    }
}

// y (M,N) = act(float(xq·w − x_zp·colsum) · (x_scale·w_scale) + b)
void qdense_forward_naive(float* y, const uint8_t* xq, const int8_t* w, const float* w_scale,
                          const float* b, float x_scale, int32_t x_zp, int64_t M, int64_t N,
                          int64_t K, Act act) {
  for (int64_t j = 0; j < N; ++j) {
    int32_t colsum = 0;
    for (int64_t k = 0; k < K; ++k) colsum += w[k * N + j];
    for (int64_t i = 0; i < M; ++i) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += int32_t(xq[i * K + k]) * int32_t(w[k * N + j]);
      y[i * N + j] = qgemm_detail::epilogue_z(acc, colsum, x_scale, w_scale[j], b, j, x_zp);
    }
  }
  act_forward_naive(y, y, M * N, act);
}

// q (n) = clamp(rint(x / scale) + zero_point, 0, 255)
void quantize_u8_naive(uint8_t* q, const float* x, int64_t n, float scale, int32_t zero_point) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::rint(x[i] / scale) + float(zero_point);
    q[i] = std::isnan(v) ? 0 : uint8_t(std::min(std::max(v, 0.0f), 255.0f));
  }
}

bool quantize_u8_dynamic_naive(uint8_t* q, float* scale, int32_t* zero_point, const float* x,
                               int64_t n) {
  float mn = 0.0f, mx = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  range_params(mn, mx, scale, zero_point);
  quantize_u8_naive(q, x, n, *scale, *zero_point);
  return true;
}

// Direct convolution over the zero-point-padded input, then the epilogue.
void qconv2d_forward_naive(float* y, const uint8_t* xq, const int8_t* w, const float* w_scale,
                           const float* b, float x_scale, int32_t x_zp, int64_t N, int64_t H,
                           int64_t W, int64_t C, int64_t OC, int64_t KH, int64_t KW,
                           int64_t stride_h, int64_t stride_w, int64_t pad_top,
                           int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t OH,
                           int64_t OW, Act act) {
  const int64_t K = KH * KW * C;
  for (int64_t oc = 0; oc < OC; ++oc) {
    int32_t colsum = 0;
    for (int64_t k = 0; k < K; ++k) colsum += w[k * OC + oc];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int32_t acc = 0;
          for (int64_t kh = 0; kh < KH; ++kh)
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t ih = oh * stride_h - pad_top + kh * dil_h;
              const int64_t iw = ow * stride_w - pad_left + kw * dil_w;
              const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
              for (int64_t c = 0; c < C; ++c) {
                const int32_t a = inside ? xq[((n * H + ih) * W + iw) * C + c] : x_zp;
                acc += a * int32_t(w[((kh * KW + kw) * C + c) * OC + oc]);
              }
            }
          y[((n * OH + oh) * OW + ow) * OC + oc] =
              qgemm_detail::epilogue_z(acc, colsum, x_scale, w_scale[oc], b, oc, x_zp);
        }
  }
  act_forward_naive(y, y, N * OH * OW * OC, act);
}

}  // namespace fastnn
