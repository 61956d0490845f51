#include <cmath>
#include <vector>

#include "core/train/adamw.h"
#include "core/train/lr_schedule.h"
#include "gtest/gtest.h"

namespace ut::train {
namespace {

unified_train::OptimConfig Optim(float lr, float min_lr, int warmup) {
  unified_train::OptimConfig o;
  o.set_lr(lr);
  o.set_min_lr(min_lr);
  o.set_warmup_steps(warmup);
  return o;
}

TEST(LrSchedule, LinearWarmupThenCosineToMinLr) {
  const auto o = Optim(1e-3f, 1e-4f, 10);
  EXPECT_FLOAT_EQ(LearningRate(1, 110, o), 1e-4f);
  EXPECT_FLOAT_EQ(LearningRate(5, 110, o), 5e-4f);
  EXPECT_FLOAT_EQ(LearningRate(10, 110, o), 1e-3f);
  EXPECT_FLOAT_EQ(LearningRate(60, 110, o), 0.5f * (1e-3f + 1e-4f));  // half way: cos = 0
  EXPECT_FLOAT_EQ(LearningRate(110, 110, o), 1e-4f);
  // Quarter way: min + (lr-min) * (1 + cos(pi/4)) / 2.
  EXPECT_NEAR(LearningRate(35, 110, o), 1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI / 4)), 1e-9);
  for (int s = 11; s < 110; ++s) EXPECT_GT(LearningRate(s, 110, o), LearningRate(s + 1, 110, o));
}

TEST(LrSchedule, NoWarmup) {
  const auto o = Optim(2e-3f, 0.0f, 0);
  EXPECT_NEAR(LearningRate(1, 4, o), 2e-3 * 0.5 * (1 + std::cos(M_PI / 4)), 1e-9);
  EXPECT_FLOAT_EQ(LearningRate(4, 4, o), 0.0f);
}

// Two parameters in one buffer: a decayed matrix and an undecayed bias.
std::vector<ParamInfo> TwoParams() {
  ParamInfo w{"w", {2, 3}, 0, 6, true};
  ParamInfo b{"b", {3}, 6, 3, false};
  return {w, b};
}

TEST(AdamW, MatchesDoublePrecisionReferenceWithDecayMask) {
  unified_train::OptimConfig o;
  o.set_weight_decay(0.1f);
  o.set_beta1(0.9f);
  o.set_beta2(0.95f);
  o.set_eps(1e-8f);
  const auto params = TwoParams();
  AdamW adamw(params, 9, o);
  std::vector<float> p(9), g(9);
  std::vector<double> rp(9), rm(9, 0.0), rv(9, 0.0);
  for (int i = 0; i < 9; ++i) rp[i] = p[i] = 0.3f * i - 1.1f;
  const float lrs[3] = {1e-2f, 5e-3f, 2e-3f};
  const float scales[3] = {1.0f, 0.5f, 0.25f};
  for (int t = 1; t <= 3; ++t) {
    for (int i = 0; i < 9; ++i) g[i] = std::sin(1.7f * i + t);
    adamw.Step(p.data(), g.data(), lrs[t - 1], scales[t - 1]);
    for (int i = 0; i < 9; ++i) {
      const double lr = lrs[t - 1], wd = i < 6 ? 0.1 : 0.0;
      const double grad = static_cast<double>(g[i]) * scales[t - 1];
      rp[i] *= 1 - lr * wd;
      rm[i] = 0.9 * rm[i] + 0.1 * grad;
      rv[i] = 0.95 * rv[i] + 0.05 * grad * grad;
      const double mhat = rm[i] / (1 - std::pow(0.9, t));
      const double vhat = rv[i] / (1 - std::pow(0.95, t));
      rp[i] -= lr * mhat / (std::sqrt(vhat) + 1e-8);
    }
  }
  EXPECT_EQ(adamw.step(), 3);
  for (int i = 0; i < 9; ++i) {
    EXPECT_NEAR(p[i], rp[i], 1e-6 * (1 + std::abs(rp[i]))) << i;
    EXPECT_NEAR(adamw.m()[i], rm[i], 1e-6) << i;
    EXPECT_NEAR(adamw.v()[i], rv[i], 1e-7) << i;
  }
}

TEST(AdamW, WeightDecayOnlyWhereParamInfoSaysSo) {
  unified_train::OptimConfig o;
  o.set_weight_decay(0.5f);
  AdamW adamw(TwoParams(), 9, o);
  std::vector<float> p(9, 2.0f), g(9, 0.0f);  // zero grads: only decay moves p
  adamw.Step(p.data(), g.data(), 0.1f);
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(p[i], 2.0f * (1 - 0.1f * 0.5f));
  for (int i = 6; i < 9; ++i) EXPECT_EQ(p[i], 2.0f);
}

TEST(GlobalNorm, IsTheL2NormOfTheWholeBuffer) {
  std::vector<float> g = {3, 0, -4, 12};
  EXPECT_DOUBLE_EQ(GlobalNorm(g.data(), 4), 13.0);
}

}  // namespace
}  // namespace ut::train
