// Elementwise activations and softmax, forward and backward.
//
// The tuned kernels run vectorised spans (vmath.h) over chunks owned by one thread each;
// every element (or row) is computed by the same code whatever the thread count, so the
// results are identical for 1 and 2 threads. The *_naive twins at the end are the plain
// <cmath> versions, serial, for reading and for the tests.
#include "fastnn/activation.h"

#include <cmath>
#include <cstring>

#include "fastnn/common.h"
#include "vmath.h"

namespace fastnn {

namespace {

// y (n) = act(x)
FASTNN_CLONES void act_forward_span(float* y, const float* x, int64_t n, Act act) {
  vmath::act_span(y, x, n, act);
}

// dx (n) += dy ⊙ act'(x or y)
FASTNN_CLONES void act_backward_span(float* dx, const float* dy, const float* x,
                                     const float* y, int64_t n, Act act) {
  vmath::act_grad_span<true>(dx, dy, x, y, n, act);
}

// y (rows,C) = softmax over C of x: max-subtracted, so no exponent exceeds 0.
FASTNN_CLONES void softmax_rows(float* y, const float* x, int64_t rows, int64_t C) {
  if (C < 16) {
    // Rows shorter than a vector (a 10-class output): per row the loops below would run
    // only their scalar remainders (one exp after another, ~100 ns a row). Instead the
    // shifted values of up to 64 rows go to one flat array whose exps are one vectorised
    // loop; each element's exp and each row's sum (in order) are as before.
    constexpr int64_t R = 64;
    float t[R * 16];
    for (int64_t r0 = 0; r0 < rows; r0 += R) {
      const int64_t nr = rows - r0 < R ? rows - r0 : R, n = nr * C;
      const float* xb = x + r0 * C;
      for (int64_t r = 0; r < nr; ++r) {
        const float* xr = xb + r * C;
        float m = xr[0];
        for (int64_t c = 0; c < C; ++c) m = xr[c] > m ? xr[c] : m;
        for (int64_t c = 0; c < C; ++c) t[r * C + c] = xr[c] - m;
      }
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) t[i] = vmath::vexp(t[i]);
      float* yb = y + r0 * C;
      for (int64_t r = 0; r < nr; ++r) {
        float s = 0.0f;
        for (int64_t c = 0; c < C; ++c) s += t[r * C + c];
        const float inv = 1.0f / s;
        for (int64_t c = 0; c < C; ++c) yb[r * C + c] = t[r * C + c] * inv;
      }
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    float m = xr[0];
#pragma omp simd reduction(max : m)
    for (int64_t c = 0; c < C; ++c) m = xr[c] > m ? xr[c] : m;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) {
      const float e = vmath::vexp(xr[c] - m);
      yr[c] = e;
      s += e;
    }
    const float inv = 1.0f / s;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] *= inv;
  }
}

// dx (rows,C) += y ⊙ (dy − Σ_C dy⊙y)
FASTNN_CLONES void softmax_backward_rows(float* dx, const float* dy, const float* y,
                                         int64_t rows, int64_t C) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * C;
    const float* yr = y + r * C;
    float* dxr = dx + r * C;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < C; ++c) dot += dyr[c] * yr[c];
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dxr[c] += yr[c] * (dyr[c] - dot);
  }
}

}  // namespace

// y (n) = act(x)
void act_forward(float* y, const float* x, int64_t n, Act act) {
  parallel_for(n, vmath::elementwise_grain(n, num_threads()), [=](int64_t b, int64_t e) {
    act_forward_span(y + b, x + b, e - b, act);
  });
}

// dx (n) += dy ⊙ act'(x or y)
void act_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n,
                  Act act) {
  parallel_for(n, vmath::elementwise_grain(n, num_threads()), [=](int64_t b, int64_t e) {
    act_backward_span(dx + b, dy + b, x ? x + b : nullptr, y ? y + b : nullptr, e - b, act);
  });
}

// y (N,C) = softmax over C of x
void softmax_forward(float* y, const float* x, int64_t N, int64_t C) {
  parallel_for(N, vmath::row_grain(N, C, num_threads()), [=](int64_t b, int64_t e) {
    softmax_rows(y + b * C, x + b * C, e - b, C);
  });
}

// dx (N,C) += y ⊙ (dy − Σ_C dy⊙y)
void softmax_backward(float* dx, const float* dy, const float* y, int64_t N, int64_t C) {
  parallel_for(N, vmath::row_grain(N, C, num_threads()), [=](int64_t b, int64_t e) {
    softmax_backward_rows(dx + b * C, dy + b * C, y + b * C, e - b, C);
  });
}

// A float is NaN or infinite when its exponent bits are all ones. The test is or-ed over
// the array without a branch or an early exit, so the loop vectorises; it is exact, so it
// needs no plain twin.
FASTNN_CLONES bool all_finite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
  }
  return bad == 0;
}

// ---- plain twins ----------------------------------------------------------------

// y (n) = act(x)
void act_forward_naive(float* y, const float* x, int64_t n, Act act) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    switch (act) {
      case Act::linear: y[i] = v; break;
      case Act::relu: y[i] = v > 0.0f ? v : 0.0f; break;
      case Act::sigmoid: y[i] = vmath::exact_sigmoid(v); break;
      case Act::tanh: y[i] = std::tanh(v); break;
      case Act::gelu: y[i] = vmath::exact_gelu(v); break;
    }
  }
}

// dx (n) += dy ⊙ act'(x or y)
void act_backward_naive(float* dx, const float* dy, const float* x, const float* y,
                        int64_t n, Act act) {
  for (int64_t i = 0; i < n; ++i) {
    float d = 1.0f;
    switch (act) {
      case Act::linear: break;
      case Act::relu: d = y[i] > 0.0f ? 1.0f : 0.0f; break;
      case Act::sigmoid: d = y[i] * (1.0f - y[i]); break;
      case Act::tanh: d = 1.0f - y[i] * y[i]; break;
      case Act::gelu: d = vmath::exact_gelu_grad(x[i]); break;
    }
    dx[i] += dy[i] * d;
  }
}

// y (N,C) = softmax over C of x
void softmax_forward_naive(float* y, const float* x, int64_t N, int64_t C) {
  for (int64_t r = 0; r < N; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    float m = xr[0];
    for (int64_t c = 1; c < C; ++c) m = xr[c] > m ? xr[c] : m;
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      yr[c] = std::exp(xr[c] - m);
      s += yr[c];
    }
    for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<float>(yr[c] / s);
  }
}

// dx (N,C) += y ⊙ (dy − Σ_C dy⊙y)
void softmax_backward_naive(float* dx, const float* dy, const float* y, int64_t N,
                            int64_t C) {
  for (int64_t r = 0; r < N; ++r) {
    double dot = 0.0;
    for (int64_t c = 0; c < C; ++c) dot += double(dy[r * C + c]) * y[r * C + c];
    for (int64_t c = 0; c < C; ++c)
      dx[r * C + c] += y[r * C + c] * (dy[r * C + c] - static_cast<float>(dot));
  }
}

}  // namespace fastnn
