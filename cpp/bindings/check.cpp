#include "check.h"

#include <cstdint>
#include <sstream>

namespace fastnn::bind {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s << ", ";
    if (shape[i] == ANY) s << "?";
    else s << shape[i];
  }
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

void fail_type(const char* op, const char* name, const std::string& what) {
  throw py::type_error(std::string(op) + ": argument '" + name + "' " + what);
}

void fail_value(const char* op, const char* name, const std::string& what) {
  throw py::value_error(std::string(op) + ": argument '" + name + "' " + what);
}

namespace {
template <class T> const char* dtype_name();
template <> const char* dtype_name<float>() { return "float32"; }
template <> const char* dtype_name<int32_t>() { return "int32"; }
template <> const char* dtype_name<uint8_t>() { return "uint8"; }
}  // namespace

// Composes the message only on failure: the checks run on every kernel call.
template <class T>
[[noreturn]] void fail_array(const char* op, const char* name, const py::array& a,
                             const std::vector<int64_t>& dims, const char* doc, bool writable,
                             bool type_error) {
  const std::string expect = std::string("a C-contiguous ") + dtype_name<T>() +
                             " array of shape " + doc + " = " + shape_str(dims);
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  const std::string got = std::string(py::str(a.dtype())) + " array of shape " +
                          shape_str(shape);
  if (type_error) fail_type(op, name, "must be " + expect + ", got " + got);
  for (int64_t s : shape)
    if (s == 0) fail_value(op, name, "is empty (shape " + shape_str(shape) + ")");
  if (shape.size() == dims.size() && !(a.flags() & py::array::c_style))
    fail_value(op, name, "must be C-contiguous (use numpy.ascontiguousarray), got a strided " + got);
  if (writable && !a.writeable() && shape.size() == dims.size())
    fail_value(op, name, "is read-only but is written");
  fail_value(op, name, "must be " + expect + ", got " + got);
}

template <class T>
Buf<T> get(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
           const char* doc, bool writable) {
  if (!py::isinstance<py::array>(obj))
    fail_type(op, name, std::string("must be a C-contiguous ") + dtype_name<T>() +
                            " array of shape " + doc + " = " + shape_str(dims) + ", got " +
                            std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>())) fail_array<T>(op, name, a, dims, doc, writable, true);
  bool ok = a.ndim() == static_cast<py::ssize_t>(dims.size()) &&
            (a.flags() & py::array::c_style) && (!writable || a.writeable());
  for (size_t i = 0; ok && i < dims.size(); ++i) {
    const int64_t s = a.shape(static_cast<py::ssize_t>(i));
    ok = s > 0 && (dims[i] == ANY || dims[i] == s);
  }
  if (!ok) fail_array<T>(op, name, a, dims, doc, writable, false);
  Buf<T> b;
  b.data = static_cast<T*>(writable ? a.mutable_data() : const_cast<void*>(a.data()));
  b.shape.assign(a.shape(), a.shape() + a.ndim());
  b.size = a.size();
  return b;
}

template Buf<float> get<float>(const char*, const char*, py::handle, std::vector<int64_t>,
                               const char*, bool);
template Buf<int32_t> get<int32_t>(const char*, const char*, py::handle, std::vector<int64_t>,
                                   const char*, bool);
template Buf<uint8_t> get<uint8_t>(const char*, const char*, py::handle, std::vector<int64_t>,
                                   const char*, bool);

}  // namespace fastnn::bind
