// Tests for ops/activation.h (GELU, SwiGLU, softmax) and the internal FastExp
// they use: forwards against double formulas, backwards against central
// differences, the aliasing the header allows.
#include "ops/activation.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/vec_math.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::CheckGradient;
using ::ut::testing::Dot;
using ::ut::testing::RandomUniform;
using ::ut::testing::RandomVector;

TEST(FastExpTest, RelativeErrorWithinThreeUlpAndLimits) {
  double worst = 0.0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.0f + 175.3f * static_cast<float>(i) / 2000000.0f;
    const double expected = std::exp(static_cast<double>(x));
    const double rel = std::fabs(internal::FastExp(x) - expected) / expected;
    worst = std::max(worst, rel);
  }
  EXPECT_LT(worst, 3.0 * 5.97e-8) << "worst relative error " << worst;
  EXPECT_EQ(internal::FastExp(0.0f), 1.0f);
  EXPECT_EQ(internal::FastExp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(internal::FastExp(-100.0f), 0.0f);
  EXPECT_TRUE(std::isnan(internal::FastExp(std::nanf(""))));
  EXPECT_EQ(internal::FastExp(1000.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(internal::FastExp(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
}

// 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), evaluated as the
// identical x / (1 + exp(-2u)) because 1 + tanh(u) cancels for x << 0 even in double.
double GeluRef(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * u));
}

TEST(GeluTest, ForwardMatchesTanhFormula) {
  Rng rng(20);
  auto x = RandomUniform(rng, 5000, -12.0f, 12.0f);
  x.push_back(0.0f);
  x.push_back(-30.0f);
  x.push_back(30.0f);
  std::vector<float> y(x.size());
  gelu_forward(y.data(), x.data(), x.size());
  // u = k (x + c x^3) carries a few float ulps, which exp(-2u) turns into a
  // relative error of ~|2u| * 1e-7; allow 1e-6 * (1 + |2u|).
  int bad = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double xd = x[i];
    const double two_u = 2.0 * std::sqrt(2.0 / M_PI) * (xd + 0.044715 * xd * xd * xd);
    const double e = GeluRef(xd);
    const double err = std::fabs(y[i] - e);
    if (!(err <= 1e-6 * (1.0 + std::fabs(two_u)) * std::fabs(e) + 1e-37)) {
      if (++bad < 5) ADD_FAILURE() << "gelu(" << x[i] << ") = " << y[i] << ", expected " << e;
    }
  }
  EXPECT_EQ(bad, 0);
  // Where tanh does not cancel, the textbook form agrees too.
  for (float v : {-2.0f, -0.5f, 0.3f, 1.0f, 4.0f}) {
    float out;
    gelu_forward(&out, &v, 1);
    const double u = std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v);
    EXPECT_NEAR(out, 0.5 * v * (1.0 + std::tanh(u)), 1e-6);
  }
}

TEST(GeluTest, BackwardMatchesFiniteDifferencesAndMayAliasDout) {
  Rng rng(21);
  const int n = 300;
  auto x = RandomVector(rng, n, 2.0f);
  const auto probe = RandomVector(rng, n);
  std::vector<float> y(n);
  auto loss = [&] {
    gelu_forward(y.data(), x.data(), n);
    return Dot(y, probe);
  };
  std::vector<float> dx(n);
  gelu_backward(dx.data(), x.data(), probe.data(), n);
  EXPECT_TRUE(CheckGradient("dx", loss, x.data(), dx.data(), n, {.step = 1e-3}));
  std::vector<float> inplace = probe;
  gelu_backward(inplace.data(), x.data(), inplace.data(), n);
  EXPECT_EQ(inplace, dx);
  // Large inputs take the parallel path; it must agree with the serial one.
  auto big = RandomVector(rng, 100000, 3.0f);
  std::vector<float> dbig(big.size()), ybig(big.size());
  gelu_backward(dbig.data(), big.data(), big.data(), big.size());
  gelu_forward(ybig.data(), big.data(), big.size());
  for (size_t i = 0; i < big.size(); i += 997) {
    float d1, y1;
    gelu_backward(&d1, &big[i], &big[i], 1);
    gelu_forward(&y1, &big[i], 1);
    EXPECT_FLOAT_EQ(dbig[i], d1);
    EXPECT_FLOAT_EQ(ybig[i], y1);
  }
}

TEST(SwigluTest, ForwardMatchesNaive) {
  Rng rng(22);
  const int n = 2000;
  auto gate = RandomUniform(rng, n, -20.0f, 20.0f);
  auto up = RandomVector(rng, n);
  std::vector<float> out(n);
  swiglu_forward(out.data(), gate.data(), up.data(), n);
  std::vector<double> e(n);
  for (int i = 0; i < n; ++i) {
    const double g = gate[i];
    e[i] = g / (1.0 + std::exp(-g)) * up[i];
  }
  EXPECT_TRUE(AllClose(out, e, 2e-6, 1e-30));
}

