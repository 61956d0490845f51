// Tests for ops/optim.h: AdamW against a hand-written scalar loop (float, the
// header's formula order) and a double loop over several steps, sum of squares
// against double, clip factor cases.
#include "ops/optim.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::RandomVector;

// One AdamW step on one element exactly as ops/optim.h writes it, in T
// precision; the scalar factors are formed in double first, as torch forms them
// in Python.
template <typename T>
void ScalarAdamW(T& p, T& m, T& v, T g, const AdamWParams& hp) {
  const double t = static_cast<double>(hp.step);
  const T decay = static_cast<T>(1.0 - static_cast<double>(hp.lr) * hp.weight_decay);
  const T bc1 = static_cast<T>(1.0 - std::pow(static_cast<double>(hp.beta1), t));
  const T bc2 = static_cast<T>(1.0 - std::pow(static_cast<double>(hp.beta2), t));
  p *= decay;
  m = T(hp.beta1) * m + static_cast<T>(1.0 - hp.beta1) * g;
  v = T(hp.beta2) * v + static_cast<T>(1.0 - hp.beta2) * (g * g);
  p -= T(hp.lr) * (m / bc1) / (std::sqrt(v / bc2) + T(hp.eps));
}

TEST(AdamWTest, MatchesScalarLoopsOverSeveralSteps) {
  Rng rng(50);
  const int64_t n = 40000;  // parallel path
  auto params = RandomVector(rng, n);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  std::vector<float> p_f = params, m_f = m, v_f = v;                       // float loop
  std::vector<double> p_d(params.begin(), params.end()), m_d(n, 0), v_d(n, 0);  // double loop
  AdamWParams hp{.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                 .step = 0};  // set per step below
  for (int step = 1; step <= 5; ++step) {
    hp.step = step;
    const float grad_scale = step == 3 ? 0.25f : 1.0f;  // a clipped step
    const auto grads = RandomVector(rng, n, 0.1f);
    adamw_update(params.data(), grads.data(), m.data(), v.data(), n, hp, grad_scale);
    for (int64_t i = 0; i < n; ++i) {
      ScalarAdamW<float>(p_f[i], m_f[i], v_f[i], grads[i] * grad_scale, hp);
      ScalarAdamW<double>(p_d[i], m_d[i], v_d[i], static_cast<double>(grads[i] * grad_scale), hp);
    }
  }
  // Same formula and factors in float: equal up to FMA contraction (an ulp or
  // so per step); the double loop bounds the float error.
  EXPECT_TRUE(AllClose(params, p_f, 1e-6, 1e-7));
  EXPECT_TRUE(AllClose(m, m_f, 1e-6, 1e-9));
  EXPECT_TRUE(AllClose(v, v_f, 1e-6, 1e-12));
  EXPECT_TRUE(AllClose(params, p_d, 1e-5, 1e-6));
  EXPECT_TRUE(AllClose(m, m_d, 1e-5, 1e-8));
  EXPECT_TRUE(AllClose(v, v_d, 1e-5, 1e-11));
}

TEST(AdamWTest, FirstStepMovesEachParamByLrTimesSign) {
  // With m = v = 0 and eps tiny, step 1 gives p -= lr * g / |g| after decay.
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {0.3f, -4.0f, 1e-3f}, m(3, 0.0f), v(3, 0.0f);
  AdamWParams hp{.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-12f, .weight_decay = 0.5f,
                 .step = 1};
  adamw_update(p.data(), g.data(), m.data(), v.data(), 3, hp);
  EXPECT_NEAR(p[0], 1.0 * 0.95 - 0.1, 1e-6);
  EXPECT_NEAR(p[1], -2.0 * 0.95 + 0.1, 1e-6);
  EXPECT_NEAR(p[2], 0.5 * 0.95 - 0.1, 1e-5);
}

TEST(SumSquaresTest, MatchesDoubleAndIsDeterministic) {
  Rng rng(51);
  for (int64_t n : {0, 1, 1000, 100003}) {
    const auto x = RandomVector(rng, n, 3.0f);
    double expected = 0.0;
    for (float xi : x) expected += static_cast<double>(xi) * xi;
    const double got = sum_squares(x.data(), n);
    EXPECT_NEAR(got, expected, 1e-12 * (1.0 + expected)) << n;
    EXPECT_EQ(got, sum_squares(x.data(), n));
  }
}

TEST(ClipScaleTest, Cases) {
  EXPECT_EQ(clip_scale(10.0, 0.0f), 1.0f);   // clipping off
  EXPECT_EQ(clip_scale(10.0, -1.0f), 1.0f);
  EXPECT_EQ(clip_scale(0.5, 1.0f), 1.0f);    // under the limit
  EXPECT_FLOAT_EQ(clip_scale(4.0, 1.0f), static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_EQ(clip_scale(0.0, 1.0f), 1.0f);
}

}  // namespace
}  // namespace ut::cpu
