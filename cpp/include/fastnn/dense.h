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
// accumulate = false overwrites dw and db instead (=, the same values as += into zeros),
// so a training step need not zero them first; accumulate_dx = false likewise dx.
void dense_backward(float* dx, float* dw, float* db, float* dz, const float* dy,
                    const float* x, const float* w, const float* y, const float* z,
                    int64_t N, int64_t IC, int64_t OC, Act act, bool accumulate = true,
                    bool accumulate_dx = true);

// Dense layer on data that is mostly zero columns (the first layer of a model, fed pixels
// with a blank background, one-hot or bag-of-words rows): the columns of x (N,IC) that
// are zero in every row of the batch add nothing to x·w and touch no row of xᵀ·dz, so
// both products can run over the nk nonzero columns only (MNIST batches of 32: ~58% of
// the 784). The sums are those of dense_forward/dense_backward without their zero terms;
// the plain twins are dense_forward_naive/dense_backward_naive on x and w.
//
// cols (IC) receives the indices of x's nonzero columns (ascending). When 0 < nk <=
// IC·3/4, xc (N·IC floats) receives x[:, cols] as (N, nk), y = act(xc·w[cols, :] + b)
// (the GEMM reads w's rows through cols as it packs them) and nk is returned. Otherwise
// (too few zero columns to pay for the gather, or no nonzero at all) it runs
// dense_forward on x and w and returns 0.
int64_t dense_forward_sparse(float* y, float* z, int32_t* cols, float* xc, const float* x,
                             const float* w, const float* b, int64_t N, int64_t IC,
                             int64_t OC, Act act);

// The backward of a gathered dense_forward_sparse (nk > 0): dz = dy ⊙ act'(.),
// db (OC) += Σ_N dz, dw[cols, :] += xcᵀ·dz with xc (N, nk) and cols as the forward left
// them; dwc (nk·OC floats) is scratch. dw or db may be nullptr. No dx (the input is data).
// accumulate = false overwrites db and all IC rows of dw (the rows outside cols with 0).
void dense_backward_sparse(float* dw, float* db, float* dz, float* dwc, const float* dy,
                           const int32_t* cols, int64_t nk, const float* xc, const float* y,
                           const float* z, int64_t N, int64_t IC, int64_t OC, Act act,
                           bool accumulate = true);

// Plain twins with the same contracts (bound as fastnn._core.plain.* for the tests).
void dense_forward_naive(float* y, float* z, const float* x, const float* w, const float* b,
                         int64_t N, int64_t IC, int64_t OC, Act act);
void dense_backward_naive(float* dx, float* dw, float* db, float* dz, const float* dy,
                          const float* x, const float* w, const float* y, const float* z,
                          int64_t N, int64_t IC, int64_t OC, Act act, bool accumulate = true,
                          bool accumulate_dx = true);

}  // namespace fastnn
