// Test helpers for ops: deterministic random inputs, a scalar probe loss and a
// central-difference gradient check. Header-only; link //ops:gradcheck.
//
// Typical use for an op y = f(x) with backward dx = f'(x)^T dy:
//   auto w = RandomVector(rng, ny);                 // probe weights = dy
//   auto loss = [&] { forward(y, x); return Dot(y, w); };   // L = sum w * y
//   backward(dx, w);                                // analytic dL/dx
//   EXPECT_TRUE(CheckGradient("dx", loss, x, dx, nx));
// The forward runs in float; CheckGradient perturbs x[i] by +-step (the exact
// float difference is used as the denominator) and sums L in double. Outputs
// that do not depend on x[i] are recomputed bit-identically, so they cancel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"

namespace ut::testing {

// [n] values drawn from Normal(mean, stddev).
inline std::vector<float> RandomVector(Rng& rng, int64_t n, float stddev = 1.0f,
                                       float mean = 0.0f) {
  std::vector<float> out(n);
  for (auto& x : out) x = mean + stddev * static_cast<float>(rng.Normal());
  return out;
}

// [n] values uniform in [lo, hi).
inline std::vector<float> RandomUniform(Rng& rng, int64_t n, float lo, float hi) {
  std::vector<float> out(n);
  for (auto& x : out) x = lo + (hi - lo) * static_cast<float>(rng.Uniform());
  return out;
}

// sum_i a[i] * w[i] in double: a probe loss whose gradient w.r.t. a is w.
inline double Dot(const float* a, const float* w, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(a[i]) * w[i];
  return acc;
}
inline double Dot(const std::vector<float>& a, const std::vector<float>& w) {
  EXPECT_EQ(a.size(), w.size());
  return Dot(a.data(), w.data(), static_cast<int64_t>(std::min(a.size(), w.size())));
}

struct GradCheckOptions {
  double step = 1e-2;  // central-difference step
  double rtol = 1e-2;  // |analytic - numeric| <= atol + rtol * |numeric|
  double atol = 1e-3;
  int64_t stride = 1;  // check entries 0, stride, 2*stride, ... (1 = all)
};

// Checks analytic[i] against (L(x + h e_i) - L(x - h e_i)) / (2h) for the checked
// entries i of x [n]. `loss` recomputes L (double) from the current contents of
// x; x is restored exactly after each probe. Reports the worst entry.
template <typename LossFn>
::testing::AssertionResult CheckGradient(const std::string& what, LossFn&& loss, float* x,
                                         const float* analytic, int64_t n,
                                         const GradCheckOptions& opt = {}) {
  int64_t failures = 0;
  int64_t checked = 0;
  double worst_excess = -1.0;
  std::ostringstream worst;
  for (int64_t i = 0; i < n; i += opt.stride) {
    const float saved = x[i];
    const float up = static_cast<float>(saved + opt.step);
    const float down = static_cast<float>(saved - opt.step);
    x[i] = up;
    const double loss_up = loss();
    x[i] = down;
    const double loss_down = loss();
    x[i] = saved;
    const double numeric = (loss_up - loss_down) / (static_cast<double>(up) - down);
    const double a = analytic[i];
    const double err = std::fabs(a - numeric);
    const double allowed = opt.atol + opt.rtol * std::fabs(numeric);
    ++checked;
    if (!(err <= allowed)) ++failures;  // NaN fails
    const double excess = std::isnan(err) ? 1e300 : err - allowed;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst.str("");
      worst << what << "[" << i << "]: analytic " << a << " vs numeric " << numeric
            << " (|diff| " << err << ", allowed " << allowed << ")";
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << checked
                                       << " entries differ; worst " << worst.str();
}

// Element-wise |actual - expected| <= atol + rtol * |expected| (NaN fails);
// expected may be float or double (a double-precision reference).
template <typename Expected>
::testing::AssertionResult AllClose(const float* actual, const Expected* expected, int64_t n,
                                    double rtol, double atol) {
  int64_t failures = 0;
  int64_t worst_i = -1;
  double worst_excess = -1.0;
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    const double allowed = atol + rtol * std::fabs(static_cast<double>(expected[i]));
    if (!(err <= allowed)) ++failures;
    const double excess = std::isnan(err) ? 1e300 : err - allowed;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst_i = i;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << n << " differ; worst [" << worst_i << "]: " << actual[worst_i]
         << " vs expected " << expected[worst_i];
}
template <typename Expected>
::testing::AssertionResult AllClose(const std::vector<float>& actual,
                                    const std::vector<Expected>& expected, double rtol,
                                    double atol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " vs expected " << expected.size();
  }
  return AllClose(actual.data(), expected.data(), static_cast<int64_t>(actual.size()), rtol,
                  atol);
}

// Bit-identical comparison (for determinism checks).
inline ::testing::AssertionResult BitIdentical(const std::vector<float>& a,
                                               const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure()
             << "first difference at [" << i << "]: " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ut::testing
