// Bindings of conv2d.h and conv2d_pool.h: conv2d_forward, conv2d_backward,
// conv2d_algorithm, conv2d_max_pool2d_forward (and the plain
// twins under fastnn._core.plain). x (N, H, W, C), w (KH, KW, C/groups, OC), b (OC,),
// y/z/dy/dz (N, OH, OW, OC); OH and OW are read from y (forward) or dy (backward).
#include "fastnn/conv2d.h"
#include "fastnn/conv2d_pool.h"

#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "check.h"

namespace fastnn::bind {

// Defined in bindings/activation.cpp.
const char* act_name(Act act);
void bind_act_enum(py::module_& m);
py::module_ plain_module(py::module_& m);
// Defined in bindings/pool.cpp.
Pool2d pool_geometry(const char* op, int64_t N, int64_t H, int64_t W, int64_t C,
                     const std::pair<int64_t, int64_t>& pool,
                     const std::pair<int64_t, int64_t>& strides, Padding padding);

namespace {

// Geometry arguments shared by forward and backward: checked once, named in messages.
struct ConvArgs {
  int64_t sh, sw, pt, pl, dh, dw, groups;
  Act act;
};

ConvArgs conv_args(const char* op, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh,
                   int64_t dw, int64_t groups, Act act) {
  auto at_least = [op](int64_t v, int64_t lo, const char* name) {
    require(v >= lo, op, name, [&] {
      return "must be >= " + std::to_string(lo) + ", got " + std::to_string(v);
    });
  };
  at_least(sh, 1, "stride_h");
  at_least(sw, 1, "stride_w");
  at_least(pt, 0, "pad_top");
  at_least(pl, 0, "pad_left");
  at_least(dh, 1, "dil_h");
  at_least(dw, 1, "dil_w");
  at_least(groups, 1, "groups");
  return {sh, sw, pt, pl, dh, dw, groups, act};
}

// Checks that x (N,H,W,C), w (KH,KW,C/groups,OC) and the output size (OH, OW) agree:
// channels split evenly into groups, padding on each side smaller than the effective
// (dilated) kernel, so every window overlaps the image: the output is what some
// bottom/right padding in [0, effective kernel) gives.
void check_geometry(const char* op, const char* out_name, int64_t H, int64_t W, int64_t C,
                    int64_t KH, int64_t KW, int64_t Cg, int64_t OC, int64_t OH, int64_t OW,
                    const ConvArgs& a) {
  require(C % a.groups == 0, op, "x", [&] {
    return "has C=" + std::to_string(C) + " channels, not divisible by groups=" +
           std::to_string(a.groups);
  });
  require(Cg * a.groups == C, op, "w", [&] {
    return "must have shape (KH, KW, C/groups, OC) with C/groups=" +
           std::to_string(C / a.groups) + ", got " + std::to_string(Cg) +
           " input channels per group";
  });
  require(OC % a.groups == 0, op, "w", [&] {
    return "has OC=" + std::to_string(OC) + " output channels, not divisible by groups=" +
           std::to_string(a.groups);
  });
  const int64_t ekh = (KH - 1) * a.dh + 1, ekw = (KW - 1) * a.dw + 1;
  require(a.pt < ekh, op, "pad_top", [&] {
    return "must be smaller than the effective kernel height (KH-1)*dil_h+1 = " +
           std::to_string(ekh) + ", got " + std::to_string(a.pt);
  });
  require(a.pl < ekw, op, "pad_left", [&] {
    return "must be smaller than the effective kernel width (KW-1)*dil_w+1 = " +
           std::to_string(ekw) + ", got " + std::to_string(a.pl);
  });
  auto range = [](int64_t size, int64_t pad, int64_t k, int64_t dil, int64_t s) {
    const int64_t ek = (k - 1) * dil + 1;
    const int64_t hi = (size + pad - 1) / s + 1;
    const int64_t lo = size + pad >= ek ? (size + pad - ek) / s + 1 : 1;
    return std::pair<int64_t, int64_t>{lo, hi};
  };
  const auto rh = range(H, a.pt, KH, a.dh, a.sh), rw = range(W, a.pl, KW, a.dw, a.sw);
  if (OH < rh.first || OH > rh.second || OW < rw.first || OW > rw.second)
    fail_value(op, out_name,
               "has output size (OH, OW) = (" + std::to_string(OH) + ", " +
                   std::to_string(OW) + "), which no bottom/right padding gives for H=" +
                   std::to_string(H) + ", W=" + std::to_string(W) + ", kernel (" +
                   std::to_string(KH) + ", " + std::to_string(KW) +
                   "), strides, pad_top/pad_left and dilation; expected OH in [" +
                   std::to_string(rh.first) + ", " + std::to_string(rh.second) +
                   "] and OW in [" + std::to_string(rw.first) + ", " +
                   std::to_string(rw.second) + "]");
}

// x (N, H, W, C) and w (KH, KW, C/groups, OC) of a forward call, and their sizes.
struct Operands {
  Buf<float> x, w;
  int64_t N, H, W, C, KH, KW, OC;
};
Operands operands(const char* op, py::handle x_, py::handle w_) {
  auto x = in<float>(op, "x", x_, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
  auto w = in<float>(op, "w", w_, {ANY, ANY, ANY, ANY}, "(KH, KW, C/groups, OC)");
  return {x, w, x[0], x[1], x[2], x[3], w[0], w[1], w[3]};
}

using ForwardFn = decltype(&fastnn::conv2d_forward);
using BackwardFn = decltype(&fastnn::conv2d_backward);

// The same binding serves the tuned kernel and its naive twin.
auto forward_binding(const char* op, ForwardFn kernel) {
  return [op, kernel](py::handle y_, py::handle z_, py::handle x_, py::handle w_,
                      py::handle b_, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                      int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups,
                      Act act) {
    const ConvArgs a =
        conv_args(op, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, act);
    const auto [x, w, N, H, W, C, KH, KW, OC] = operands(op, x_, w_);
    auto y = out<float>(op, "y", y_, {N, ANY, ANY, OC}, "(N, OH, OW, OC)");
    const int64_t OH = y[1], OW = y[2];
    check_geometry(op, "y", H, W, C, KH, KW, w[2], OC, OH, OW, a);
    auto z = out_opt<float>(op, "z", z_, {N, OH, OW, OC}, "(N, OH, OW, OC)");
    auto b = in_opt<float>(op, "b", b_, {OC}, "(OC,)");
    no_overlap(op, "y", y, "x", x);
    no_overlap(op, "y", y, "w", w);
    no_overlap(op, "y", y, "b", b);
    no_overlap(op, "z", z, "x", x);
    no_overlap(op, "z", z, "w", w);
    no_overlap(op, "z", z, "b", b);
    no_overlap(op, "z", z, "y", y);
    py::gil_scoped_release nogil;
    kernel(y.data, z.data, x.data, w.data, b.data, N, H, W, C, OC, KH, KW, a.sh, a.sw, a.pt,
           a.pl, OH, OW, a.dh, a.dw, a.groups, a.act);
  };
}

auto backward_binding(const char* op, BackwardFn kernel) {
  return [op, kernel](py::handle dx_, py::handle dw_, py::handle db_, py::handle dz_,
                      py::handle dy_, py::handle x_, py::handle w_, py::handle y_,
                      py::handle z_, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                      int64_t pad_left, int64_t dil_h, int64_t dil_w, int64_t groups,
                      Act act) {
    const ConvArgs a =
        conv_args(op, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, act);
    auto dy = in<float>(op, "dy", dy_, {ANY, ANY, ANY, ANY}, "(N, OH, OW, OC)");
    const int64_t N = dy[0], OH = dy[1], OW = dy[2], OC = dy[3];
    auto x = in<float>(op, "x", x_, {N, ANY, ANY, ANY}, "(N, H, W, C)");
    const int64_t H = x[1], W = x[2], C = x[3];
    auto w = in<float>(op, "w", w_, {ANY, ANY, ANY, OC}, "(KH, KW, C/groups, OC)");
    const int64_t KH = w[0], KW = w[1];
    check_geometry(op, "dy", H, W, C, KH, KW, w[2], OC, OH, OW, a);
    const std::vector<int64_t> yshape{N, OH, OW, OC};
    auto dx = out_opt<float>(op, "dx", dx_, {N, H, W, C}, "(N, H, W, C)");
    auto dw = out_opt<float>(op, "dw", dw_, {KH, KW, w[2], OC}, "(KH, KW, C/groups, OC)");
    auto db = out_opt<float>(op, "db", db_, {OC}, "(OC,)");
    auto dz = out_opt<float>(op, "dz", dz_, yshape, "(N, OH, OW, OC)");
    auto y = in_opt<float>(op, "y", y_, yshape, "(N, OH, OW, OC)");
    auto z = in_opt<float>(op, "z", z_, yshape, "(N, OH, OW, OC)");
    const std::string an = act_name(a.act);
    if (a.act != Act::linear)
      require(dz.data != nullptr, op, "dz", [&] {
        return "(N, OH, OW, OC) scratch is required for activation " + an +
               " (it may be dy itself), got None";
      });
    if (a.act == Act::gelu)
      require(z.data != nullptr, op, "z",
              "is required for activation gelu (the forward pre-activation), got None");
    else if (a.act != Act::linear)
      require(y.data != nullptr, op, "y", [&] {
        return "is required for activation " + an + " (the forward output), got None";
      });
    // dz may be dy itself (then overwritten), but must not partly overlap it.
    if (dz.data != dy.data) no_overlap(op, "dz", dz, "dy", dy);
    const std::pair<const char*, const Buf<float>*> grads[] = {
        {"dx", &dx}, {"dw", &dw}, {"db", &db}, {"dz", &dz}};
    const std::pair<const char*, const Buf<float>*> ins[] = {
        {"x", &x}, {"w", &w}, {"y", &y}, {"z", &z}, {"dy", &dy}};
    for (const auto& o : grads) {
      for (const auto& i : ins)
        if (!(o.second == &dz && i.second == &dy))
          no_overlap(op, o.first, *o.second, i.first, *i.second);
      for (const auto& o2 : grads)
        if (o2.second < o.second) no_overlap(op, o.first, *o.second, o2.first, *o2.second);
    }
    py::gil_scoped_release nogil;
    kernel(dx.data, dw.data, db.data, dz.data, dy.data, x.data, w.data, y.data, z.data, N, H,
           W, C, OC, KH, KW, a.sh, a.sw, a.pt, a.pl, OH, OW, a.dh, a.dw, a.groups, a.act);
  };
}

constexpr const char* kForwardDoc =
    "y (N,OH,OW,OC) = act(conv(x (N,H,W,C), w (KH,KW,C/groups,OC)) + b (OC,)). OH, OW are\n"
    "y's; rows ih = oh*stride_h - pad_top + kh*dil_h (columns likewise) outside the image\n"
    "read 0. z (N,OH,OW,OC), unless None, receives the pre-activation (gelu's backward\n"
    "needs it). b may be None. float32, no copies.";
constexpr const char* kBackwardDoc =
    "With dz = dy * act'(.): dx (N,H,W,C) += backward-data, dw (KH,KW,C/groups,OC) +=\n"
    "backward-weights, db (OC,) += dz summed over N, OH, OW. Any of dx, dw, db may be None\n"
    "(not computed). dz is scratch, required unless act is linear; it may be dy itself,\n"
    "which is then overwritten. relu/sigmoid/tanh read y (forward output), gelu reads z\n"
    "(pre-activation).";

void def_all(py::module_& m, ForwardFn fwd, BackwardFn bwd, const char* fwd_name,
             const char* bwd_name) {
  m.def("conv2d_forward", forward_binding(fwd_name, fwd), py::arg("y"), py::arg("z"),
        py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("stride_h") = 1,
        py::arg("stride_w") = 1, py::arg("pad_top") = 0, py::arg("pad_left") = 0,
        py::arg("dil_h") = 1, py::arg("dil_w") = 1, py::arg("groups") = 1,
        py::arg("act") = Act::linear, kForwardDoc);
  m.def("conv2d_backward", backward_binding(bwd_name, bwd), py::arg("dx"), py::arg("dw"),
        py::arg("db"), py::arg("dz"), py::arg("dy"), py::arg("x"), py::arg("w"),
        py::arg("y") = py::none(), py::arg("z") = py::none(), py::arg("stride_h") = 1,
        py::arg("stride_w") = 1, py::arg("pad_top") = 0, py::arg("pad_left") = 0,
        py::arg("dil_h") = 1, py::arg("dil_w") = 1, py::arg("groups") = 1,
        py::arg("act") = Act::linear, kBackwardDoc);
}

}  // namespace

void bind_conv2d(py::module_& m) {
  bind_act_enum(m);
  def_all(m, &fastnn::conv2d_forward, &fastnn::conv2d_backward, "conv2d_forward",
          "conv2d_backward");
  py::module_ plain = plain_module(m);
  def_all(plain, &fastnn::conv2d_forward_naive, &fastnn::conv2d_backward_naive,
          "plain.conv2d_forward", "plain.conv2d_backward");

  m.def(
      "conv2d_algorithm",
      [](py::handle x_, py::handle w_, int64_t OH, int64_t OW, int64_t stride_h,
         int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
         int64_t groups) {
        const char* op = "conv2d_algorithm";
        const ConvArgs a = conv_args(op, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                                     groups, Act::linear);
        const auto [x, w, N, H, W, C, KH, KW, OC] = operands(op, x_, w_);
        check_geometry(op, "OH/OW", H, W, C, KH, KW, w[2], OC, OH, OW, a);
        return std::string(fastnn::conv2d_algorithm(N, H, W, C, OC, KH, KW, a.sh, a.sw, a.pt,
                                                    a.pl, OH, OW, a.dh, a.dw, a.groups));
      },
      py::arg("x"), py::arg("w"), py::arg("OH"), py::arg("OW"), py::arg("stride_h") = 1,
      py::arg("stride_w") = 1, py::arg("pad_top") = 0, py::arg("pad_left") = 0,
      py::arg("dil_h") = 1, py::arg("dil_w") = 1, py::arg("groups") = 1,
      "Which path conv2d_forward/backward take for these shapes: 'pointwise', 'im2col',\n"
      "'direct' or 'depthwise'.");

  m.def(
      "conv2d_max_pool2d_forward",
      [](py::handle y_, py::handle x_, py::handle w_, py::handle b_, int64_t stride_h,
         int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
         int64_t groups, Act act, int64_t OH, int64_t OW,
         const std::pair<int64_t, int64_t>& pool_size,
         const std::pair<int64_t, int64_t>& pool_strides, Padding pool_padding, bool naive) {
        const char* op = "conv2d_max_pool2d_forward";
        const ConvArgs a =
            conv_args(op, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, act);
        const auto [x, w, N, H, W, C, KH, KW, OC] = operands(op, x_, w_);
        check_geometry(op, "OH/OW", H, W, C, KH, KW, w[2], OC, OH, OW, a);
        const Pool2d g = pool_geometry(op, N, OH, OW, OC, pool_size, pool_strides,
                                       pool_padding);
        auto y = out<float>(op, "y", y_, {N, g.OH, g.OW, OC}, "(N, PH, PW, OC)");
        auto b = in_opt<float>(op, "b", b_, {OC}, "(OC,)");
        no_overlap(op, "y", y, "x", x);
        no_overlap(op, "y", y, "w", w);
        no_overlap(op, "y", y, "b", b);
        py::gil_scoped_release nogil;
        (naive ? conv2d_max_pool2d_forward_naive : conv2d_max_pool2d_forward)(
            y.data, x.data, w.data, b.data, N, H, W, C, OC, KH, KW, a.sh, a.sw, a.pt, a.pl, OH,
            OW, a.dh, a.dw, a.groups, a.act, g);
      },
      py::arg("y"), py::arg("x"), py::arg("w"), py::arg("b"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_left"), py::arg("dil_h"),
      py::arg("dil_w"), py::arg("groups"), py::arg("act"), py::arg("OH"), py::arg("OW"),
      py::arg("pool_size"), py::arg("pool_strides"), py::arg("pool_padding"),
      py::arg("naive") = false,
      "Inference Conv2D + MaxPooling2D: y (N,PH,PW,OC) = max pool (pool_size, pool_strides,\n"
      "pool_padding) of act(conv(x, w) + b), the conv's arguments as conv2d_forward's and\n"
      "its output (N,OH,OW,OC) kept in cache a chunk of images at a time. Equal bit for bit\n"
      "to conv2d_forward then max_pool2d_forward. naive: the plain loops.");
}

}  // namespace fastnn::bind
