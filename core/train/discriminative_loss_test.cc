// The discriminative loss L_d: hand-checkable cases for units and both
// similarity matrices, and central-difference gradient checks of L_d, first
// w.r.t. the slice embeddings r, then through the WHOLE small model (every
// parameter tensor, the retrieval projector included), in both modes.
#include "core/train/discriminative_loss.h"

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "core/model/test_util.h"
#include "core/train/ld_test_util.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace ut::train {
namespace {

using unified_train::ObjectiveConfig;
using model::testing::MakeBatch;
using model::testing::SmallConfig;

using testing::AddSlice;
using testing::kModes;
using testing::ModeName;

// The shared three-sample batch (ld_test_util.h) with this file's seeds.
data::Batch SlicedBatch(const unified_train::ModelConfig& c) {
  return testing::SlicedBatch(c, /*batch_seed=*/9, /*teacher_seed=*/77);
}

ObjectiveConfig Objective(ObjectiveConfig::Mode mode, int cuts = 3) {
  return testing::MakeObjective(mode, cuts);
}

bool Symmetric(const std::vector<float>& m, int N) {
  for (int a = 0; a < N; ++a) {
    for (int b = 0; b < N; ++b) {
      if (m[a * N + b] != m[b * N + a]) return false;
    }
  }
  return true;
}

// ---- Units -------------------------------------------------------------------

TEST(DrawUnits, DistinctPrefixCutsDeterministicAndCapped) {
  const data::Batch b = SlicedBatch(SmallConfig());
  int skipped = -1;
  const auto units = DrawUnits(b, 2, /*seed=*/1, /*step=*/3, /*micro=*/0, &skipped);
  EXPECT_EQ(skipped, 0);
  ASSERT_EQ(units.size(), 6u);  // 3 samples x 2 distinct cuts
  for (int s = 0; s < 3; ++s) {
    const Unit& a = units[2 * s];
    const Unit& c = units[2 * s + 1];
    EXPECT_EQ(a.sample, s);
    EXPECT_EQ(c.sample, s);
    EXPECT_LT(a.slices.size(), c.slices.size());  // distinct, ascending
    EXPECT_GE(a.slices.size(), 1u);
    EXPECT_LE(c.slices.size(), 3u);
    for (size_t i = 0; i < c.slices.size(); ++i) EXPECT_EQ(c.slices[i], 3 * s + int(i));
  }
  // Same (seed, step, micro) -> same units.
  const auto again = DrawUnits(b, 2, 1, 3, 0, nullptr);
  for (size_t u = 0; u < units.size(); ++u) EXPECT_EQ(again[u].slices, units[u].slices);
  // Over many steps every cut of 1..3 shows up.
  std::set<size_t> seen;
  for (int step = 0; step < 50; ++step) {
    for (const Unit& u : DrawUnits(b, 1, 1, step, 0, nullptr)) seen.insert(u.slices.size());
  }
  EXPECT_EQ(seen, (std::set<size_t>{1, 2, 3}));
  // More cuts than slices: every prefix once.
  EXPECT_EQ(DrawUnits(b, 5, 1, 3, 0, nullptr).size(), 9u);
}

TEST(DrawUnits, SamplesWithoutTeacherFeaturesAreSkippedAndCounted) {
  data::Batch b = SlicedBatch(SmallConfig());
  b.slices[4].teacher.clear();  // sample 1 loses one feature
  int skipped = 0;
  const auto units = DrawUnits(b, 2, 1, 0, 0, &skipped);
  EXPECT_EQ(skipped, 1);
  ASSERT_EQ(units.size(), 4u);
  for (const Unit& u : units) EXPECT_NE(u.sample, 1);
}

// ---- Matrices ------------------------------------------------------------------

TEST(TeacherMatrix, SameSampleIsOneSymmetricAndBelowOneElsewhere) {
  const data::Batch b = SlicedBatch(SmallConfig());
  const auto units = DrawUnits(b, 3, 1, 0, 0, nullptr);  // all 9 prefixes
  const int N = static_cast<int>(units.size());
  std::vector<float> ml;
  ASSERT_TRUE(TeacherMatrix(b, units, 1.0, &ml).ok());
  ASSERT_EQ(ml.size(), size_t(N * N));
  EXPECT_TRUE(Symmetric(ml, N));
  for (int u = 0; u < N; ++u) {
    for (int v = 0; v < N; ++v) {
      const float x = ml[u * N + v];
      if (units[u].sample == units[v].sample) {
        EXPECT_EQ(x, 1.0f) << u << "," << v;
      } else {
        EXPECT_GT(x, 0.0f);
        EXPECT_LT(x, 0.999f) << u << "," << v;  // different random teachers
      }
    }
  }
}

TEST(TeacherMatrix, IdenticalTeacherSequencesInOtherSamplesGiveOne) {
  data::Batch b = SlicedBatch(SmallConfig());
  for (int i = 0; i < 3; ++i) b.slices[3 + i].teacher = b.slices[i].teacher;
  b.slices[4].is_image = b.slices[1].is_image;  // same modalities too
  b.slices[3].is_image = b.slices[0].is_image;
  const auto units = DrawUnits(b, 3, 1, 0, 0, nullptr);
  std::vector<float> ml;
  ASSERT_TRUE(TeacherMatrix(b, units, 1.0, &ml).ok());
  const int N = static_cast<int>(units.size());
  // units 0..2: sample 0 cuts 1..3; 3..5: sample 1 cuts 1..3.
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(ml[k * N + 3 + k], 1.0f, 1e-6) << k;
  EXPECT_LT(ml[0 * N + 5], 0.999f);  // different lengths
}

TEST(TeacherMatrix, MixedFeatureSizesAreAnErrorNamingTheSample) {
  data::Batch b = SlicedBatch(SmallConfig());
  b.slices[7].teacher.push_back(0.5f);
  const auto units = DrawUnits(b, 3, 1, 0, 0, nullptr);
  std::vector<float> ml;
  const absl::Status st = TeacherMatrix(b, units, 1.0, &ml);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("\"s2\""), std::string::npos) << st;
}

