#pragma once
#include <cstdint>

namespace fastnn {

enum class Act : int { linear = 0, relu = 1, sigmoid = 2, tanh = 3, gelu = 4 };

// y (n) = act(x). gelu is the exact one, 0.5·x·(1 + erf(x/√2)). y may alias x.
void act_forward(float* y, const float* x, int64_t n, Act act);

// dx (n) += dy ⊙ act'(x). relu, sigmoid and tanh read y (the forward output); gelu reads
// x (the forward input); pass nullptr for the one not needed.
void act_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n,
                  Act act);

// y (N,C) = softmax over C of x. y may alias x.
void softmax_forward(float* y, const float* x, int64_t N, int64_t C);

// dx (N,C) += y ⊙ (dy − Σ_C dy⊙y)
void softmax_backward(float* dx, const float* dy, const float* y, int64_t N, int64_t C);

// Whether x (n) holds no NaN and no infinity (the input check of Model.predict).
bool all_finite(const float* x, int64_t n);

// Plain twins with the same contracts (bound as fastnn._core.plain.* for the tests).
void act_forward_naive(float* y, const float* x, int64_t n, Act act);
void act_backward_naive(float* dx, const float* dy, const float* x, const float* y,
                        int64_t n, Act act);
void softmax_forward_naive(float* y, const float* x, int64_t N, int64_t C);
void softmax_backward_naive(float* dx, const float* dy, const float* y, int64_t N,
                            int64_t C);

}  // namespace fastnn
