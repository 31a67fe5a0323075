#pragma once
#include <cstdint>

namespace fastnn {

// C (M,N) = [C +] op(A) (M,K) · op(B) (K,N)
//   op(A) = A, stored (M,K) with row stride lda, or Aᵀ when trans_a (A stored (K,M));
//   op(B) = B, stored (K,N) with row stride ldb, or Bᵀ when trans_b (B stored (N,K)).
// accumulate=false overwrites C. C must not overlap A or B.
// The driver packs A and B into per-thread buffers (grown once, then reused), splits C
// into tiles each owned by one thread, and sums K in the same order for any thread count.
void gemm_ld(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
             int64_t ldc, int64_t lda, int64_t ldb, bool trans_a, bool trans_b,
             bool accumulate);

inline void gemm(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
                 bool trans_a, bool trans_b, bool accumulate) {
  gemm_ld(C, A, B, M, N, K, N, trans_a ? M : K, trans_b ? K : N, trans_a, trans_b,
          accumulate);
}

// C (M,N) = [C +] A (M,K; row stride lda) · B[rows] (K,N): row k of the right operand is
// row rows[k] of B (row stride ldb). The rows are gathered while B is packed, each
// thread packing the columns it owns, so no gathered copy of B is ever made (the sparse
// dense layer's product, dense.cpp). Sums in the same order as gemm_ld.
void gemm_rows(float* C, const float* A, const float* B, const int32_t* rows, int64_t M,
               int64_t N, int64_t K, int64_t ldc, int64_t lda, int64_t ldb, bool accumulate);

// Plain triple loop with the same contract: the reference and the reader's first stop.
void gemm_naive(float* C, const float* A, const float* B, int64_t M, int64_t N, int64_t K,
                int64_t ldc, int64_t lda, int64_t ldb, bool trans_a, bool trans_b,
                bool accumulate);

}  // namespace fastnn