TEST(ModelMatrix, IdenticalUnitsGiveOneInBothModes) {
  // r rows: slices 0..2 and 3..5 are the same three vectors; 6..8 are others.
  const int R = 5;
  Rng rng(3);
  std::vector<float> r(9 * R);
  for (auto& x : r) x = static_cast<float>(rng.Normal());
  for (int i = 0; i < 3 * R; ++i) r[3 * R + i] = r[i];
  std::vector<Unit> units = {{0, {0, 1, 2}}, {1, {3, 4, 5}}, {2, {6, 7, 8}}, {0, {0, 1}}};
  for (auto mode : kModes) {
    SCOPED_TRACE(ModeName(mode));
    std::vector<float> mr;
    ASSERT_TRUE(ModelMatrix(units, r.data(), R, mode, 1.0, &mr).ok());
    EXPECT_TRUE(Symmetric(mr, 4));
    for (int u = 0; u < 4; ++u) EXPECT_EQ(mr[u * 4 + u], 1.0f);
    EXPECT_NEAR(mr[0 * 4 + 1], 1.0f, 1e-6);
    EXPECT_LT(mr[0 * 4 + 2], 0.99f);
    // SEQUENCE: a prefix is another sequence; PAPER: last slices 2 and 1 differ.
    EXPECT_LT(mr[0 * 4 + 3], 0.99f);
  }
}

TEST(ModelMatrix, PaperModeIsTheCosineOfTheLastEmbeddings) {
  const int R = 4;
  Rng rng(11);
  std::vector<float> r(6 * R);
  for (auto& x : r) x = static_cast<float>(rng.Normal());
  const std::vector<Unit> units = {{0, {0}}, {0, {0, 1}}, {1, {2, 3, 4}}, {2, {5}}};
  std::vector<float> mr;
  ASSERT_TRUE(ModelMatrix(units, r.data(), R, ObjectiveConfig::PAPER, 1.0, &mr).ok());
  const int last[] = {0, 1, 4, 5};
  for (int u = 0; u < 4; ++u) {
    for (int v = 0; v < 4; ++v) {
      const float* a = &r[last[u] * R];
      const float* b = &r[last[v] * R];
      double ab = 0, aa = 0, bb = 0;
      for (int c = 0; c < R; ++c) {
        ab += double{a[c]} * b[c];
        aa += double{a[c]} * a[c];
        bb += double{b[c]} * b[c];
      }
      EXPECT_NEAR(mr[u * 4 + v], ab / std::sqrt(aa * bb), 1e-6) << u << "," << v;
    }
  }
}

TEST(DiscriminativeLoss, HandComputedValue) {
  // N = 2: L_d = (1/2) * ((0.5-0.2)^2 * 2) = 0.09.
  const std::vector<Unit> units = {{0, {0}}, {1, {1}}};
  const std::vector<float> mr = {1.0f, 0.5f, 0.5f, 1.0f}, ml = {1.0f, 0.2f, 0.2f, 1.0f};
  const std::vector<float> r = {1, 0, 0, 1};
  auto loss = DiscriminativeLossFromMatrices(units, mr, ml, r.data(), 2, ObjectiveConfig::PAPER,
                                             1.0, 0.0f, nullptr);
  ASSERT_TRUE(loss.ok());
  EXPECT_NEAR(*loss, 0.09, 1e-7);
}

// ---- Gradient w.r.t. r ------------------------------------------------------

