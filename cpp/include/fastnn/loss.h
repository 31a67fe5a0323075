#pragma once
#include <cstdint>

namespace fastnn {

// All loss kernels return the SUM over rows/elements of the loss (in double) and, when
// the gradient pointer is not nullptr, add grad_scale · ∂loss/∂input into it (the caller
// passes grad_scale = 1/N for a mean).

// Fused, stable softmax + cross-entropy with integer labels in [0, C).
// logits (N,C), labels (N); dlogits (N,C) += scale·(softmax(logits) − onehot(label)).
// probs (N,C), when not nullptr, receives softmax(logits).
double softmax_xent(float* dlogits, float* probs, const float* logits, const int32_t* labels,
                    int64_t N, int64_t C, float grad_scale);

// Same with a target distribution per row (one-hot or smoothed), targets (N,C).
double softmax_xent_dense(float* dlogits, float* probs, const float* logits,
                          const float* targets, int64_t N, int64_t C, float grad_scale);

// Cross-entropy of given probabilities (no softmax): −Σ t·log(clip(p)); dprobs += −t/p.
double xent_probs(float* dprobs, const float* probs, const float* targets, int64_t N,
                  int64_t C, float grad_scale);

// Binary cross-entropy with logits, elementwise over n:
// max(x,0) − x·t + log(1 + e^−|x|);  dx += scale·(σ(x) − t).
double bce_logits(float* dlogits, const float* logits, const float* targets, int64_t n,
                  float grad_scale);

// Mean squared error summed over n: (p − t)²;  dp += scale·2(p − t).
double mse(float* dpred, const float* pred, const float* target, int64_t n,
           float grad_scale);

// Plain twins with the same contracts (bound as fastnn._core.plain.* for the tests).
double softmax_xent_naive(float* dlogits, float* probs, const float* logits,
                          const int32_t* labels, int64_t N, int64_t C, float grad_scale);
double softmax_xent_dense_naive(float* dlogits, float* probs, const float* logits,
                                const float* targets, int64_t N, int64_t C,
                                float grad_scale);
double xent_probs_naive(float* dprobs, const float* probs, const float* targets, int64_t N,
                        int64_t C, float grad_scale);
double bce_logits_naive(float* dlogits, const float* logits, const float* targets, int64_t n,
                        float grad_scale);
double mse_naive(float* dpred, const float* pred, const float* target, int64_t n,
                 float grad_scale);

}  // namespace fastnn
