#include "check.h"
#include "fastnn/common.h"

namespace fastnn::bind {

void bind_runtime(py::module_& m) {
  m.def("num_threads", &fastnn::num_threads, "Threads the kernels use.");
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw py::value_error("set_num_threads: argument 'n' must be >= 1, got " +
                                         std::to_string(n));
        fastnn::set_num_threads(n);
      },
      py::arg("n"));
  m.def("openmp_enabled", &fastnn::openmp_enabled);
  m.def("gemm_isa", &fastnn::gemm_isa, "ISA of the GEMM micro-kernels in use.");
  m.def("supported_isas", [] {
    int n = 0;
    const char* const* names = fastnn::supported_isas(&n);
    py::list out;
    for (int i = 0; i < n; ++i) out.append(names[i]);
    return out;
  });
  m.def(
      "set_gemm_isa",
      [](const std::string& name) {
        if (!fastnn::set_gemm_isa(name.c_str()))
          throw py::value_error("set_gemm_isa: argument 'name' must be one of this CPU's ISAs "
                                "(see supported_isas()), got '" + name + "'");
      },
      py::arg("name"));
  m.def("compiler", &fastnn::compiler);
  m.def("build_flags", &fastnn::build_flags);
  m.def("build_type", &fastnn::build_type);
}

}  // namespace fastnn::bind
