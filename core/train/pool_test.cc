// L_d pools (core/train/discriminative_loss.h PoolLoss, FlattenPool) and the
// trainer's gradient cache (core/train/trainer.h AccumulateStep): a pool of one
// part is exactly the per-micro-batch L_d; a pool of two parts is exactly L_d
// over one merged batch whose samples are (part, sample); the gradient-cache
// step's L_d gradient through the whole small model matches central
// differences of the pooled L_d, in both modes.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/base/rng.h"
#include "core/model/test_util.h"
#include "core/train/ld_test_util.h"
#include "core/train/discriminative_loss.h"
#include "core/train/trainer.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace ut::train {
namespace {

using unified_train::ObjectiveConfig;
using model::testing::MakeBatch;
using model::testing::SmallConfig;

using testing::kModes;
using testing::ModeName;

// The shared three-sample batch (ld_test_util.h); `seed` varies tokens,
// images and teacher features.
data::Batch SlicedBatch(const unified_train::ModelConfig& c, uint64_t seed) {
  return testing::SlicedBatch(c, seed, seed + 100);
}

ObjectiveConfig Objective(ObjectiveConfig::Mode mode, int cuts = 2) {
  return testing::MakeObjective(mode, cuts);
}

std::vector<float> RandomRows(int S, int R, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> r(static_cast<size_t>(S) * R);
  for (float& x : r) x = static_cast<float>(rng.Normal());
  return r;
}

TEST(PoolLoss, OnePartIsExactlyTheMicroBatchLoss) {
  const data::Batch b = SlicedBatch(SmallConfig(), 9);
  const int R = 5, S = 9;
  const std::vector<float> r = RandomRows(S, R, 3);
  for (auto mode : kModes) {
    SCOPED_TRACE(ModeName(mode));
    const ObjectiveConfig obj = Objective(mode, 3);
    // The per-micro-batch computation, step by step.
    const auto units = DrawUnits(b, 3, /*seed=*/7, /*step=*/2, /*micro=*/5, nullptr);
    std::vector<float> ml, mr, dr(S * R, 0.0f);
    ASSERT_TRUE(TeacherMatrix(b, units, 1.0, &ml).ok());
    ASSERT_TRUE(ModelMatrix(units, r.data(), R, mode, 1.0, &mr).ok());
    auto want = DiscriminativeLossFromMatrices(units, mr, ml, r.data(), R, mode, 1.0, 0.3f,
                                               dr.data());
    ASSERT_TRUE(want.ok());
    const PoolPart part{&b, 5, r.data()};
    std::vector<std::vector<float>> got_dr;
    auto got = PoolLoss({&part, 1}, R, obj, 7, 2, 0.3f, &got_dr);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->loss, *want);  // bit for bit
    EXPECT_EQ(got->units, static_cast<int>(units.size()));
    ASSERT_EQ(got_dr.size(), 1u);
    EXPECT_EQ(std::memcmp(got_dr[0].data(), dr.data(), dr.size() * 4), 0);
  }
}

