#pragma once
#include <cstdint>

namespace fastnn {

// Batch normalisation over the last axis: x is (M,C) with M = N·H·W for NHWC images, N for
// (N,C) inputs; statistics are per channel over the M rows. gamma and beta (C) may be
// nullptr (scale = 1, offset = 0). Sums over M run in float64 in a fixed partition of the
// rows combined in a fixed order, so results are identical for any thread count.

// Training mode. With μ, σ² the batch mean and biased variance of each channel:
// y (M,C) = gamma·(x − μ)·r + beta, r = 1/√(σ² + eps); mean (C) and invstd (C) receive μ
// and r for the backward pass; running_mean and running_var (C), unless nullptr, become
// momentum·running + (1 − momentum)·batch (μ and the biased σ², as Keras does).
// y must not overlap x.
void batch_norm_forward_train(float* y, float* mean, float* invstd, float* running_mean,
                              float* running_var, const float* x, const float* gamma,
                              const float* beta, int64_t M, int64_t C, float momentum,
                              float eps);
void batch_norm_forward_train_naive(float* y, float* mean, float* invstd,
                                    float* running_mean, float* running_var, const float* x,
                                    const float* gamma, const float* beta, int64_t M,
                                    int64_t C, float momentum, float eps);

// Inference mode: y (M,C) = gamma·(x − running_mean)·r + beta, r = 1/√(running_var + eps).
// mean and invstd (C), unless nullptr, receive running_mean and r (for a backward pass
// through inference mode, as a frozen layer needs).
void batch_norm_forward_infer(float* y, float* mean, float* invstd, const float* x,
                              const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int64_t M,
                              int64_t C, float eps);
void batch_norm_forward_infer_naive(float* y, float* mean, float* invstd, const float* x,
                                    const float* gamma, const float* beta,
                                    const float* running_mean, const float* running_var,
                                    int64_t M, int64_t C, float eps);

// Backward, with x̂ = (x − mean)·invstd (mean, invstd as the forward saved them):
//   dgamma (C) += Σ_M dy·x̂;   dbeta (C) += Σ_M dy;
//   training:  dx (M,C) += gamma·invstd·(dy − mean_M(dy) − x̂·mean_M(dy·x̂));
//   inference: dx (M,C) += gamma·invstd·dy (the statistics are constants).
// Any of dx, dgamma, dbeta may be nullptr; gamma nullptr means 1. accumulate=false
// overwrites dx instead of adding into it (dgamma and dbeta are always added into).
void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy,
                         const float* mean, const float* invstd, const float* x,
                         const float* gamma, int64_t M, int64_t C, bool training,
                         bool accumulate);
void batch_norm_backward_naive(float* dx, float* dgamma, float* dbeta, const float* dy,
                               const float* mean, const float* invstd, const float* x,
                               const float* gamma, int64_t M, int64_t C, bool training,
                               bool accumulate);

}  // namespace fastnn
