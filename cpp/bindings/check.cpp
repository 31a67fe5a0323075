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

template <class T>
Buf<T> get(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
           const char* doc, bool writable) {
  const std::string expect = std::string("a C-contiguous ") + dtype_name<T>() +
                             " array of shape " + doc + " = " + shape_str(dims);
  if (!py::isinstance<py::array>(obj))
    fail_type(op, name, "must be " + expect + ", got " +
                            std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  const std::string got = std::string(py::str(a.dtype())) + " array of shape " +
                          shape_str(shape);
  if (!py::isinstance<py::array_t<T>>(obj) || !a.dtype().is(py::dtype::of<T>()))
    fail_type(op, name, "must be " + expect + ", got " + got);
  if (shape.size() != dims.size()) fail_value(op, name, "must be " + expect + ", got " + got);
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] != ANY && dims[i] != shape[i])
      fail_value(op, name, "must be " + expect + ", got " + got);
  for (int64_t s : shape)
    if (s == 0) fail_value(op, name, "is empty (shape " + shape_str(shape) + ")");
  if (!(a.flags() & py::array::c_style))
    fail_value(op, name, "must be C-contiguous (use numpy.ascontiguousarray), got a strided " + got);
  if (writable && !a.writeable()) fail_value(op, name, "is read-only but is written");
  Buf<T> b;
  b.data = static_cast<T*>(writable ? a.mutable_data() : const_cast<void*>(a.data()));
  b.shape = shape;
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
