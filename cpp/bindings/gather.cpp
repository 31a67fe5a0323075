// Binding of gather.h: take_rows(out, x, idx, next) for arrays of any one dtype.
#include "fastnn/gather.h"

#include <string>

#include "check.h"

namespace fastnn::bind {

namespace {

// x as a C-contiguous array with at least one axis; raises TypeError naming `name`.
py::array rows_array(const char* op, const char* name, py::handle obj, bool writable) {
  if (!py::isinstance<py::array>(obj))
    fail_type(op, name, std::string("must be a numpy array, got ") +
                            py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() < 1) fail_value(op, name, "must have at least one axis (the rows)");
  if (!(a.flags() & py::array::c_style))
    fail_value(op, name, "must be C-contiguous (use numpy.ascontiguousarray)");
  if (writable && !a.writeable()) fail_value(op, name, "must be writeable");
  return a;
}

// Checks that every index lies in [0, R); raises ValueError naming the first that does not.
void check_rows(const char* op, const char* name, const Buf<int64_t>& idx, int64_t R) {
  for (int64_t i = 0; i < idx.size; ++i)
    if (idx.data[i] < 0 || idx.data[i] >= R)
      fail_value(op, name, "holds " + std::to_string(idx.data[i]) + " at [" +
                               std::to_string(i) + "], outside [0, " + std::to_string(R) + ")");
}

}  // namespace

void bind_gather(py::module_& m) {
  m.def(
      "take_rows",
      [](py::handle out, py::handle x, py::handle idx, py::handle next, bool naive) {
        const char* op = "take_rows";
        py::array X = rows_array(op, "x", x, false);
        py::array O = rows_array(op, "out", out, true);
        auto I = in<int64_t>(op, "idx", idx, {ANY}, "(B,)");
        auto NX = in_opt<int64_t>(op, "next", next, {ANY}, "(B2,)");
        if (!O.dtype().is(X.dtype()))
          fail_type(op, "out", "must have x's dtype " + py::str(X.dtype()).cast<std::string>() +
                                   ", got " + py::str(O.dtype()).cast<std::string>());
        bool same = O.ndim() == X.ndim() && O.shape(0) == I[0];
        for (py::ssize_t d = 1; same && d < X.ndim(); ++d) same = O.shape(d) == X.shape(d);
        if (!same)
          fail_value(op, "out", "must have shape (len(idx),) + x.shape[1:]");
        const int64_t R = X.shape(0);
        check_rows(op, "idx", I, R);
        check_rows(op, "next", NX, R);
        const int64_t row_bytes = R ? X.nbytes() / R : 0;
        const char* o0 = static_cast<const char*>(O.data());
        const char* x0 = static_cast<const char*>(X.data());
        if (o0 < x0 + X.nbytes() && x0 < o0 + O.nbytes())
          fail_value(op, "out", "must not share memory with 'x'");
        void* dst = O.mutable_data();
        const void* src = X.data();
        py::gil_scoped_release nogil;
        if (naive)
          take_rows_naive(dst, src, row_bytes, I.data, I[0]);
        else
          take_rows(dst, src, row_bytes, I.data, I[0], NX.data, NX.data ? NX[0] : 0);
      },
      py::arg("out"), py::arg("x"), py::arg("idx"), py::arg("next") = py::none(),
      py::arg("naive") = false,
      "out (B, ...) = x[idx] (np.take(x, idx, axis=0)) for C-contiguous arrays of one dtype; "
      "idx int64 (B,), each in [0, len(x)) (checked). next: int64 row indices of the next "
      "batch, whose cache lines are then prefetched (or None). naive=True runs the plain "
      "twin.");
}

}  // namespace fastnn::bind
