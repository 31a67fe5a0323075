// Single-precision GEMM driver (GotoBLAS/BLIS loop nest) and its plain twin.
//
//   for jc in N step nc:                 B block kc×nc    (packed, or read in place)
//     for pc in K step kc:
//       for ic in M step mc:             A block mc×kc    (packed, or read in place)
//         macro-kernel: for jr step nr, for ir step mr: micro-tile of C
//
// Threads own disjoint rectangles of C (a tm×tn grid, cut between tiles and cache lines;
// see gemm_ld) and run this loop nest on their rectangle, with no synchronisation but
// the join at the end. K is cut into blocks that depend on K alone, and every
// element of C gets the same sequence of operations wherever its tile falls, so the
// result is bitwise the same for any thread count. Whether a block is packed changes
// only where the kernel reads from, never the arithmetic.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "fastnn/common.h"
#include "fastnn/gemm.h"
#include "gemm_internal.h"

// Tuning (measured on a 2-core Zen 3 with bench/test_gemm_bench.py). Overridable with -D.
#ifndef FASTNN_GEMM_MIN_WORK_PER_THREAD
#define FASTNN_GEMM_MIN_WORK_PER_THREAD 262144  // multiply-adds (~5 µs of one core)
#endif
#ifndef FASTNN_GEMM_PACK_B_MIN_M
#define FASTNN_GEMM_PACK_B_MIN_M 64  // copy B when its panels serve more rows than this
#endif
#ifndef FASTNN_GEMM_PACK_A_MIN_N
#define FASTNN_GEMM_PACK_A_MIN_N 256  // copy A when its panels serve more columns than this
#endif
#ifndef FASTNN_GEMM_SKINNY_MAX_M
#define FASTNN_GEMM_SKINNY_MAX_M 256  // A·Bᵀ with at most this many rows runs transposed
#endif

namespace fastnn {

// C (M,N) = [C +] op(A) (M,K) · op(B) (K,N); the plain twin of gemm_ld.
void gemm_naive(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
                int64_t ldc, int64_t lda, int64_t ldb, bool trans_a, bool trans_b,
                bool accumulate) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += a * b;
      }
      C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc : acc;
    }
  }
}

