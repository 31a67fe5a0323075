// GEMM driver: placeholder-free naive version until the packed driver lands.
#include "fastnn/gemm.h"

#include "fastnn/common.h"

namespace fastnn {

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

void gemm_ld(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
             int64_t ldc, int64_t lda, int64_t ldb, bool trans_a, bool trans_b,
             bool accumulate) {
  gemm_naive(C, A, B, M, N, K, ldc, lda, ldb, trans_a, trans_b, accumulate);
}

}  // namespace fastnn
