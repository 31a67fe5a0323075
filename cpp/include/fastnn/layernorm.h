#pragma once
#include <cstdint>

namespace fastnn {

// Layer normalisation over the last axis: x is (M, C) with M = N·T for (N, T, C) inputs;
// statistics are per row over its C values. gamma and beta (C) may be nullptr (scale 1,
// offset 0). Every row is owned by one thread; the parameter-gradient sums over M run over
// a fixed partition of the rows combined in a fixed order, so results are identical for
// any thread count.

// y (M,C) = gamma·(x − μ_m)·r_m + beta, with μ_m, σ²_m the mean and biased variance of
// row m and r_m = 1/√(σ²_m + eps); mean (M) and rstd (M) receive μ and r for backward
// (either may be nullptr when no backward follows). y may be x itself (in place).
void layer_norm_forward(float* y, float* mean, float* rstd, const float* x,
                        const float* gamma, const float* beta, int64_t M, int64_t C,
                        float eps);

// Backward, with x̂ = (x − mean)·rstd and g = gamma·dy:
//   dx (M,C)     += rstd·(g − mean_C(g) − x̂·mean_C(g·x̂));
//   dgamma (C)   += Σ_M dy·x̂;   dbeta (C) += Σ_M dy.
// Any of dx, dgamma, dbeta may be nullptr; gamma nullptr means 1. accumulate_dx = false
// overwrites dx (=) instead.
void layer_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                         const float* mean, const float* rstd, const float* x,
                         const float* gamma, int64_t M, int64_t C, bool accumulate_dx = true);

// Plain twins with the same contracts (float64 row statistics, single loops).
void layer_norm_forward_naive(float* y, float* mean, float* rstd, const float* x,
                              const float* gamma, const float* beta, int64_t M, int64_t C,
                              float eps);
void layer_norm_backward_naive(float* dx, float* dgamma, float* dbeta, const float* dy,
                               const float* mean, const float* rstd, const float* x,
                               const float* gamma, int64_t M, int64_t C,
                               bool accumulate_dx = true);

}  // namespace fastnn
