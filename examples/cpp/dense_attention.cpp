// fastnn's kernels from C++: a dense layer forward and backward and an attention forward,
// each checked against a plain loop written here, then the same dense layer on 1 and on
// several threads, compared bit for bit. Prints OK (exit status 0) when everything agrees.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "fastnn/attention.h"
#include "fastnn/common.h"
#include "fastnn/dense.h"
#include "fastnn/version.h"

namespace {

int failures = 0;

// Deterministic values in [-1, 1).
std::vector<float> filled(int64_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1u;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    x = float(s >> 8) / float(1u << 23) - 1.0f;
  }
  return v;
}

void check(const char* what, const std::vector<float>& got, const std::vector<double>& want,
           double tol) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i]));
    if (!(err <= worst)) worst = err;  // also catches NaN
  }
  const bool ok = worst <= tol;
  std::printf("  %-26s max rel. error %.2e %s\n", what, worst, ok ? "ok" : "FAILED");
  if (!ok) ++failures;
}

void dense() {
  const int64_t N = 5, IC = 7, OC = 3;
  const auto x = filled(N * IC, 1), w = filled(IC * OC, 2), b = filled(OC, 3);
  const auto dy = filled(N * OC, 4);
  std::vector<float> y(N * OC), z(N * OC), dz(N * OC);

  // Forward: outputs (y, z), then the input, weights and bias, then the sizes.
  fastnn::dense_forward(y.data(), z.data(), x.data(), w.data(), b.data(), N, IC, OC,
                        fastnn::Act::tanh);

  std::vector<double> z_ref(N * OC), y_ref(N * OC);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      double s = b[o];
      for (int64_t i = 0; i < IC; ++i) s += double(x[n * IC + i]) * w[i * OC + o];
      z_ref[n * OC + o] = s;
      y_ref[n * OC + o] = std::tanh(s);
    }
  check("dense_forward y", y, y_ref, 1e-5);
  check("dense_forward z", z, z_ref, 1e-5);

  // Backward adds into the gradients: start them at 1 to see the +=.
  std::vector<float> dx(N * IC, 1.0f), dw(IC * OC, 1.0f), db(OC, 1.0f);
  fastnn::dense_backward(dx.data(), dw.data(), db.data(), dz.data(), dy.data(), x.data(),
                         w.data(), y.data(), /*z=*/nullptr, N, IC, OC, fastnn::Act::tanh);

  std::vector<double> dz_ref(N * OC), dx_ref(N * IC, 1.0), dw_ref(IC * OC, 1.0), db_ref(OC, 1.0);
  for (int64_t k = 0; k < N * OC; ++k)
    dz_ref[k] = dy[k] * (1.0 - double(y[k]) * y[k]);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      const double g = dz_ref[n * OC + o];
      db_ref[o] += g;
      for (int64_t i = 0; i < IC; ++i) {
        dx_ref[n * IC + i] += g * w[i * OC + o];
        dw_ref[i * OC + o] += double(x[n * IC + i]) * g;
      }
    }
  check("dense_backward dx (+=)", dx, dx_ref, 1e-5);
  check("dense_backward dw (+=)", dw, dw_ref, 1e-5);
  check("dense_backward db (+=)", db, db_ref, 1e-5);

  // nullptr = not needed: only dw this time, added once more.
  fastnn::dense_backward(nullptr, dw.data(), nullptr, dz.data(), dy.data(), x.data(),
                         w.data(), y.data(), nullptr, N, IC, OC, fastnn::Act::tanh);
  for (int64_t k = 0; k < IC * OC; ++k) dw_ref[k] += dw_ref[k] - 1.0;
  check("dense_backward dw only", dw, dw_ref, 1e-5);
}

void attention() {
  // q (N,Tq,NH,D), k and v (N,Tk,NH,D); the last key of sample 1 is padding.
  const int64_t N = 2, Tq = 5, Tk = 6, NH = 2, D = 4;
  const float scale = 1.0f / std::sqrt(float(D));
  const auto q = filled(N * Tq * NH * D, 5), k = filled(N * Tk * NH * D, 6),
             v = filled(N * Tk * NH * D, 7);
  std::vector<uint8_t> mask(N * Tk, 1);
  mask[1 * Tk + Tk - 1] = 0;
  std::vector<float> o(N * Tq * NH * D), lse(N * NH * Tq);

  fastnn::attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), mask.data(),
                            N, Tq, Tk, NH, D, scale, /*causal=*/false);

  std::vector<double> o_ref(o.size(), 0.0), lse_ref(lse.size());
  std::vector<double> s(Tk);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Tk; ++j) {
          double d = 0;
          for (int64_t c = 0; c < D; ++c)
            d += double(q[((n * Tq + i) * NH + h) * D + c]) * k[((n * Tk + j) * NH + h) * D + c];
          s[j] = mask[n * Tk + j] ? scale * d : -std::numeric_limits<double>::infinity();
          if (s[j] > m) m = s[j];
        }
        double sum = 0;
        for (int64_t j = 0; j < Tk; ++j) sum += std::exp(s[j] - m);
        lse_ref[(n * NH + h) * Tq + i] = m + std::log(sum);
        for (int64_t j = 0; j < Tk; ++j) {
          const double p = std::exp(s[j] - m) / sum;
          for (int64_t c = 0; c < D; ++c)
            o_ref[((n * Tq + i) * NH + h) * D + c] += p * v[((n * Tk + j) * NH + h) * D + c];
        }
      }
  check("attention_forward o", o, o_ref, 1e-5);
  check("attention_forward lse", lse, lse_ref, 1e-5);
}

// Every output element is owned by one thread and summed in a fixed order, so the
// results do not depend on the thread count.
void determinism() {
  const int64_t N = 64, IC = 300, OC = 96;
  const auto x = filled(N * IC, 8), w = filled(IC * OC, 9), b = filled(OC, 10);
  const auto dy = filled(N * OC, 11);
  std::vector<float> out[2];
  const int threads[2] = {1, 4};
  for (int r = 0; r < 2; ++r) {
    fastnn::set_num_threads(threads[r]);
    std::vector<float> y(N * OC), dz(N * OC), dx(N * IC, 0.0f), dw(IC * OC, 0.0f), db(OC, 0.0f);
    fastnn::dense_forward(y.data(), nullptr, x.data(), w.data(), b.data(), N, IC, OC,
                          fastnn::Act::relu);
    fastnn::dense_backward(dx.data(), dw.data(), db.data(), dz.data(), dy.data(), x.data(),
                           w.data(), y.data(), nullptr, N, IC, OC, fastnn::Act::relu);
    out[r] = y;
    out[r].insert(out[r].end(), dx.begin(), dx.end());
    out[r].insert(out[r].end(), dw.begin(), dw.end());
    out[r].insert(out[r].end(), db.begin(), db.end());
  }
  const bool same =
      std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)) == 0;
  std::printf("  %-26s %s\n", "1 vs 4 threads bitwise", same ? "ok" : "FAILED");
  if (!same) ++failures;
}

}  // namespace

int main() {
  static_assert(FASTNN_VERSION_MAJOR * 10000 + FASTNN_VERSION_MINOR * 100 +
                    FASTNN_VERSION_PATCH >= 100,
                "this example needs fastnn 0.1.0 or newer");
  std::printf("fastnn %s: OpenMP %s, %d threads, GEMM ISA %s\n", FASTNN_VERSION_STRING,
              fastnn::openmp_enabled() ? "on" : "off", fastnn::num_threads(),
              fastnn::gemm_isa());
  dense();
  attention();
  determinism();
  if (failures) {
    std::printf("FAILED (%d checks)\n", failures);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
