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

// Strided use on a packed row [q heads | k heads | v heads]: the first H+Hkv
// heads rotate exactly as the plain function would, the v heads stay as they
// are; the backward likewise. Positions beyond the first call's extend the
// cached table.
TEST(RopeTest, StridedEqualsPlainOnPackedRows) {
  Rng rng(62);
  const int N = 6, H = 3, Hkv = 1, D = 16, ld = (H + 2 * Hkv) * D;
  for (const std::vector<int32_t>& pos :
       {std::vector<int32_t>{0, 1, 2, 3, 4, 5}, std::vector<int32_t>{9, 700, 3, 2047, 1, 0}}) {
    const auto packed = RandomVector(rng, N * ld);
    std::vector<float> plain(N * (H + Hkv) * D);
    for (int n = 0; n < N; ++n) {
      for (int c = 0; c < (H + Hkv) * D; ++c) plain[n * (H + Hkv) * D + c] = packed[n * ld + c];
    }
    for (const bool forward : {true, false}) {
      std::vector<float> want(plain.size()), got = packed;
      if (forward) {
        rope_forward(want.data(), plain.data(), pos.data(), N, H + Hkv, D, kTheta);
        rope_forward_strided(got.data(), got.data(), ld, pos.data(), N, H + Hkv, D, kTheta);
      } else {
        rope_backward(want.data(), plain.data(), pos.data(), N, H + Hkv, D, kTheta);
        rope_backward_strided(got.data(), got.data(), ld, pos.data(), N, H + Hkv, D, kTheta);
      }
      for (int n = 0; n < N; ++n) {
        for (int c = 0; c < (H + Hkv) * D; ++c) {
          ASSERT_EQ(got[n * ld + c], want[n * (H + Hkv) * D + c]) << n << " " << c;
        }
        for (int c = (H + Hkv) * D; c < ld; ++c) ASSERT_EQ(got[n * ld + c], packed[n * ld + c]);
      }
    }
  }
}

// Many rows at positions 0..N-1 use the cached cos/sin table; one row at a
// far position (after the table was dropped by another theta) computes its
// angles itself. Both give the same bits.
TEST(RopeTest, TablePathEqualsPerRowPath) {
  Rng rng(64);
  const int N = 300, H = 2, D = 32;
  std::vector<int32_t> pos(N);
  for (int n = 0; n < N; ++n) pos[n] = (n * 7) % N;
  const auto x = RandomVector(rng, N * H * D);
  std::vector<float> all(x.size()), one(H * D), other(H * D);
  rope_forward(all.data(), x.data(), pos.data(), N, H, D, kTheta);  // table
  rope_forward(other.data(), x.data(), pos.data(), 1, H, D, 5000.0f);  // drops it
  for (const int n : {1, 137, 299}) {
    rope_forward(one.data(), x.data() + n * H * D, &pos[n], 1, H, D, kTheta);  // per row
    for (int c = 0; c < H * D; ++c) ASSERT_EQ(one[c], all[n * H * D + c]) << n << " " << c;
    rope_forward(other.data(), x.data(), pos.data(), 1, H, D, 5000.0f);
  }
}

// Positions too far for the cached table take the per-row path; both paths
// match the float-angle formula (double reference).
TEST(RopeTest, LargePositionsMatchFormula) {
  Rng rng(63);
  const int N = 2, H = 1, D = 8, half = D / 2;
  const std::vector<int32_t> pos = {3, (1 << 24) + 5};
  const auto x = RandomVector(rng, N * H * D);
  std::vector<float> out(x.size());
  rope_forward(out.data(), x.data(), pos.data(), N, H, D, kTheta);
  for (int n = 0; n < N; ++n) {
    for (int d = 0; d < D; ++d) {
      const int i = d % half;
      const float inv = 1.0f / std::pow(kTheta, static_cast<float>(2 * i) / D);
      const float angle = static_cast<float>(pos[n]) * inv;
      const double rotated = d < half ? -x[n * D + d + half] : x[n * D + d - half];
      const double want =
          x[n * D + d] * std::cos(double{angle}) + rotated * std::sin(double{angle});
      EXPECT_NEAR(out[n * D + d], want, 1e-5) << n << " " << d;
    }
  }
}

}  // namespace
}  // namespace ut::cpu
