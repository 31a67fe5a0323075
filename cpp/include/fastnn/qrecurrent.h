// Int8 LSTM and GRU inference (the quantized forms of lstm.h and gru.h), built on the
// int8 GEMM of qgemm.h.
//
// Weights: W (C, G·U) and R (U, G·U) int8 per output column (w ≈ w_scale[n]·wq[:, n]),
// given packed by qgemm_pack_b. Activations: uint8 per tensor with a zero point.
//   xa (N,T,G·U) = the input projection of all N·T steps as one qdense_forward: x is
//     quantized once, with (x_scale, x_zp), or dynamically from the range of the whole x
//     when x_scale == 0; the epilogue dequantizes and adds the input bias.
//   ra (step) = h_prev (N,U) quantized per step — dynamically from the range of that
//     step's (N,U) h_prev (as torch's quantize_dynamic does) when h_scale == 0, else with
//     (h_scale, h_zp) — times R through qdense_forward (recurrent bias in its epilogue for
//     the reset_after GRU).
// The gates, their nonlinearities and the state updates run in float32 as in the float
// kernels: LSTM a = xa + ra; i, f, o = σ, g = tanh; c = f·c_prev + i·g; h = o·tanh(c).
// GRU reset_after: z, r = σ(xa + ra), hh = tanh(xa_h + r·ra_h). GRU original form:
// z, r = σ(xa_zr + ra_zr) with ra_zr = Q(h_prev)·R_zr; hn = r ⊙ h_prev is quantized like
// h_prev (dynamically per step, or with h_prev's static parameters, which cover it since
// |r·h| ≤ |h|) and ra_h = Q(hn)·R_h; hh = tanh(xa_h + ra_h). Then h = z·h_prev + (1−z)·hh.
// At a padded step (mask 0) the states are carried; h_prev of the first step is h0 or
// zeros (a zero h_prev gives ra = bias exactly, so no product is run for it).
//
// ra_out (N,T,G·U) and hn_out (N,T,U) (original-form GRU) may be nullptr; when given they
// receive every step's dequantized recurrent product and hn, so that a twin can replay a
// step from the same h_prev and check the int32 products and epilogue bit for bit.
// Results are the same for any thread count. Returns false (outputs unspecified) when a
// dynamically quantized tensor holds a NaN or an infinity.
#pragma once
#include <cstdint>

namespace fastnn {

// Floats of scratch (work) the forwards need.
int64_t qlstm_forward_work(int64_t N, int64_t U);
int64_t qgru_forward_work(int64_t N, int64_t U);

// y, c (N,T,U); xa (N,T,4U) the input projections (written); Wp, Rp packed (C,4U), (U,4U).
bool qlstm_forward(float* y, float* c, float* xa, float* ra_out, const float* x,
                   const float* h0, const float* c0, const uint8_t* mask, const uint8_t* Wp,
                   const float* w_scale, const uint8_t* Rp, const float* r_scale,
                   const float* b, float x_scale, int32_t x_zp, float h_scale, int32_t h_zp,
                   int64_t N, int64_t T, int64_t C, int64_t U, bool reverse, float* work);

// y (N,T,U); xa (N,T,3U). reset_after: Rp packed (U,3U), Rhp unused, b (2,3U) or nullptr.
// Original form: Rp packed R[:, :2U] (U,2U) with r_scale[:2U], Rhp packed R[:, 2U:]
// (U,U) with rh_scale, b (3U) or nullptr.
bool qgru_forward(float* y, float* xa, float* ra_out, float* hn_out, const float* x,
                  const float* h0, const uint8_t* mask, const uint8_t* Wp,
                  const float* w_scale, const uint8_t* Rp, const float* r_scale,
                  const uint8_t* Rhp, const float* rh_scale, const float* b, float x_scale,
                  int32_t x_zp, float h_scale, int32_t h_zp, int64_t N, int64_t T, int64_t C,
                  int64_t U, bool reverse, bool reset_after, float* work);

}  // namespace fastnn
