#include "check.h"

namespace fastnn::bind {

void bind_dense(py::module_& m) { (void)m; }

}  // namespace fastnn::bind
