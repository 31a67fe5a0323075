// Bindings of embedding.h: ids (N, T) int32, table w (V, C), optional position table
// pos (T, C), output y / gradient dy (N, T, C). Every id is checked to lie in [0, V).
#include "fastnn/embedding.h"

#include <string>

#include "check.h"

namespace fastnn::bind {

namespace {

// Raises ValueError naming the first id outside [0, V).
void check_ids(const char* op, const Buf<int32_t>& ids, int64_t V) {
  const int32_t* p = ids.data;
  for (int64_t i = 0; i < ids.size; ++i) {
    if (p[i] < 0 || static_cast<int64_t>(p[i]) >= V) {
      const int64_t T = ids[1];
      fail_value(op, "ids",
                 "holds id " + std::to_string(p[i]) + " at [" + std::to_string(i / T) + ", " +
                     std::to_string(i % T) + "], outside [0, V) = [0, " + std::to_string(V) +
                     ") for a table of V = " + std::to_string(V) + " rows");
    }
  }
}

}  // namespace

void bind_embedding(py::module_& m) {
  m.def(
      "embedding_forward",
      [](py::handle y, py::handle ids, py::handle w, py::handle pos, bool naive) {
        const char* op = "embedding_forward";
        auto I = in<int32_t>(op, "ids", ids, {ANY, ANY}, "(N, T)");
        const int64_t N = I[0], T = I[1];
        auto W = in<float>(op, "w", w, {ANY, ANY}, "(V, C)");
        const int64_t V = W[0], C = W[1];
        auto P = in_opt<float>(op, "pos", pos, {T, C}, "(T, C)");
        auto Y = out<float>(op, "y", y, {N, T, C}, "(N, T, C)");
        no_overlap(op, "y", Y, "w", W);
        no_overlap(op, "y", Y, "pos", P);
        no_overlap(op, "y", Y, "ids", I);
        check_ids(op, I, V);
        py::gil_scoped_release nogil;
        (naive ? embedding_forward_naive : embedding_forward)(Y.data, I.data, W.data, P.data,
                                                              N, T, V, C);
      },
      py::arg("y"), py::arg("ids"), py::arg("w"), py::arg("pos") = py::none(),
      py::arg("naive") = false,
      "y (N,T,C) = w (V,C)[ids (N,T)] (+ pos (T,C) when not None). ids int32, each in "
      "[0, V) (checked). naive=True runs the plain twin.");

  m.def(
      "embedding_backward",
      [](py::handle dw, py::handle dpos, py::handle dy, py::handle ids, bool naive) {
        const char* op = "embedding_backward";
        auto I = in<int32_t>(op, "ids", ids, {ANY, ANY}, "(N, T)");
        const int64_t N = I[0], T = I[1];
        auto DY = in<float>(op, "dy", dy, {N, T, ANY}, "(N, T, C)");
        const int64_t C = DY[2];
        auto DW = out_opt<float>(op, "dw", dw, {ANY, C}, "(V, C)");
        auto DP = out_opt<float>(op, "dpos", dpos, {T, C}, "(T, C)");
        const int64_t V = DW.data ? DW[0] : 0;
        no_overlap(op, "dw", DW, "dy", DY);
        no_overlap(op, "dw", DW, "ids", I);
        no_overlap(op, "dpos", DP, "dy", DY);
        no_overlap(op, "dpos", DP, "ids", I);
        no_overlap(op, "dpos", DP, "dw", DW);
        if (DW.data) check_ids(op, I, V);
        py::gil_scoped_release nogil;
        (naive ? embedding_backward_naive : embedding_backward)(DW.data, DP.data, DY.data,
                                                                I.data, N, T, V, C);
      },
      py::arg("dw"), py::arg("dpos"), py::arg("dy"), py::arg("ids"), py::arg("naive") = false,
      "dw (V,C) += dy (N,T,C) rows scattered by ids (N,T) (repeated ids add up, in a fixed "
      "order); dpos (T,C) += dy summed over N. Either may be None. naive=True runs the "
      "plain twin.");
}

}  // namespace fastnn::bind
