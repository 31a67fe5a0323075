// Bindings of qrecurrent.h: int8 LSTM and GRU inference. Shapes: x (N, T, C) float32;
// Wp, Rp (and Rhp) uint8 buffers of qgemm_pack_b (fastnn.ops.QWeight.packed) for the
// (C, G·U) and (U, G·U) int8 kernels; w_scale, r_scale float32 per column; h0, c0 (N, U);
// mask (N, T) uint8 (nonzero = real step); y, c (N, T, U) and xa (N, T, G·U) written;
// ra (N, T, G·U) and hn (N, T, U) written when given. x_scale / h_scale None means
// dynamic quantization (per call for x, per step for h).
#include <cmath>
#include <string>
#include <vector>

#include "check.h"
#include "fastnn/qgemm.h"
#include "fastnn/qrecurrent.h"

namespace fastnn::bind {

namespace {

struct Packed {
  Buf<uint8_t> buf;
  int64_t K = 0, N = 0;
};

Packed packed_arg(const char* op, const char* name, py::handle obj, int64_t K, int64_t N,
                  const std::string& doc) {
  Packed p;
  p.buf = in<uint8_t>(op, name, obj, {ANY}, "(bytes,)");
  if (!qgemm_packed_info(p.buf.data, p.buf.size, &p.K, &p.N))
    fail_value(op, name, "is not a weight packed by qgemm_pack_b on this CPU (bad header or "
                         "size)");
  require((K == ANY || p.K == K) && (N == ANY || p.N == N), op, name, [&] {
    return "must be a packed int8 weight of shape " + doc + ", got one of shape (" +
           std::to_string(p.K) + ", " + std::to_string(p.N) + ")";
  });
  return p;
}

// (scale, zero point) of a static input, or (0, 0) for dynamic quantization (None).
std::pair<float, int32_t> qparams(const char* op, const char* sname, const char* zname,
                                  py::handle scale, int64_t zp) {
  if (scale.is_none()) return {0.0f, 0};
  const double s = py::cast<double>(scale);
  if (!(std::isfinite(s) && s > 0.0 && float(s) > 0.0f && std::isfinite(float(s))))
    fail_value(op, sname, "must be None (dynamic) or a finite float32 > 0, got " +
                              std::to_string(s));
  require(zp >= 0 && zp <= 255, op, zname,
          [&] { return "must be an integer in [0, 255], got " + std::to_string(zp); });
  return {float(s), int32_t(zp)};
}

// What both forwards share, checked: x, the packed kernels, scales, h0, mask, outputs.
struct Args {
  Buf<float> x, h0, ws, rs, y, xa, ra;
  Buf<uint8_t> mask;
  Packed W, R;
  int64_t N = 0, T = 0, C = 0, U = 0;
  std::pair<float, int32_t> xq, hq;
};

Args check_args(const char* op, int64_t gates, int64_t rwidth_gates, py::handle y,
                py::handle xa, py::handle ra, py::handle x, py::handle h0, py::handle mask,
                py::handle Wp, py::handle w_scale, py::handle Rp, py::handle r_scale,
                py::handle x_scale, int64_t x_zp, py::handle h_scale, int64_t h_zp) {
  Args a;
  const std::string g = std::to_string(gates) + "U";
  a.R = packed_arg(op, "Rp", Rp, ANY, ANY, "(U, " + std::to_string(rwidth_gates) + "U)");
  a.U = a.R.K;
  require(a.R.N == rwidth_gates * a.U, op, "Rp", [&] {
    return "must be a packed int8 weight of shape (U, " + std::to_string(rwidth_gates) +
           "U), got one of shape (" + std::to_string(a.R.K) + ", " + std::to_string(a.R.N) +
           ")";
  });
  const int64_t G = gates * a.U;
  a.W = packed_arg(op, "Wp", Wp, ANY, G, "(C, " + g + ") = (C, " + std::to_string(G) + ")");
  a.C = a.W.K;
  a.x = in<float>(op, "x", x, {ANY, ANY, a.C}, "(N, T, C) with C the rows of Wp");
  a.N = a.x[0], a.T = a.x[1];
  a.ws = in<float>(op, "w_scale", w_scale, {G}, ("(" + g + ",)").c_str());
  a.rs = in<float>(op, "r_scale", r_scale, {a.R.N}, "(columns of Rp,)");
  a.h0 = in_opt<float>(op, "h0", h0, {a.N, a.U}, "(N, U)");
  a.mask = in_opt<uint8_t>(op, "mask", mask, {a.N, a.T}, "(N, T)");
  a.y = out<float>(op, "y", y, {a.N, a.T, a.U}, "(N, T, U)");
  a.xa = out<float>(op, "xa", xa, {a.N, a.T, G}, ("(N, T, " + g + ")").c_str());
  a.ra = out_opt<float>(op, "ra", ra, {a.N, a.T, G}, ("(N, T, " + g + ")").c_str());
  a.xq = qparams(op, "x_scale", "x_zero_point", x_scale, x_zp);
  a.hq = qparams(op, "h_scale", "h_zero_point", h_scale, h_zp);
  return a;
}

void nonfinite(const char* op) {
  fail_value(op, "x", "holds NaN or infinity (or leads to them), which dynamic quantization "
                      "cannot range");
}

}  // namespace

void bind_qrecurrent(py::module_& m) {
  m.def("qlstm_forward_work", &qlstm_forward_work, py::arg("N"), py::arg("U"),
        "Floats of scratch qlstm_forward needs (its work argument).");
  m.def("qgru_forward_work", &qgru_forward_work, py::arg("N"), py::arg("U"),
        "Floats of scratch qgru_forward needs.");
  m.def(
      "qlstm_forward",
      [](py::handle y, py::handle c, py::handle xa, py::handle ra, py::handle x, py::handle h0,
         py::handle c0, py::handle mask, py::handle Wp, py::handle w_scale, py::handle Rp,
         py::handle r_scale, py::handle b, py::handle x_scale, int64_t x_zero_point,
         py::handle h_scale, int64_t h_zero_point, bool reverse, py::handle work) {
        const char* op = "qlstm_forward";
        Args a = check_args(op, 4, 4, y, xa, ra, x, h0, mask, Wp, w_scale, Rp, r_scale, x_scale,
                            x_zero_point, h_scale, h_zero_point);
        const int64_t N = a.N, T = a.T, U = a.U;
        auto C0 = in_opt<float>(op, "c0", c0, {N, U}, "(N, U)");
        auto B = in_opt<float>(op, "b", b, {4 * U}, "(4U,)");
        auto CS = out<float>(op, "c", c, {N, T, U}, "(N, T, U)");
        no_overlap_all(op, {{"y", &a.y}, {"c", &CS}, {"xa", &a.xa}, {"ra", &a.ra}},
                       {{"y", &a.y}, {"c", &CS}, {"xa", &a.xa}, {"ra", &a.ra}, {"x", &a.x},
                        {"h0", &a.h0}, {"c0", &C0}, {"w_scale", &a.ws}, {"r_scale", &a.rs},
                        {"b", &B}});
        std::vector<float> own;
        float* wk = scratch(op, work, qlstm_forward_work(N, U), own);
        bool ok;
        {
          py::gil_scoped_release nogil;
          ok = qlstm_forward(a.y.data, CS.data, a.xa.data, a.ra.data, a.x.data, a.h0.data,
                             C0.data, a.mask.data, a.W.buf.data, a.ws.data, a.R.buf.data,
                             a.rs.data, B.data, a.xq.first, a.xq.second, a.hq.first,
                             a.hq.second, N, T, a.C, U, reverse, wk);
        }
        if (!ok) nonfinite(op);
      },
      py::arg("y").noconvert(), py::arg("c").noconvert(), py::arg("xa").noconvert(),
      py::arg("ra").noconvert(), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("mask"),
      py::arg("Wp"), py::arg("w_scale"), py::arg("Rp"), py::arg("r_scale"), py::arg("b"),
      py::arg("x_scale"), py::arg("x_zero_point") = 0, py::arg("h_scale") = py::none(),
      py::arg("h_zero_point") = 0, py::arg("reverse") = false, py::arg("work") = py::none(),
      "Int8 LSTM over x (N,T,C) (see qrecurrent.h): y, c (N,T,U); xa (N,T,4U) the input "
      "projections; ra (N,T,4U) or None the recurrent products. Wp, Rp packed int8 (C,4U), "
      "(U,4U); b (4U) or None; x_scale / h_scale None: dynamic.");
  m.def(
      "qgru_forward",
      [](py::handle y, py::handle xa, py::handle ra, py::handle hn, py::handle x, py::handle h0,
         py::handle mask, py::handle Wp, py::handle w_scale, py::handle Rp, py::handle r_scale,
         py::handle Rhp, py::handle rh_scale, py::handle b, py::handle x_scale,
         int64_t x_zero_point, py::handle h_scale, int64_t h_zero_point, bool reverse,
         bool reset_after, py::handle work) {
        const char* op = "qgru_forward";
        Args a = check_args(op, 3, reset_after ? 3 : 2, y, xa, ra, x, h0, mask, Wp, w_scale, Rp,
                            r_scale, x_scale, x_zero_point, h_scale, h_zero_point);
        const int64_t N = a.N, T = a.T, U = a.U;
        Buf<float> B, RHS, HN;
        Packed RH;
        if (reset_after) {
          B = in_opt<float>(op, "b", b, {2, 3 * U}, "(2, 3U)");
          require(Rhp.is_none(), op, "Rhp", "must be None when reset_after=True");
          require(hn.is_none(), op, "hn", "must be None when reset_after=True");
        } else {
          B = in_opt<float>(op, "b", b, {3 * U}, "(3U,)");
          RH = packed_arg(op, "Rhp", Rhp, U, U,
                          "(U, U) = (" + std::to_string(U) + ", " + std::to_string(U) + ")");
          RHS = in<float>(op, "rh_scale", rh_scale, {U}, "(U,)");
          HN = out_opt<float>(op, "hn", hn, {N, a.T, U}, "(N, T, U)");
        }
        no_overlap_all(op, {{"y", &a.y}, {"xa", &a.xa}, {"ra", &a.ra}, {"hn", &HN}},
                       {{"y", &a.y}, {"xa", &a.xa}, {"ra", &a.ra}, {"hn", &HN}, {"x", &a.x},
                        {"h0", &a.h0}, {"w_scale", &a.ws}, {"r_scale", &a.rs},
                        {"rh_scale", &RHS}, {"b", &B}});
        std::vector<float> own;
        float* wk = scratch(op, work, qgru_forward_work(N, U), own);
        bool ok;
        {
          py::gil_scoped_release nogil;
          ok = qgru_forward(a.y.data, a.xa.data, a.ra.data, HN.data, a.x.data, a.h0.data,
                            a.mask.data, a.W.buf.data, a.ws.data, a.R.buf.data, a.rs.data,
                            RH.buf.data, RHS.data, B.data, a.xq.first, a.xq.second, a.hq.first,
                            a.hq.second, N, a.T, a.C, U, reverse, reset_after, wk);
        }
        if (!ok) nonfinite(op);
      },
      py::arg("y").noconvert(), py::arg("xa").noconvert(), py::arg("ra").noconvert(),
      py::arg("hn").noconvert(), py::arg("x"), py::arg("h0"), py::arg("mask"), py::arg("Wp"),
      py::arg("w_scale"), py::arg("Rp"), py::arg("r_scale"), py::arg("Rhp"),
      py::arg("rh_scale"), py::arg("b"), py::arg("x_scale"), py::arg("x_zero_point") = 0,
      py::arg("h_scale") = py::none(), py::arg("h_zero_point") = 0,
      py::arg("reverse") = false, py::arg("reset_after") = true, py::arg("work") = py::none(),
      "Int8 GRU over x (N,T,C) (see qrecurrent.h): y (N,T,U); xa (N,T,3U); ra (N,T,3U) or "
      "None; hn (N,T,U) or None (original form). reset_after: Rp packed (U,3U), Rhp and "
      "rh_scale None, b (2,3U) or None. Original form: Rp packed R[:, :2U], Rhp packed "
      "R[:, 2U:], b (3U) or None.");
}

}  // namespace fastnn::bind
