// Tests for ops/rope.h: forward against the rotate_half formula in double,
// in-place use, backward against central differences and as the inverse.
#include "ops/rope.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::CheckGradient;
using ::ut::testing::Dot;
using ::ut::testing::RandomVector;

constexpr float kTheta = 10000.0f;

TEST(RopeTest, ForwardMatchesRotateHalfFormula) {
  Rng rng(60);
  const int N = 9, H = 3, D = 16, half = D / 2;
  const std::vector<int32_t> pos = {0, 1, 2, 7, 31, 100, 255, 511, 3};
  const auto x = RandomVector(rng, N * H * D);
  std::vector<float> out(x.size());
  rope_forward(out.data(), x.data(), pos.data(), N, H, D, kTheta);
  std::vector<double> expected(x.size());
  for (int n = 0; n < N; ++n) {
    for (int h = 0; h < H; ++h) {
      const float* xr = &x[(n * H + h) * D];
      double* er = &expected[(n * H + h) * D];
      for (int d = 0; d < D; ++d) {
        const int i = d % half;  // cos/sin repeated over both halves
        const double angle = pos[n] * std::pow(static_cast<double>(kTheta), -2.0 * i / D);
        const double rotated = d < half ? -xr[d + half] : xr[d - half];  // [-x2, x1]
        er[d] = xr[d] * std::cos(angle) + rotated * std::sin(angle);
      }
    }
  }
  // Float angles at position 511 carry ~511 * 6e-8 rad of rounding.
  EXPECT_TRUE(AllClose(out, expected, 1e-5, 1e-4));
  // Position 0 is the identity.
  for (int h = 0; h < H; ++h)
    for (int d = 0; d < D; ++d) EXPECT_EQ(out[h * D + d], x[h * D + d]);
  // In place gives the same bits.
  auto inplace = x;
  rope_forward(inplace.data(), inplace.data(), pos.data(), N, H, D, kTheta);
  EXPECT_EQ(inplace, out);
}

TEST(RopeTest, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  Rng rng(61);
  const int N = 5, H = 2, D = 8;
  const std::vector<int32_t> pos = {4, 0, 17, 9, 63};
  auto x = RandomVector(rng, N * H * D);
  const auto probe = RandomVector(rng, N * H * D);
  std::vector<float> out(x.size());
  auto loss = [&] {
    rope_forward(out.data(), x.data(), pos.data(), N, H, D, kTheta);
    return Dot(out, probe);
  };
  std::vector<float> dx(x.size(), std::nanf(""));
  rope_backward(dx.data(), probe.data(), pos.data(), N, H, D, kTheta);
  EXPECT_TRUE(CheckGradient("dx", loss, x.data(), dx.data(), x.size()));
  // A rotation's transpose is its inverse: backward(forward(x)) == x.
  rope_forward(out.data(), x.data(), pos.data(), N, H, D, 500000.0f);
  rope_backward(out.data(), out.data(), pos.data(), N, H, D, 500000.0f);  // in place
  EXPECT_TRUE(AllClose(out, x, 1e-5, 1e-6));
}

}  // namespace
}  // namespace ut::cpu
