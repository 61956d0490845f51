// Tests for ops/cross_entropy.h: loss against a double log-sum-exp loop with
// ignored rows, stability on huge logits, gradient against central
// differences, grad_scale, aliasing of dlogits with logits.
#include "ops/cross_entropy.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::BitIdentical;
using ::ut::testing::CheckGradient;
using ::ut::testing::RandomVector;

constexpr int kIgnore = -100;

// Sum over counted rows of logsumexp(x) - x[target], in double.
double NaiveLoss(const std::vector<float>& logits, const std::vector<int32_t>& targets, int V,
                 int64_t* count) {
  double total = 0.0;
  *count = 0;
  for (size_t n = 0; n < targets.size(); ++n) {
    if (targets[n] < 0 || targets[n] == kIgnore) continue;
    double mx = -1e300;
    for (int c = 0; c < V; ++c) mx = std::max(mx, static_cast<double>(logits[n * V + c]));
    double sum = 0.0;
    for (int c = 0; c < V; ++c) sum += std::exp(logits[n * V + c] - mx);
    total += std::log(sum) + mx - logits[n * V + targets[n]];
    ++*count;
  }
  return total;
}

TEST(CrossEntropyTest, LossMatchesNaiveAndSkipsIgnoredRows) {
  Rng rng(40);
  const int V = 37;
  const std::vector<int32_t> targets = {3, kIgnore, 0, 36, -1, 7, 7};
  const int N = targets.size();
  auto logits = RandomVector(rng, N * V, 3.0f);
  int64_t count = -1, expected_count = -1;
  const double loss = softmax_cross_entropy(nullptr, logits.data(), targets.data(), N, V, kIgnore,
                                            1.0f, &count);
  const double expected = NaiveLoss(logits, targets, V, &expected_count);
  EXPECT_EQ(count, 5);
  EXPECT_EQ(count, expected_count);
  EXPECT_NEAR(loss, expected, 1e-5 * std::fabs(expected));
}

TEST(CrossEntropyTest, StableForHugeLogits) {
  const int V = 4;
  std::vector<float> logits = {1000.0f, 999.0f, -1000.0f, 998.0f};
  const std::vector<int32_t> targets = {1};
  int64_t count = 0;
  std::vector<float> dlogits(V);
  const double loss = softmax_cross_entropy(dlogits.data(), logits.data(), targets.data(), 1, V,
                                            kIgnore, 1.0f, &count);
  const double lse = 1000.0 + std::log(1.0 + std::exp(-1.0) + std::exp(-2.0));
  EXPECT_NEAR(loss, lse - 999.0, 1e-6);
  for (float d : dlogits) EXPECT_TRUE(std::isfinite(d));
  EXPECT_NEAR(dlogits[1], std::exp(999.0 - lse) - 1.0, 1e-6);
  EXPECT_EQ(dlogits[2], 0.0f);
}

TEST(CrossEntropyTest, GradientMatchesFiniteDifferences) {
  Rng rng(41);
  const int V = 11;
  const std::vector<int32_t> targets = {2, 10, kIgnore, 0, 5};
  const int N = targets.size();
  auto logits = RandomVector(rng, N * V, 2.0f);
  auto loss = [&] {
    return softmax_cross_entropy(nullptr, logits.data(), targets.data(), N, V, kIgnore, 1.0f,
                                 nullptr);
  };
  std::vector<float> dlogits(N * V, std::nanf(""));
  softmax_cross_entropy(dlogits.data(), logits.data(), targets.data(), N, V, kIgnore, 1.0f,
                        nullptr);
  EXPECT_TRUE(CheckGradient("dlogits", loss, logits.data(), dlogits.data(), N * V,
                            {.step = 1e-3, .atol = 1e-4}));
  for (int c = 0; c < V; ++c) EXPECT_EQ(dlogits[2 * V + c], 0.0f);  // ignored row
}

TEST(CrossEntropyTest, GradScaleAndAliasingWithLogits) {
  Rng rng(42);
  const int V = 300, N = 130;  // N*V > 2^14: the parallel path
  std::vector<int32_t> targets(N);
  for (auto& t : targets) t = static_cast<int32_t>(rng.Below(V + 20)) - 20;  // some negative
  auto logits = RandomVector(rng, N * V, 2.0f);
  std::vector<float> unit(N * V), scaled(N * V);
  int64_t count = 0;
  const double l1 = softmax_cross_entropy(unit.data(), logits.data(), targets.data(), N, V,
                                          kIgnore, 1.0f, &count);
  const float scale = 1.0f / count;
  const double l2 = softmax_cross_entropy(scaled.data(), logits.data(), targets.data(), N, V,
                                          kIgnore, scale, nullptr);
  EXPECT_EQ(l1, l2);  // grad_scale leaves the loss alone
  std::vector<double> expected(N * V);
  for (int i = 0; i < N * V; ++i) expected[i] = static_cast<double>(unit[i]) * scale;
  EXPECT_TRUE(AllClose(scaled, expected, 1e-5, 1e-9));
  // In place: dlogits == logits gives the same loss and gradient.
  auto inplace = logits;
  const double l3 = softmax_cross_entropy(inplace.data(), inplace.data(), targets.data(), N, V,
                                          kIgnore, scale, nullptr);
  EXPECT_EQ(l3, l1);
  EXPECT_EQ(inplace, scaled);
  // Rows sum to zero gradient: softmax sums to 1, minus the one-hot.
  for (int n = 0; n < N; ++n) {
    double row = 0.0;
    for (int c = 0; c < V; ++c) row += unit[n * V + c];
    EXPECT_NEAR(row, 0.0, 1e-5);
  }
}

TEST(CrossEntropyTest, BitIdenticalForAnyThreadCount) {
  Rng rng(43);
  const int V = 257, N = 200;
  std::vector<int32_t> targets(N);
  for (auto& t : targets) t = static_cast<int32_t>(rng.Below(V));
  const auto logits = RandomVector(rng, N * V, 3.0f);
  const int saved = omp_get_max_threads();
  std::vector<double> losses;
  std::vector<std::vector<float>> grads;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> d(N * V);
    losses.push_back(softmax_cross_entropy(d.data(), logits.data(), targets.data(), N, V, kIgnore,
                                           0.01f, nullptr));
    grads.push_back(d);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(losses[0], losses[2]);
  EXPECT_TRUE(BitIdentical(grads[0], grads[1]));
  EXPECT_TRUE(BitIdentical(grads[0], grads[2]));
}

}  // namespace
}  // namespace ut::cpu
