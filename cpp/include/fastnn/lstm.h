#pragma once
#include <cstdint>

namespace fastnn {

// LSTM layer over a whole sequence, forward and backward through time, in Keras's
// layout: W (C, 4U) "kernel", R (U, 4U) "recurrent_kernel", b (4U) "bias", gates in the
// order i, f, g, o along the 4U axis. Per step (t = 0..T-1, or T-1..0 when reverse):
//   a = x[:, t]·W + (h_prev ⊙ rmask)·R + b;  i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g)
//   c_t = f ⊙ c_prev + i ⊙ g;  h_t = o ⊙ tanh(c_t)
//
// Optional arguments (nullptr = absent): b; h0, c0 (N, U) initial states (zeros);
// mask (N, T), nonzero = a real step: at a masked step both states are carried over
// unchanged (y and c hold the carried state, gates hold 0); rmask (N, U) the recurrent
// dropout multiplier, the same for every step. Outputs are written at their own time
// index also when reverse, so the final state is y[:, T-1] (y[:, 0] when reverse).

// Scratch floats lstm_forward needs (work) for these sizes.
int64_t lstm_forward_work(int64_t N, int64_t U);
// Scratch floats lstm_backward needs.
int64_t lstm_backward_work(int64_t N, int64_t T, int64_t U);

// y (N,T,U) hidden states, c (N,T,U) cell states, gates (N,T,4U) = i, f, g, o after
// their nonlinearities (what backward needs), from x (N,T,C).
void lstm_forward(float* y, float* c, float* gates, const float* x, const float* h0,
                  const float* c0, const uint8_t* mask, const float* rmask, const float* W,
                  const float* R, const float* b, int64_t N, int64_t T, int64_t C, int64_t U,
                  bool reverse, float* work);

// Adds into dx (N,T,C), dW (C,4U), dR (U,4U), db (4U), dh0, dc0 (N,U) (each may be
// nullptr) the gradients of a loss with gradients dy (N,T,U) of y and dhT, dcT (N,U) of
// the final states (each may be nullptr: zero). y, c, gates are lstm_forward's.
// The weight gradients are GEMMs over all N·T rows after the time loop; the time loop
// runs each chunk of samples on one thread: bitwise the same for any thread count.
void lstm_backward(float* dx, float* dW, float* dR, float* db, float* dh0, float* dc0,
                   const float* dy, const float* dhT, const float* dcT, const float* y,
                   const float* c, const float* gates, const float* x, const float* h0,
                   const float* c0, const uint8_t* mask, const float* rmask, const float* W,
                   const float* R, int64_t N, int64_t T, int64_t C, int64_t U, bool reverse,
                   float* work);

// Plain twins (gemm_naive, libm, one thread) with the same contracts.
void lstm_forward_naive(float* y, float* c, float* gates, const float* x, const float* h0,
                        const float* c0, const uint8_t* mask, const float* rmask,
                        const float* W, const float* R, const float* b, int64_t N, int64_t T,
                        int64_t C, int64_t U, bool reverse, float* work);
void lstm_backward_naive(float* dx, float* dW, float* dR, float* db, float* dh0, float* dc0,
                         const float* dy, const float* dhT, const float* dcT, const float* y,
                         const float* c, const float* gates, const float* x, const float* h0,
                         const float* c0, const uint8_t* mask, const float* rmask,
                         const float* W, const float* R, int64_t N, int64_t T, int64_t C,
                         int64_t U, bool reverse, float* work);

}  // namespace fastnn