namespace {

using gemm_detail::ABlock;
using gemm_detail::BBlock;
using gemm_detail::Kernel;

// The current ISA's kernel for a product into N columns.
const Kernel& current_kernel(int64_t N) {
  const char* isa = gemm_isa();
#if defined(FASTNN_X86)
  if (std::strcmp(isa, "avx2") == 0) return gemm_detail::kernel_avx2();
  if (std::strcmp(isa, "avx512") == 0)
    return N <= 32 ? gemm_detail::kernel_avx512_narrow() : gemm_detail::kernel_avx512();
#else
  (void)N;
#endif
  (void)isa;
  return gemm_detail::kernel_generic();
}

// A per-thread packing buffer: 64-byte aligned, grown to the largest size asked, reused.
class PackBuffer {
 public:
  ~PackBuffer() { std::free(p_); }
  float* get(int64_t n) {
    if (n > cap_) {
      const size_t bytes = (size_t(n) * sizeof(float) + 63) & ~size_t(63);
      float* q = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!q) return nullptr;
      std::free(p_);
      p_ = q;
      cap_ = int64_t(bytes / sizeof(float));
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  int64_t cap_ = 0;
};

thread_local PackBuffer t_pack_a, t_pack_b, t_transposed;

struct Problem {
  float* C;
  const float* A;
  const float* B;
  int64_t M, N, K, ldc, lda, ldb;
  bool trans_a, trans_b, accumulate;
  int64_t kc;  // K block: a function of K only (this fixes the order of the sums)
  const int32_t* brows = nullptr;  // gemm_rows: row k of op(B) is row brows[k] of B
  bool as_is = false;              // never run transposed (see runs_transposed)
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A stride that maps successive rows onto few cache sets (a multiple of 1 KiB).
bool aliasing_stride(int64_t ld) { return ld % 256 == 0; }

// Whether a thread's rows×cols rectangle copies B / A into packed panels. A row-major B
// panel can be read in place; it is worth copying when many row tiles reuse it. Bᵀ must
// be packed. A (row-major or transposed) can be read in place; copying pays when many
// column tiles reuse it.
bool packs_b(const Problem& p, int64_t rows) {
  return p.brows || p.trans_b || rows > FASTNN_GEMM_PACK_B_MIN_M ||
         (rows > 16 && aliasing_stride(p.ldb));
}
bool packs_a(const Problem& p, int64_t cols) {
  return cols > FASTNN_GEMM_PACK_A_MIN_N || (p.trans_a && aliasing_stride(p.lda));
}

// Runs the loop nest on C[m0:m1, n0:n1]. Returns false if a buffer could not be had.
bool run_block(const Kernel& kr, const Problem& p, int64_t m0, int64_t m1, int64_t n0,
               int64_t n1) {
  const int64_t mr = kr.mr, nr = kr.nr;
  const bool pack_a = packs_a(p, n1 - n0), pack_b = packs_b(p, m1 - m0);
  const int64_t nc_max = std::min<int64_t>(kr.nc, ceil_div(n1 - n0, nr) * nr);
  float* bbuf = t_pack_b.get(p.kc * (pack_b ? nc_max : nr));
  float* abuf = pack_a ? t_pack_a.get(p.kc * std::min<int64_t>(kr.mc, ceil_div(m1 - m0, mr) * mr))
                       : nullptr;
  if (!bbuf || (pack_a && !abuf)) return false;

  for (int64_t jc = n0; jc < n1; jc += kr.nc) {
    const int64_t nc = std::min<int64_t>(kr.nc, n1 - jc);
    for (int64_t pc = 0; pc < p.K; pc += p.kc) {
      const int64_t kc = std::min(p.kc, p.K - pc);
      BBlock bb;
      if (pack_b) {
        if (p.brows)
          kr.pack_b_rows(bbuf, p.B, p.ldb, p.brows, pc, jc, kc, nc);
        else
          kr.pack_b(bbuf, p.B, p.ldb, p.trans_b, pc, jc, kc, nc);
        bb = {bbuf, nr, kc * nr, nullptr};
      } else {
        bb = {p.B + pc * p.ldb + jc, p.ldb, nr, nullptr};
        if (const int64_t tail = nc % nr) {  // never read past column N
          kr.pack_b(bbuf, p.B, p.ldb, false, pc, jc + nc - tail, kc, tail);
          bb.edge = bbuf;
        }
      }
      const bool add = p.accumulate || pc > 0;
      for (int64_t ic = m0; ic < m1; ic += kr.mc) {
        const int64_t mc = std::min<int64_t>(kr.mc, m1 - ic);
        ABlock ab;
        if (pack_a) {
          kr.pack_a(abuf, p.A, p.lda, p.trans_a, ic, pc, mc, kc);
          ab = {abuf, mr, mr * kc, 0, true};
        } else if (p.trans_a) {
          ab = {p.A + pc * p.lda + ic, p.lda, 0, 1, true};
        } else {
          ab = {p.A + ic * p.lda + pc, p.lda, 0, p.lda, false};
        }
        kr.macro(p.C + ic * p.ldc + jc, p.ldc, ab, bb, mc, nc, kc, add);
      }
    }
  }
  return true;
}

// A thread grid tm×tn over the tiles of C.
struct Grid {
  int tm, tn;
};

constexpr int64_t kLine = 64 / sizeof(float);  // floats per cache line

// Offset of C's rows within a cache line (in floats) when all rows share it, else -1.
int64_t row_line_offset(const Problem& p) {
  if (p.ldc % kLine) return -1;
  return int64_t(reinterpret_cast<uintptr_t>(p.C) / sizeof(float)) % kLine;
}

// Picks the grid for nt threads that minimises one thread's estimated time (in cycles):
// its share of multiply-adds, the elements it packs, and the cache lines of C it shares
// with another thread. Column splits are moved onto line boundaries (see gemm_ld), but
// when rows do not start on one, the line where a row wraps into the next is written by
// the first and the last column block: about 300 cycles per row and K block (measured:
// 20-40% of the MLP products), which makes row splits the better choice there.
Grid pick_grid(const Kernel& kr, const Problem& p, int nt) {
  const int64_t mt = ceil_div(p.M, kr.mr), ntl = ceil_div(p.N, kr.nr);
  const int64_t off = row_line_offset(p);
  const double kblocks = double(ceil_div(p.K, p.kc));
  Grid best{1, 1};
  double best_cost = -1.0;
  for (int tm = 1; tm <= nt; ++tm) {
    if (nt % tm) continue;
    const int tn = nt / tm;
    if (tm > mt || tn > ntl) continue;
    const int64_t rows = std::min(p.M, ceil_div(mt, tm) * kr.mr);
    const int64_t cols = std::min(p.N, ceil_div(ntl, tn) * kr.nr);
    double cost = double(rows) * double(cols) * double(p.K) / 16.0;
    if (packs_b(p, rows)) cost += 0.5 * double(cols) * double(p.K);
    if (packs_a(p, cols)) cost += 0.5 * double(rows) * double(p.K);
    if (tn > 1 && off != 0) cost += 300.0 * double(rows) * kblocks * (off < 0 ? tn : 1);
    if (best_cost < 0 || cost < best_cost) best = {tm, tn}, best_cost = cost;
  }
  return best;
}

void run_gemm(Problem p);

// Two shapes run transposed, T (N,M) = op(B)ᵀ·op(A)ᵀ through the loop nest, then
// C = [C +] Tᵀ:
//  * A·Bᵀ with few rows (a dense layer's dx = dz·wᵀ at small batch): the loop nest would
//    transpose all of B into packed panels for the few row tiles that use them;
//    transposed, B is read in place as row-major A tiles (row by row, the order the
//    prefetchers follow) and only the small Aᵀ is packed. Measured on the AVX-512 Xeon
//    at 32×2048×2048: 1.6 ms against 3.3 (one thread). With a short K (attention's Q·Kᵀ
//    over head dims of 32-64), B is small, the copy costs little and the transpose of C
//    would dominate: 1.5-2.5x slower there, so K >= 256.
//  * Aᵀ·B into at most 16 columns (the weight gradient xᵀ·dz of a layer with few
//    outputs, e.g. a classifier's 10): C's rows fill under one vector, so each tile row
//    does a broadcast and one multiply-add of 10 useful lanes; transposed, the N rows of
//    T are the tile rows and A's rows stream in place as full-width B vectors. Measured
//    on the AVX-512 Xeon (one thread, bench/test_gemm_bench.py's dW shapes): 64×256 -> 10
//    in 3.5 us against 5.3, 128×256 -> 10 in 7.0 against 9.2. The forward x·w into 10
//    columns is no faster transposed (its x would have to be packed), so it stays.
// The sums are those of the loop nest (same K blocks and order); with accumulate, C is
// added once to the whole sum rather than once per K block.
bool runs_transposed(const Problem& p) {
  if (p.as_is || p.brows) return false;
  if (p.trans_a && !p.trans_b) return p.N <= 16 && p.M >= 32;
  return p.trans_b && !p.trans_a &&
         p.M <= FASTNN_GEMM_SKINNY_MAX_M && p.N >= p.M && p.K >= 256;
}

void run_transposed(const Problem& p) {
  const int64_t M = p.M, N = p.N;
  float* T = t_transposed.get(N * M);
  if (!T) throw std::bad_alloc();
  Problem q{T, p.B, p.A, N, M, p.K, M, p.ldb, p.lda, !p.trans_b, !p.trans_a, false, 0};
  q.as_is = true;
  run_gemm(q);
  // C (+)= Tᵀ in column blocks of 64 (T's rows: 64·M floats, in L1 for M <= 64).
  constexpr int64_t kCols = 64;
  const int64_t blocks = (N + kCols - 1) / kCols;
  float* const C = p.C;
  const int64_t ldc = p.ldc;
  const bool add = p.accumulate;
  // An even share per thread, or one chunk when there is too little to pay for threads.
  const int64_t nt = num_threads();
  const int64_t grain = N * M < 32768 ? blocks : (blocks + nt - 1) / nt;
  parallel_for(blocks, grain, [=](int64_t b0, int64_t b1) {
    for (int64_t j0 = b0 * kCols; j0 < std::min(N, b1 * kCols); j0 += kCols) {
      const int64_t j1 = std::min(N, j0 + kCols);
      for (int64_t i = 0; i < M; ++i) {
        float* c = C + i * ldc;
        const float* t = T + i;
        if (add)
          for (int64_t j = j0; j < j1; ++j) c[j] += t[j * M];
        else
          for (int64_t j = j0; j < j1; ++j) c[j] = t[j * M];
      }
    }
  });
}

// Runs p (its kc not yet set) on the threads: the body of gemm_ld and gemm_rows.
void run_gemm(Problem p) {
  const int64_t M = p.M, N = p.N, K = p.K;
  float* const C = p.C;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!p.accumulate)
      for (int64_t i = 0; i < M; ++i) std::memset(C + i * p.ldc, 0, size_t(N) * sizeof(float));
    return;
  }
  if (runs_transposed(p)) {
    run_transposed(p);
    return;
  }
  const Kernel& kr = current_kernel(N);
  p.kc = ceil_div(K, ceil_div(K, kr.kc_max));  // equal K blocks of at most kc_max

