#pragma once
#include <cstdint>

#include "fastnn/activation.h"

namespace fastnn {

// A Dense kernel w (IC,OC) with most entries zero, stored by output column (CSC of w):
// the nonzeros of column o are w[indices[p], o] = values[p] for p in
// [indptr[o], indptr[o+1]), indices ascending within a column. indptr has OC+1 entries,
// indptr[0] = 0, indptr[OC] = nnz; indices lie in [0, IC).
//
// y (N,OC) = act(x (N,IC) · w + b (OC)); b may be nullptr.
// Each output element is one sum over its column's nonzeros, computed by one thread:
// results do not depend on the thread count. Two orders of summation:
//  * N < kSparseDenseBatchVec: per (n, o), a dot of x's row gathered at indices with
//    values, vectorised over the nonzeros (16 lanes, then a tree);
//  * N >= kSparseDenseBatchVec: xt (sparse_dense_scratch(N, IC) floats, caller scratch)
//    receives xᵀ in blocks of 16 rows ((IC, 16) each),
//    and each column accumulates values[p] · xt_j[indices[p], :] over its nonzeros,
//    round-robin into 4 partial sums (p mod 4) added as ((s0 + s1) + (s2 + s3)),
//    vectorised over the 16 rows of a block.
// The bias is added to the finished sum; the activation is one elementwise pass after.
// nnz = 0 (an all-zero kernel; indices and values may then be nullptr) gives act(b).
// xt may be nullptr when N < kSparseDenseBatchVec.
constexpr int64_t kSparseDenseBatchVec = 8;

// Floats of xt scratch for a batch of N: IC · N rounded up to a multiple of 16 rows, and
// 15 more: the kernel starts xt at its first 64-byte boundary, so that each 16-float row
// is one cache line (rows split across two lines made the kernel 1.3-1.4x slower).
inline int64_t sparse_dense_scratch(int64_t N, int64_t IC) {
  return (N + 15) / 16 * 16 * IC + 15;
}

void sparse_dense_forward(float* y, float* xt, const float* x, const int32_t* indptr,
                          const int32_t* indices, const float* values, const float* b,
                          int64_t N, int64_t IC, int64_t OC, Act act);

// Plain twin: y[n, o] = act(Σ_p values[p] · x[n, indices[p]] + b[o]), p in order.
void sparse_dense_forward_naive(float* y, float* xt, const float* x, const int32_t* indptr,
                                const int32_t* indices, const float* values, const float* b,
                                int64_t N, int64_t IC, int64_t OC, Act act);

}  // namespace fastnn
