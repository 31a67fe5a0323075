#pragma once
#include <cstdint>

#include "fastnn/activation.h"

namespace fastnn {

// y (N,OC) = act(x (N,IC) · w (IC,OC) + b (OC)). w is stored (in, out) as in Keras.
// z (N,OC), when not nullptr, receives the pre-activation x·w + b (gelu backward needs it).
// b may be nullptr (no bias).
void dense_forward(float* y, float* z, const float* x, const float* w, const float* b,
                   int64_t N, int64_t IC, int64_t OC, Act act);

// With dz = dy ⊙ act'(.):  dx (N,IC) += dz·wᵀ;  dw (IC,OC) += xᵀ·dz;  db (OC) += Σ_N dz.
// Any of dx, dw, db may be nullptr. dz (N,OC) is caller scratch (it may alias dy, which
// is then overwritten). y is the forward output, z the pre-activation (gelu only).
void dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy,
                    const float* x, const float* w, const float* y, const float* z,
                    int64_t N, int64_t IC, int64_t OC, Act act);

}  // namespace fastnn
