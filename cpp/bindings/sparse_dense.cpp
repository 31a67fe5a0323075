// Bindings of sparse_dense.h: sparse_dense_forward (and its plain twin under
// fastnn._core.plain). x (N, IC), w as CSC: indptr (OC+1,) int32, indices (nnz,) int32,
// values (nnz,) float32; b (OC,) or None; y (N, OC); xt (IC·N,) scratch or None.
#include "fastnn/sparse_dense.h"

#include <string>

#include "check.h"

namespace fastnn::bind {

py::module_ plain_module(py::module_& m);

namespace {

// A 1-D array of nnz entries; nnz = 0 takes an empty array (or None) as "no nonzeros".
template <class T>
Buf<T> nonzeros(const char* op, const char* name, py::handle obj, int64_t nnz) {
  if (nnz == 0) {
    if (obj.is_none()) return {};
    if (py::isinstance<py::array>(obj)) {
      auto a = py::reinterpret_borrow<py::array>(obj);
      if (a.ndim() == 1 && a.shape(0) == 0 && a.dtype().is(py::dtype::of<T>())) return {};
    }
  }
  return in<T>(op, name, obj, {nnz}, "(nnz,) with nnz = indptr[OC]");
}

using Fn = void (*)(float*, float*, const float*, const int32_t*, const int32_t*,
                    const float*, const float*, int64_t, int64_t, int64_t, Act);

void def(py::module_& m, Fn fn) {
  m.def(
      "sparse_dense_forward",
      [fn](py::handle y, py::handle xt, py::handle x, py::handle indptr, py::handle indices,
           py::handle values, py::handle b, Act act) {
        const char* op = "sparse_dense_forward";
        auto X = in<float>(op, "x", x, {ANY, ANY}, "(N, IC)");
        const int64_t N = X[0], IC = X[1];
        auto P = in<int32_t>(op, "indptr", indptr, {ANY}, "(OC + 1,)");
        const int64_t OC = P[0] - 1;
        require(OC >= 1, op, "indptr", "must have OC + 1 >= 2 entries, got 1");
        require(P.data[0] == 0, op, "indptr",
                [&] { return "must start with 0, got " + std::to_string(P.data[0]); });
        for (int64_t o = 0; o < OC; ++o)
          if (P.data[o + 1] < P.data[o])
            fail_value(op, "indptr", "must be non-decreasing; indptr[" + std::to_string(o + 1) +
                                         "] = " + std::to_string(P.data[o + 1]) + " < indptr[" +
                                         std::to_string(o) + "] = " + std::to_string(P.data[o]));
        const int64_t nnz = P.data[OC];
        auto I = nonzeros<int32_t>(op, "indices", indices, nnz);
        auto V = nonzeros<float>(op, "values", values, nnz);
        // Every index must lie in [0, IC): one pass of min/max.
        int32_t lo = 0, hi = 0;
        const int32_t* ip = I.data;
        for (int64_t p = 0; p < nnz; ++p) {
          lo = ip[p] < lo ? ip[p] : lo;
          hi = ip[p] > hi ? ip[p] : hi;
        }
        if (lo < 0 || hi >= IC)
          fail_value(op, "indices", "must lie in [0, IC) = [0, " + std::to_string(IC) +
                                        "), got values in [" + std::to_string(lo) + ", " +
                                        std::to_string(hi) + "]");
        auto B = in_opt<float>(op, "b", b, {OC}, "(OC,)");
        auto Y = out<float>(op, "y", y, {N, OC}, "(N, OC)");
        Buf<float> XT;
        if (N >= kSparseDenseBatchVec)
          XT = out<float>(op, "xt", xt, {sparse_dense_scratch(N, IC)},
                          "(IC * ceil(N / 16) * 16 + 15,) scratch (needed for N >= SPARSE_DENSE_BATCH_VEC)");
        else
          XT = out_opt<float>(op, "xt", xt, {ANY}, "(IC * ceil(N / 16) * 16 + 15,) scratch or None");
        no_overlap_all(op, {{"y", &Y}, {"xt", &XT}},
                       {{"y", &Y}, {"xt", &XT}, {"x", &X}, {"values", &V}, {"b", &B}});
        no_overlap(op, "y", Y, "indptr", P);
        no_overlap(op, "y", Y, "indices", I);
        no_overlap(op, "xt", XT, "indptr", P);
        no_overlap(op, "xt", XT, "indices", I);
        py::gil_scoped_release nogil;
        fn(Y.data, XT.data, X.data, P.data, I.data, V.data, B.data, N, IC, OC, act);
      },
      py::arg("y"), py::arg("xt"), py::arg("x"), py::arg("indptr"), py::arg("indices"),
      py::arg("values"), py::arg("b") = py::none(), py::arg("act") = Act::linear,
      "y (N,OC) = act(x (N,IC) @ w + b) with w (IC,OC) given by column (CSC): the "
      "nonzeros of column o are values[indptr[o]:indptr[o+1]] at rows "
      "indices[indptr[o]:indptr[o+1]]. xt is (IC*ceil(N/16)*16,) float32 scratch, required when "
      "N >= SPARSE_DENSE_BATCH_VEC (None otherwise). indices/values may be empty (or None) when nnz = 0.");
  m.attr("SPARSE_DENSE_BATCH_VEC") = kSparseDenseBatchVec;
}

}  // namespace

void bind_sparse_dense(py::module_& m) {
  def(m, &fastnn::sparse_dense_forward);
  py::module_ plain = plain_module(m);
  def(plain, &fastnn::sparse_dense_forward_naive);
}

}  // namespace fastnn::bind
