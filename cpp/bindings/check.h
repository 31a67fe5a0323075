// Argument checking for the bindings: every buffer is validated here, with a message
// that names the operation, the argument and what was expected, before the GIL is
// released and a raw pointer reaches a kernel. Nothing is ever converted or copied:
// a buffer a kernel writes must be exactly the array the caller passed.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace fastnn::bind {

namespace py = pybind11;

std::string shape_str(const std::vector<int64_t>& shape);

// A checked array: raw pointer plus its shape (wildcards in the request filled in).
template <class T>
struct Buf {
  T* data = nullptr;
  std::vector<int64_t> shape;
  int64_t size = 0;
  int64_t operator[](size_t i) const { return shape[i]; }
};

// Expected shape: each entry a size, or ANY. `doc` is the symbolic shape for messages,
// e.g. "(N, IC)".
constexpr int64_t ANY = -1;

void fail_type(const char* op, const char* name, const std::string& what);
void fail_value(const char* op, const char* name, const std::string& what);

// Checks obj is a C-contiguous numpy array of dtype T with the expected shape (all sizes
// >= 1), and writeable when `writable`. Raises TypeError / ValueError otherwise.
template <class T>
Buf<T> get(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
           const char* doc, bool writable);

template <class T>
Buf<T> in(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
          const char* doc) {
  return get<T>(op, name, obj, std::move(dims), doc, false);
}
template <class T>
Buf<T> out(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
           const char* doc) {
  return get<T>(op, name, obj, std::move(dims), doc, true);
}
// As in/out, but None gives an empty Buf (data == nullptr): "not needed".
template <class T>
Buf<T> in_opt(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
              const char* doc) {
  if (obj.is_none()) return {};
  return in<T>(op, name, obj, std::move(dims), doc);
}
template <class T>
Buf<T> out_opt(const char* op, const char* name, py::handle obj, std::vector<int64_t> dims,
               const char* doc) {
  if (obj.is_none()) return {};
  return out<T>(op, name, obj, std::move(dims), doc);
}

// Raises ValueError when the memory of an output overlaps that of an input it must not.
template <class A, class B>
void no_overlap(const char* op, const char* out_name, const Buf<A>& o, const char* in_name,
                const Buf<B>& i) {
  if (!o.data || !i.data) return;
  auto o0 = reinterpret_cast<const char*>(o.data), o1 = o0 + o.size * sizeof(A);
  auto i0 = reinterpret_cast<const char*>(i.data), i1 = i0 + i.size * sizeof(B);
  if (o0 < i1 && i0 < o1)
    fail_value(op, out_name, std::string("must not share memory with '") + in_name + "'");
}

// A named float buffer, for checking many pairs at once.
using Named = std::pair<const char*, const Buf<float>*>;

// no_overlap for every output in `outs` against every other buffer in `all`.
inline void no_overlap_all(const char* op, std::initializer_list<Named> outs,
                           std::initializer_list<Named> all) {
  for (const auto& o : outs)
    for (const auto& i : all)
      if (o.second != i.second) no_overlap(op, o.first, *o.second, i.first, *i.second);
}

// Raises ValueError unless cond; `what` completes "'name' ...": a literal, or a function
// returning the message, called only on failure (building it with std::to_string on every
// call cost about 0.5 us per convolution call).
inline void require(bool cond, const char* op, const char* name, const char* what) {
  if (!cond) fail_value(op, name, what);
}
template <class Message>
inline void require(bool cond, const char* op, const char* name, Message&& what) {
  if (!cond) fail_value(op, name, what());
}

// Caller-supplied scratch of at least n floats, or a fresh one owned by `own`.
inline float* scratch(const char* op, py::handle work, int64_t n, std::vector<float>& own) {
  if (work.is_none()) {
    own.assign(size_t(n), 0.0f);
    return own.data();
  }
  auto w = out<float>(op, "work", work, {ANY}, "(n,)");
  require(w.size >= n, op, "work", [&] {
    return "must hold at least " + std::to_string(n) + " floats, got " + std::to_string(w.size);
  });
  return w.data;
}


// Registration functions, one per operator file.
void bind_runtime(py::module_& m);
void bind_gemm(py::module_& m);
void bind_dense(py::module_& m);
void bind_sparse_dense(py::module_& m);
void bind_activation(py::module_& m);
void bind_loss(py::module_& m);
void bind_optim(py::module_& m);
void bind_dropout(py::module_& m);
void bind_pool(py::module_& m);
void bind_norm(py::module_& m);
void bind_attention(py::module_& m);
void bind_embedding(py::module_& m);
void bind_layernorm(py::module_& m);
void bind_conv2d(py::module_& m);
void bind_recurrent(py::module_& m);
void bind_quant(py::module_& m);
void bind_qrecurrent(py::module_& m);

}  // namespace fastnn::bind
