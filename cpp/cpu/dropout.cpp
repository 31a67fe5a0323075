// Inverted dropout with a counter-based random mask.
//
// Element i is kept iff the high 32 bits of
//     h(i) = mix(key + i·γ),  key = mix(seed + γ),  γ = 0x9E3779B97F4A7C15
// are >= floor(rate·2³²), where mix is splitmix64's finaliser. h(i) is the i-th output of
// a splitmix64 generator started at state key, so the bits are as good as splitmix64's,
// and each one is a pure function of (seed, i): the mask is the same for any thread count
// and any chunking, and fastnn.reference.dropout reproduces it exactly in NumPy.
// Kept elements are scaled by 1/(1 − rate) (computed once, in float32); dropped ones are 0.
#include "fastnn/dropout.h"

#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

constexpr int64_t kDropoutGrain = 8192;
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;

namespace {

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t dropout_key(uint64_t seed) { return mix64(seed + kGamma); }

// Elements with hash high bits below this are dropped: P(drop) = threshold / 2³².
inline uint32_t dropout_threshold(float rate) {
  return uint32_t(double(rate) * 4294967296.0);  // rate in [0, 1) → [0, 2³² − 256]
}

}  // namespace

// ---- plain twins: the definition, read these first ----------------------------------

// y (n), mask (n), x (n)
void dropout_forward_ref(float* y, uint8_t* mask, const float* x, int64_t n, float rate,
                         uint64_t seed) {
  const uint64_t key = dropout_key(seed);
  const uint32_t threshold = dropout_threshold(rate);
  const float scale = 1.0f / (1.0f - rate);
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = uint32_t(mix64(key + uint64_t(i) * kGamma) >> 32) >= threshold;
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

// dx (n), dy (n), mask (n)
void dropout_backward_ref(float* dx, const float* dy, const uint8_t* mask, int64_t n,
                          float rate) {
  const float scale = 1.0f / (1.0f - rate);
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) dx[i] += dy[i] * scale;
}

namespace {

// ---- tuned: vectorised per chunk, cloned per ISA ----------------------------------------

// keep ? f : +0.0f as a bit mask, which vectorises on every ISA (a ?: on floats stays a
// branch where the ISA has no masked loads, as the multiply could trap).
inline float select(bool keep, float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u &= 0u - uint32_t(keep);
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// y (n), mask (n), x (n); element k of the range is global element i0 + k
FASTNN_CLONES
void dropout_forward_range(float* __restrict y, uint8_t* __restrict mask,
                           const float* __restrict x, int64_t n, int64_t i0, uint64_t key,
                           uint32_t threshold, float scale) {
  const uint64_t base = key + uint64_t(i0) * kGamma;
  for (int64_t k = 0; k < n; ++k) {
    const uint32_t hi = uint32_t(mix64(base + uint64_t(k) * kGamma) >> 32);
    const bool keep = hi >= threshold;
    mask[k] = uint8_t(keep);
    y[k] = select(keep, x[k] * scale);
  }
}

// dx (n) += mask ? dy·scale : 0
FASTNN_CLONES
void dropout_backward_range(float* __restrict dx, const float* __restrict dy,
                            const uint8_t* __restrict mask, int64_t n, float scale,
                            bool accumulate) {
  if (accumulate)
    for (int64_t k = 0; k < n; ++k) dx[k] += select(mask[k] != 0, dy[k] * scale);
  else
    for (int64_t k = 0; k < n; ++k) dx[k] = select(mask[k] != 0, dy[k] * scale);
}

}  // namespace

// y (n), mask (n), x (n); rate in [0, 1); y, mask and x do not overlap
void dropout_forward(float* y, uint8_t* mask, const float* x, int64_t n, float rate,
                     uint64_t seed) {
  if (rate == 0.0f) {  // identity: a copy and a mask of ones
    parallel_for(n, kDropoutGrain, [&](int64_t b, int64_t e) {
      std::memcpy(y + b, x + b, size_t(e - b) * sizeof(float));
      std::memset(mask + b, 1, size_t(e - b));
    });
    return;
  }
  const uint64_t key = dropout_key(seed);
  const uint32_t threshold = dropout_threshold(rate);
  const float scale = 1.0f / (1.0f - rate);
  parallel_for(n, kDropoutGrain, [&](int64_t b, int64_t e) {
    dropout_forward_range(y + b, mask + b, x + b, e - b, b, key, threshold, scale);
  });
}

// dx (n) += dy·mask/(1 − rate), dy (n), mask (n): nonzero = kept
void dropout_backward(float* dx, const float* dy, const uint8_t* mask, int64_t n,
                      float rate, bool accumulate) {
  const float scale = 1.0f / (1.0f - rate);
  parallel_for(n, kDropoutGrain, [&](int64_t b, int64_t e) {
    dropout_backward_range(dx + b, dy + b, mask + b, e - b, scale, accumulate);
  });
}

}  // namespace fastnn
