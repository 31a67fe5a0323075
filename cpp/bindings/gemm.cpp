#include "fastnn/gemm.h"

#include "check.h"

namespace fastnn::bind {

void bind_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](py::handle c, py::handle a, py::handle b, bool trans_a, bool trans_b,
         bool accumulate) {
        const char* op = "gemm";
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
        fastnn::gemm(C.data, A.data, B.data, M, N, K, trans_a, trans_b, accumulate);
      },
      py::arg("out"), py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
      py::arg("trans_b") = false, py::arg("accumulate") = false,
      "out (M,N) = [out +] op(a) · op(b), float32, no copies.");
}

}  // namespace fastnn::bind
