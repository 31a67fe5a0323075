#include "fastnn/gemm.h"

#include "check.h"

namespace fastnn::bind {

namespace {

using GemmFn = void (*)(float*, const float*, const float*, int64_t, int64_t, int64_t,
                        int64_t, int64_t, int64_t, bool, bool, bool);

// Validates out (M,N), a (M,K) or (K,M), b (K,N) or (N,K); then runs fn without the GIL.
void call_gemm(const char* op, GemmFn fn, py::handle c, py::handle a, py::handle b,
               bool trans_a, bool trans_b, bool accumulate) {
  auto A = in<float>(op, "a", a, {ANY, ANY}, trans_a ? "(K, M)" : "(M, K)");
  const int64_t M = trans_a ? A[1] : A[0], K = trans_a ? A[0] : A[1];
  auto B = in<float>(op, "b", b, trans_b ? std::vector<int64_t>{ANY, K}
                                         : std::vector<int64_t>{K, ANY},
                     trans_b ? "(N, K)" : "(K, N)");
  const int64_t N = trans_b ? B[0] : B[1];
  auto C = out<float>(op, "out", c, {M, N}, "(M, N)");
  no_overlap(op, "out", C, "a", A);
  no_overlap(op, "out", C, "b", B);
  py::gil_scoped_release nogil;
  fn(C.data, A.data, B.data, M, N, K, N, trans_a ? M : K, trans_b ? K : N, trans_a, trans_b,
     accumulate);
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](py::handle c, py::handle a, py::handle b, bool trans_a, bool trans_b,
         bool accumulate) {
        call_gemm("gemm", &fastnn::gemm_ld, c, a, b, trans_a, trans_b, accumulate);
      },
      py::arg("out"), py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
      py::arg("trans_b") = false, py::arg("accumulate") = false,
      "out (M,N) = [out +] op(a) · op(b), float32, no copies.");
  m.def(
      "gemm_naive",
      [](py::handle c, py::handle a, py::handle b, bool trans_a, bool trans_b,
         bool accumulate) {
        call_gemm("gemm_naive", &fastnn::gemm_naive, c, a, b, trans_a, trans_b, accumulate);
      },
      py::arg("out"), py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
      py::arg("trans_b") = false, py::arg("accumulate") = false,
      "gemm's plain triple-loop twin (same arguments), for tests.");
}

}  // namespace fastnn::bind
