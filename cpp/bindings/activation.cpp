#include "check.h"

namespace fastnn::bind {

void bind_activation(py::module_& m) { (void)m; }

}  // namespace fastnn::bind
