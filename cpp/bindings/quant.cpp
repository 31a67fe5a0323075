// Bindings of qgemm.h: int8 ISA control, packing, the int32 product, the fused qdense /
// qconv2d forwards (quantizing the float input in the same call) and the quantizers,
// with their plain twins under fastnn._core.plain. Arrays: a/xq/q uint8, b/w int8,
// c int32, x/y/w_scale/bias float32; packed is the uint8 (bytes,) buffer of
// qgemm_pack_b.
#include <cmath>
#include <string>

#include "check.h"
#include "fastnn/qgemm.h"

namespace fastnn::bind {

py::module_ plain_module(py::module_& m);

namespace {

// As check.h's in<T> for int8 arrays (check.cpp knows float32, int32 and uint8).
Buf<int8_t> in_i8(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
                  const char* doc) {
  const std::string expect = std::string("a C-contiguous int8 array of shape ") + doc + " = " +
                             shape_str(dims);
  if (!py::isinstance<py::array>(obj))
    fail_type(op, name, "must be " + expect + ", got " +
                            std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  const std::string got = std::string(py::str(a.dtype())) + " array of shape " + shape_str(shape);
  if (!a.dtype().is(py::dtype::of<int8_t>())) fail_type(op, name, "must be " + expect + ", got " + got);
  bool ok = shape.size() == dims.size();
  for (size_t i = 0; ok && i < dims.size(); ++i)
    ok = shape[i] > 0 && (dims[i] == ANY || dims[i] == shape[i]);
  if (!ok) fail_value(op, name, "must be " + expect + ", got " + got);
  if (!(a.flags() & py::array::c_style))
    fail_value(op, name, "must be C-contiguous (use numpy.ascontiguousarray), got a strided " + got);
  Buf<int8_t> b;
  b.data = static_cast<int8_t*>(const_cast<void*>(a.data()));
  b.shape = shape;
  b.size = a.size();
  return b;
}

// x_scale: finite and > 0.
float check_scale(const char* op, const char* name, double s) {
  if (!(std::isfinite(s) && s > 0.0 && float(s) > 0.0f && std::isfinite(float(s))))
    fail_value(op, name, "must be a finite float32 > 0, got " + std::to_string(s));
  return float(s);
}

int32_t check_zp(const char* op, const char* name, int64_t z) {
  if (z < 0 || z > 255)
    fail_value(op, name, "must be an integer in [0, 255], got " + std::to_string(z));
  return int32_t(z);
}

const char* check_isa(const char* op, py::handle isa) {
  if (isa.is_none()) return nullptr;
  const std::string name = py::cast<std::string>(isa);
  int n = 0;
  const char* const* names = qgemm_supported_isas(&n);
  for (int i = 0; i < n; ++i)
    if (name == names[i]) return names[i];
  fail_value(op, "isa", "must be one of this CPU's int8 ISAs (see qgemm_supported_isas()), got '" +
                            name + "'");
  return nullptr;
}

void check_k(const char* op, const char* name, int64_t K) {
  if (K > kQgemmMaxK)
    fail_value(op, name, "has K = " + std::to_string(K) + " > " + std::to_string(kQgemmMaxK) +
                             ", where int32 sums of u8·s8 products could overflow");
}

// A packed weight: its buffer, K and N (checked against the header).
struct Packed {
  Buf<uint8_t> buf;
  int64_t K = 0, N = 0;
  const char* isa = nullptr;
};

Packed get_packed(const char* op, py::handle packed) {
  Packed p;
  p.buf = in<uint8_t>(op, "packed", packed, {ANY}, "(bytes,)");
  p.isa = qgemm_packed_info(p.buf.data, p.buf.size, &p.K, &p.N);
  if (!p.isa)
    fail_value(op, "packed", "is not a weight packed by qgemm_pack_b on this CPU (bad header "
                             "or size)");
  return p;
}

// The float epilogue's arguments, checked.
struct EpiArgs {
  Buf<float> WS, B;
};

EpiArgs epi_args(const char* op, py::handle w_scale, py::handle b, int64_t N) {
  EpiArgs e;
  e.WS = in<float>(op, "w_scale", w_scale, {N}, "(N,)");
  e.B = in_opt<float>(op, "b", b, {N}, "(N,)");
  return e;
}

// Quantizes x into q: statically (x_scale given) or dynamically. Returns (scale, zp).
// Runs without the GIL; raises after it for a non-finite x.
std::pair<float, int32_t> quantize_into(const char* op, uint8_t* q, const float* x, int64_t n,
                                        py::handle x_scale, int64_t x_zp) {
  if (x_scale.is_none()) {
    float s = 0.0f;
    int32_t z = 0;
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = quantize_u8_dynamic(q, &s, &z, x, n);
    }
    if (!ok)
      fail_value(op, "x", "holds NaN or infinity, which dynamic quantization cannot range");
    return {s, z};
  }
  const float s = check_scale(op, "x_scale", py::cast<double>(x_scale));
  const int32_t z = check_zp(op, "x_zero_point", x_zp);
  py::gil_scoped_release nogil;
  quantize_u8(q, x, n, s, z);
  return {s, z};
}

const char* const kEpiDoc =
    "y = act(float(acc - x_zero_point * colsum) * (x_scale * w_scale) + b), acc the exact "
    "int32 product, in float32 in this order (see qgemm.h)";

}  // namespace

void bind_quant(py::module_& m) {
  m.def("qgemm_isa", &qgemm_isa, "ISA of the int8 kernels used for new packs and quantizers.");
  m.def("qgemm_supported_isas", [] {
    int n = 0;
    const char* const* names = qgemm_supported_isas(&n);
    py::list out;
    for (int i = 0; i < n; ++i) out.append(names[i]);
    return out;
  });
  m.def(
      "set_qgemm_isa",
      [](const std::string& name) {
        if (!set_qgemm_isa(name.c_str()))
          throw py::value_error("set_qgemm_isa: argument 'name' must be one of this CPU's int8 "
                                "ISAs (see qgemm_supported_isas()), got '" + name + "'");
      },
      py::arg("name"));

  m.def(
      "qgemm_packed_size",
      [](int64_t K, int64_t N, py::handle isa) {
        const char* op = "qgemm_packed_size";
        if (K < 1) fail_value(op, "K", "must be >= 1, got " + std::to_string(K));
        if (N < 1) fail_value(op, "N", "must be >= 1, got " + std::to_string(N));
        return qgemm_packed_size(K, N, check_isa(op, isa));
      },
      py::arg("K"), py::arg("N"), py::arg("isa") = py::none(),
      "Bytes of a packed int8 (K,N) weight for isa (None: qgemm_isa()).");

  m.def(
      "qgemm_pack_b",
      [](py::handle packed, py::handle b, py::handle isa) {
        const char* op = "qgemm_pack_b";
        auto B = in_i8(op, "b", b, {ANY, ANY}, "(K, N)");
        const int64_t K = B[0], N = B[1];
        check_k(op, "b", K);
        const char* name = check_isa(op, isa);
        const int64_t bytes = qgemm_packed_size(K, N, name);
        auto P = out<uint8_t>(op, "packed", packed, {bytes}, "(qgemm_packed_size(K, N, isa),)");
        py::gil_scoped_release nogil;
        qgemm_pack_b(P.data, B.data, K, N, name);
      },
      py::arg("packed").noconvert(), py::arg("b"), py::arg("isa") = py::none(),
      "packed = b int8 (K,N) in the int8 kernels' layout for isa (None: qgemm_isa()), with "
      "its column sums.");

  m.def(
      "qgemm_packed_info",
      [](py::handle packed) {
        const Packed p = get_packed("qgemm_packed_info", packed);
        py::array_t<int32_t> colsum(p.N);
        std::copy(qgemm_packed_colsum(p.buf.data), qgemm_packed_colsum(p.buf.data) + p.N,
                  colsum.mutable_data());
        return py::make_tuple(std::string(p.isa), p.K, p.N, colsum);
      },
      py::arg("packed"), "(isa, K, N, colsum int32 (N,)) of a packed weight.");

  m.def(
      "qgemm_s32",
      [](py::handle c, py::handle a, py::handle packed) {
        const char* op = "qgemm_s32";
        const Packed p = get_packed(op, packed);
        auto A = in<uint8_t>(op, "a", a, {ANY, p.K}, "(M, K)");
        const int64_t M = A[0];
        auto C = out<int32_t>(op, "c", c, {M, p.N}, "(M, N)");
        no_overlap(op, "c", C, "a", A);
        no_overlap(op, "c", C, "packed", p.buf);
        py::gil_scoped_release nogil;
        qgemm_s32(C.data, A.data, p.buf.data, M, p.N, p.K);
      },
      py::arg("c").noconvert(), py::arg("a"), py::arg("packed"),
      "c int32 (M,N) = a uint8 (M,K) @ b int8 (K,N), exact; b given packed.");

  m.def(
      "qdense_forward",
      [](py::handle y, py::handle xq, py::handle packed, py::handle w_scale, py::handle b,
         double x_scale, int64_t x_zero_point, Act act) {
        const char* op = "qdense_forward";
        const Packed p = get_packed(op, packed);
        auto XQ = in<uint8_t>(op, "xq", xq, {ANY, p.K}, "(M, K)");
        const int64_t M = XQ[0];
        const EpiArgs e = epi_args(op, w_scale, b, p.N);
        auto Y = out<float>(op, "y", y, {M, p.N}, "(M, N)");
        const float s = check_scale(op, "x_scale", x_scale);
        const int32_t z = check_zp(op, "x_zero_point", x_zero_point);
        no_overlap(op, "y", Y, "xq", XQ);
        no_overlap(op, "y", Y, "packed", p.buf);
        no_overlap(op, "y", Y, "w_scale", e.WS);
        no_overlap(op, "y", Y, "b", e.B);
        py::gil_scoped_release nogil;
        qdense_forward(Y.data, XQ.data, p.buf.data, e.WS.data, e.B.data, s, z, M, p.N, p.K, act);
      },
      py::arg("y").noconvert(), py::arg("xq"), py::arg("packed"), py::arg("w_scale"),
      py::arg("b"), py::arg("x_scale"), py::arg("x_zero_point"), py::arg("act") = Act::linear,
      (std::string("y float32 (M,N) from xq uint8 (M,K) and a packed int8 (K,N) weight: ") +
       kEpiDoc).c_str());

  m.def(
      "qdense_f32",
      [](py::handle y, py::handle xq, py::handle x, py::handle packed, py::handle w_scale,
         py::handle b, py::handle x_scale, int64_t x_zero_point, Act act) {
        const char* op = "qdense";
        const Packed p = get_packed(op, packed);
        auto X = in<float>(op, "x", x, {ANY, p.K}, "(M, K)");
        const int64_t M = X[0];
        // xq: accepted (checked) for callers that pass a scratch buffer; never written.
        Buf<uint8_t> XQ;
        if (!xq.is_none()) XQ = out<uint8_t>(op, "xq", xq, {M, p.K}, "(M, K)");
        const EpiArgs e = epi_args(op, w_scale, b, p.N);
        auto Y = out<float>(op, "y", y, {M, p.N}, "(M, N)");
        no_overlap(op, "y", Y, "x", X);
        no_overlap(op, "y", Y, "packed", p.buf);
        no_overlap(op, "y", Y, "w_scale", e.WS);
        no_overlap(op, "y", Y, "b", e.B);
        float s = 0.0f;
        int32_t z = 0;
        const bool dynamic = x_scale.is_none();
        if (!dynamic) {
          s = check_scale(op, "x_scale", py::cast<double>(x_scale));
          z = check_zp(op, "x_zero_point", x_zero_point);
        }
        bool ok = true;
        {
          py::gil_scoped_release nogil;  // once: range and product together
          if (dynamic) ok = quantize_range_u8(&s, &z, X.data, X.size);
          if (ok)
            qdense_forward_f32(Y.data, X.data, p.buf.data, e.WS.data, e.B.data, s, z, M, p.N,
                               p.K, act);
        }
        if (!ok)
          fail_value(op, "x", "holds NaN or infinity, which dynamic quantization cannot range");
        return py::make_tuple(s, z);
      },
      py::arg("y").noconvert(), py::arg("xq").noconvert(), py::arg("x"), py::arg("packed"),
      py::arg("w_scale"), py::arg("b"), py::arg("x_scale"), py::arg("x_zero_point") = 0,
      py::arg("act") = Act::linear,
      "qdense_forward of x float32 (M,K) quantized with (x_scale, x_zero_point), or "
      "dynamically when x_scale is None; x is quantized block by block inside the product "
      "(xq: None, or a uint8 (M,K) array that is checked but not written). Returns "
      "(x_scale, x_zero_point).");

  m.def(
      "qconv2d_f32",
      [](py::handle y, py::handle xq, py::handle col, py::handle x, py::handle packed,
         py::handle w_scale, py::handle b, py::handle x_scale, int64_t x_zero_point, int64_t KH,
         int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_left,
         int64_t dil_h, int64_t dil_w, Act act) {
        const char* op = "qconv2d";
        const Packed p = get_packed(op, packed);
        auto X = in<float>(op, "x", x, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        const int64_t N = X[0], H = X[1], W = X[2], C = X[3];
        if (KH < 1 || KW < 1 || stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1 ||
            pad_top < 0 || pad_left < 0)
          fail_value(op, "geometry", "needs KH, KW, strides, dilations >= 1 and pads >= 0");
        if (KH * KW * C != p.K)
          fail_value(op, "packed", "holds K = " + std::to_string(p.K) + " rows but KH·KW·C = " +
                                       std::to_string(KH * KW * C));
        auto YY = out<float>(op, "y", y, {N, ANY, ANY, p.N}, "(N, OH, OW, OC)");
        const int64_t OH = YY[1], OW = YY[2];
        auto XQ = out<uint8_t>(op, "xq", xq, {N, H, W, C}, "(N, H, W, C)");
        const EpiArgs e = epi_args(op, w_scale, b, p.N);
        Buf<uint8_t> COL;
        const bool direct = KH == 1 && KW == 1 && stride_h == 1 && stride_w == 1 &&
                            pad_top == 0 && pad_left == 0 && OH == H && OW == W;
        if (!direct) COL = out<uint8_t>(op, "col", col, {N * OH * OW, p.K}, "(N·OH·OW, KH·KW·C)");
        no_overlap(op, "y", YY, "x", X);
        no_overlap(op, "y", YY, "xq", XQ);
        no_overlap(op, "y", YY, "col", COL);
        no_overlap(op, "xq", XQ, "x", X);
        no_overlap(op, "col", COL, "xq", XQ);
        no_overlap(op, "col", COL, "x", X);
        const auto [s, z] = quantize_into(op, XQ.data, X.data, X.size, x_scale, x_zero_point);
        {
          py::gil_scoped_release nogil;
          qconv2d_forward(YY.data, COL.data, XQ.data, p.buf.data, e.WS.data, e.B.data, s, z, N,
                          H, W, C, p.N, KH, KW, stride_h, stride_w, pad_top, pad_left, dil_h,
                          dil_w, OH, OW, act);
        }
        return py::make_tuple(s, z);
      },
      py::arg("y").noconvert(), py::arg("xq").noconvert(), py::arg("col"), py::arg("x"),
      py::arg("packed"), py::arg("w_scale"), py::arg("b"), py::arg("x_scale"),
      py::arg("x_zero_point"), py::arg("KH"), py::arg("KW"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_left"), py::arg("dil_h"),
      py::arg("dil_w"), py::arg("act") = Act::linear,
      "y (N,OH,OW,OC) = int8 convolution of x float32 (N,H,W,C), quantized into xq (scratch) "
      "as qdense_f32 does, through im2col into col (uint8 (N·OH·OW, KH·KW·C) scratch; None "
      "for a 1x1 kernel, unit strides, no padding). Padding takes the zero point. Returns "
      "(x_scale, x_zero_point).");

  auto def_quant = [](py::module_& mod, auto qfn, auto dynfn) {
    mod.def(
        "quantize_u8",
        [qfn](py::handle q, py::handle x, double scale, int64_t zero_point) {
          const char* op = "quantize_u8";
          auto X = in<float>(op, "x", x, {ANY}, "(n,)");
          auto Q = out<uint8_t>(op, "q", q, {X[0]}, "(n,)");
          const float s = check_scale(op, "scale", scale);
          const int32_t z = check_zp(op, "zero_point", zero_point);
          py::gil_scoped_release nogil;
          qfn(Q.data, X.data, X[0], s, z);
        },
        py::arg("q").noconvert(), py::arg("x"), py::arg("scale"), py::arg("zero_point"),
        "q uint8 (n,) = clamp(rint(x / scale) + zero_point, 0, 255), NaN -> 0.");
    mod.def(
        "quantize_u8_dynamic",
        [dynfn](py::handle q, py::handle x) {
          const char* op = "quantize_u8_dynamic";
          auto X = in<float>(op, "x", x, {ANY}, "(n,)");
          auto Q = out<uint8_t>(op, "q", q, {X[0]}, "(n,)");
          float s = 0.0f;
          int32_t z = 0;
          bool ok;
          {
            py::gil_scoped_release nogil;
            ok = dynfn(Q.data, &s, &z, X.data, X[0]);
          }
          if (!ok) fail_value(op, "x", "holds NaN or infinity, which dynamic quantization cannot range");
          return py::make_tuple(s, z);
        },
        py::arg("q").noconvert(), py::arg("x"),
        "Per-tensor quantization of x float32 (n,) into q uint8 (n,) over the range "
        "[min(x, 0), max(x, 0)]; returns (scale, zero_point).");
  };
  def_quant(m, &quantize_u8, &quantize_u8_dynamic);

  m.def(
      "qim2col_u8",
      [](py::handle col, py::handle x, int64_t KH, int64_t KW, int64_t stride_h,
         int64_t stride_w, int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w,
         int64_t OH, int64_t OW, int64_t zero_point) {
        const char* op = "qim2col_u8";
        auto X = in<uint8_t>(op, "x", x, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        const int32_t z = check_zp(op, "zero_point", zero_point);
        auto COL = out<uint8_t>(op, "col", col, {X[0] * OH * OW, KH * KW * X[3]},
                                "(N·OH·OW, KH·KW·C)");
        no_overlap(op, "col", COL, "x", X);
        py::gil_scoped_release nogil;
        qim2col_u8(COL.data, X.data, X[0], X[1], X[2], X[3], KH, KW, stride_h, stride_w,
                   pad_top, pad_left, dil_h, dil_w, OH, OW, uint8_t(z));
      },
      py::arg("col").noconvert(), py::arg("x"), py::arg("KH"), py::arg("KW"),
      py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_left"),
      py::arg("dil_h"), py::arg("dil_w"), py::arg("OH"), py::arg("OW"), py::arg("zero_point"));

  // ---- plain twins --------------------------------------------------------------
  py::module_ plain = plain_module(m);
  def_quant(plain, &quantize_u8_naive, &quantize_u8_dynamic_naive);
  plain.def(
      "qgemm_s32",
      [](py::handle c, py::handle a, py::handle b) {
        const char* op = "plain.qgemm_s32";
        auto B = in_i8(op, "b", b, {ANY, ANY}, "(K, N)");
        auto A = in<uint8_t>(op, "a", a, {ANY, B[0]}, "(M, K)");
        auto C = out<int32_t>(op, "c", c, {A[0], B[1]}, "(M, N)");
        py::gil_scoped_release nogil;
        qgemm_s32_naive(C.data, A.data, B.data, A[0], B[1], B[0]);
      },
      py::arg("c").noconvert(), py::arg("a"), py::arg("b"));
  plain.def(
      "qdense_forward",
      [](py::handle y, py::handle xq, py::handle w, py::handle w_scale, py::handle b,
         double x_scale, int64_t x_zero_point, Act act) {
        const char* op = "plain.qdense_forward";
        auto W = in_i8(op, "w", w, {ANY, ANY}, "(K, N)");
        auto XQ = in<uint8_t>(op, "xq", xq, {ANY, W[0]}, "(M, K)");
        const EpiArgs e = epi_args(op, w_scale, b, W[1]);
        auto Y = out<float>(op, "y", y, {XQ[0], W[1]}, "(M, N)");
        const float s = check_scale(op, "x_scale", x_scale);
        const int32_t z = check_zp(op, "x_zero_point", x_zero_point);
        py::gil_scoped_release nogil;
        qdense_forward_naive(Y.data, XQ.data, W.data, e.WS.data, e.B.data, s, z, XQ[0], W[1],
                             W[0], act);
      },
      py::arg("y").noconvert(), py::arg("xq"), py::arg("w"), py::arg("w_scale"), py::arg("b"),
      py::arg("x_scale"), py::arg("x_zero_point"), py::arg("act") = Act::linear);
  plain.def(
      "qconv2d_forward",
      [](py::handle y, py::handle xq, py::handle w, py::handle w_scale, py::handle b,
         double x_scale, int64_t x_zero_point, int64_t stride_h, int64_t stride_w,
         int64_t pad_top, int64_t pad_left, int64_t dil_h, int64_t dil_w, Act act) {
        const char* op = "plain.qconv2d_forward";
        auto XQ = in<uint8_t>(op, "xq", xq, {ANY, ANY, ANY, ANY}, "(N, H, W, C)");
        auto W = in_i8(op, "w", w, {ANY, ANY, XQ[3], ANY}, "(KH, KW, C, OC)");
        const EpiArgs e = epi_args(op, w_scale, b, W[3]);
        auto Y = out<float>(op, "y", y, {XQ[0], ANY, ANY, W[3]}, "(N, OH, OW, OC)");
        const float s = check_scale(op, "x_scale", x_scale);
        const int32_t z = check_zp(op, "x_zero_point", x_zero_point);
        py::gil_scoped_release nogil;
        qconv2d_forward_naive(Y.data, XQ.data, W.data, e.WS.data, e.B.data, s, z, XQ[0], XQ[1],
                              XQ[2], XQ[3], W[3], W[0], W[1], stride_h, stride_w, pad_top,
                              pad_left, dil_h, dil_w, Y[1], Y[2], act);
      },
      py::arg("y").noconvert(), py::arg("xq"), py::arg("w"), py::arg("w_scale"), py::arg("b"),
      py::arg("x_scale"), py::arg("x_zero_point"), py::arg("stride_h"), py::arg("stride_w"),
      py::arg("pad_top"), py::arg("pad_left"), py::arg("dil_h"), py::arg("dil_w"),
      py::arg("act") = Act::linear);
}

}  // namespace fastnn::bind
