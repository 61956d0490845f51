// Soft-DTW value and expected alignment E against brute force over every
// monotone alignment, a plain double-precision DP (ops/testing/sdtw_reference.h),
// finite differences, the band, the batch API and long sequences. The lane
// sweep for groups of equal shapes: ops/cpu/sdtw_lanes_test.cc.
#include "ops/sdtw.h"

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"
#include "ops/testing/sdtw_reference.h"

namespace ut::cpu {
namespace {

using ::ut::testing::CheckGradient;
using ::ut::testing::RandomUniform;

using ::ut::testing::BruteForce;
using ::ut::testing::ExpectMatches;
using ::ut::testing::PlainDp;
using ::ut::testing::SdtwReference;

SdtwWorkspace& ws_for_test() {
  static SdtwWorkspace ws;
  return ws;
}

TEST(SoftDtw, ValueAndAlignmentMatchEveryPathEnumerated) {
  Rng rng(1);
  SdtwWorkspace ws;
  const int sizes[][2] = {{1, 1}, {1, 4}, {3, 1}, {2, 3}, {3, 3}, {4, 5}, {5, 5}, {5, 3}};
  for (const auto& size : sizes) {
    const int n = size[0], m = size[1];
    for (double gamma : {0.05, 0.3, 1.0, 5.0}) {
      const auto cost = RandomUniform(rng, n * m, -1.0f, 2.0f);
      const SdtwReference ref = BruteForce(cost, n, m, gamma, -1);
      std::vector<float> E(n * m, -1.0f);
      const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, gamma, -1,
                                                  &ws);
      const std::string what = "n=" + std::to_string(n) + " m=" + std::to_string(m) +
                               " gamma=" + std::to_string(gamma);
      ExpectMatches(ref, value, E, what);
      EXPECT_NEAR(soft_dtw_pair(cost.data(), n, m, gamma, -1, &ws), value, 1e-12) << what;
    }
  }
}

TEST(SoftDtw, BandMatchesEnumerationOfPathsInsideIt) {
  Rng rng(2);
  SdtwWorkspace ws;
  const int cases[][3] = {{5, 5, 0}, {5, 5, 1}, {5, 3, 0}, {3, 5, 1}, {4, 5, 0}, {5, 5, 7}};
  for (const auto& c : cases) {
    const int n = c[0], m = c[1], band = c[2];
    const auto cost = RandomUniform(rng, n * m, 0.0f, 2.0f);
    const SdtwReference ref = BruteForce(cost, n, m, 0.5, band);
    std::vector<float> E(n * m, -1.0f);
    const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, 0.5, band,
                                                &ws);
    const std::string what = "n=" + std::to_string(n) + " m=" + std::to_string(m) +
                             " band=" + std::to_string(band);
    ExpectMatches(ref, value, E, what);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < m; ++j) {
        if (!SdtwInBand(i, j, n, m, band)) {
          EXPECT_EQ(E[i * m + j], 0.0f) << what;
        }
      }
    }
    EXPECT_NEAR(soft_dtw_pair(cost.data(), n, m, 0.5, band, &ws), value, 1e-12) << what;
  }
  // A band of 0 on equal lengths keeps only the diagonal: value = its sum.
  const std::vector<float> cost = {1, 9, 9, 9, 2, 9, 9, 9, 3};
  EXPECT_NEAR(soft_dtw_pair(cost.data(), 3, 3, 1.0, 0, &ws), 6.0, 1e-6);
}

TEST(SoftDtw, InfiniteCostsAreUnreachableAndGiveNoNan) {
  Rng rng(3);
  SdtwWorkspace ws;
  const int n = 5, m = 5;
  auto cost = RandomUniform(rng, n * m, 0.0f, 1.0f);
  const float inf = std::numeric_limits<float>::infinity();
  for (int k : {1, 7, 12, 13, 18}) cost[k] = inf;  // blocked cells; a path remains
  const SdtwReference ref = BruteForce(cost, n, m, 0.7, -1);
  std::vector<float> E(n * m);
  const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, 0.7, -1, &ws);
  ExpectMatches(ref, value, E, "blocked cells");
  for (int k : {1, 7, 12, 13, 18}) EXPECT_EQ(E[k], 0.0f);
}

