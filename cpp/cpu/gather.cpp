// Batch gathering (see gather.h): row copies, split over threads when the batch is large,
// then prefetches of the next batch's rows.
#include "fastnn/gather.h"

#include <algorithm>
#include <cstring>

#include "fastnn/common.h"

namespace fastnn {

namespace {
constexpr int64_t kLine = 64;
constexpr int64_t kParallelBytes = 1 << 20;  // below this one thread copies (fork > copy)
}  // namespace

void take_rows_naive(void* dst, const void* src, int64_t row_bytes, const int64_t* idx,
                     int64_t B) {
  auto d = static_cast<char*>(dst);
  auto s = static_cast<const char*>(src);
  for (int64_t i = 0; i < B; ++i)
    std::memcpy(d + i * row_bytes, s + idx[i] * row_bytes, size_t(row_bytes));
}

void take_rows(void* dst, const void* src, int64_t row_bytes, const int64_t* idx, int64_t B,
               const int64_t* next, int64_t n_next) {
  if (B * row_bytes >= kParallelBytes) {
    const int64_t t = num_threads();
    parallel_for(B, (B + t - 1) / t, [&](int64_t b, int64_t e) {
      take_rows_naive(static_cast<char*>(dst) + b * row_bytes, src, row_bytes, idx + b, e - b);
    });
  } else {
    take_rows_naive(dst, src, row_bytes, idx, B);
  }
  if (!next) return;
  auto s = static_cast<const char*>(src);
  int64_t budget = kTakeRowsPrefetchBytes;
  for (int64_t i = 0; i < n_next && budget > 0; ++i, budget -= row_bytes) {
    const char* row = s + next[i] * row_bytes;
    const int64_t bytes = std::min(row_bytes, budget);
    for (int64_t o = 0; o < bytes; o += kLine) __builtin_prefetch(row + o, 0, 2);
    __builtin_prefetch(row + bytes - 1, 0, 2);  // a row that ends past a line boundary
  }
}

}  // namespace fastnn
