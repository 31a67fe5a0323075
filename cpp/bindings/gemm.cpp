#include "fastnn/gemm.h"

#include "check.h"

namespace fastnn::bind {

namespace {

using GemmFn = void (*)(float*, const float*, const float*, int64_t, int64_t, int64_t,
                        int64_t, int64_t, int64_t, bool, bool, bool);

using CArray = py::array_t<float, py::array::c_style>;

// Fast accept: a 2-D, C-contiguous, non-empty float32 array (writeable if asked). Any
// other input goes through the shared checkers in check.h, which build the message;
// they are not used for valid input because composing their strings costs ~20 µs, more
// than the whole product at the small shapes of a dense layer.
bool plain_2d(py::handle h, bool writable, int64_t& rows, int64_t& cols) {
  if (!py::isinstance<CArray>(h)) return false;
  auto* p = py::detail::array_proxy(h.ptr());
  if (p->nd != 2 || p->dimensions[0] < 1 || p->dimensions[1] < 1) return false;
  if (writable && !py::detail::check_flags(h.ptr(), py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
    return false;
  rows = p->dimensions[0];
  cols = p->dimensions[1];
  return true;
}

float* data_of(py::handle h) {
  return reinterpret_cast<float*>(py::detail::array_proxy(h.ptr())->data);
}

bool overlaps(const float* o, int64_t on, const float* i, int64_t in) {
  return o < i + in && i < o + on;
}

// Validates out (M,N), a (M,K) or (K,M), b (K,N) or (N,K); then runs fn without the GIL.
void call_gemm(const char* op, GemmFn fn, py::handle c, py::handle a, py::handle b,
               bool trans_a, bool trans_b, bool accumulate) {
  int64_t ar, ac, br, bc, cr, cc;
  if (plain_2d(a, false, ar, ac) && plain_2d(b, false, br, bc) && plain_2d(c, true, cr, cc)) {
    const int64_t M = trans_a ? ac : ar, K = trans_a ? ar : ac;
    const int64_t N = trans_b ? br : bc, Kb = trans_b ? bc : br;
    float *pc = data_of(c), *pa = data_of(a), *pb = data_of(b);
    if (Kb == K && cr == M && cc == N && !overlaps(pc, M * N, pa, M * K) &&
        !overlaps(pc, M * N, pb, K * N)) {
      py::gil_scoped_release nogil;
      fn(pc, pa, pb, M, N, K, N, trans_a ? M : K, trans_b ? K : N, trans_a, trans_b,
         accumulate);
      return;
    }
  }
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

// ops.matmul's fast path: the product of two plain 2-D float32 arrays, into `c` when it
// is a plain 2-D float32 array of the right shape, or into a new array when c is None.
// Returns the result, or None for anything else (other dtypes or layouts, a bad shape,
// overlap, accumulate without c), which ops.matmul then converts or reports in Python.
py::object matmul_plain(py::handle a, py::handle b, bool trans_a, bool trans_b, py::handle c,
                        bool accumulate) {
  int64_t ar, ac, br, bc;
  if (!plain_2d(a, false, ar, ac) || !plain_2d(b, false, br, bc)) return py::none();
  const int64_t M = trans_a ? ac : ar, K = trans_a ? ar : ac;
  const int64_t N = trans_b ? br : bc, Kb = trans_b ? bc : br;
  if (Kb != K) return py::none();
  py::object result;
  if (c.is_none()) {
    if (accumulate) return py::none();
    result = CArray({M, N});
  } else {
    int64_t cr, cc;
    if (!plain_2d(c, true, cr, cc) || cr != M || cc != N) return py::none();
    result = py::reinterpret_borrow<py::object>(c);
  }
  float *pc = data_of(result), *pa = data_of(a), *pb = data_of(b);
  if (overlaps(pc, M * N, pa, M * K) || overlaps(pc, M * N, pb, K * N)) return py::none();
  {
    py::gil_scoped_release nogil;
    gemm_ld(pc, pa, pb, M, N, K, N, trans_a ? M : K, trans_b ? K : N, trans_a, trans_b,
            accumulate);
  }
  return result;
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("matmul_plain", &matmul_plain, py::arg("a"), py::arg("b"), py::arg("trans_a"),
        py::arg("trans_b"), py::arg("out"), py::arg("accumulate"),
        "op(a) @ op(b) for plain 2-D float32 arrays (into out, or a new array when out is "
        "None); None when the inputs need fastnn.ops.matmul's conversions or checks.");
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
