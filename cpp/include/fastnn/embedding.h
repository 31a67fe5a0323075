#pragma once
#include <cstdint>

namespace fastnn {

// Embedding lookup: row ids[n, t] of a table w (V, C), optionally plus a position row
// pos[t] (token + learned/sinusoidal position embedding in one pass).
//
// ids (N, T) int32, every id in [0, V) (the caller checks; the kernels do not). pos (T, C)
// may be nullptr (no position term); with pos == nullptr, T only splits the N·T rows and
// any factorisation of the row count gives the same result.

// y (N,T,C) = w[ids[n,t]] (+ pos[t]). y must not overlap w or pos.
void embedding_forward(float* y, const int32_t* ids, const float* w, const float* pos,
                       int64_t N, int64_t T, int64_t V, int64_t C);

// dw (V,C) += Σ_{(n,t): ids[n,t] = v} dy[n,t]  (rows v never looked up are untouched);
// dpos (T,C) += Σ_n dy[n,t]. Either may be nullptr.
// Deterministic without atomics: each thread owns a contiguous range of table rows and
// scans all ids, so every row receives its terms in increasing (n, t) order whatever the
// thread count (bitwise equal to the plain twin). dpos is owned by position rows and sums
// over n in order.
void embedding_backward(float* dw, float* dpos, const float* dy, const int32_t* ids,
                        int64_t N, int64_t T, int64_t V, int64_t C);

// Plain twins with the same contracts (single loop nests, no threads).
void embedding_forward_naive(float* y, const int32_t* ids, const float* w, const float* pos,
                             int64_t N, int64_t T, int64_t V, int64_t C);
void embedding_backward_naive(float* dw, float* dpos, const float* dy, const int32_t* ids,
                              int64_t N, int64_t T, int64_t V, int64_t C);

}  // namespace fastnn
