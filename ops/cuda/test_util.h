// Helpers for the CUDA-vs-CPU op tests: skip without a GPU, random inputs,
// device round trips, and the error metric (max|got - want| / max|want|).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"
#include "ops/cuda/device.h"

namespace ut::cuda::testing {

// Every CUDA test starts with this: no device (e.g. cudaGetDeviceCount error
// 35 on a machine without a driver) skips the test instead of failing it.
#define SKIP_WITHOUT_GPU()                                                                        \
  do {                                                                                            \
    if (!::ut::cuda::CudaAvailable()) GTEST_SKIP() << "skipped: " << ::ut::cuda::DeviceSummary(); \
  } while (0)

// Relative f32 tolerance of the CUDA ops against the CPU reference (DESIGN.md).
inline constexpr double kTol = 1e-5;

// n values from N(0, scale^2).
inline std::vector<float> RandomNormal(Rng& rng, int64_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal() * scale);
  return v;
}

// n values uniform in [lo, hi).
inline std::vector<float> RandomUniform(Rng& rng, int64_t n, double lo, double hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(lo + (hi - lo) * rng.Uniform());
  return v;
}

// n integers uniform in [lo, hi).
inline std::vector<int32_t> RandomInts(Rng& rng, int64_t n, int32_t lo, int32_t hi) {
  std::vector<int32_t> v(n);
  for (auto& x : v) x = lo + static_cast<int32_t>(rng.Below(static_cast<uint64_t>(hi - lo)));
  return v;
}

// max|got - want| / max|want|: robust to tiny entries. Any NaN/Inf in either,
// or a size mismatch, gives +inf (never passes). All-zero `want` compares
// absolutely (0 only when `got` is all zero too).
inline double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (got.size() != want.size()) return kInf;
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return kInf;
    max_diff = std::max(max_diff, std::abs(double(got[i]) - double(want[i])));
    max_ref = std::max(max_ref, std::abs(double(want[i])));
  }
  if (max_ref == 0) return max_diff == 0 ? 0 : kInf;
  return max_diff / max_ref;
}

// Scalar version: |got - want| / |want| (absolute when want == 0).
inline double RelError(double got, double want) {
  if (!std::isfinite(got) || !std::isfinite(want)) return std::numeric_limits<double>::infinity();
  const double diff = std::abs(got - want);
  return want == 0 ? diff : diff / std::abs(want);
}

// EXPECT that the device array matches the CPU reference within kTol; more
// context can be streamed in: EXPECT_MATCHES_CPU(d_out, out) << "N=" << N;
#define EXPECT_MATCHES_CPU(device_array, cpu_vector)                              \
  EXPECT_LE(::ut::cuda::testing::RelError((device_array).ToHost(), (cpu_vector)), \
            ::ut::cuda::testing::kTol)                                            \
      << "max|gpu - cpu| / max|cpu| for " #device_array " vs " #cpu_vector

}  // namespace ut::cuda::testing
