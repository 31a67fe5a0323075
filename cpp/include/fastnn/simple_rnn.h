#pragma once
#include <cstdint>

#include "fastnn/activation.h"

namespace fastnn {

// SimpleRNN (Elman) layer over a whole sequence, forward and backward through time, in
// Keras's layout: W (C, U), R (U, U), b (U) or nullptr. Per step
//   h_t = act(x[:, t]·W + (h_prev ⊙ rmask)·R + b),  act = tanh or relu.
// h0, mask, rmask, reverse and the time index of outputs as in lstm.h.

int64_t simple_rnn_forward_work(int64_t N, int64_t U);
int64_t simple_rnn_backward_work(int64_t N, int64_t T, int64_t U);

// y (N,T,U) from x (N,T,C). act: Act::tanh or Act::relu.
void simple_rnn_forward(float* y, const float* x, const float* h0, const uint8_t* mask,
                        const float* rmask, const float* W, const float* R, const float* b,
                        int64_t N, int64_t T, int64_t C, int64_t U, bool reverse, Act act,
                        float* work);

// Adds into dx (N,T,C), dW (C,U), dR (U,U), db (U), dh0 (N,U) (each may be nullptr) given
// dy (N,T,U) and dhT (N,U) (nullptr: zero). relu's derivative is taken as h_t > 0.
void simple_rnn_backward(float* dx, float* dW, float* dR, float* db, float* dh0,
                         const float* dy, const float* dhT, const float* y, const float* x,
                         const float* h0, const uint8_t* mask, const float* rmask,
                         const float* W, const float* R, int64_t N, int64_t T, int64_t C,
                         int64_t U, bool reverse, Act act, float* work);

// Plain twins with the same contracts.
void simple_rnn_forward_naive(float* y, const float* x, const float* h0, const uint8_t* mask,
                              const float* rmask, const float* W, const float* R,
                              const float* b, int64_t N, int64_t T, int64_t C, int64_t U,
                              bool reverse, Act act, float* work);
void simple_rnn_backward_naive(float* dx, float* dW, float* dR, float* db, float* dh0,
                               const float* dy, const float* dhT, const float* y,
                               const float* x, const float* h0, const uint8_t* mask,
                               const float* rmask, const float* W, const float* R, int64_t N,
                               int64_t T, int64_t C, int64_t U, bool reverse, Act act,
                               float* work);

}  // namespace fastnn
