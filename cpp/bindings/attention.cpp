#include "fastnn/attention.h"

#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

#include "check.h"

namespace fastnn::bind {

namespace {

using ForwardFn = void (*)(float*, float*, const float*, const float*, const float*,
                           const uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t, float,
                           bool);
using BackwardFn = void (*)(float*, float*, float*, const float*, const float*, const float*,
                            const float*, const float*, const float*, const uint8_t*, int64_t,
                            int64_t, int64_t, int64_t, int64_t, float, bool, bool);

// Head size D = C / num_heads, with num_heads ≥ 1 dividing C.
int64_t head_dim(const char* op, int64_t C, int64_t num_heads) {
  require(num_heads >= 1, op, "num_heads",
          [&] { return "must be >= 1, got " + std::to_string(num_heads); });
  require(C % num_heads == 0, op, "num_heads", [&] {
    return "must divide the channel count C = " + std::to_string(C) +
           " of q, k and v (C = num_heads·D), got " + std::to_string(num_heads);
  });
  return C / num_heads;
}

// None → 1/√D; otherwise a finite number.
float get_scale(const char* op, std::optional<double> scale, int64_t D) {
  if (!scale) return float(1.0 / std::sqrt(double(D)));
  require(std::isfinite(*scale) && std::isfinite(float(*scale)), op, "scale", [&] {
    std::ostringstream s;
    s << "must be a finite number or None (1/sqrt(D)), got " << *scale;
    return s.str();
  });
  return float(*scale);
}

struct Inputs {
  Buf<float> q, k, v;
  Buf<uint8_t> mask;
  int64_t N, Tq, Tk, C, NH, D;
};

// q (N,Tq,C), k and v (N,Tk,C), mask (N,Tk) or None.
Inputs get_inputs(const char* op, py::handle q, py::handle k, py::handle v, py::handle mask,
                  int64_t num_heads) {
  Inputs x;
  x.q = in<float>(op, "q", q, {ANY, ANY, ANY}, "(N, Tq, C)");
  x.N = x.q[0];
  x.Tq = x.q[1];
  x.C = x.q[2];
  x.k = in<float>(op, "k", k, {x.N, ANY, x.C}, "(N, Tk, C)");
  x.Tk = x.k[1];
  x.v = in<float>(op, "v", v, {x.N, x.Tk, x.C}, "(N, Tk, C)");
  x.mask = in_opt<uint8_t>(op, "mask", mask, {x.N, x.Tk}, "(N, Tk)");
  x.NH = num_heads;
  x.D = head_dim(op, x.C, num_heads);
  return x;
}

template <class A>
void not_over_inputs(const char* op, const char* name, const Buf<A>& o, const Inputs& x) {
  no_overlap(op, name, o, "q", x.q);
  no_overlap(op, name, o, "k", x.k);
  no_overlap(op, name, o, "v", x.v);
  no_overlap(op, name, o, "mask", x.mask);
}

void def_forward(py::module_& m, const char* name, ForwardFn fn, const char* doc) {
  m.def(
      name,
      [name, fn](py::handle o, py::handle lse, py::handle q, py::handle k, py::handle v,
                 py::handle mask, int64_t num_heads, bool causal,
                 std::optional<double> scale) {
        const char* op = name;
        const Inputs x = get_inputs(op, q, k, v, mask, num_heads);
        auto O = out<float>(op, "out", o, {x.N, x.Tq, x.C}, "(N, Tq, C)");
        auto L = out_opt<float>(op, "lse", lse, {x.N, x.NH, x.Tq}, "(N, NH, Tq)");
        const float sc = get_scale(op, scale, x.D);
        not_over_inputs(op, "out", O, x);
        not_over_inputs(op, "lse", L, x);
        no_overlap(op, "lse", L, "out", O);
        py::gil_scoped_release nogil;
        fn(O.data, L.data, x.q.data, x.k.data, x.v.data, x.mask.data, x.N, x.Tq, x.Tk, x.NH,
           x.D, sc, causal);
      },
      py::arg("out"), py::arg("lse"), py::arg("q"), py::arg("k"), py::arg("v"),
      py::arg("mask") = py::none(), py::arg("num_heads") = 1, py::arg("causal") = false,
      py::arg("scale") = py::none(), doc);
}

void def_backward(py::module_& m, const char* name, BackwardFn fn, const char* doc) {
  m.def(
      name,
      [name, fn](py::handle dq, py::handle dk, py::handle dv, py::handle dout, py::handle o,
                 py::handle lse, py::handle q, py::handle k, py::handle v, py::handle mask,
                 int64_t num_heads, bool causal, std::optional<double> scale,
                 bool accumulate) {
        const char* op = name;
        const Inputs x = get_inputs(op, q, k, v, mask, num_heads);
        auto DO = in<float>(op, "dout", dout, {x.N, x.Tq, x.C}, "(N, Tq, C)");
        auto O = in<float>(op, "o", o, {x.N, x.Tq, x.C}, "(N, Tq, C)");
        auto L = in<float>(op, "lse", lse, {x.N, x.NH, x.Tq}, "(N, NH, Tq)");
        auto DQ = out_opt<float>(op, "dq", dq, {x.N, x.Tq, x.C}, "(N, Tq, C)");
        auto DK = out_opt<float>(op, "dk", dk, {x.N, x.Tk, x.C}, "(N, Tk, C)");
        auto DV = out_opt<float>(op, "dv", dv, {x.N, x.Tk, x.C}, "(N, Tk, C)");
        const float sc = get_scale(op, scale, x.D);
        const std::pair<const char*, const Buf<float>*> grads[] = {
            {"dq", &DQ}, {"dk", &DK}, {"dv", &DV}};
        for (const auto& [gname, g] : grads) {
          not_over_inputs(op, gname, *g, x);
          no_overlap(op, gname, *g, "dout", DO);
          no_overlap(op, gname, *g, "o", O);
          no_overlap(op, gname, *g, "lse", L);
        }
        no_overlap(op, "dq", DQ, "dk", DK);
        no_overlap(op, "dq", DQ, "dv", DV);
        no_overlap(op, "dk", DK, "dv", DV);
        py::gil_scoped_release nogil;
        fn(DQ.data, DK.data, DV.data, DO.data, O.data, L.data, x.q.data, x.k.data, x.v.data,
           x.mask.data, x.N, x.Tq, x.Tk, x.NH, x.D, sc, causal, accumulate);
      },
      py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("dout"), py::arg("o"),
      py::arg("lse"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
      py::arg("num_heads") = 1, py::arg("causal") = false, py::arg("scale") = py::none(),
      py::arg("accumulate") = true, doc);
}

}  // namespace

void bind_attention(py::module_& m) {
  def_forward(m, "attention_forward", &fastnn::attention_forward,
              "Fused attention core. q (N,Tq,C), k and v (N,Tk,C) with C = num_heads·D, "
              "float32 C-contiguous; mask (N,Tk) uint8 key padding (1 attend, 0 masked) or "
              "None; causal: key j visible to query i iff j <= i; scale None = 1/sqrt(D). "
              "Writes out (N,Tq,C) and, unless None, lse (N,num_heads,Tq) (+inf for a row "
              "with no visible key, whose out row is 0). Memory O(T), no copies.");
  def_forward(m, "attention_forward_naive", &fastnn::attention_forward_naive,
              "Plain twin of attention_forward (same arguments), for tests.");
  def_backward(m, "attention_backward", &fastnn::attention_backward,
               "Backward of attention_forward: dq (N,Tq,C), dk and dv (N,Tk,C) += "
               "gradients (each may be None; accumulate=False overwrites them) from dout "
               "(N,Tq,C) and the forward's o and lse; other arguments as attention_forward.");
  def_backward(m, "attention_backward_naive", &fastnn::attention_backward_naive,
               "Plain twin of attention_backward (same arguments), for tests.");
}

}  // namespace fastnn::bind