TEST(PoolLoss, TwoPartsAreOneMergedBatchWithSamplesPerPart) {
  // Part 1 is part 0's batch again: its samples are other samples (M^l is not
  // forced to 1 between the parts), and its cuts follow its own micro index.
  const data::Batch b = SlicedBatch(SmallConfig(), 9);
  const int R = 5, S = 9;
  const std::vector<float> r0 = RandomRows(S, R, 3), r1 = RandomRows(S, R, 4);
  // The merged batch: slices of part 1 after part 0's, samples 3..5.
  data::Batch merged = b;
  merged.sample_ids = {"a0", "a1", "a2", "b0", "b1", "b2"};
  for (data::SliceSpan s : b.slices) {
    s.sample += 3;
    merged.slices.push_back(s);
  }
  std::vector<float> r(r0);
  r.insert(r.end(), r1.begin(), r1.end());
  std::vector<Unit> units = DrawUnits(b, 2, 7, 2, /*micro=*/0, nullptr);
  for (Unit u : DrawUnits(b, 2, 7, 2, /*micro=*/1, nullptr)) {
    u.sample += 3;
    for (int& i : u.slices) i += S;
    units.push_back(u);
  }
  for (auto mode : kModes) {
    SCOPED_TRACE(ModeName(mode));
    std::vector<float> ml, mr, dr(2 * S * R, 0.0f);
    ASSERT_TRUE(TeacherMatrix(merged, units, 1.0, &ml).ok());
    ASSERT_TRUE(ModelMatrix(units, r.data(), R, mode, 1.0, &mr).ok());
    auto want = DiscriminativeLossFromMatrices(units, mr, ml, r.data(), R, mode, 1.0, 0.3f,
                                               dr.data());
    ASSERT_TRUE(want.ok());
    const PoolPart parts[] = {{&b, 0, r0.data()}, {&b, 1, r1.data()}};
    std::vector<std::vector<float>> got_dr;
    auto got = PoolLoss(parts, R, Objective(mode), 7, 2, 0.3f, &got_dr);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->loss, *want);
    EXPECT_EQ(got->units, static_cast<int>(units.size()));
    ASSERT_EQ(got_dr.size(), 2u);
    EXPECT_EQ(std::memcmp(got_dr[0].data(), dr.data(), S * R * 4), 0);
    EXPECT_EQ(std::memcmp(got_dr[1].data(), dr.data() + S * R, S * R * 4), 0);
    // Different from treating each part alone.
    auto alone = PoolLoss({&parts[0], 1}, R, Objective(mode), 7, 2, 0.0f, nullptr);
    ASSERT_TRUE(alone.ok());
    EXPECT_NE(got->loss, alone->loss);
  }
}

TEST(PoolLoss, FlattenPoolHoldsTheSameUnits) {
  const data::Batch b0 = SlicedBatch(SmallConfig(), 9), b1 = SlicedBatch(SmallConfig(), 10);
  const PoolPart parts[] = {{&b0, 4, nullptr}, {&b1, 6, nullptr}};
  int skipped = -1;
  auto flat = FlattenPool(parts, 2, 7, 2, &skipped);
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ(skipped, 0);
  EXPECT_EQ(flat->num_slices(), 18);
  EXPECT_EQ(flat->teacher_dim, 6);
  EXPECT_EQ(flat->teacher_split, 3);
  const auto u0 = DrawUnits(b0, 2, 7, 2, 4, nullptr), u1 = DrawUnits(b1, 2, 7, 2, 6, nullptr);
  ASSERT_EQ(flat->num_units(), static_cast<int>(u0.size() + u1.size()));
  int pos = 0;
  for (int u = 0; u < flat->num_units(); ++u) {
    const bool second = u >= static_cast<int>(u0.size());
    const Unit& want = second ? u1[u - u0.size()] : u0[u];
    EXPECT_EQ(flat->unit_sample[u], dld::SampleKey(second ? 6 : 4, want.sample));
    ASSERT_EQ(flat->unit_length[u], static_cast<int>(want.slices.size()));
    for (int i : want.slices) EXPECT_EQ(flat->unit_slices[pos++], i + (second ? 9 : 0));
  }
  const data::SliceSpan& last = b1.slices[8];
  EXPECT_EQ(flat->modality[17], last.is_image ? 1 : 0);
  EXPECT_EQ(std::memcmp(&flat->teacher[17 * 6], last.teacher.data(), 6 * 4), 0);
}

TEST(PoolLoss, TwoPartsWithOneMicroIndexAreAnError) {
  const data::Batch b = SlicedBatch(SmallConfig(), 9);
  const std::vector<float> r = RandomRows(9, 5, 3);
  const PoolPart parts[] = {{&b, 2, r.data()}, {&b, 2, r.data()}};
  auto got = PoolLoss(parts, 5, Objective(ObjectiveConfig::SEQUENCE), 7, 2, 1.0f, nullptr);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("micro-batch index 2"), std::string::npos)
      << got.status();
}

