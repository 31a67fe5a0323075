// Shared macros and helpers for fastnn kernels.
//
// Conventions (see DESIGN.md):
//  * free functions over dense row-major float*, sizes as int64_t;
//  * argument order: outputs, saved-for-backward, inputs, weights, sizes, options;
//  * backward kernels ADD (+=) into every gradient they output; zeroing is the caller's;
//  * nullptr means "not needed";
//  * kernels never allocate (the GEMM keeps per-thread packing buffers, see gemm.h);
//  * parallel over outputs each thread owns: results are identical for any thread count;
//  * denormal (subnormal) floats are flushed to zero inside kernels (FlushDenormals).
#pragma once
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#define FASTNN_HAS_MXCSR 1
#endif

// FASTNN_CLONES compiles a function for AVX-512, AVX2 and baseline x86-64 and picks one
// at load time (GCC function multi-versioning). Put it on the innermost loop function,
// not on a function holding an OpenMP region: the region's body is outlined before the
// clones are made and would stay baseline.
#if defined(FASTNN_X86) && !defined(FASTNN_NATIVE_BUILD) && defined(__GNUC__) && \
    !defined(__clang__)
#define FASTNN_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTNN_CLONES
#endif

namespace fastnn {

// While alive, the calling thread treats subnormal float inputs as zero and flushes
// subnormal results to zero (x86 MXCSR DAZ + FTZ), as TensorFlow and oneDNN do; the
// previous mode comes back on destruction, so the caller's own code (NumPy, ...) is not
// affected. Subnormals cost a microcode assist per operation: Adam's first moments of
// rarely active weights decay into that range and made the update twice as slow.
class FlushDenormals {
 public:
#if defined(FASTNN_HAS_MXCSR)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kDaz | kFtz); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtz = 0x8000, kDaz = 0x0040;
  unsigned saved_;
#else
  FlushDenormals() {}
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// Run body(begin, end) over [0, n) in contiguous chunks, in parallel when n is large
// enough to pay for waking the threads. Each index is owned by exactly one chunk. The
// body runs with denormals flushed (FlushDenormals).
template <class Body>
inline void parallel_for(int64_t n, int64_t grain, Body&& body) {
#if defined(_OPENMP)
  if (n > grain && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    const int64_t chunks = (n + grain - 1) / grain;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const FlushDenormals ftz;
      const int64_t b = c * grain;
      const int64_t e = b + grain < n ? b + grain : n;
      body(b, e);
    }
    return;
  }
#else
  (void)grain;
#endif
  if (n > 0) {
    const FlushDenormals ftz;
    body(int64_t(0), n);
  }
}

// Thread-count and ISA control (runtime.cpp).
int num_threads();
void set_num_threads(int n);
bool openmp_enabled();
// Instruction set the GEMM micro-kernels use: "avx512", "avx2" or "generic". The other
// kernels with per-ISA code (sparse_dense_forward, adam_step, adagrad_step) follow it.
const char* gemm_isa();
// Names the ISAs this CPU can run, best first.
const char* const* supported_isas(int* count);
// Force an ISA (for tests and benchmarks); returns false if this CPU cannot run it.
bool set_gemm_isa(const char* name);
const char* compiler();
const char* build_flags();
const char* build_type();

}  // namespace fastnn