TEST(SwigluTest, BackwardMatchesFiniteDifferences) {
  Rng rng(23);
  const int n = 200;
  auto gate = RandomVector(rng, n, 3.0f);
  auto up = RandomVector(rng, n);
  const auto probe = RandomVector(rng, n);
  std::vector<float> out(n);
  auto loss = [&] {
    swiglu_forward(out.data(), gate.data(), up.data(), n);
    return Dot(out, probe);
  };
  std::vector<float> dgate(n, std::nanf("")), dup(n, std::nanf(""));
  swiglu_backward(dgate.data(), dup.data(), probe.data(), gate.data(), up.data(), n);
  EXPECT_TRUE(CheckGradient("dgate", loss, gate.data(), dgate.data(), n, {.step = 1e-3}));
  EXPECT_TRUE(CheckGradient("dup", loss, up.data(), dup.data(), n, {.step = 1e-3}));
}

// The packed form [gate | up] per row gives the plain function's bits, and its
// backward matches central differences.
TEST(SwigluTest, PackedEqualsPlainAndMatchesFiniteDifferences) {
  Rng rng(26);
  const int N = 5, F = 37;
  auto gu = RandomVector(rng, N * 2 * F, 3.0f);
  const auto probe = RandomVector(rng, N * F);
  std::vector<float> gate(N * F), up(N * F);
  for (int n = 0; n < N; ++n) {
    for (int i = 0; i < F; ++i) {
      gate[n * F + i] = gu[n * 2 * F + i];
      up[n * F + i] = gu[n * 2 * F + F + i];
    }
  }
  std::vector<float> want(N * F), got(N * F, std::nanf(""));
  swiglu_forward(want.data(), gate.data(), up.data(), N * F);
  swiglu_forward_packed(got.data(), gu.data(), N, F);
  EXPECT_EQ(got, want);
  std::vector<float> dgate(N * F), dup(N * F), dgu(N * 2 * F, std::nanf(""));
  swiglu_backward(dgate.data(), dup.data(), probe.data(), gate.data(), up.data(), N * F);
  swiglu_backward_packed(dgu.data(), probe.data(), gu.data(), N, F);
  for (int n = 0; n < N; ++n) {
    for (int i = 0; i < F; ++i) {
      EXPECT_EQ(dgu[n * 2 * F + i], dgate[n * F + i]);
      EXPECT_EQ(dgu[n * 2 * F + F + i], dup[n * F + i]);
    }
  }
  std::vector<float> out(N * F);
  auto loss = [&] {
    swiglu_forward_packed(out.data(), gu.data(), N, F);
    return Dot(out, probe);
  };
  EXPECT_TRUE(CheckGradient("dgu", loss, gu.data(), dgu.data(), gu.size(), {.step = 1e-3}));
}

TEST(SoftmaxTest, ForwardMatchesNaiveInPlace) {
  Rng rng(24);
  const int N = 7, C = 53;
  auto x = RandomVector(rng, N * C, 4.0f);
  x[5] = 80.0f;  // large logits must not overflow
  std::vector<double> e(N * C);
  for (int n = 0; n < N; ++n) {
    double mx = -1e300, sum = 0;
    for (int c = 0; c < C; ++c) mx = std::max(mx, static_cast<double>(x[n * C + c]));
    for (int c = 0; c < C; ++c) sum += std::exp(x[n * C + c] - mx);
    for (int c = 0; c < C; ++c) e[n * C + c] = std::exp(x[n * C + c] - mx) / sum;
  }
  std::vector<float> y(N * C);
  softmax_forward(y.data(), x.data(), N, C);
  EXPECT_TRUE(AllClose(y, e, 1e-5, 1e-9));
  softmax_forward(x.data(), x.data(), N, C);  // aliased
  EXPECT_EQ(x, y);
}

TEST(SoftmaxTest, BackwardMatchesFiniteDifferencesAndMayAliasDout) {
  Rng rng(25);
  const int N = 3, C = 17;
  auto x = RandomVector(rng, N * C, 2.0f);
  const auto probe = RandomVector(rng, N * C);
  std::vector<float> y(N * C);
  auto loss = [&] {
    softmax_forward(y.data(), x.data(), N, C);
    return Dot(y, probe);
  };
  loss();
  std::vector<float> dx(N * C);
  softmax_backward(dx.data(), probe.data(), y.data(), N, C);
  EXPECT_TRUE(CheckGradient("dx", loss, x.data(), dx.data(), N * C, {.step = 1e-3}));
  loss();  // CheckGradient left y at a perturbed x
  std::vector<float> inplace = probe;
  softmax_backward(inplace.data(), inplace.data(), y.data(), N, C);
  EXPECT_EQ(inplace, dx);
}

}  // namespace
}  // namespace ut::cpu
