// Finite-difference check of the whole model's loss gradient (small config):
// for every parameter tensor, (a) the directional derivative along a random
// direction over the whole tensor and (b) single entries (the largest-gradient
// one and a random one), by central differences in float.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "core/model/mllm.h"
#include "core/model/test_util.h"
#include "gtest/gtest.h"

namespace ut {
namespace {

using model::testing::MakeBatch;
using model::testing::SmallConfig;

class GradcheckTest : public ::testing::TestWithParam<bool> {};

TEST_P(GradcheckTest, LossGradientMatchesCentralDifferences) {
  auto config = SmallConfig();
  config.mutable_llm()->set_tie_embeddings(GetParam());
  auto created = MLLM::Create(config);
  ASSERT_TRUE(created.ok()) << created.status();
  MLLM& m = **created;
  m.InitParams(123);
  // Two rows with one image each, padding in row 1, ignored targets.
  const data::Batch b = MakeBatch(9, 12, {12, 9}, {{0, 1}, {1, 3}}, m.num_visual_tokens(),
                                  config.vision().image_size(), config.llm().vocab_size());
  m.ZeroGrad();
  m.Forward(b);
  m.Backward(1.0f);
  const std::vector<float> grad(m.grad_data(), m.grad_data() + m.num_params());
  float* params = m.param_data();

  // Derivative of the loss along `dir` (over the entries `index`): central
  // differences at steps h and h/2, Richardson-extrapolated, (4 D(h/2) - D(h)) / 3,
  // so the O(h^2) truncation error cancels and h can stay well above float noise.
  auto central = [&](const std::vector<int64_t>& index, const std::vector<float>& dir, float h) {
    std::vector<float> saved(index.size());
    for (size_t i = 0; i < index.size(); ++i) saved[i] = params[index[i]];
    for (size_t i = 0; i < index.size(); ++i) params[index[i]] = saved[i] + h * dir[i];
    const double up = m.Forward(b);
    for (size_t i = 0; i < index.size(); ++i) params[index[i]] = saved[i] - h * dir[i];
    const double down = m.Forward(b);
    for (size_t i = 0; i < index.size(); ++i) params[index[i]] = saved[i];
    return (up - down) / (2.0 * h);
  };
  auto fd = [&](const std::vector<int64_t>& index, const std::vector<float>& dir) {
    const float h = 2e-2f;
    return (4.0 * central(index, dir, h / 2) - central(index, dir, h)) / 3.0;
  };
  // Tolerance: relative part for the remaining truncation error, absolute part
  // for the float loss (returned as float: 3e-7 at loss ~3.5) divided by the step.
  constexpr double kRel = 2e-3, kAbs = 5e-5;

  Rng rng(5);
  int checked = 0;
  for (const ParamInfo& p : m.params()) {
    SCOPED_TRACE(p.name);
    // (a) Random +-1 direction over the whole tensor, normalised to unit length.
    std::vector<int64_t> index(p.numel);
    std::vector<float> dir(p.numel);
    double analytic = 0, gnorm2 = 0;
    const float unit = 1.0f / std::sqrt(static_cast<float>(p.numel));
    for (int64_t i = 0; i < p.numel; ++i) {
      index[i] = p.offset + i;
      dir[i] = (rng.Below(2) ? unit : -unit);
      analytic += double{grad[p.offset + i]} * dir[i];
      gnorm2 += double{grad[p.offset + i]} * grad[p.offset + i];
    }
    const double numeric = fd(index, dir);
    EXPECT_NEAR(numeric, analytic, kRel * std::fabs(analytic) + kAbs) << "directional derivative";

    // (b) The largest-|gradient| entry and one random entry.
    int64_t largest = 0;
    for (int64_t i = 1; i < p.numel; ++i) {
      if (std::fabs(grad[p.offset + i]) > std::fabs(grad[p.offset + largest])) largest = i;
    }
    for (int64_t i : {largest, static_cast<int64_t>(rng.Below(p.numel))}) {
      const double an = grad[p.offset + i];
      const double nu = fd({p.offset + i}, {1.0f});
      EXPECT_NEAR(nu, an, kRel * std::fabs(an) + kAbs) << "entry " << i;
    }
    // Every tensor except the attention key bias (softmax is shift-invariant
    // along the key bias, so its exact gradient is 0) has an entry at least
    // 20 x kAbs, so the tolerances above catch a wrong gradient.
    if (p.name.ends_with("k_proj.bias")) {
      EXPECT_LT(std::sqrt(gnorm2), 1e-5);
    } else if (p.name.starts_with("retrieval_projector.")) {
      // Only the discriminative loss reaches the retrieval projector; its
      // gradient check is core/train/discriminative_loss_test.cc.
      EXPECT_EQ(gnorm2, 0.0);
    } else {
      EXPECT_GT(std::fabs(grad[p.offset + largest]), 20 * kAbs);
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(m.params().size()));
}

INSTANTIATE_TEST_SUITE_P(UntiedAndTied, GradcheckTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tied" : "untied"; });

}  // namespace
}  // namespace ut
