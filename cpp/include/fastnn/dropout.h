#pragma once
#include <cstdint>

namespace fastnn {

// Inverted dropout: y = x·keep/(1−rate), keep = 1 with probability 1−rate.
// The keep bit of element i is a pure function of (seed, i) (a counter-based hash), so the
// mask is the same for any thread count. mask (n) receives the bits (uint8 0/1).
void dropout_forward(float* y, uint8_t* mask, const float* x, int64_t n, float rate,
                     uint64_t seed);

// dx (n) += dy·mask/(1−rate); accumulate = false overwrites dx (=) instead.
void dropout_backward(float* dx, const float* dy, const uint8_t* mask, int64_t n,
                      float rate, bool accumulate = true);

}  // namespace fastnn
