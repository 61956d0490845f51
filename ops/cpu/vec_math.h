// Internal helpers for the CPU kernels: a branch-free exp that GCC vectorises
// under `#pragma omp simd`, and a column-parallel loop for deterministic
// reductions over rows (each column summed by one thread, rows in order, so the
// result does not depend on the thread count).
#pragma once

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace ut::cpu::internal {

// exp(x) in float, relative error <= ~2 ulp on [-87.3, 88.3]. x < -87.3 (and
// -inf) gives exactly 0, x > 88.3 gives +inf, NaN stays NaN. No branches and
// no float->int conversion, so `#pragma omp simd` loops vectorise it.
inline float FastExp(float x) {
  float xc = x < -87.5f ? -87.5f : x;  // NaN passes through both clamps
  xc = xc > 88.3f ? 88.3f : xc;
  // x = n*ln2 + r with n = round(x/ln2), |r| <= ln2/2. Adding 1.5*2^23 rounds
  // to an integer and leaves n in the low mantissa bits of t.
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kShift = 12582912.0f;     // 1.5 * 2^23, bits 0x4B400000
  constexpr float kLn2Hi = 0.693359375f;      // 9 bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;  // ln2 - kLn2Hi
  const float t = xc * kLog2e + kShift;
  const float n = t - kShift;
  const float r = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, xc));
  // e^r by its Taylor series to degree 7 (truncation < 1e-8 relative).
  float p = 1.0f / 5040.0f;
  p = std::fma(p, r, 1.0f / 720.0f);
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  // 2^n from the exponent bits; n in [-126, 127] after the clamp.
  const uint32_t biased = std::bit_cast<uint32_t>(t) - 0x4B400000u + 127u;
  const float scale = std::bit_cast<float>(biased << 23);
  const float y = p * scale;  // computed unconditionally: the selects below stay branch-free
  const float y_hi = x > 88.3f ? std::numeric_limits<float>::infinity() : y;
  return x < -87.3f ? 0.0f : y_hi;
}

// Calls fn(begin, end) on disjoint ranges covering [0, n), one range per
// OpenMP thread, range starts aligned to `align` elements. Runs serially when
// n * work_per_item is small (an OpenMP region costs a few microseconds).
template <typename Fn>
void ParallelRanges(int64_t n, int64_t align, int64_t work_per_item, Fn&& fn) {
  const bool parallel = n * work_per_item >= (int64_t{1} << 15) && n > align;
#pragma omp parallel if (parallel)
  {
    const int nt = omp_get_num_threads();
    const int t = omp_get_thread_num();
    const int64_t chunks = (n + align - 1) / align;
    const int64_t per = (chunks + nt - 1) / nt;
    const int64_t begin = std::min(n, t * per * align);
    const int64_t end = std::min(n, (t + 1) * per * align);
    if (begin < end) fn(begin, end);
  }
}

}  // namespace ut::cpu::internal
