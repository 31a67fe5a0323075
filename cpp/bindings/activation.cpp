// Bindings of activation.h: act_forward, act_backward, softmax_forward, softmax_backward,
// the Act enum, and the plain twins under fastnn._core.plain. Arrays of any rank
// (softmax over the last axis, leading axes flattened into N).
#include "fastnn/activation.h"

#include <algorithm>
#include <string>

#include "check.h"

namespace fastnn::bind {

// ---- helpers also used by the dense and loss bindings ---------------------------

const char* act_name(Act act) {
  switch (act) {
    case Act::linear: return "linear";
    case Act::relu: return "relu";
    case Act::sigmoid: return "sigmoid";
    case Act::tanh: return "tanh";
    case Act::gelu: return "gelu";
  }
  return "?";
}

// Registers fastnn._core.Act once (dense's bindings need it for their defaults).
void bind_act_enum(py::module_& m) {
  if (py::detail::get_type_info(typeid(Act))) return;
  py::enum_<Act>(m, "Act", "Elementwise activation of act_forward/act_backward and dense_*.")
      .value("linear", Act::linear)
      .value("relu", Act::relu)
      .value("sigmoid", Act::sigmoid)
      .value("tanh", Act::tanh)
      .value("gelu", Act::gelu);
}

// fastnn._core.plain: the plain (serial, <cmath>) twins of the tuned kernels, with the
// same signatures and checks; the tests compare both with the NumPy references.
py::module_ plain_module(py::module_& m) {
  if (py::hasattr(m, "plain")) return m.attr("plain").cast<py::module_>();
  return m.def_submodule("plain",
                         "Plain serial twins of the tuned kernels (same signatures), for tests.");
}

// A float32 input of any rank >= min_rank; `doc` names the expected shape.
Buf<float> in_any(const char* op, const char* name, py::handle obj, size_t min_rank,
                  const char* doc) {
  if (!py::isinstance<py::array>(obj))
    fail_type(op, name, std::string("must be a C-contiguous float32 array of shape ") + doc +
                            ", got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
  const size_t nd = std::max<size_t>(py::reinterpret_borrow<py::array>(obj).ndim(), min_rank);
  return in<float>(op, name, obj, std::vector<int64_t>(nd, ANY), doc);
}

namespace {

// An output that may be exactly the input array (same start, same shape) but must not
// partially overlap it.
void alias_or_disjoint(const char* op, const char* out_name, const Buf<float>& o,
                       const char* in_name, const Buf<float>& i) {
  if (o.data != i.data) no_overlap(op, out_name, o, in_name, i);
}

using ActForwardFn = void (*)(float*, const float*, int64_t, Act);
using ActBackwardFn = void (*)(float*, const float*, const float*, const float*, int64_t, Act);
using SoftmaxForwardFn = void (*)(float*, const float*, int64_t, int64_t);
using SoftmaxBackwardFn = void (*)(float*, const float*, const float*, int64_t, int64_t);

void def_all(py::module_& m, ActForwardFn act_fwd, ActBackwardFn act_bwd,
             SoftmaxForwardFn sm_fwd, SoftmaxBackwardFn sm_bwd) {
  m.def(
      "act_forward",
      [act_fwd](py::handle y, py::handle x, Act act) {
        const char* op = "act_forward";
        auto X = in_any(op, "x", x, 0, "(...)");
        auto Y = out<float>(op, "y", y, X.shape, "x.shape");
        alias_or_disjoint(op, "y", Y, "x", X);
        py::gil_scoped_release nogil;
        act_fwd(Y.data, X.data, X.size, act);
      },
      py::arg("y"), py::arg("x"), py::arg("act"),
      "y = act(x), elementwise, any shape. y may be x itself.");

  m.def(
      "act_backward",
      [act_bwd](py::handle dx, py::handle dy, py::handle x, py::handle y, Act act) {
        const char* op = "act_backward";
        auto DY = in_any(op, "dy", dy, 0, "(...)");
        auto DX = out<float>(op, "dx", dx, DY.shape, "dy.shape");
        auto X = in_opt<float>(op, "x", x, DY.shape, "dy.shape");
        auto Y = in_opt<float>(op, "y", y, DY.shape, "dy.shape");
        const std::string a = act_name(act);
        if (act == Act::relu || act == Act::sigmoid || act == Act::tanh)
          require(Y.data != nullptr, op, "y", [&] {
            return "is required for activation " + a + " (the forward output), got None";
          });
        if (act == Act::gelu)
          require(X.data != nullptr, op, "x",
                  "is required for activation gelu (the forward input), got None");
        no_overlap(op, "dx", DX, "dy", DY);
        no_overlap(op, "dx", DX, "x", X);
        no_overlap(op, "dx", DX, "y", Y);
        py::gil_scoped_release nogil;
        act_bwd(DX.data, DY.data, X.data, Y.data, DY.size, act);
      },
      py::arg("dx"), py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("act"),
      "dx += dy * act'(.), elementwise. relu/sigmoid/tanh read y (forward output), gelu "
      "reads x (forward input); the other may be None.");

  m.def(
      "softmax_forward",
      [sm_fwd](py::handle y, py::handle x) {
        const char* op = "softmax_forward";
        auto X = in_any(op, "x", x, 1, "(..., C)");
        auto Y = out<float>(op, "y", y, X.shape, "x.shape");
        alias_or_disjoint(op, "y", Y, "x", X);
        const int64_t C = X.shape.back(), N = X.size / C;
        py::gil_scoped_release nogil;
        sm_fwd(Y.data, X.data, N, C);
      },
      py::arg("y"), py::arg("x"),
      "y = softmax(x) over the last axis (max-subtracted). y may be x itself.");

  m.def(
      "softmax_backward",
      [sm_bwd](py::handle dx, py::handle dy, py::handle y) {
        const char* op = "softmax_backward";
        auto DY = in_any(op, "dy", dy, 1, "(..., C)");
        auto DX = out<float>(op, "dx", dx, DY.shape, "dy.shape");
        auto Y = in<float>(op, "y", y, DY.shape, "dy.shape");
        no_overlap(op, "dx", DX, "dy", DY);
        no_overlap(op, "dx", DX, "y", Y);
        const int64_t C = DY.shape.back(), N = DY.size / C;
        py::gil_scoped_release nogil;
        sm_bwd(DX.data, DY.data, Y.data, N, C);
      },
      py::arg("dx"), py::arg("dy"), py::arg("y"),
      "dx += y * (dy - sum(dy * y, axis=-1, keepdims=True)), y the softmax output.");
}

}  // namespace

void bind_activation(py::module_& m) {
  bind_act_enum(m);
  def_all(m, &fastnn::act_forward, &fastnn::act_backward, &fastnn::softmax_forward,
          &fastnn::softmax_backward);
  m.def(
      "all_finite",
      [](py::handle x) {
        auto X = in_any("all_finite", "x", x, 0, "(...)");
        py::gil_scoped_release nogil;
        return fastnn::all_finite(X.data, X.size);
      },
      py::arg("x"), "Whether x (a C-contiguous float32 array) holds no NaN and no infinity.");
  py::module_ plain = plain_module(m);
  def_all(plain, &fastnn::act_forward_naive, &fastnn::act_backward_naive,
          &fastnn::softmax_forward_naive, &fastnn::softmax_backward_naive);
}

}  // namespace fastnn::bind
