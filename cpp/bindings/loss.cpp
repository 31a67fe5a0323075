// Bindings of loss.h (and the plain twins under fastnn._core.plain). Each returns the SUM
// of the per-row (per-element) losses as a Python float and, unless the gradient is None,
// adds grad_scale * d(loss)/d(input) into it.
#include "fastnn/loss.h"

#include <cmath>
#include <string>

#include "check.h"

namespace fastnn::bind {

// Defined in bindings/activation.cpp.
py::module_ plain_module(py::module_& m);
Buf<float> in_any(const char* op, const char* name, py::handle obj, size_t min_rank,
                  const char* doc);

namespace {

void check_scale(const char* op, float grad_scale) {
  require(std::isfinite(grad_scale), op, "grad_scale",
          [&] { return "must be finite, got " + std::to_string(grad_scale); });
}

using XentFn = double (*)(float*, float*, const float*, const int32_t*, int64_t, int64_t,
                          float);
using XentDenseFn = double (*)(float*, float*, const float*, const float*, int64_t, int64_t,
                               float);
using XentProbsFn = double (*)(float*, const float*, const float*, int64_t, int64_t, float);
using ElemLossFn = double (*)(float*, const float*, const float*, int64_t, float);

void def_all(py::module_& m, XentFn xent, XentDenseFn xent_dense, XentProbsFn xent_probs,
             ElemLossFn bce, ElemLossFn mse) {
  m.def(
      "softmax_xent",
      [xent](py::handle dlogits, py::handle probs, py::handle logits, py::handle labels,
             float grad_scale) {
        const char* op = "softmax_xent";
        auto L = in<float>(op, "logits", logits, {ANY, ANY}, "(N, C)");
        const int64_t N = L[0], C = L[1];
        auto LAB = in<int32_t>(op, "labels", labels, {N}, "(N,)");
        auto DL = out_opt<float>(op, "dlogits", dlogits, {N, C}, "(N, C)");
        auto P = out_opt<float>(op, "probs", probs, {N, C}, "(N, C)");
        check_scale(op, grad_scale);
        for (int64_t i = 0; i < N; ++i) {
          const int32_t v = LAB.data[i];
          if (v < 0 || v >= C)
            fail_value(op, "labels",
                       "has value " + std::to_string(v) + " at index " + std::to_string(i) +
                           ", outside [0, C) = [0, " + std::to_string(C) + ")");
        }
        no_overlap(op, "dlogits", DL, "logits", L);
        no_overlap(op, "dlogits", DL, "labels", LAB);
        no_overlap(op, "dlogits", DL, "probs", P);
        no_overlap(op, "probs", P, "logits", L);
        no_overlap(op, "probs", P, "labels", LAB);
        py::gil_scoped_release nogil;
        return xent(DL.data, P.data, L.data, LAB.data, N, C, grad_scale);
      },
      py::arg("dlogits"), py::arg("probs"), py::arg("logits"), py::arg("labels"),
      py::arg("grad_scale") = 1.0f,
      "Fused stable softmax + cross-entropy with int32 labels (N,) in [0, C). Returns the "
      "sum over rows of logsumexp(logits) - logits[label]; dlogits (N,C) += grad_scale * "
      "(softmax - onehot) and probs (N,C) = softmax, each unless None.");

  m.def(
      "softmax_xent_dense",
      [xent_dense](py::handle dlogits, py::handle probs, py::handle logits, py::handle targets,
                   float grad_scale) {
        const char* op = "softmax_xent_dense";
        auto L = in<float>(op, "logits", logits, {ANY, ANY}, "(N, C)");
        const int64_t N = L[0], C = L[1];
        auto T = in<float>(op, "targets", targets, {N, C}, "(N, C)");
        auto DL = out_opt<float>(op, "dlogits", dlogits, {N, C}, "(N, C)");
        auto P = out_opt<float>(op, "probs", probs, {N, C}, "(N, C)");
        check_scale(op, grad_scale);
        no_overlap(op, "dlogits", DL, "logits", L);
        no_overlap(op, "dlogits", DL, "targets", T);
        no_overlap(op, "dlogits", DL, "probs", P);
        no_overlap(op, "probs", P, "logits", L);
        no_overlap(op, "probs", P, "targets", T);
        py::gil_scoped_release nogil;
        return xent_dense(DL.data, P.data, L.data, T.data, N, C, grad_scale);
      },
      py::arg("dlogits"), py::arg("probs"), py::arg("logits"), py::arg("targets"),
      py::arg("grad_scale") = 1.0f,
      "Softmax + cross-entropy with a target distribution per row, targets (N,C). Returns "
      "sum over rows of sum_c t_c * (logsumexp(logits) - logits_c); dlogits += grad_scale * "
      "(softmax * t.sum(-1) - t).");

  m.def(
      "xent_probs",
      [xent_probs](py::handle dprobs, py::handle probs, py::handle targets, float grad_scale) {
        const char* op = "xent_probs";
        auto P = in<float>(op, "probs", probs, {ANY, ANY}, "(N, C)");
        const int64_t N = P[0], C = P[1];
        auto T = in<float>(op, "targets", targets, {N, C}, "(N, C)");
        auto DP = out_opt<float>(op, "dprobs", dprobs, {N, C}, "(N, C)");
        check_scale(op, grad_scale);
        no_overlap(op, "dprobs", DP, "probs", P);
        no_overlap(op, "dprobs", DP, "targets", T);
        py::gil_scoped_release nogil;
        return xent_probs(DP.data, P.data, T.data, N, C, grad_scale);
      },
      py::arg("dprobs"), py::arg("probs"), py::arg("targets"), py::arg("grad_scale") = 1.0f,
      "Cross-entropy of given probabilities (N,C): returns sum of -t * log(max(p, 1e-7)); "
      "dprobs += grad_scale * (-t / max(p, 1e-7)).");

  auto def_elem = [&m](const char* name, ElemLossFn fn, const char* in_name,
                       const char* t_name, const char* d_name, const char* doc) {
    m.def(
        name,
        [fn, name, in_name, t_name, d_name](py::handle d, py::handle input, py::handle target,
                                            float grad_scale) {
          auto I = in_any(name, in_name, input, 0, "(...)");
          auto T = in<float>(name, t_name, target, I.shape,
                             (std::string(in_name) + ".shape").c_str());
          auto D = out_opt<float>(name, d_name, d, I.shape,
                                  (std::string(in_name) + ".shape").c_str());
          check_scale(name, grad_scale);
          no_overlap(name, d_name, D, in_name, I);
          no_overlap(name, d_name, D, t_name, T);
          py::gil_scoped_release nogil;
          return fn(D.data, I.data, T.data, I.size, grad_scale);
        },
        py::arg(d_name), py::arg(in_name), py::arg(t_name), py::arg("grad_scale") = 1.0f, doc);
  };
  def_elem("bce_logits", bce, "logits", "targets", "dlogits",
           "Binary cross-entropy with logits, elementwise, any shape. Returns the sum of "
           "max(x,0) - x*t + log(1 + exp(-|x|)); dlogits += grad_scale * (sigmoid(x) - t).");
  def_elem("mse", mse, "pred", "target", "dpred",
           "Squared error, elementwise, any shape. Returns the sum of (p - t)**2; dpred += "
           "grad_scale * 2 * (p - t).");
}

}  // namespace

void bind_loss(py::module_& m) {
  def_all(m, &fastnn::softmax_xent, &fastnn::softmax_xent_dense, &fastnn::xent_probs,
          &fastnn::bce_logits, &fastnn::mse);
  py::module_ plain = plain_module(m);
  def_all(plain, &fastnn::softmax_xent_naive, &fastnn::softmax_xent_dense_naive,
          &fastnn::xent_probs_naive, &fastnn::bce_logits_naive, &fastnn::mse_naive);
}

}  // namespace fastnn::bind
