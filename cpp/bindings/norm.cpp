#include "fastnn/norm.h"

#include <cmath>
#include <string>

#include "check.h"

namespace fastnn::bind {

namespace {

void check_epsilon(const char* op, float eps) {
  if (!(std::isfinite(eps) && eps >= 0.0f))
    fail_value(op, "epsilon", "must be a finite number >= 0, got " + std::to_string(eps));
}

}  // namespace

void bind_norm(py::module_& m) {
  m.def(
      "batch_norm_forward_train",
      [](py::handle y, py::handle mean, py::handle invstd, py::handle running_mean,
         py::handle running_var, py::handle x, py::handle gamma, py::handle beta,
         float momentum, float epsilon, bool naive) {
        const char* op = "batch_norm";
        auto X = in<float>(op, "x", x, {ANY, ANY}, "(M, C)");
        const int64_t M = X[0], C = X[1];
        auto G = in_opt<float>(op, "gamma", gamma, {C}, "(C,)");
        auto B = in_opt<float>(op, "beta", beta, {C}, "(C,)");
        auto Y = out<float>(op, "out", y, {M, C}, "(M, C)");
        auto MU = out<float>(op, "mean", mean, {C}, "(C,)");
        auto R = out<float>(op, "invstd", invstd, {C}, "(C,)");
        auto RM = out_opt<float>(op, "running_mean", running_mean, {C}, "(C,)");
        auto RV = out_opt<float>(op, "running_var", running_var, {C}, "(C,)");
        if (!(std::isfinite(momentum) && momentum >= 0.0f && momentum <= 1.0f))
          fail_value(op, "momentum", "must be in [0, 1], got " + std::to_string(momentum));
        check_epsilon(op, epsilon);
        no_overlap(op, "out", Y, "x", X);
        no_overlap(op, "out", Y, "gamma", G);
        no_overlap(op, "out", Y, "beta", B);
        for (auto* o : {&MU, &R, &RM, &RV}) {
          const char* name = o == &MU ? "mean" : o == &R ? "invstd"
                             : o == &RM ? "running_mean" : "running_var";
          no_overlap(op, name, *o, "x", X);
          no_overlap(op, name, *o, "out", Y);
          no_overlap(op, name, *o, "gamma", G);
          no_overlap(op, name, *o, "beta", B);
        }
        no_overlap(op, "mean", MU, "invstd", R);
        no_overlap(op, "running_mean", RM, "running_var", RV);
        no_overlap(op, "mean", MU, "running_mean", RM);
        no_overlap(op, "mean", MU, "running_var", RV);
        no_overlap(op, "invstd", R, "running_mean", RM);
        no_overlap(op, "invstd", R, "running_var", RV);
        py::gil_scoped_release nogil;
        (naive ? batch_norm_forward_train_naive : batch_norm_forward_train)(
            Y.data, MU.data, R.data, RM.data, RV.data, X.data, G.data, B.data, M, C, momentum,
            epsilon);
      },
      py::arg("y"), py::arg("mean"), py::arg("invstd"), py::arg("running_mean"),
      py::arg("running_var"), py::arg("x"), py::arg("gamma"), py::arg("beta"),
      py::arg("momentum"), py::arg("epsilon"), py::arg("naive") = false,
      "Training-mode batch norm of x (M,C) over M: y = gamma*(x - mean)*invstd + beta; "
      "mean/invstd (C) receive the batch statistics; running_mean/var (C, or None) are "
      "updated in place with momentum (biased batch variance, as Keras). gamma/beta may be "
      "None.");

  m.def(
      "batch_norm_forward_infer",
      [](py::handle y, py::handle mean, py::handle invstd, py::handle x, py::handle gamma,
         py::handle beta, py::handle running_mean, py::handle running_var, float epsilon,
         bool naive) {
        const char* op = "batch_norm";
        auto X = in<float>(op, "x", x, {ANY, ANY}, "(M, C)");
        const int64_t M = X[0], C = X[1];
        auto G = in_opt<float>(op, "gamma", gamma, {C}, "(C,)");
        auto B = in_opt<float>(op, "beta", beta, {C}, "(C,)");
        auto RM = in<float>(op, "running_mean", running_mean, {C}, "(C,)");
        auto RV = in<float>(op, "running_var", running_var, {C}, "(C,)");
        auto Y = out<float>(op, "out", y, {M, C}, "(M, C)");
        auto MU = out_opt<float>(op, "mean", mean, {C}, "(C,)");
        auto R = out_opt<float>(op, "invstd", invstd, {C}, "(C,)");
        check_epsilon(op, epsilon);
        no_overlap(op, "out", Y, "x", X);
        no_overlap(op, "out", Y, "gamma", G);
        no_overlap(op, "out", Y, "beta", B);
        no_overlap(op, "out", Y, "running_mean", RM);
        no_overlap(op, "out", Y, "running_var", RV);
        no_overlap(op, "invstd", R, "running_mean", RM);
        no_overlap(op, "invstd", R, "running_var", RV);
        no_overlap(op, "invstd", R, "mean", MU);
        no_overlap(op, "invstd", R, "out", Y);
        no_overlap(op, "mean", MU, "out", Y);
        no_overlap(op, "mean", MU, "running_var", RV);
        py::gil_scoped_release nogil;
        (naive ? batch_norm_forward_infer_naive : batch_norm_forward_infer)(
            Y.data, MU.data, R.data, X.data, G.data, B.data, RM.data, RV.data, M, C, epsilon);
      },
      py::arg("y"), py::arg("mean"), py::arg("invstd"), py::arg("x"), py::arg("gamma"),
      py::arg("beta"), py::arg("running_mean"), py::arg("running_var"), py::arg("epsilon"),
      py::arg("naive") = false,
      "Inference-mode batch norm of x (M,C) with the running statistics; mean/invstd (C, "
      "or None) receive running_mean and 1/sqrt(running_var + epsilon).");

  m.def(
      "batch_norm_backward",
      [](py::handle dx, py::handle dgamma, py::handle dbeta, py::handle dy, py::handle mean,
         py::handle invstd, py::handle x, py::handle gamma, bool training, bool accumulate,
         bool naive) {
        const char* op = "batch_norm_backward";
        auto X = in<float>(op, "x", x, {ANY, ANY}, "(M, C)");
        const int64_t M = X[0], C = X[1];
        auto DY = in<float>(op, "dy", dy, {M, C}, "(M, C)");
        auto MU = in<float>(op, "mean", mean, {C}, "(C,)");
        auto R = in<float>(op, "invstd", invstd, {C}, "(C,)");
        auto G = in_opt<float>(op, "gamma", gamma, {C}, "(C,)");
        auto DX = out_opt<float>(op, "dx", dx, {M, C}, "(M, C)");
        auto DG = out_opt<float>(op, "dgamma", dgamma, {C}, "(C,)");
        auto DB = out_opt<float>(op, "dbeta", dbeta, {C}, "(C,)");
        no_overlap(op, "dx", DX, "dy", DY);
        no_overlap(op, "dx", DX, "x", X);
        for (auto* o : {&DX, &DG, &DB}) {
          const char* name = o == &DX ? "dx" : o == &DG ? "dgamma" : "dbeta";
          no_overlap(op, name, *o, "mean", MU);
          no_overlap(op, name, *o, "invstd", R);
          no_overlap(op, name, *o, "gamma", G);
        }
        no_overlap(op, "dgamma", DG, "dbeta", DB);
        no_overlap(op, "dgamma", DG, "dx", DX);
        no_overlap(op, "dbeta", DB, "dx", DX);
        no_overlap(op, "dgamma", DG, "dy", DY);
        no_overlap(op, "dbeta", DB, "dy", DY);
        no_overlap(op, "dgamma", DG, "x", X);
        no_overlap(op, "dbeta", DB, "x", X);
        py::gil_scoped_release nogil;
        (naive ? batch_norm_backward_naive : batch_norm_backward)(
            DX.data, DG.data, DB.data, DY.data, MU.data, R.data, X.data, G.data, M, C,
            training, accumulate);
      },
      py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"), py::arg("dy"), py::arg("mean"),
      py::arg("invstd"), py::arg("x"), py::arg("gamma"), py::arg("training"),
      py::arg("accumulate") = true, py::arg("naive") = false,
      "Batch-norm backward over x (M,C): dx (or None) += ..., dgamma (or None) += "
      "sum(dy*xhat), dbeta (or None) += sum(dy); mean/invstd as the forward saved them; "
      "training=False treats the statistics as constants; accumulate=False overwrites dx.");
}

}  // namespace fastnn::bind
