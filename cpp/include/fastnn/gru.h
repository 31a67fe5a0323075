#pragma once
#include <cstdint>

namespace fastnn {

// GRU layer over a whole sequence, forward and backward through time, in Keras's
// layout: W (C, 3U), R (U, 3U), gates z (update), r (reset), h (candidate) along the 3U
// axis. hp = h_prev ⊙ rmask (recurrent dropout) enters the products; h_prev itself enters
// the state update h_t = z ⊙ h_prev + (1 − z) ⊙ hh.
//  reset_after (Keras's default; cuDNN and PyTorch compute this form): b (2, 3U) is the
//   input bias b[0] and the recurrent bias b[1];
//     xa = x[:, t]·W + b[0];  ra = hp·R + b[1];  z, r = σ(xa_zr + ra_zr)
//     hh = tanh(xa_h + r ⊙ ra_h)                          saved: hn = ra_h
//  original form: b (3U);
//     xa = x[:, t]·W + b;  z, r = σ(xa_zr + hp·R_zr);  hh = tanh(xa_h + (r ⊙ hp)·R_h)
//                                                      saved: hn = r ⊙ hp
// h0, mask, rmask, reverse and the time index of outputs as in lstm.h; b may be nullptr
// (no bias).

int64_t gru_forward_work(int64_t N, int64_t U);
int64_t gru_backward_work(int64_t N, int64_t T, int64_t U, bool reset_after);

// y (N,T,U), gates (N,T,3U) = z, r, hh after their nonlinearities, hn (N,T,U).
void gru_forward(float* y, float* gates, float* hn, const float* x, const float* h0,
                 const uint8_t* mask, const float* rmask, const float* W, const float* R,
                 const float* b, int64_t N, int64_t T, int64_t C, int64_t U, bool reverse,
                 bool reset_after, float* work);

// Adds into dx (N,T,C), dW (C,3U), dR (U,3U), db (b's shape), dh0 (N,U) (each may be
// nullptr) given dy (N,T,U) and dhT (N,U) (nullptr: zero). Deterministic as lstm_backward.
void gru_backward(float* dx, float* dW, float* dR, float* db, float* dh0, const float* dy,
                  const float* dhT, const float* y, const float* gates, const float* hn,
                  const float* x, const float* h0, const uint8_t* mask, const float* rmask,
                  const float* W, const float* R, int64_t N, int64_t T, int64_t C, int64_t U,
                  bool reverse, bool reset_after, float* work);

// Plain twins with the same contracts.
void gru_forward_naive(float* y, float* gates, float* hn, const float* x, const float* h0,
                       const uint8_t* mask, const float* rmask, const float* W,
                       const float* R, const float* b, int64_t N, int64_t T, int64_t C,
                       int64_t U, bool reverse, bool reset_after, float* work);
void gru_backward_naive(float* dx, float* dW, float* dR, float* db, float* dh0,
                        const float* dy, const float* dhT, const float* y, const float* gates,
                        const float* hn, const float* x, const float* h0, const uint8_t* mask,
                        const float* rmask, const float* W, const float* R, int64_t N,
                        int64_t T, int64_t C, int64_t U, bool reverse, bool reset_after,
                        float* work);

}  // namespace fastnn
