// Bindings of layernorm.h: x / y / dy / dx (M, C), gamma / beta / dgamma / dbeta (C,),
// mean / rstd (M,).
#include "fastnn/layernorm.h"

#include <cmath>
#include <string>
#include <utility>

#include "check.h"

namespace fastnn::bind {

void bind_layernorm(py::module_& m) {
  m.def(
      "layer_norm_forward",
      [](py::handle y, py::handle mean, py::handle rstd, py::handle x, py::handle gamma,
         py::handle beta, float epsilon, bool naive) {
        const char* op = "layer_norm";
        auto X = in<float>(op, "x", x, {ANY, ANY}, "(M, C)");
        const int64_t M = X[0], C = X[1];
        auto G = in_opt<float>(op, "gamma", gamma, {C}, "(C,)");
        auto B = in_opt<float>(op, "beta", beta, {C}, "(C,)");
        auto Y = out<float>(op, "out", y, {M, C}, "(M, C)");
        auto MU = out_opt<float>(op, "mean", mean, {M}, "(M,)");
        auto R = out_opt<float>(op, "rstd", rstd, {M}, "(M,)");
        if (!(std::isfinite(epsilon) && epsilon >= 0.0f))
          fail_value(op, "epsilon", "must be a finite number >= 0, got " + std::to_string(epsilon));
        if (Y.data != X.data) no_overlap(op, "out", Y, "x", X);  // exactly x: in place
        no_overlap(op, "out", Y, "gamma", G);
        no_overlap(op, "out", Y, "beta", B);
        for (auto* o : {&MU, &R}) {
          const char* name = o == &MU ? "mean" : "rstd";
          no_overlap(op, name, *o, "x", X);
          no_overlap(op, name, *o, "out", Y);
          no_overlap(op, name, *o, "gamma", G);
          no_overlap(op, name, *o, "beta", B);
        }
        no_overlap(op, "mean", MU, "rstd", R);
        py::gil_scoped_release nogil;
        (naive ? layer_norm_forward_naive : layer_norm_forward)(
            Y.data, MU.data, R.data, X.data, G.data, B.data, M, C, epsilon);
      },
      py::arg("y"), py::arg("mean"), py::arg("rstd"), py::arg("x"), py::arg("gamma"),
      py::arg("beta"), py::arg("epsilon"), py::arg("naive") = false,
      "Layer norm of each row of x (M,C): y = gamma*(x - mean)*rstd + beta; mean/rstd (M, "
      "or None) receive the row statistics (biased variance). gamma/beta may be None. y may "
      "be x itself (in place). naive=True runs the plain twin.");

  m.def(
      "layer_norm_backward",
      [](py::handle dx, py::handle dgamma, py::handle dbeta, py::handle dy, py::handle mean,
         py::handle rstd, py::handle x, py::handle gamma, bool naive, bool accumulate_dx) {
        const char* op = "layer_norm_backward";
        auto X = in<float>(op, "x", x, {ANY, ANY}, "(M, C)");
        const int64_t M = X[0], C = X[1];
        auto DY = in<float>(op, "dy", dy, {M, C}, "(M, C)");
        auto MU = in<float>(op, "mean", mean, {M}, "(M,)");
        auto R = in<float>(op, "rstd", rstd, {M}, "(M,)");
        auto G = in_opt<float>(op, "gamma", gamma, {C}, "(C,)");
        auto DX = out_opt<float>(op, "dx", dx, {M, C}, "(M, C)");
        auto DG = out_opt<float>(op, "dgamma", dgamma, {C}, "(C,)");
        auto DB = out_opt<float>(op, "dbeta", dbeta, {C}, "(C,)");
        no_overlap_all(op, {{"dx", &DX}, {"dgamma", &DG}, {"dbeta", &DB}},
                       {{"dx", &DX}, {"dgamma", &DG}, {"dbeta", &DB}, {"dy", &DY}, {"mean", &MU},
                        {"rstd", &R}, {"x", &X}, {"gamma", &G}});
        py::gil_scoped_release nogil;
        (naive ? layer_norm_backward_naive : layer_norm_backward)(
            DX.data, DG.data, DB.data, DY.data, MU.data, R.data, X.data, G.data, M, C,
            accumulate_dx);
      },
      py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"), py::arg("dy"), py::arg("mean"),
      py::arg("rstd"), py::arg("x"), py::arg("gamma"), py::arg("naive") = false,
      py::arg("accumulate_dx") = true,
      "Layer-norm backward over rows of x (M,C): dx (or None) += rstd*(g - mean(g) - "
      "xhat*mean(g*xhat)) with g = gamma*dy; dgamma (or None) += sum_M dy*xhat; dbeta (or "
      "None) += sum_M dy. mean/rstd as the forward saved them. naive=True: plain twin. "
      "accumulate_dx=False overwrites dx (=) instead.");
}

}  // namespace fastnn::bind