TEST(DiscriminativeLoss, GradientWrtEmbeddingsMatchesCentralDifferences) {
  const data::Batch b = SlicedBatch(SmallConfig());
  const auto units = DrawUnits(b, 3, 1, 0, 0, nullptr);
  std::vector<float> ml;
  ASSERT_TRUE(TeacherMatrix(b, units, 1.0, &ml).ok());
  const int R = 4, S = 9;
  Rng rng(21);
  std::vector<double> r0(S * R);
  for (auto& x : r0) x = rng.Normal();
  for (auto mode : kModes) {
    SCOPED_TRACE(ModeName(mode));
    auto loss_at = [&](const std::vector<float>& r, float* dr) {
      std::vector<float> mr;
      CHECK(ModelMatrix(units, r.data(), R, mode, 1.0, &mr).ok());
      auto l = DiscriminativeLossFromMatrices(units, mr, ml, r.data(), R, mode, 1.0, 1.0f, dr);
      CHECK(l.ok());
      return *l;
    };
    std::vector<float> r(r0.begin(), r0.end()), dr(S * R, 0.0f);
    const double l0 = loss_at(r, dr.data());
    EXPECT_GT(l0, 1e-3);
    double max_grad = 0;
    for (int i = 0; i < S * R; ++i) {
      const float h = 1e-2f;
      auto at = [&](float step) {
        std::vector<float> x(r);
        x[i] += step;
        return loss_at(x, nullptr);
      };
      const double d1 = (at(h) - at(-h)) / (2.0 * h);
      const double d2 = (at(h / 2) - at(-h / 2)) / double{h};
      const double numeric = (4 * d2 - d1) / 3;
      EXPECT_NEAR(dr[i], numeric, 2e-3 * std::fabs(numeric) + 2e-5) << "r[" << i << "]";
      max_grad = std::max(max_grad, std::fabs(numeric));
    }
    EXPECT_GT(max_grad, 1e-2);  // the check has teeth
  }
}

// ---- Gradient through the whole model -----------------------------------------

class ModelGradcheckTest : public ::testing::TestWithParam<ObjectiveConfig::Mode> {};

TEST_P(ModelGradcheckTest, LdGradientMatchesCentralDifferencesForEveryParameterTensor) {
  auto config = SmallConfig();
  config.set_retrieval_dim(6);
  auto created = MLLM::Create(config);
  ASSERT_TRUE(created.ok()) << created.status();
  MLLM& m = **created;
  m.InitParams(123);
  const data::Batch b = SlicedBatch(config);
  const ObjectiveConfig obj = Objective(GetParam(), /*cuts=*/2);

  // Analytic: L_d alone (the LM loss gets scale 0).
  m.ZeroGrad();
  m.Forward(b);
  auto res = DiscriminativeLossStep(&m, b, obj, /*seed=*/1, /*step=*/4, /*micro=*/0, 1.0f);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->units, 6);
  EXPECT_GT(res->loss, 1e-3);
  m.Backward(0.0f);
  const std::vector<float> grad(m.grad_data(), m.grad_data() + m.num_params());

  float* params = m.param_data();
  auto loss = [&] {
    m.Forward(b);
    auto r = DiscriminativeLossStep(&m, b, obj, 1, 4, 0, 0.0f);
    CHECK(r.ok());
    return r->loss;
  };
  auto fd = [&](const std::vector<int64_t>& index, const std::vector<float>& dir) {
    return testing::DirectionalDerivative(params, loss, index, dir);
  };
  constexpr double kRel = 3e-3, kAbs = 3e-5;

  Rng rng(5);
  int checked = 0, with_teeth = 0;
  for (const ParamInfo& p : m.params()) {
    SCOPED_TRACE(p.name);
    // (a) A random +-1 direction over the whole tensor (unit length).
    std::vector<int64_t> index(p.numel);
    std::vector<float> dir(p.numel);
    double analytic = 0;
    const float unit = 1.0f / std::sqrt(static_cast<float>(p.numel));
    int64_t largest = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      index[i] = p.offset + i;
      dir[i] = rng.Below(2) ? unit : -unit;
      analytic += double{grad[p.offset + i]} * dir[i];
      if (std::fabs(grad[p.offset + i]) > std::fabs(grad[p.offset + largest])) largest = i;
    }
    EXPECT_NEAR(fd(index, dir), analytic, kRel * std::fabs(analytic) + kAbs) << "direction";
    // (b) The largest-|gradient| entry.
    const double an = grad[p.offset + largest];
    EXPECT_NEAR(fd({p.offset + largest}, {1.0f}), an, kRel * std::fabs(an) + kAbs)
        << "entry " << largest;
    with_teeth += std::fabs(an) > 20 * kAbs;
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(m.params().size()));
  // Apart from the attention key biases (exact gradient 0) and the LM head (L_d
  // does not use it), every tensor's gradient is large enough for the
  // tolerances above to catch a wrong one.
  int expected_teeth = 0;
  for (const ParamInfo& p : m.params()) {
    expected_teeth += !p.name.ends_with("k_proj.bias") && !p.name.ends_with("lm_head.weight");
  }
  EXPECT_EQ(with_teeth, expected_teeth);
}

INSTANTIATE_TEST_SUITE_P(Modes, ModelGradcheckTest, ::testing::ValuesIn(kModes),
                         [](const auto& info) { return std::string(ModeName(info.param)); });

}  // namespace
}  // namespace ut::train
