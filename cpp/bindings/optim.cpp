#include "check.h"

namespace fastnn::bind {

void bind_optim(py::module_& m) { (void)m; }

}  // namespace fastnn::bind
