// Pixel normalisation of the vision tower (model.vision.pixel_mean/pixel_std):
// a model that normalises equals a raw-pixel model fed pre-normalised images
// (loss and every gradient), the setting is validated, and TP ranks keep it.
#include <cmath>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/model/layout.h"
#include "core/model/mllm.h"
#include "core/model/test_util.h"
#include "gtest/gtest.h"

namespace ut {
namespace {

using model::testing::MakeBatch;
using model::testing::SmallConfig;

constexpr float kMean = 0.3f, kStd = 0.2f;

std::unique_ptr<MLLM> MakeModel(const unified_train::ModelConfig& c) {
  auto m = MLLM::Create(c);
  CHECK(m.ok()) << m.status();
  (*m)->InitParams(/*seed=*/3);
  return std::move(*m);
}

// Loss and a copy of the gradients of one forward/backward.
float LossAndGrads(MLLM& m, const data::Batch& b, std::vector<float>* grads) {
  m.ZeroGrad();
  const float loss = m.Forward(b);
  m.Backward(1.0f);
  grads->assign(m.grad_data(), m.grad_data() + m.num_params());
  return loss;
}

TEST(VitPixelNormTest, ConfigNormalisationEqualsPreNormalisedImages) {
  unified_train::ModelConfig norm_config = SmallConfig();
  norm_config.mutable_vision()->set_pixel_mean(kMean);
  norm_config.mutable_vision()->set_pixel_std(kStd);
  auto norm = MakeModel(norm_config);
  auto raw = MakeModel(SmallConfig());
  ASSERT_EQ(norm->num_params(), raw->num_params());
  // Same init: the pixel setting is not a parameter.
  for (int64_t i = 0; i < raw->num_params(); ++i) {
    ASSERT_EQ(norm->param_data()[i], raw->param_data()[i]) << i;
  }
  const auto& c = SmallConfig();
  const data::Batch b = MakeBatch(5, 12, {12, 9}, {{0, 1}, {1, 3}}, raw->num_visual_tokens(),
                                  c.vision().image_size(), c.llm().vocab_size());
  data::Batch pre = b;
  for (float& x : pre.images) x = (x - kMean) / kStd;

  std::vector<float> g_norm, g_pre, g_raw;
  const float loss_norm = LossAndGrads(*norm, b, &g_norm);
  const float loss_pre = LossAndGrads(*raw, pre, &g_pre);
  const float loss_raw = LossAndGrads(*raw, b, &g_raw);
  ASSERT_TRUE(std::isfinite(loss_norm));
  // The same float operations on the same patches: equal up to rounding of
  // the GEMMs' summation order (patchify then normalise vs the reverse).
  EXPECT_NEAR(loss_norm, loss_pre, 1e-6 * std::fabs(loss_pre));
  double sumsq = 0;
  for (float x : g_pre) sumsq += double{x} * x;
  const double floor = 1e-6 * std::sqrt(sumsq / g_pre.size());
  for (size_t i = 0; i < g_pre.size(); ++i) {
    ASSERT_NEAR(g_norm[i], g_pre[i], 1e-5 * std::fabs(g_pre[i]) + floor) << i;
  }
  // ...and the normalisation is really applied: raw pixels give another loss
  // and another patch-embedding gradient.
  EXPECT_GT(std::fabs(loss_norm - loss_raw), 1e-4);
  const ParamInfo* patch_w = raw->FindParam("vision_tower.vision_model.embeddings.patch_embedding.weight");
  ASSERT_NE(patch_w, nullptr);
  double diff = 0;
  for (int64_t i = 0; i < patch_w->numel; ++i) {
    diff += std::fabs(g_norm[patch_w->offset + i] - g_raw[patch_w->offset + i]);
  }
  EXPECT_GT(diff, 1e-3);
}

TEST(VitPixelNormTest, DefaultsLeavePixelsRaw) {
  const unified_train::ModelConfig c;
  EXPECT_EQ(c.vision().pixel_mean(), 0.0f);
  EXPECT_EQ(c.vision().pixel_std(), 1.0f);
}

TEST(VitPixelNormTest, NonPositiveStdIsRejectedNamingTheField) {
  for (float bad : {0.0f, -0.5f, std::nanf("")}) {
    unified_train::ModelConfig c = SmallConfig();
    c.mutable_vision()->set_pixel_std(bad);
    auto m = MLLM::Create(c);
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(m.status().message()).find("model.vision.pixel_std"), std::string::npos)
        << m.status();

    Config full;
    *full.mutable_model() = c;
    const absl::Status s = ValidateConfig(full);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(std::string(s.message()).find("model.vision.pixel_std"), std::string::npos) << s;
  }
}

// TP ranks run the same vit.cc with LocalDims: the setting must survive.
TEST(VitPixelNormTest, TensorParallelDimsKeepTheSetting) {
  unified_train::ModelConfig c = SmallConfig();
  c.mutable_vision()->set_pixel_mean(kMean);
  c.mutable_vision()->set_pixel_std(kStd);
  auto global = model::MakeDims(c);
  ASSERT_TRUE(global.ok()) << global.status();
  EXPECT_EQ(global->pixel_mean, kMean);
  EXPECT_EQ(global->pixel_std, kStd);
  auto local = model::LocalDims(*global, 1, 2);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->pixel_mean, kMean);
  EXPECT_EQ(local->pixel_std, kStd);
}

}  // namespace
}  // namespace ut
