// Bindings of lstm.h, gru.h and simple_rnn.h. Shapes: x (N, T, C); W (C, G·U) and
// R (U, G·U) with G = 4 (LSTM), 3 (GRU), 1 (SimpleRNN); h0, c0, rmask, dhT, dcT (N, U);
// mask (N, T) uint8 (nonzero = real step). Every array float32 C-contiguous except mask;
// None means absent. The scratch the kernels need is allocated here, or passed as
// work (1-D float32 of at least *_backward_work(N, T, U) floats) by callers that repeat.
#include <string>
#include <vector>

#include "check.h"
#include "fastnn/gru.h"
#include "fastnn/lstm.h"
#include "fastnn/simple_rnn.h"

namespace fastnn::bind {

void bind_act_enum(py::module_& m);

namespace {

// The inputs every recurrent kernel shares, checked.
struct Seq {
  Buf<float> x, h0, rmask, W, R;
  Buf<uint8_t> mask;
  int64_t N = 0, T = 0, C = 0, U = 0;
};

Seq check_seq(const char* op, int64_t gates, py::handle x, py::handle h0, py::handle mask,
              py::handle rmask, py::handle W, py::handle R) {
  Seq s;
  s.x = in<float>(op, "x", x, {ANY, ANY, ANY}, "(N, T, C)");
  s.N = s.x[0], s.T = s.x[1], s.C = s.x[2];
  const std::string gu = gates == 1 ? "U" : std::to_string(gates) + "U";
  s.R = in<float>(op, "R", R, {ANY, ANY}, ("(U, " + gu + ")").c_str());
  s.U = s.R[0];
  require(s.R[1] == gates * s.U, op, "R",
          [&] { return "must have shape (U, " + gu + "), got " + shape_str(s.R.shape); });
  s.W = in<float>(op, "W", W, {s.C, gates * s.U}, ("(C, " + gu + ")").c_str());
  s.h0 = in_opt<float>(op, "h0", h0, {s.N, s.U}, "(N, U)");
  s.rmask = in_opt<float>(op, "rmask", rmask, {s.N, s.U}, "(N, U)");
  s.mask = in_opt<uint8_t>(op, "mask", mask, {s.N, s.T}, "(N, T)");
  return s;
}

Act rnn_act(const char* op, Act act) {
  require(act == Act::tanh || act == Act::relu, op, "activation", "must be Act.tanh or Act.relu");
  return act;
}

}  // namespace

void bind_recurrent(py::module_& m) {
  bind_act_enum(m);
  m.def("lstm_backward_work", &lstm_backward_work, py::arg("N"), py::arg("T"), py::arg("U"),
        "Floats of scratch lstm_backward needs (its work argument).");
  m.def("gru_backward_work", &gru_backward_work, py::arg("N"), py::arg("T"), py::arg("U"),
        py::arg("reset_after") = true, "Floats of scratch gru_backward needs.");
  m.def("simple_rnn_backward_work", &simple_rnn_backward_work, py::arg("N"), py::arg("T"),
        py::arg("U"), "Floats of scratch simple_rnn_backward needs.");

  m.def(
      "lstm_forward",
      [](py::handle y, py::handle c, py::handle gates, py::handle x, py::handle h0,
         py::handle c0, py::handle mask, py::handle rmask, py::handle W, py::handle R,
         py::handle b, bool reverse, bool naive) {
        const char* op = "lstm_forward";
        Seq s = check_seq(op, 4, x, h0, mask, rmask, W, R);
        const int64_t N = s.N, T = s.T, U = s.U;
        auto C0 = in_opt<float>(op, "c0", c0, {N, U}, "(N, U)");
        auto B = in_opt<float>(op, "b", b, {4 * U}, "(4U,)");
        auto Y = out<float>(op, "y", y, {N, T, U}, "(N, T, U)");
        auto CS = out<float>(op, "c", c, {N, T, U}, "(N, T, U)");
        auto Gt = out<float>(op, "gates", gates, {N, T, 4 * U}, "(N, T, 4U)");
        no_overlap_all(op, {{"y", &Y}, {"c", &CS}, {"gates", &Gt}},
                       {{"y", &Y}, {"c", &CS}, {"gates", &Gt}, {"x", &s.x}, {"h0", &s.h0},
                        {"c0", &C0}, {"rmask", &s.rmask}, {"W", &s.W}, {"R", &s.R}, {"b", &B}});
        std::vector<float> own(size_t(lstm_forward_work(N, U)));
        py::gil_scoped_release nogil;
        (naive ? lstm_forward_naive : lstm_forward)(Y.data, CS.data, Gt.data, s.x.data,
                                                    s.h0.data, C0.data, s.mask.data,
                                                    s.rmask.data, s.W.data, s.R.data, B.data, N,
                                                    T, s.C, U, reverse, own.data());
      },
      py::arg("y"), py::arg("c"), py::arg("gates"), py::arg("x"), py::arg("h0"), py::arg("c0"),
      py::arg("mask"), py::arg("rmask"), py::arg("W"), py::arg("R"), py::arg("b"),
      py::arg("reverse") = false, py::arg("naive") = false,
      "LSTM over x (N,T,C): y, c (N,T,U) states, gates (N,T,4U) = i, f, g, o. W (C,4U), "
      "R (U,4U), b (4U) or None (Keras layout); h0, c0 (N,U), mask (N,T) uint8, rmask (N,U) "
      "or None. reverse runs t = T-1..0 (outputs stay at index t). naive=True runs the plain "
      "twin.");

  m.def(
      "lstm_backward",
      [](py::handle dx, py::handle dW, py::handle dR, py::handle db, py::handle dh0,
         py::handle dc0, py::handle dy, py::handle dhT, py::handle dcT, py::handle y,
         py::handle c, py::handle gates, py::handle x, py::handle h0, py::handle c0,
         py::handle mask, py::handle rmask, py::handle W, py::handle R, bool reverse,
         py::handle work, bool naive) {
        const char* op = "lstm_backward";
        Seq s = check_seq(op, 4, x, h0, mask, rmask, W, R);
        const int64_t N = s.N, T = s.T, C = s.C, U = s.U;
        auto C0 = in_opt<float>(op, "c0", c0, {N, U}, "(N, U)");
        auto Y = in<float>(op, "y", y, {N, T, U}, "(N, T, U)");
        auto CS = in<float>(op, "c", c, {N, T, U}, "(N, T, U)");
        auto Gt = in<float>(op, "gates", gates, {N, T, 4 * U}, "(N, T, 4U)");
        auto DY = in_opt<float>(op, "dy", dy, {N, T, U}, "(N, T, U)");
        auto DHT = in_opt<float>(op, "dhT", dhT, {N, U}, "(N, U)");
        auto DCT = in_opt<float>(op, "dcT", dcT, {N, U}, "(N, U)");
        auto DX = out_opt<float>(op, "dx", dx, {N, T, C}, "(N, T, C)");
        auto DW = out_opt<float>(op, "dW", dW, {C, 4 * U}, "(C, 4U)");
        auto DR = out_opt<float>(op, "dR", dR, {U, 4 * U}, "(U, 4U)");
        auto DB = out_opt<float>(op, "db", db, {4 * U}, "(4U,)");
        auto DH0 = out_opt<float>(op, "dh0", dh0, {N, U}, "(N, U)");
        auto DC0 = out_opt<float>(op, "dc0", dc0, {N, U}, "(N, U)");
        no_overlap_all(op,
                       {{"dx", &DX}, {"dW", &DW}, {"dR", &DR}, {"db", &DB}, {"dh0", &DH0},
                        {"dc0", &DC0}},
                       {{"dx", &DX}, {"dW", &DW}, {"dR", &DR}, {"db", &DB}, {"dh0", &DH0},
                        {"dc0", &DC0}, {"dy", &DY}, {"dhT", &DHT}, {"dcT", &DCT}, {"y", &Y},
                        {"c", &CS}, {"gates", &Gt}, {"x", &s.x}, {"h0", &s.h0}, {"c0", &C0},
                        {"rmask", &s.rmask}, {"W", &s.W}, {"R", &s.R}});
        std::vector<float> own;
        float* wk = scratch(op, work, lstm_backward_work(N, T, U), own);
        py::gil_scoped_release nogil;
        (naive ? lstm_backward_naive : lstm_backward)(
            DX.data, DW.data, DR.data, DB.data, DH0.data, DC0.data, DY.data, DHT.data,
            DCT.data, Y.data, CS.data, Gt.data, s.x.data, s.h0.data, C0.data, s.mask.data,
            s.rmask.data, s.W.data, s.R.data, N, T, C, U, reverse, wk);
      },
      py::arg("dx"), py::arg("dW"), py::arg("dR"), py::arg("db"), py::arg("dh0"),
      py::arg("dc0"), py::arg("dy"), py::arg("dhT"), py::arg("dcT"), py::arg("y"),
      py::arg("c"), py::arg("gates"), py::arg("x"), py::arg("h0"), py::arg("c0"),
      py::arg("mask"), py::arg("rmask"), py::arg("W"), py::arg("R"), py::arg("reverse") = false,
      py::arg("work") = py::none(), py::arg("naive") = false,
      "Adds the LSTM gradients into dx (N,T,C), dW, dR, db, dh0, dc0 (each may be None) from "
      "dy (N,T,U) and dhT, dcT (N,U) (None: zero) and what lstm_forward saved.");

  m.def(
      "gru_forward",
      [](py::handle y, py::handle gates, py::handle hn, py::handle x, py::handle h0,
         py::handle mask, py::handle rmask, py::handle W, py::handle R, py::handle b,
         bool reverse, bool reset_after, bool naive) {
        const char* op = "gru_forward";
        Seq s = check_seq(op, 3, x, h0, mask, rmask, W, R);
        const int64_t N = s.N, T = s.T, U = s.U;
        auto B = reset_after ? in_opt<float>(op, "b", b, {2, 3 * U}, "(2, 3U) (reset_after)")
                             : in_opt<float>(op, "b", b, {3 * U}, "(3U,) (reset_after=False)");
        auto Y = out<float>(op, "y", y, {N, T, U}, "(N, T, U)");
        auto Gt = out<float>(op, "gates", gates, {N, T, 3 * U}, "(N, T, 3U)");
        auto HN = out<float>(op, "hn", hn, {N, T, U}, "(N, T, U)");
        no_overlap_all(op, {{"y", &Y}, {"gates", &Gt}, {"hn", &HN}},
                       {{"y", &Y}, {"gates", &Gt}, {"hn", &HN}, {"x", &s.x}, {"h0", &s.h0},
                        {"rmask", &s.rmask}, {"W", &s.W}, {"R", &s.R}, {"b", &B}});
        std::vector<float> own(size_t(gru_forward_work(N, U)));
        py::gil_scoped_release nogil;
        (naive ? gru_forward_naive : gru_forward)(Y.data, Gt.data, HN.data, s.x.data,
                                                  s.h0.data, s.mask.data, s.rmask.data,
                                                  s.W.data, s.R.data, B.data, N, T, s.C, U,
                                                  reverse, reset_after, own.data());
      },
      py::arg("y"), py::arg("gates"), py::arg("hn"), py::arg("x"), py::arg("h0"),
      py::arg("mask"), py::arg("rmask"), py::arg("W"), py::arg("R"), py::arg("b"),
      py::arg("reverse") = false, py::arg("reset_after") = true, py::arg("naive") = false,
      "GRU over x (N,T,C): y (N,T,U), gates (N,T,3U) = z, r, hh, hn (N,T,U). W (C,3U), "
      "R (U,3U), b (2,3U) when reset_after else (3U,), or None.");

  m.def(
      "gru_backward",
      [](py::handle dx, py::handle dW, py::handle dR, py::handle db, py::handle dh0,
         py::handle dy, py::handle dhT, py::handle y, py::handle gates, py::handle hn,
         py::handle x, py::handle h0, py::handle mask, py::handle rmask, py::handle W,
         py::handle R, bool reverse, bool reset_after, py::handle work, bool naive) {
        const char* op = "gru_backward";
        Seq s = check_seq(op, 3, x, h0, mask, rmask, W, R);
        const int64_t N = s.N, T = s.T, C = s.C, U = s.U;
        auto Y = in<float>(op, "y", y, {N, T, U}, "(N, T, U)");
        auto Gt = in<float>(op, "gates", gates, {N, T, 3 * U}, "(N, T, 3U)");
        auto HN = in<float>(op, "hn", hn, {N, T, U}, "(N, T, U)");
        auto DY = in_opt<float>(op, "dy", dy, {N, T, U}, "(N, T, U)");
        auto DHT = in_opt<float>(op, "dhT", dhT, {N, U}, "(N, U)");
        auto DX = out_opt<float>(op, "dx", dx, {N, T, C}, "(N, T, C)");
        auto DW = out_opt<float>(op, "dW", dW, {C, 3 * U}, "(C, 3U)");
        auto DR = out_opt<float>(op, "dR", dR, {U, 3 * U}, "(U, 3U)");
        auto DB = reset_after ? out_opt<float>(op, "db", db, {2, 3 * U}, "(2, 3U) (reset_after)")
                              : out_opt<float>(op, "db", db, {3 * U}, "(3U,) (reset_after=False)");
        auto DH0 = out_opt<float>(op, "dh0", dh0, {N, U}, "(N, U)");
        no_overlap_all(op, {{"dx", &DX}, {"dW", &DW}, {"dR", &DR}, {"db", &DB}, {"dh0", &DH0}},
                       {{"dx", &DX}, {"dW", &DW}, {"dR", &DR}, {"db", &DB}, {"dh0", &DH0},
                        {"dy", &DY}, {"dhT", &DHT}, {"y", &Y}, {"gates", &Gt}, {"hn", &HN},
                        {"x", &s.x}, {"h0", &s.h0}, {"rmask", &s.rmask}, {"W", &s.W},
                        {"R", &s.R}});
        std::vector<float> own;
        float* wk = scratch(op, work, gru_backward_work(N, T, U, reset_after), own);
        py::gil_scoped_release nogil;
        (naive ? gru_backward_naive : gru_backward)(
            DX.data, DW.data, DR.data, DB.data, DH0.data, DY.data, DHT.data, Y.data, Gt.data,
            HN.data, s.x.data, s.h0.data, s.mask.data, s.rmask.data, s.W.data, s.R.data, N, T,
            C, U, reverse, reset_after, wk);
      },
      py::arg("dx"), py::arg("dW"), py::arg("dR"), py::arg("db"), py::arg("dh0"), py::arg("dy"),
      py::arg("dhT"), py::arg("y"), py::arg("gates"), py::arg("hn"), py::arg("x"),
      py::arg("h0"), py::arg("mask"), py::arg("rmask"), py::arg("W"), py::arg("R"),
      py::arg("reverse") = false, py::arg("reset_after") = true, py::arg("work") = py::none(),
      py::arg("naive") = false,
      "Adds the GRU gradients into dx, dW, dR, db, dh0 (each may be None) from dy (N,T,U) "
      "and dhT (N,U) (None: zero) and what gru_forward saved.");

  m.def(
      "simple_rnn_forward",
      [](py::handle y, py::handle x, py::handle h0, py::handle mask, py::handle rmask,
         py::handle W, py::handle R, py::handle b, bool reverse, Act act, bool naive) {
        const char* op = "simple_rnn_forward";
        Seq s = check_seq(op, 1, x, h0, mask, rmask, W, R);
        const int64_t N = s.N, T = s.T, U = s.U;
        rnn_act(op, act);
        auto B = in_opt<float>(op, "b", b, {U}, "(U,)");
        auto Y = out<float>(op, "y", y, {N, T, U}, "(N, T, U)");
        no_overlap_all(op, {{"y", &Y}},
                       {{"x", &s.x}, {"h0", &s.h0}, {"rmask", &s.rmask}, {"W", &s.W},
                        {"R", &s.R}, {"b", &B}});
        std::vector<float> own(size_t(simple_rnn_forward_work(N, U)));
        py::gil_scoped_release nogil;
        (naive ? simple_rnn_forward_naive : simple_rnn_forward)(
            Y.data, s.x.data, s.h0.data, s.mask.data, s.rmask.data, s.W.data, s.R.data, B.data,
            N, T, s.C, U, reverse, act, own.data());
      },
      py::arg("y"), py::arg("x"), py::arg("h0"), py::arg("mask"), py::arg("rmask"),
      py::arg("W"), py::arg("R"), py::arg("b"), py::arg("reverse") = false,
      py::arg("activation") = Act::tanh, py::arg("naive") = false,
      "SimpleRNN over x (N,T,C): y (N,T,U). W (C,U), R (U,U), b (U,) or None; activation "
      "Act.tanh or Act.relu.");

  m.def(
      "simple_rnn_backward",
      [](py::handle dx, py::handle dW, py::handle dR, py::handle db, py::handle dh0,
         py::handle dy, py::handle dhT, py::handle y, py::handle x, py::handle h0,
         py::handle mask, py::handle rmask, py::handle W, py::handle R, bool reverse, Act act,
         py::handle work, bool naive) {
        const char* op = "simple_rnn_backward";
        Seq s = check_seq(op, 1, x, h0, mask, rmask, W, R);
        const int64_t N = s.N, T = s.T, C = s.C, U = s.U;
        rnn_act(op, act);
        auto Y = in<float>(op, "y", y, {N, T, U}, "(N, T, U)");
        auto DY = in_opt<float>(op, "dy", dy, {N, T, U}, "(N, T, U)");
        auto DHT = in_opt<float>(op, "dhT", dhT, {N, U}, "(N, U)");
        auto DX = out_opt<float>(op, "dx", dx, {N, T, C}, "(N, T, C)");
        auto DW = out_opt<float>(op, "dW", dW, {C, U}, "(C, U)");
        auto DR = out_opt<float>(op, "dR", dR, {U, U}, "(U, U)");
        auto DB = out_opt<float>(op, "db", db, {U}, "(U,)");
        auto DH0 = out_opt<float>(op, "dh0", dh0, {N, U}, "(N, U)");
        no_overlap_all(op, {{"dx", &DX}, {"dW", &DW}, {"dR", &DR}, {"db", &DB}, {"dh0", &DH0}},
                       {{"dx", &DX}, {"dW", &DW}, {"dR", &DR}, {"db", &DB}, {"dh0", &DH0},
                        {"dy", &DY}, {"dhT", &DHT}, {"y", &Y}, {"x", &s.x}, {"h0", &s.h0},
                        {"rmask", &s.rmask}, {"W", &s.W}, {"R", &s.R}});
        std::vector<float> own;
        float* wk = scratch(op, work, simple_rnn_backward_work(N, T, U), own);
        py::gil_scoped_release nogil;
        (naive ? simple_rnn_backward_naive : simple_rnn_backward)(
            DX.data, DW.data, DR.data, DB.data, DH0.data, DY.data, DHT.data, Y.data, s.x.data,
            s.h0.data, s.mask.data, s.rmask.data, s.W.data, s.R.data, N, T, C, U, reverse, act,
            wk);
      },
      py::arg("dx"), py::arg("dW"), py::arg("dR"), py::arg("db"), py::arg("dh0"), py::arg("dy"),
      py::arg("dhT"), py::arg("y"), py::arg("x"), py::arg("h0"), py::arg("mask"),
      py::arg("rmask"), py::arg("W"), py::arg("R"), py::arg("reverse") = false,
      py::arg("activation") = Act::tanh, py::arg("work") = py::none(), py::arg("naive") = false,
      "Adds the SimpleRNN gradients into dx, dW, dR, db, dh0 (each may be None) from dy "
      "(N,T,U) and dhT (N,U) (None: zero) and y from simple_rnn_forward.");
}

}  // namespace fastnn::bind
