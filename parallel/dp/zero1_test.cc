// ZeRO-1 under mpirun (2 and 4 ranks): ShardedAdamW (reduce-scatter, AdamW
// on the owned slice, all-gather) against plain DP (all-reduce average, then
// core/train's full AdamW) over 3 steps of per-rank random gradients.
#include "parallel/dp/zero1.h"

#include <cmath>
#include <span>
#include <vector>

#include "core/base/rng.h"
#include "core/model/mllm.h"
#include "core/train/adamw.h"
#include "gtest/gtest.h"
#include "parallel/comm/mpi_test_main.h"

namespace ut::dp {
namespace {

using comm::testing::World;

// Parameters of these sizes, alternately decayed, tile `total` floats. With
// 1003 floats the shards (2 ranks: 501/502; 4 ranks: 250 x 3 + 253) each
// contain decay/no-decay boundaries (e.g. at 100 and 107 in [0, 250)).
std::vector<ParamInfo> MakeParams(const std::vector<int64_t>& sizes) {
  std::vector<ParamInfo> params;
  int64_t offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    ParamInfo p;
    p.name = "p" + std::to_string(i);
    p.shape = {sizes[i]};
    p.offset = offset;
    p.numel = sizes[i];
    p.decay = i % 2 == 0;
    offset += sizes[i];
    params.push_back(p);
  }
  return params;
}

std::vector<float> Normal(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(n);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  return x;
}

unified_train::OptimConfig Optim() {
  unified_train::OptimConfig c;
  c.set_lr(1e-2f);
  c.set_weight_decay(0.1f);
  return c;
}

double MaxAbsDiff(const float* a, const float* b, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  return worst;
}

// Runs `steps` steps both ways from the same init; returns max |difference|
// of the params and checks the optimizer state and the reduced gradients.
void CompareWithPlainDp(const std::vector<int64_t>& sizes, int steps) {
  const int r = World().rank();
  const std::vector<ParamInfo> params = MakeParams(sizes);
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  const unified_train::OptimConfig config = Optim();

  std::vector<float> plain = Normal(total, 42), sharded = plain;
  train::AdamW full(params, total, config);
  ShardedAdamW zero(&World(), params, total, config);
  EXPECT_EQ(zero.shard_size(), zero.ShardEnd(r) - zero.ShardBegin(r));

  for (int step = 1; step <= steps; ++step) {
    const float lr = config.lr() * step, clip = step == 2 ? 0.5f : 1.0f;
    const std::vector<float> local = Normal(total, 1000 * step + r);  // seeded per rank
    std::vector<float> averaged = local;
    ASSERT_TRUE(World().AllReduce(std::span<float>(averaged), comm::ReduceOp::kAvg).ok());
    full.Step(plain.data(), averaged.data(), lr, clip);

    std::vector<float> grads = local;
    ASSERT_TRUE(zero.ReduceScatterGrads(grads.data()).ok());
    EXPECT_LE(MaxAbsDiff(grads.data() + zero.shard_begin(), averaged.data() + zero.shard_begin(),
                         zero.shard_size()),
              1e-6)
        << "step " << step;
    ASSERT_TRUE(zero.Step(sharded.data(), grads.data(), lr, clip).ok());
    EXPECT_EQ(zero.step(), step);
    const double diff = MaxAbsDiff(plain.data(), sharded.data(), total);
    EXPECT_LE(diff, 1e-6) << "step " << step << " rank " << r;
    if (r == 0) std::printf("total %lld step %d: max |plain - zero1| = %g\n",
                            static_cast<long long>(total), step, diff);
  }
  // The owned slices gather into the plain AdamW state.
  std::vector<float> m, v;
  ASSERT_TRUE(zero.GatherState(&m, &v).ok());
  ASSERT_EQ(static_cast<int64_t>(m.size()), total);
  EXPECT_LE(MaxAbsDiff(m.data(), full.m(), total), 1e-6);
  EXPECT_LE(MaxAbsDiff(v.data(), full.v(), total), 1e-6);
  // Restored from the gathered state, a fresh optimizer continues the same way.
  ShardedAdamW resumed(&World(), params, total, config);
  resumed.LoadState(m.data(), v.data());
  resumed.set_step(zero.step());
  std::vector<float> local = Normal(total, 99 + r), a = local, b = local;
  std::vector<float> pa = sharded, pb = sharded;
  ASSERT_TRUE(zero.ReduceScatterGrads(a.data()).ok());
  ASSERT_TRUE(zero.Step(pa.data(), a.data(), 0.01f).ok());
  ASSERT_TRUE(resumed.ReduceScatterGrads(b.data()).ok());
  ASSERT_TRUE(resumed.Step(pb.data(), b.data(), 0.01f).ok());
  EXPECT_EQ(pa, pb);
}

TEST(ShardedAdamW, SlicesTileTheBufferAndDifferByLessThanDp) {
  const int n = World().size();
  ShardedAdamW zero(&World(), MakeParams({600, 403}), 1003, Optim());
  EXPECT_EQ(zero.ShardBegin(0), 0);
  EXPECT_EQ(zero.ShardEnd(n - 1), 1003);
  for (int q = 1; q < n; ++q) EXPECT_EQ(zero.ShardBegin(q), zero.ShardEnd(q - 1));
  for (int q = 0; q < n; ++q) {
    EXPECT_GE(zero.ShardEnd(q) - zero.ShardBegin(q), 1003 / n);
    EXPECT_LT(zero.ShardEnd(q) - zero.ShardBegin(q), 1003 / n + n);
  }
}

TEST(ShardedAdamW, ThreeStepsEqualPlainDp) {
  CompareWithPlainDp({100, 7, 250, 1, 300, 45, 200, 50, 50}, 3);  // 1003: not divisible by DP
}

TEST(ShardedAdamW, DivisibleBufferEqualsPlainDp) {
  CompareWithPlainDp({96, 4, 140, 20}, 3);  // 260 = 4 * 65
}

TEST(ShardedAdamW, BufferSmallerThanTheGroup) {
  CompareWithPlainDp({1, 2}, 3);  // 3 floats: with 4 ranks only the last owns any
}

}  // namespace
}  // namespace ut::dp
