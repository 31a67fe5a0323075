// Thread count, ISA choice and build facts.
#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_num_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n < 1 ? 1 : n);
#else
  (void)n;
#endif
}

bool openmp_enabled() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

const char* const* supported_isas(int* count) {
  static const char* names[3];
  static int n = [] {
    int k = 0;
#if defined(FASTNN_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
      names[k++] = "avx512";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) names[k++] = "avx2";
#endif
    names[k++] = "generic";
    return k;
  }();
  *count = n;
  return names;
}

namespace {
const char* g_isa = nullptr;
}

const char* gemm_isa() {
  if (!g_isa) {
    int n = 0;
    g_isa = supported_isas(&n)[0];
  }
  return g_isa;
}

bool set_gemm_isa(const char* name) {
  int n = 0;
  const char* const* names = supported_isas(&n);
  for (int i = 0; i < n; ++i) {
    if (std::strcmp(names[i], name) == 0) {
      g_isa = names[i];
      return true;
    }
  }
  return false;
}

#ifndef FASTNN_COMPILER
#define FASTNN_COMPILER "unknown"
#endif
#ifndef FASTNN_BUILD_FLAGS
#define FASTNN_BUILD_FLAGS ""
#endif
#ifndef FASTNN_BUILD_TYPE
#define FASTNN_BUILD_TYPE ""
#endif
const char* compiler() { return FASTNN_COMPILER; }
const char* build_flags() { return FASTNN_BUILD_FLAGS; }
const char* build_type() { return FASTNN_BUILD_TYPE; }

}  // namespace fastnn
