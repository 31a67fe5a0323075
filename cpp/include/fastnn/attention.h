#pragma once
#include <cstdint>

namespace fastnn {

// Fused multi-head attention core ("flash" style) on already-projected q, k, v.
//
// Layout: the (N, T, C) output of a Dense projection read as (N, T, NH, D) with C = NH·D,
// so no transposes are needed. Tq (queries) and Tk (keys/values) may differ.
//
//   s_ij = scale · q_i·k_j  (per n and head),  masked → −∞,
//   o_i  = Σ_j softmax_j(s_i) v_j,   lse_i = log Σ_j exp(s_ij).
//
// Masks: mask (N, Tk) uint8 key padding, nonzero = attend, 0 = masked (nullptr: none);
// causal: key j is visible to query i iff j ≤ i (top-left aligned, as Keras and PyTorch).
// A row with no visible key gives o_i = 0 and lse_i = +∞ (backward then gives it zero
// gradients; no NaN anywhere).
//
// One tiled pass with an online softmax (running max and sum per row over key blocks):
// memory grows with T, never T² (forward and backward). Parallel over (n, head, query
// block) forward and (n, head) backward; every output element is owned by one thread and
// summed in a fixed order, so results are identical for any thread count. Per-task scratch
// lives on the stack (at most ~100 KB, no allocation); head sizes D > 128 use the naive
// twins below.

// o (N,Tq,NH,D), lse (N,NH,Tq) = attention(q (N,Tq,NH,D), k (N,Tk,NH,D), v (N,Tk,NH,D)).
// lse may be nullptr when no backward follows. o must not overlap any input.
void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                       const uint8_t* mask, int64_t N, int64_t Tq, int64_t Tk, int64_t NH,
                       int64_t D, float scale, bool causal);

// dq (N,Tq,NH,D) +=, dk (N,Tk,NH,D) +=, dv (N,Tk,NH,D) += gradients of Σ dout⊙o, from
// dout (N,Tq,NH,D), the forward's o and lse, and its inputs. Probabilities are recomputed
// block by block from q, k and lse (FlashAttention-2: dS = P ⊙ (dP − rowsum(dout⊙o))).
// Any of dq, dk, dv may be nullptr (not needed). accumulate = false overwrites them (=).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o,
                        const float* lse, const float* q, const float* k, const float* v,
                        const uint8_t* mask, int64_t N, int64_t Tq, int64_t Tk, int64_t NH,
                        int64_t D, float scale, bool causal, bool accumulate = true);

// Plain twins with the same contracts: one query row at a time, scores recomputed instead
// of stored. The reference for the tiled kernels and the fallback for D > 128.
void attention_forward_naive(float* o, float* lse, const float* q, const float* k,
                             const float* v, const uint8_t* mask, int64_t N, int64_t Tq,
                             int64_t Tk, int64_t NH, int64_t D, float scale, bool causal);

void attention_backward_naive(float* dq, float* dk, float* dv, const float* dout,
                              const float* o, const float* lse, const float* q,
                              const float* k, const float* v, const uint8_t* mask,
                              int64_t N, int64_t Tq, int64_t Tk, int64_t NH, int64_t D,
                              float scale, bool causal, bool accumulate = true);

}  // namespace fastnn