TEST(SoftDtw, MatchesPlainDoubleDpOnLargerMatrices) {
  Rng rng(4);
  SdtwWorkspace ws;
  const int sizes[][2] = {{60, 45}, {45, 60}, {1, 70}, {70, 1}, {128, 128}};
  for (const auto& size : sizes) {
    const int n = size[0], m = size[1];
    for (double gamma : {0.01, 0.1, 1.0, 10.0}) {
      const auto cost = RandomUniform(rng, n * m, 0.0f, 3.0f);
      const SdtwReference ref = PlainDp(cost, n, m, gamma);
      std::vector<float> E(n * m);
      const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, gamma, -1,
                                                  &ws);
      ExpectMatches(ref, value, E,
                    "n=" + std::to_string(n) + " m=" + std::to_string(m) +
                        " gamma=" + std::to_string(gamma));
    }
  }
}

// More rows than one strip (the sweep works in strips of 128 rows), with and
// without a band.
TEST(SoftDtw, MatchesPlainDoubleDpAcrossStrips) {
  Rng rng(8);
  SdtwWorkspace ws;
  const int cases[][3] = {{300, 200, -1}, {257, 129, 5}, {129, 300, 0}, {256, 256, 0},
                          {200, 20, 3},   {385, 7, -1},  {130, 130, 1}};
  for (const auto& c : cases) {
    const int n = c[0], m = c[1], band = c[2];
    const auto cost = RandomUniform(rng, n * m, 0.0f, 3.0f);
    const SdtwReference ref = PlainDp(cost, n, m, 0.7, band);
    std::vector<float> E(n * m, -1.0f);
    const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, 0.7, band,
                                                &ws);
    const std::string what = "n=" + std::to_string(n) + " m=" + std::to_string(m) +
                             " band=" + std::to_string(band);
    ExpectMatches(ref, value, E, what);
    EXPECT_EQ(soft_dtw_pair(cost.data(), n, m, 0.7, band, &ws), value) << what;
  }
}

// Pairs without a band run the ratio domain (ops/cpu/sdtw_ratio.cc,
// ForwardStripRatio): values within 1e-10 of the double DP, which the
// log-domain sweep (~1e-8) does not reach, so this also shows that the ratio
// domain ran. Rows cross strips; one-row and one-column pairs have no
// interior cells. Costs / gamma vary by at most 10 per cell here; with much
// larger variations the ratios can leave their range (data-dependent). At
// gamma 1e-3 (|cost| / gamma up to 3000) the pair falls back to the log
// domain and matches at that sweep's accuracy.
TEST(SoftDtw, RatioDomainMatchesPlainDoubleDp) {
  Rng rng(9);
  const int sizes[][2] = {{1, 1}, {2, 3}, {9, 7},         {300, 260}, {260, 300},
                          {257, 257}, {1, 70000}, {70000, 1}};
  for (const auto& size : sizes) {
    const int n = size[0], m = size[1];
    for (double gamma : {0.3, 1.0, 10.0}) {
      const auto cost = RandomUniform(rng, int64_t{n} * m, 0.0f, 3.0f);
      const SdtwReference ref = PlainDp(cost, n, m, gamma);
      std::vector<float> E(cost.size());
      const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, gamma, -1,
                                                  &ws_for_test());
      const std::string what = "n=" + std::to_string(n) + " m=" + std::to_string(m) +
                               " gamma=" + std::to_string(gamma);
      EXPECT_LE(std::fabs(value - ref.value), 1e-10 * (1.0 + std::fabs(ref.value)))
          << what << ": " << value << " vs " << ref.value;
      ExpectMatches(ref, value, E, what);
      EXPECT_EQ(soft_dtw_pair(cost.data(), n, m, gamma, -1, &ws_for_test()), value) << what;
    }
  }
  const int n = 300, m = 260;
  const auto cost = RandomUniform(rng, n * m, 0.0f, 2.0f);
  std::vector<float> E(cost.size());
  const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, 1e-3, -1,
                                              &ws_for_test());
  ExpectMatches(PlainDp(cost, n, m, 1e-3), value, E, "gamma 1e-3 (log-domain fallback)");
}

TEST(SoftDtw, GradientMatchesFiniteDifferences) {
  Rng rng(5);
  SdtwWorkspace ws;
  for (int band : {-1, 2}) {
    const int n = 7, m = 9;
    auto cost = RandomUniform(rng, n * m, 0.0f, 2.0f);
    std::vector<float> E(n * m);
    soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, 0.5, band, &ws);
    auto loss = [&] { return soft_dtw_pair(cost.data(), n, m, 0.5, band, &ws); };
    EXPECT_TRUE(CheckGradient("dR/dcost", loss, cost.data(), E.data(), n * m));
  }
}

