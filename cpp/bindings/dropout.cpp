#include "check.h"

namespace fastnn::bind {

void bind_dropout(py::module_& m) { (void)m; }

}  // namespace fastnn::bind
