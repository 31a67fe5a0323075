#include "check.h"

namespace fastnn::bind {

void bind_loss(py::module_& m) { (void)m; }

}  // namespace fastnn::bind