  int nt = 1;
#if defined(_OPENMP)
  if (!omp_in_parallel()) {
    // Multiply-adds the kernels really do: columns are computed in whole nr-wide tiles.
    const double work = double(M) * double(ceil_div(N, kr.nr) * kr.nr) * double(K);
    const double by_work = work / double(FASTNN_GEMM_MIN_WORK_PER_THREAD);
    nt = by_work < 1.0 ? 1 : int(std::min<double>(by_work, num_threads()));
    nt = int(std::min<int64_t>(nt, ceil_div(M, kr.mr) * ceil_div(N, kr.nr)));
  }
#endif
  if (nt <= 1) {
    const FlushDenormals ftz;
    if (!run_block(kr, p, 0, M, 0, N)) throw std::bad_alloc();
    return;
  }
  Grid g = pick_grid(kr, p, nt);
  while (g.tm * g.tn < nt && nt > 1) g = pick_grid(kr, p, --nt);  // no grid: fewer threads
  const int blocks = g.tm * g.tn;
  const int64_t mt = ceil_div(M, kr.mr), ntl = ceil_div(N, kr.nr);
  // Row splits fall on whole tiles. Column splits fall on whole tiles too, moved down to
  // a cache-line boundary of C when every row of C has the same alignment, so that two
  // threads never write one line (that false sharing cost 20-30% at the MLP shapes; a
  // block that ends mid-tile just has an edge tile there).
  const int64_t shift = std::max<int64_t>(row_line_offset(p), 0);
  auto row_split = [&](int bi) { return std::min(M, mt * bi / g.tm * kr.mr); };
  auto col_split = [&](int bj) {
    const int64_t j = std::min(N, ntl * bj / g.tn * kr.nr);
    const int64_t aligned = j - (j + shift) % kLine;
    return j == N || aligned <= 0 ? j : aligned;
  };
  bool ok = true;
#if defined(_OPENMP)
#pragma omp parallel num_threads(blocks) reduction(&& : ok)
  {
    const FlushDenormals ftz;
    const int nth = omp_get_num_threads();
    for (int b = omp_get_thread_num(); b < blocks; b += nth) {
      const int bi = b / g.tn, bj = b % g.tn;
      const int64_t m0 = row_split(bi), m1 = row_split(bi + 1);
      const int64_t n0 = col_split(bj), n1 = col_split(bj + 1);
      if (m0 < m1 && n0 < n1) ok = run_block(kr, p, m0, m1, n0, n1) && ok;
    }
  }
#endif
  if (!ok) throw std::bad_alloc();
}

}  // namespace

// C (M,N) = [C +] op(A) (M,K) · op(B) (K,N), packed and cache-blocked.
void gemm_ld(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
             int64_t ldc, int64_t lda, int64_t ldb, bool trans_a, bool trans_b,
             bool accumulate) {
  run_gemm(Problem{C, A, B, M, N, K, ldc, lda, ldb, trans_a, trans_b, accumulate, 0});
}

// C (M,N) = [C +] A (M,K) · B[rows] (K,N)
void gemm_rows(float* C, const float* A, const float* B, const int32_t* rows, int64_t M,
               int64_t N, int64_t K, int64_t ldc, int64_t lda, int64_t ldb, bool accumulate) {
  Problem p{C, A, B, M, N, K, ldc, lda, ldb, false, false, accumulate, 0};
  p.brows = rows;
  run_gemm(p);
}

}  // namespace fastnn