TEST(SoftDtw, BatchMatchesSinglePairsAndIsThreadCountIndependent) {
  Rng rng(6);
  const std::vector<int> n = {3, 40, 1, 17, 64, 5};
  const std::vector<int> m = {9, 31, 1, 17, 2, 50};
  const int B = static_cast<int>(n.size());
  std::vector<int64_t> offsets(B + 1, 0);
  for (int b = 0; b < B; ++b) offsets[b + 1] = offsets[b] + int64_t{n[b]} * m[b];
  const auto costs = RandomUniform(rng, offsets[B], 0.0f, 2.0f);
  const auto dvalues = RandomUniform(rng, B, -2.0f, 2.0f);
  const SdtwBatch batch{B, n.data(), m.data(), offsets.data()};
  SdtwOptions opt;
  opt.gamma = 0.3;
  opt.band = 3;
  // No two pairs share a shape, so nothing is grouped: bit for bit.
  const std::vector<float> E =
      ::ut::testing::ExpectBatchMatchesSinglePairs(n, m, costs, dvalues, opt, 0.0, 0.0);

  // E may alias the costs.
  std::vector<float> inplace = costs;
  std::vector<double> values(B);
  ASSERT_TRUE(soft_dtw_forward_backward(values.data(), inplace.data(), inplace.data(),
                                        dvalues.data(), batch, opt).ok());
  EXPECT_TRUE(::ut::testing::BitIdentical(inplace, E));
}

TEST(SoftDtw, RejectsBadInputsWithAMessage) {
  const std::vector<float> costs(6, 1.0f);
  std::vector<double> values(2);
  std::vector<int> n = {2, 0}, m = {3, 1};
  std::vector<int64_t> offsets = {0, 6, 6};
  SdtwOptions opt;
  absl::Status s =
      soft_dtw_forward(values.data(), costs.data(), {2, n.data(), m.data(), offsets.data()}, opt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("pair 1"), std::string::npos) << s;
  n = {2, 1};
  offsets = {0, 5, 6};
  s = soft_dtw_forward(values.data(), costs.data(), {2, n.data(), m.data(), offsets.data()}, opt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("pair 0"), std::string::npos) << s;
  offsets = {0, 6, 7};
  opt.gamma = 0.0;
  s = soft_dtw_forward(values.data(), costs.data(), {2, n.data(), m.data(), offsets.data()}, opt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gamma"), std::string::npos) << s;
}

// Every path visits (0,0) and (n-1,m-1) and crosses every row: E[0,0] =
// E[n-1,m-1] = 1, row sums >= 1, all entries finite in [0,1].
void ExpectAlignmentProperties(const std::vector<float>& E, int n, int m, const char* what) {
  EXPECT_NEAR(E[0], 1.0f, 1e-4) << what;
  EXPECT_NEAR(E[int64_t{n} * m - 1], 1.0f, 1e-6) << what;
  int64_t bad = 0, thin_rows = 0;
  for (int i = 0; i < n; ++i) {
    double row = 0.0;
    for (int j = 0; j < m; ++j) {
      const float e = E[int64_t{i} * m + j];
      if (!(e >= 0.0f && e <= 1.0f + 1e-5f)) ++bad;  // NaN counts as bad
      row += e;
    }
    if (!(row >= 1.0 - 1e-3)) ++thin_rows;
  }
  EXPECT_EQ(bad, 0) << what;
  EXPECT_EQ(thin_rows, 0) << what;
}

TEST(SoftDtw, LongSequencesStayFinite) {
  Rng rng(7);
  SdtwWorkspace ws;
  {
    const int n = 4096, m = 4096;
    const auto cost = RandomUniform(rng, int64_t{n} * m, 0.0f, 2.0f);
    std::vector<float> E(cost.size());
    const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, 1.0, -1, &ws);
    EXPECT_TRUE(std::isfinite(value));
    ExpectAlignmentProperties(E, n, m, "4096 x 4096");
  }
  for (double gamma : {1e-3, 100.0}) {  // near-hard minimum and very soft
    const int n = 8192, m = 96;
    const auto cost = RandomUniform(rng, int64_t{n} * m, 0.0f, 2.0f);
    std::vector<float> E(cost.size());
    const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, gamma, 16,
                                                &ws);
    EXPECT_TRUE(std::isfinite(value));
    ExpectAlignmentProperties(E, n, m, gamma < 1 ? "8192 x 96, gamma 1e-3" : "gamma 100");
  }
}

}  // namespace
}  // namespace ut::cpu
