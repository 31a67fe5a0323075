#include "fastnn/optim.h"

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "check.h"

namespace fastnn::bind {

namespace {

// Every dimension of obj's shape as a wildcard, so parameters of any shape are accepted;
// the other buffers of the step must then have exactly that shape.
std::vector<int64_t> any_shape(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return {ANY};  // get() then names the wrong type
  return std::vector<int64_t>(size_t(py::reinterpret_borrow<py::array>(obj).ndim()), ANY);
}

std::string num(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

// Hyper-parameter checks; each raises ValueError "<op>: argument '<name>' must ..., got x".
// The message is only built on failure: these run on every optimizer step.
void finite_at_least(const char* op, const char* name, float x, double lo) {
  if (!(std::isfinite(x) && x >= lo))
    fail_value(op, name, "must be a finite number >= " + num(lo) + ", got " + num(x));
}
void positive(const char* op, const char* name, float x) {
  if (!(std::isfinite(x) && x > 0.0f))
    fail_value(op, name, "must be a finite number > 0, got " + num(x));
}
void unit_interval(const char* op, const char* name, float x) {
  if (!(x >= 0.0f && x < 1.0f))
    fail_value(op, name, "must be in [0, 1) (as float32), got " + num(x));
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def(
      "sgd_step",
      [](py::handle params, py::handle velocity, py::handle grads, float lr,
         float momentum, bool nesterov, float weight_decay, bool zero_grads) {
        const char* op = "sgd_step";
        auto P = out<float>(op, "params", params, any_shape(params), "(...)");
        auto V = out_opt<float>(op, "velocity", velocity, P.shape, "like params");
        auto G = get<float>(op, "grads", grads, P.shape, "like params", zero_grads);
        finite_at_least(op, "lr", lr, 0.0);
        unit_interval(op, "momentum", momentum);
        finite_at_least(op, "weight_decay", weight_decay, 0.0);
        if (nesterov && momentum == 0.0f)
          fail_value(op, "nesterov", "needs momentum > 0 (got momentum = 0)");
        if (momentum != 0.0f && !V.data)
          fail_value(op, "velocity",
                     "is required when momentum > 0 (a float32 array like params, zeros at "
                     "the first step)");
        no_overlap(op, "params", P, "grads", G);
        no_overlap(op, "velocity", V, "params", P);
        no_overlap(op, "velocity", V, "grads", G);
        py::gil_scoped_release nogil;
        fastnn::sgd_step(P.data, momentum == 0.0f ? nullptr : V.data, G.data, P.size, lr,
                         momentum, nesterov, weight_decay, zero_grads);
      },
      py::arg("params"), py::arg("velocity"), py::arg("grads"), py::arg("lr"),
      py::arg("momentum") = 0.0f, py::arg("nesterov") = false,
      py::arg("weight_decay") = 0.0f, py::arg("zero_grads") = false,
      "In place SGD step on float32 params (any shape), velocity (like params, or None "
      "when momentum == 0) and grads (like params; set to 0 after use when zero_grads, "
      "then it must be writeable). PyTorch's torch.optim.SGD formulas.");

  m.def(
      "adam_step",
      [](py::handle params, py::handle m_, py::handle v_, py::handle grads, float lr,
         float beta1, float beta2, float eps, float weight_decay, bool decoupled,
         int64_t step, bool zero_grads) {
        const char* op = "adam_step";
        auto P = out<float>(op, "params", params, any_shape(params), "(...)");
        auto M = out<float>(op, "m", m_, P.shape, "like params");
        auto V = out<float>(op, "v", v_, P.shape, "like params");
        auto G = get<float>(op, "grads", grads, P.shape, "like params", zero_grads);
        finite_at_least(op, "lr", lr, 0.0);
        unit_interval(op, "beta1", beta1);
        unit_interval(op, "beta2", beta2);
        positive(op, "eps", eps);
        finite_at_least(op, "weight_decay", weight_decay, 0.0);
        if (step < 1)
          fail_value(op, "step",
                     "must be >= 1 (the 1-based count of steps taken, including this one), "
                     "got " + std::to_string(step));
        no_overlap(op, "params", P, "m", M);
        no_overlap(op, "params", P, "v", V);
        no_overlap(op, "params", P, "grads", G);
        no_overlap(op, "m", M, "v", V);
        no_overlap(op, "m", M, "grads", G);
        no_overlap(op, "v", V, "grads", G);
        py::gil_scoped_release nogil;
        fastnn::adam_step(P.data, M.data, V.data, G.data, P.size, lr, beta1, beta2, eps,
                          weight_decay, decoupled, step, zero_grads);
      },
      py::arg("params"), py::arg("m"), py::arg("v"), py::arg("grads"), py::arg("lr"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
      py::arg("decoupled"), py::arg("step"), py::arg("zero_grads") = false,
      "In place Adam (decoupled=False, L2 weight decay) or AdamW (decoupled=True) step on "
      "float32 params (any shape) and m, v, grads like params; step is 1-based; grads set "
      "to 0 after use when zero_grads. PyTorch's torch.optim.Adam / AdamW formulas.");

  m.def(
      "adagrad_step",
      [](py::handle params, py::handle accum, py::handle grads, float lr, float eps,
         float weight_decay, bool zero_grads) {
        const char* op = "adagrad_step";
        auto P = out<float>(op, "params", params, any_shape(params), "(...)");
        auto A = out<float>(op, "accum", accum, P.shape, "like params");
        auto G = get<float>(op, "grads", grads, P.shape, "like params", zero_grads);
        finite_at_least(op, "lr", lr, 0.0);
        positive(op, "eps", eps);
        finite_at_least(op, "weight_decay", weight_decay, 0.0);
        no_overlap(op, "params", P, "accum", A);
        no_overlap(op, "params", P, "grads", G);
        no_overlap(op, "accum", A, "grads", G);
        py::gil_scoped_release nogil;
        fastnn::adagrad_step(P.data, A.data, G.data, P.size, lr, eps, weight_decay,
                             zero_grads);
      },
      py::arg("params"), py::arg("accum"), py::arg("grads"), py::arg("lr"), py::arg("eps"),
      py::arg("weight_decay") = 0.0f, py::arg("zero_grads") = false,
      "In place AdaGrad step on float32 params (any shape), accum and grads (like params; "
      "set to 0 after use when zero_grads). PyTorch's torch.optim.Adagrad formulas (no lr "
      "decay).");
}

}  // namespace fastnn::bind
