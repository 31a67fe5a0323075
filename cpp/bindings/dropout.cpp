#include "fastnn/dropout.h"

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "check.h"

namespace fastnn::bind {

namespace {

// Every dimension of obj's shape as a wildcard: dropout works on arrays of any shape.
std::vector<int64_t> any_shape(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return {ANY};  // get() then names the wrong type
  return std::vector<int64_t>(size_t(py::reinterpret_borrow<py::array>(obj).ndim()), ANY);
}

void check_rate(const char* op, float rate) {
  if (rate >= 0.0f && rate < 1.0f) return;  // (message built only on failure)
  std::ostringstream s;
  s << "must be in [0, 1) (as float32), got " << rate;
  fail_value(op, "rate", s.str());
}

// An integer (anything with __index__, e.g. numpy integers) in [0, 2**64).
uint64_t get_seed(const char* op, py::handle obj) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
    fail_type(op, "seed", "must be an int in [0, 2**64), got " +
                              std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  const unsigned long long s = PyLong_AsUnsignedLongLong(value.ptr());
  if (s == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    fail_value(op, "seed", "must be an int in [0, 2**64), got " + std::string(py::str(value)));
  }
  return uint64_t(s);
}

}  // namespace

void bind_dropout(py::module_& m) {
  m.def(
      "dropout_forward",
      [](py::handle y, py::handle mask, py::handle x, float rate, py::handle seed) {
        const char* op = "dropout_forward";
        auto X = in<float>(op, "x", x, any_shape(x), "(...)");
        auto Y = out<float>(op, "out", y, X.shape, "like x");
        auto M = out<uint8_t>(op, "mask", mask, X.shape, "like x");
        check_rate(op, rate);
        const uint64_t s = get_seed(op, seed);
        no_overlap(op, "out", Y, "x", X);
        no_overlap(op, "mask", M, "x", X);
        no_overlap(op, "mask", M, "out", Y);
        py::gil_scoped_release nogil;
        fastnn::dropout_forward(Y.data, M.data, X.data, X.size, rate, s);
      },
      py::arg("out"), py::arg("mask"), py::arg("x"), py::arg("rate"), py::arg("seed"),
      "Inverted dropout: out = x·mask/(1 − rate), mask (uint8 0/1, like x) kept with "
      "probability 1 − rate; element i's bit depends only on (seed, i).");

  m.def(
      "dropout_backward",
      [](py::handle dx, py::handle dy, py::handle mask, float rate, bool accumulate) {
        const char* op = "dropout_backward";
        auto DY = in<float>(op, "dy", dy, any_shape(dy), "(...)");
        auto M = in<uint8_t>(op, "mask", mask, DY.shape, "like dy");
        auto DX = out<float>(op, "dx", dx, DY.shape, "like dy");
        check_rate(op, rate);
        no_overlap(op, "dx", DX, "dy", DY);
        no_overlap(op, "dx", DX, "mask", M);
        py::gil_scoped_release nogil;
        fastnn::dropout_backward(DX.data, DY.data, M.data, DY.size, rate, accumulate);
      },
      py::arg("dx"), py::arg("dy"), py::arg("mask"), py::arg("rate"),
      py::arg("accumulate") = true,
      "dx += dy·mask/(1 − rate) (mask nonzero = kept); all like dy, float32 / uint8. "
      "accumulate=False overwrites dx (=) instead.");
}

}  // namespace fastnn::bind