TEST(LdPoolSize, MicroBatchRoundsMustDivideTheAccumulation) {
  ObjectiveConfig o;
  EXPECT_EQ(*LdPoolSize(o, 4, 1), 1);
  EXPECT_EQ(*LdPoolSize(o, 4, 2), 2);
  EXPECT_FALSE(LdPoolSize(o, 4, 3).ok());
  EXPECT_FALSE(LdPoolSize(o, 4, 0).ok());
  o.set_pool(ObjectiveConfig::GLOBAL_BATCH);
  EXPECT_EQ(*LdPoolSize(o, 4, 1), 4);
}

// ---- The gradient cache through the whole model ---------------------------------

class GradientCacheTest : public ::testing::TestWithParam<ObjectiveConfig::Mode> {};

TEST_P(GradientCacheTest, PooledLdGradientMatchesCentralDifferences) {
  auto config = SmallConfig();
  config.set_retrieval_dim(6);
  auto created = MLLM::Create(config);
  ASSERT_TRUE(created.ok()) << created.status();
  MLLM& m = **created;
  m.InitParams(123);
  const std::vector<data::Batch> batches = {SlicedBatch(config, 9), SlicedBatch(config, 10)};
  ObjectiveConfig obj = Objective(GetParam());
  const uint64_t seed = 1;
  const int64_t step = 4;

  // Analytic: one step of 2 micro-batches in one pool (group 2), minus the same
  // step without L_d, is the gradient of L_d(pool) (alpha 1, one pool).
  auto step_grad = [&](float alpha) {
    obj.set_alpha(alpha);
    m.ZeroGrad();
    size_t next = 0;
    auto sums = AccumulateStep(
        &m, [&]() -> absl::StatusOr<data::Batch> { return batches[next++]; }, 2, 2, obj, seed,
        step);
    CHECK(sums.ok()) << sums.status();
    CHECK_EQ(next, 2u);
    return std::vector<float>(m.grad_data(), m.grad_data() + m.num_params());
  };
  const std::vector<float> with = step_grad(1.0f), without = step_grad(0.0f);
  std::vector<float> grad(with.size());
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = with[i] - without[i];

  // Numeric: L_d of the pool from fresh forwards.
  float* params = m.param_data();
  const int R = m.retrieval_dim();
  auto loss = [&] {
    std::vector<std::vector<float>> r(2);
    std::vector<PoolPart> parts;
    for (int j = 0; j < 2; ++j) {
      m.Forward(batches[j]);
      r[j].resize(batches[j].slices.size() * R);
      m.RetrievalForward(batches[j].slices, r[j].data());
      parts.push_back({&batches[j], j, r[j].data()});
    }
    auto l = PoolLoss(parts, R, obj, seed, step, 0.0f, nullptr);
    CHECK(l.ok());
    return l->loss;
  };
  auto fd = [&](const std::vector<int64_t>& index, const std::vector<float>& dir) {
    return testing::DirectionalDerivative(params, loss, index, dir);
  };
  constexpr double kRel = 3e-3, kAbs = 3e-5;
  EXPECT_GT(loss(), 1e-3);

  Rng rng(5);
  int with_teeth = 0, expected_teeth = 0;
  for (const ParamInfo& p : m.params()) {
    SCOPED_TRACE(p.name);
    std::vector<int64_t> index(p.numel);
    std::vector<float> dir(p.numel);
    double analytic = 0;
    const float unit = 1.0f / std::sqrt(static_cast<float>(p.numel));
    for (int64_t i = 0; i < p.numel; ++i) {
      index[i] = p.offset + i;
      dir[i] = rng.Below(2) ? unit : -unit;
      analytic += double{grad[p.offset + i]} * dir[i];
    }
    EXPECT_NEAR(fd(index, dir), analytic, kRel * std::fabs(analytic) + kAbs) << "direction";
    with_teeth += std::fabs(analytic) > 20 * kAbs;
    expected_teeth += !p.name.ends_with("k_proj.bias") && !p.name.ends_with("lm_head.weight");
  }
  // Most tensors' directional derivatives are large enough to catch an error.
  EXPECT_GE(with_teeth, expected_teeth * 3 / 4);
}

INSTANTIATE_TEST_SUITE_P(Modes, GradientCacheTest, ::testing::ValuesIn(kModes),
                         [](const auto& info) { return std::string(ModeName(info.param)); });

}  // namespace
}  // namespace ut::train
