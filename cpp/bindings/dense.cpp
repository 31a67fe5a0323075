// Bindings of dense.h: dense_forward, dense_backward (and their plain twins under
// fastnn._core.plain). 2-D arrays: x (N, IC), w (IC, OC), b (OC,), y/z/dy/dz (N, OC).
#include "fastnn/dense.h"

#include <string>
#include <utility>

#include "check.h"

namespace fastnn::bind {

// Defined in bindings/activation.cpp.
const char* act_name(Act act);
void bind_act_enum(py::module_& m);
py::module_ plain_module(py::module_& m);

namespace {

// What the backward of activation `act` reads: dz scratch (unless linear), y (relu,
// sigmoid, tanh) or z (gelu). The messages are built only on failure.
void check_act_buffers(const char* op, Act act, const Buf<float>& DZ, const Buf<float>& Y,
                       const Buf<float>& Z) {
  const bool needs_y = act == Act::relu || act == Act::sigmoid || act == Act::tanh;
  if (act != Act::linear && !DZ.data)
    fail_value(op, "dz", std::string("(N, OC) scratch is required for activation ") +
                             act_name(act) + ", got None");
  if (needs_y && !Y.data)
    fail_value(op, "y", std::string("is required for activation ") + act_name(act) +
                            " (the forward output), got None");
  if (act == Act::gelu && !Z.data)
    fail_value(op, "z", "is required for activation gelu (the forward pre-activation), got None");
}

// The arrays of a forward call, checked: x (N,IC), w (IC,OC), b (OC,) or None, y (N,OC),
// z (N,OC) or None.
struct Forward {
  Buf<float> X, W, B, Y, Z;
  int64_t N, IC, OC;
};

Forward forward_args(const char* op, py::handle y, py::handle z, py::handle x, py::handle w,
                     py::handle b) {
  Forward f;
  f.X = in<float>(op, "x", x, {ANY, ANY}, "(N, IC)");
  f.N = f.X[0], f.IC = f.X[1];
  f.W = in<float>(op, "w", w, {f.IC, ANY}, "(IC, OC)");
  f.OC = f.W[1];
  f.B = in_opt<float>(op, "b", b, {f.OC}, "(OC,)");
  f.Y = out<float>(op, "y", y, {f.N, f.OC}, "(N, OC)");
  f.Z = out_opt<float>(op, "z", z, {f.N, f.OC}, "(N, OC)");
  return f;
}

using DenseForwardFn = void (*)(float*, float*, const float*, const float*, const float*,
                                int64_t, int64_t, int64_t, Act);
using DenseBackwardFn = void (*)(float*, float*, float*, float*, const float*, const float*,
                                 const float*, const float*, const float*, int64_t, int64_t,
                                 int64_t, Act, bool, bool);

void def_all(py::module_& m, DenseForwardFn fwd, DenseBackwardFn bwd) {
  m.def(
      "dense_forward",
      [fwd](py::handle y, py::handle z, py::handle x, py::handle w, py::handle b, Act act) {
        const char* op = "dense_forward";
        const Forward f = forward_args(op, y, z, x, w, b);
        const auto &X = f.X, &W = f.W, &B = f.B, &Y = f.Y, &Z = f.Z;
        const int64_t N = f.N, IC = f.IC, OC = f.OC;
        no_overlap(op, "y", Y, "x", X);
        no_overlap(op, "y", Y, "w", W);
        no_overlap(op, "y", Y, "b", B);
        no_overlap(op, "y", Y, "z", Z);
        no_overlap(op, "z", Z, "x", X);
        no_overlap(op, "z", Z, "w", W);
        no_overlap(op, "z", Z, "b", B);
        py::gil_scoped_release nogil;
        fwd(Y.data, Z.data, X.data, W.data, B.data, N, IC, OC, act);
      },
      py::arg("y"), py::arg("z"), py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
      py::arg("act") = Act::linear,
      "y (N,OC) = act(x (N,IC) @ w (IC,OC) + b (OC,)). z (N,OC), unless None, receives the "
      "pre-activation x @ w + b (gelu's backward needs it). b may be None.");

  m.def(
      "dense_backward",
      [bwd](py::handle dx, py::handle dw, py::handle db, py::handle dz, py::handle dy,
            py::handle x, py::handle w, py::handle y, py::handle z, Act act, bool accumulate,
            bool accumulate_dx) {
        const char* op = "dense_backward";
        auto W = in<float>(op, "w", w, {ANY, ANY}, "(IC, OC)");
        const int64_t IC = W[0], OC = W[1];
        auto DY = in<float>(op, "dy", dy, {ANY, OC}, "(N, OC)");
        const int64_t N = DY[0];
        auto X = in<float>(op, "x", x, {N, IC}, "(N, IC)");
        auto Y = in_opt<float>(op, "y", y, {N, OC}, "(N, OC)");
        auto Z = in_opt<float>(op, "z", z, {N, OC}, "(N, OC)");
        auto DX = out_opt<float>(op, "dx", dx, {N, IC}, "(N, IC)");
        auto DW = out_opt<float>(op, "dw", dw, {IC, OC}, "(IC, OC)");
        auto DB = out_opt<float>(op, "db", db, {OC}, "(OC,)");
        auto DZ = out_opt<float>(op, "dz", dz, {N, OC}, "(N, OC)");
        check_act_buffers(op, act, DZ, Y, Z);
        // Gradient outputs: disjoint from each other and from everything read.
        no_overlap_all(op, {{"dx", &DX}, {"dw", &DW}, {"db", &DB}},
                       {{"dx", &DX}, {"dw", &DW}, {"db", &DB}, {"dz", &DZ}, {"dy", &DY}, {"x", &X},
                        {"w", &W}, {"y", &Y}, {"z", &Z}});
        // dz may be dy itself (which is then overwritten), nothing else.
        if (DZ.data != DY.data) no_overlap(op, "dz", DZ, "dy", DY);
        no_overlap(op, "dz", DZ, "x", X);
        no_overlap(op, "dz", DZ, "w", W);
        no_overlap(op, "dz", DZ, "y", Y);
        no_overlap(op, "dz", DZ, "z", Z);
        py::gil_scoped_release nogil;
        bwd(DX.data, DW.data, DB.data, DZ.data, DY.data, X.data, W.data, Y.data, Z.data, N,
            IC, OC, act, accumulate, accumulate_dx);
      },
      py::arg("dx"), py::arg("dw"), py::arg("db"), py::arg("dz"), py::arg("dy"), py::arg("x"),
      py::arg("w"), py::arg("y") = py::none(), py::arg("z") = py::none(),
      py::arg("act") = Act::linear, py::arg("accumulate") = true,
      py::arg("accumulate_dx") = true,
      "With dz = dy * act'(.): dx (N,IC) += dz @ w.T; dw (IC,OC) += x.T @ dz; db (OC,) += "
      "dz.sum(0); accumulate=False overwrites dw and db (=) instead, accumulate_dx=False dx. "
      "Any of dx, dw, db may "
      "be None (not computed). dz is (N,OC) scratch, "
      "required unless act is linear; it may be dy itself, which is then overwritten. "
      "relu/sigmoid/tanh read y (forward output), gelu reads z (pre-activation).");
}

// The sparse-input pair (dense.h): tuned only; their twins are the dense ones.
void def_sparse(py::module_& m) {
  m.def(
      "dense_forward_sparse",
      [](py::handle y, py::handle z, py::handle cols, py::handle xc, py::handle x,
         py::handle w, py::handle b, Act act) {
        const char* op = "dense_forward_sparse";
        const Forward f = forward_args(op, y, z, x, w, b);
        const auto &X = f.X, &W = f.W, &B = f.B, &Y = f.Y, &Z = f.Z;
        const int64_t N = f.N, IC = f.IC, OC = f.OC;
        auto COLS = out<int32_t>(op, "cols", cols, {IC}, "(IC,)");
        auto XC = out<float>(op, "xc", xc, {N, IC}, "(N, IC)");
        no_overlap_all(op, {{"y", &Y}, {"z", &Z}, {"xc", &XC}},
                       {{"y", &Y}, {"z", &Z}, {"xc", &XC}, {"x", &X}, {"w", &W}, {"b", &B}});
        py::gil_scoped_release nogil;
        return dense_forward_sparse(Y.data, Z.data, COLS.data, XC.data, X.data, W.data,
                                    B.data, N, IC, OC, act);
      },
      py::arg("y"), py::arg("z"), py::arg("cols"), py::arg("xc"), py::arg("x"), py::arg("w"),
      py::arg("b") = py::none(), py::arg("act") = Act::linear,
      "dense_forward over the nonzero columns of x only. cols (IC,) int32 receives their "
      "indices; when there are nk of them with 0 < nk <= 3/4 IC, xc (N,IC) receives "
      "x[:, cols] in its first N*nk floats (as (N,nk)), y = act(xc @ w[cols] + b) and nk "
      "is returned; otherwise it is dense_forward on x and w and returns 0.");

  m.def(
      "dense_backward_sparse",
      [](py::handle dw, py::handle db, py::handle dz, py::handle dwc, py::handle dy,
         py::handle cols, int64_t nk, py::handle xc, py::handle y, py::handle z, Act act,
         bool accumulate) {
        const char* op = "dense_backward_sparse";
        auto DY = in<float>(op, "dy", dy, {ANY, ANY}, "(N, OC)");
        const int64_t N = DY[0], OC = DY[1];
        auto COLS = in<int32_t>(op, "cols", cols, {ANY}, "(IC,)");
        const int64_t IC = COLS[0];
        if (nk < 1 || nk > IC)
          fail_value(op, "nk", "must be in [1, IC] = [1, " + std::to_string(IC) + "], got " +
                                   std::to_string(nk));
        bool ascending = true;
        for (int64_t j = 0; j < nk; ++j)
          ascending = ascending && COLS.data[j] >= (j ? COLS.data[j - 1] + 1 : 0) &&
                      COLS.data[j] < IC;
        if (!ascending)
          fail_value(op, "cols", "must start with nk ascending column indices in [0, IC)");
        auto XC = in<float>(op, "xc", xc, {N, IC}, "(N, IC)");
        auto Y = in_opt<float>(op, "y", y, {N, OC}, "(N, OC)");
        auto Z = in_opt<float>(op, "z", z, {N, OC}, "(N, OC)");
        auto DW = out_opt<float>(op, "dw", dw, {IC, OC}, "(IC, OC)");
        auto DB = out_opt<float>(op, "db", db, {OC}, "(OC,)");
        auto DZ = out_opt<float>(op, "dz", dz, {N, OC}, "(N, OC)");
        auto DWC = out<float>(op, "dwc", dwc, {IC, OC}, "(IC, OC)");
        check_act_buffers(op, act, DZ, Y, Z);
        no_overlap_all(op, {{"dw", &DW}, {"db", &DB}, {"dwc", &DWC}},
                       {{"dw", &DW}, {"db", &DB}, {"dwc", &DWC}, {"dz", &DZ}, {"dy", &DY},
                        {"xc", &XC}, {"y", &Y}, {"z", &Z}});
        if (DZ.data != DY.data) no_overlap(op, "dz", DZ, "dy", DY);
        no_overlap(op, "dz", DZ, "xc", XC);
        no_overlap(op, "dz", DZ, "y", Y);
        no_overlap(op, "dz", DZ, "z", Z);
        py::gil_scoped_release nogil;
        dense_backward_sparse(DW.data, DB.data, DZ.data, DWC.data, DY.data, COLS.data, nk,
                              XC.data, Y.data, Z.data, N, IC, OC, act, accumulate);
      },
      py::arg("dw"), py::arg("db"), py::arg("dz"), py::arg("dwc"), py::arg("dy"),
      py::arg("cols"), py::arg("nk"), py::arg("xc"), py::arg("y") = py::none(),
      py::arg("z") = py::none(), py::arg("act") = Act::linear, py::arg("accumulate") = true,
      "Backward of a gathered dense_forward_sparse (it returned nk > 0): with dz = dy * "
      "act'(.), db += dz.sum(0) and dw[cols[:nk]] += xc_nk.T @ dz, where xc_nk is the "
      "first N*nk floats of xc as (N, nk). dwc (IC,OC) is scratch. dw, db may be None. "
      "accumulate=False overwrites db and every row of dw (0 outside cols[:nk]).");
}

}  // namespace

void bind_dense(py::module_& m) {
  bind_act_enum(m);
  def_all(m, &fastnn::dense_forward, &fastnn::dense_backward);
  def_sparse(m);
  py::module_ plain = plain_module(m);
  def_all(plain, &fastnn::dense_forward_naive, &fastnn::dense_backward_naive);
}

}  // namespace fastnn::bind
