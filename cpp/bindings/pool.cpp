#include "fastnn/pool.h"

#include <pybind11/stl.h>

#include <climits>
#include <string>
#include <utility>

#include "check.h"

namespace fastnn::bind {

namespace {

using Pair = std::pair<int64_t, int64_t>;

std::string pair_str(const Pair& p) {
  return "(" + std::to_string(p.first) + ", " + std::to_string(p.second) + ")";
}

}  // namespace

// Checks the options and the input size; returns the geometry or raises ValueError.
// (Also used by the conv2d_max_pool2d_forward binding.)
Pool2d pool_geometry(const char* op, int64_t N, int64_t H, int64_t W, int64_t C,
                     const Pair& pool, const Pair& strides, Padding padding) {
  // (Messages are composed only on failure: this runs on every call.)
  if (pool.first < 1 || pool.second < 1)
    fail_value(op, "pool_size", "must hold positive sizes, got " + pair_str(pool));
  if (strides.first < 1 || strides.second < 1)
    fail_value(op, "strides", "must hold positive steps, got " + pair_str(strides));
  require(padding == Padding::valid || padding == Padding::same, op, "padding",
          "must be Padding.valid or Padding.same");
  if (H * W > INT32_MAX)
    fail_value(op, "x", "has H·W = " + std::to_string(H * W) +
                            " positions per image; at most 2^31 − 1 fit the int32 indices");
  Pool2d g;
  if (!pool2d_geometry(&g, N, H, W, C, pool.first, pool.second, strides.first,
                       strides.second, padding))
    fail_value(op, "pool_size",
               pair_str(pool) + " is larger than the input " + pair_str({H, W}) +
                   " with padding='valid' (use a smaller pool or padding='same')");
  return g;
}

void bind_pool(py::module_& m) {
  py::enum_<Padding>(m, "Padding", "Padding of a pooling window (Keras/TensorFlow rules).")
      .value("valid", Padding::valid)
      .value("same", Padding::same);

  m.def(
      "pool2d_output_size",
      [](const Pair& hw, const Pair& pool_size, const Pair& strides, Padding padding,
         const std::string& op) {
        if (hw.first < 1 || hw.second < 1)
          fail_value(op.c_str(), "x", "must have positive spatial sizes, got " + pair_str(hw));
        Pool2d g = pool_geometry(op.c_str(), 1, hw.first, hw.second, 1, pool_size, strides,
                                 padding);
        return Pair{g.OH, g.OW};
      },
      py::arg("hw"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
      py::arg("op") = "pool2d",
      "(OH, OW) of a pooling of an (H, W) input; raises ValueError naming `op` when the "
      "options are invalid or the window does not fit.");

  m.def(
      "max_pool2d_forward",
      [](py::handle y, py::handle indices, py::handle x, const Pair& pool_size,
         const Pair& strides, Padding padding, bool naive) {
        const char* op = "max_pool2d";
        auto X = in<float>(op, "x", x, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        Pool2d g = pool_geometry(op, X[0], X[1], X[2], X[3], pool_size, strides, padding);
        auto Y = out<float>(op, "out", y, {g.N, g.OH, g.OW, g.C}, "(N, OH, OW, C)");
        auto I = out_opt<int32_t>(op, "indices", indices, {g.N, g.OH, g.OW, g.C},
                                  "(N, OH, OW, C)");
        no_overlap(op, "out", Y, "x", X);
        no_overlap(op, "indices", I, "x", X);
        no_overlap(op, "indices", I, "out", Y);
        py::gil_scoped_release nogil;
        (naive ? max_pool2d_forward_naive : max_pool2d_forward)(Y.data, I.data, X.data, g);
      },
      py::arg("y"), py::arg("indices"), py::arg("x"), py::arg("pool_size"), py::arg("strides"),
      py::arg("padding"), py::arg("naive") = false,
      "y (N,OH,OW,C) = window max of x (N,H,W,C); indices (int32, or None) receive the "
      "position h*W + w of each max within its image.");

  m.def(
      "max_pool2d_backward",
      [](py::handle dx, py::handle dy, py::handle indices, bool accumulate, bool naive) {
        const char* op = "max_pool2d_backward";
        auto DX = out<float>(op, "dx", dx, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        const int64_t N = DX[0], H = DX[1], W = DX[2], C = DX[3];
        auto DY = in<float>(op, "dy", dy, {N, ANY, ANY, C}, "(N, OH, OW, C)");
        auto I = in<int32_t>(op, "indices", indices, DY.shape, "(N, OH, OW, C) like dy");
        no_overlap(op, "dx", DX, "dy", DY);
        no_overlap(op, "dx", DX, "indices", I);
        int64_t bad;
        {
          py::gil_scoped_release nogil;
          bad = (naive ? max_pool2d_backward_naive : max_pool2d_backward)(
              DX.data, DY.data, I.data, N, H * W, DY[1] * DY[2], C, accumulate);
        }
        if (bad)
          fail_value(op, "indices",
                     "holds " + std::to_string(bad) + " positions outside [0, H*W) = [0, " +
                         std::to_string(H * W) + ") (they were skipped; dx is incomplete)");
      },
      py::arg("dx"), py::arg("dy"), py::arg("indices"), py::arg("accumulate") = true,
      py::arg("naive") = false,
      "dx (N,H,W,C) += dy (N,OH,OW,C) routed to the positions saved by max_pool2d_forward "
      "(accumulate=False: dx = ..., no zeroing needed).");

  m.def(
      "avg_pool2d_forward",
      [](py::handle y, py::handle x, const Pair& pool_size, const Pair& strides,
         Padding padding, bool naive) {
        const char* op = "avg_pool2d";
        auto X = in<float>(op, "x", x, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        Pool2d g = pool_geometry(op, X[0], X[1], X[2], X[3], pool_size, strides, padding);
        auto Y = out<float>(op, "out", y, {g.N, g.OH, g.OW, g.C}, "(N, OH, OW, C)");
        no_overlap(op, "out", Y, "x", X);
        py::gil_scoped_release nogil;
        (naive ? avg_pool2d_forward_naive : avg_pool2d_forward)(Y.data, X.data, g);
      },
      py::arg("y"), py::arg("x"), py::arg("pool_size"), py::arg("strides"), py::arg("padding"),
      py::arg("naive") = false,
      "y (N,OH,OW,C) = mean of x (N,H,W,C) over the real elements of each window.");

  m.def(
      "avg_pool2d_backward",
      [](py::handle dx, py::handle dy, const Pair& pool_size, const Pair& strides,
         Padding padding, bool accumulate, bool naive) {
        const char* op = "avg_pool2d_backward";
        auto DX = out<float>(op, "dx", dx, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        Pool2d g = pool_geometry(op, DX[0], DX[1], DX[2], DX[3], pool_size, strides, padding);
        auto DY = in<float>(op, "dy", dy, {g.N, g.OH, g.OW, g.C}, "(N, OH, OW, C)");
        no_overlap(op, "dx", DX, "dy", DY);
        py::gil_scoped_release nogil;
        (naive ? avg_pool2d_backward_naive : avg_pool2d_backward)(DX.data, DY.data, g,
                                                                  accumulate);
      },
      py::arg("dx"), py::arg("dy"), py::arg("pool_size"), py::arg("strides"),
      py::arg("padding"), py::arg("accumulate") = true, py::arg("naive") = false,
      "dx (N,H,W,C) += dy (N,OH,OW,C) spread over the real elements of each window "
      "(accumulate=False: dx = ...).");

  m.def(
      "global_avg_pool2d_forward",
      [](py::handle y, py::handle x, bool naive) {
        const char* op = "global_avg_pool2d";
        auto X = in<float>(op, "x", x, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        auto Y = out<float>(op, "out", y, {X[0], X[3]}, "(N, C)");
        no_overlap(op, "out", Y, "x", X);
        py::gil_scoped_release nogil;
        (naive ? global_avg_pool2d_forward_naive : global_avg_pool2d_forward)(
            Y.data, X.data, X[0], X[1] * X[2], X[3]);
      },
      py::arg("y"), py::arg("x"), py::arg("naive") = false,
      "y (N,C) = mean of x (N,H,W,C) over H and W.");

  m.def(
      "global_avg_pool2d_backward",
      [](py::handle dx, py::handle dy, bool accumulate, bool naive) {
        const char* op = "global_avg_pool2d_backward";
        auto DX = out<float>(op, "dx", dx, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        auto DY = in<float>(op, "dy", dy, {DX[0], DX[3]}, "(N, C)");
        no_overlap(op, "dx", DX, "dy", DY);
        py::gil_scoped_release nogil;
        (naive ? global_avg_pool2d_backward_naive : global_avg_pool2d_backward)(
            DX.data, DY.data, DX[0], DX[1] * DX[2], DX[3], accumulate);
      },
      py::arg("dx"), py::arg("dy"), py::arg("accumulate") = true, py::arg("naive") = false,
      "dx (N,H,W,C) += dy (N,C) / (H*W) (accumulate=False: dx = ...).");
}

}  // namespace fastnn::bind
