// Distributed gradient norm under mpirun (2 and 4 ranks), for every TP x DP
// factorisation of the world with TP in {1, 2}: the contributions of plain
// DP (all-reduce) and of ZeRO-1 (reduce-scatter) give the norm of the
// single-process gradient (the DP average of the unsharded gradients).
#include "parallel/dp/grad_norm.h"

#include <cmath>
#include <span>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"
#include "parallel/comm/mpi_test_main.h"
#include "parallel/dp/zero1.h"

namespace ut::dp {
namespace {

using comm::testing::World;

// A global (unsharded) parameter: rows x cols; replicated over TP or split
// by rows (column-parallel style).
struct GlobalParam {
  int64_t rows, cols;
  bool replicated;
};
const std::vector<GlobalParam> kModel = {
    {8, 6, false}, {6, 1, true}, {4, 6, false}, {6, 1, true}, {10, 3, false}, {3, 1, true},
    {2, 5, false}};

// The unsharded gradient of DP rank d, param i: element e of it.
std::vector<float> GlobalGrad(int d, size_t i) {
  Rng rng(7919 * (d + 1) + i);
  std::vector<float> g(kModel[i].rows * kModel[i].cols);
  for (float& x : g) x = static_cast<float>(rng.Normal());
  return g;
}

// This TP rank's local buffer for DP rank d's gradient, and its param spans.
std::vector<float> LocalGrad(int d, int t, int tp, std::vector<ParamSpan>* spans) {
  std::vector<float> local;
  spans->clear();
  for (size_t i = 0; i < kModel.size(); ++i) {
    const GlobalParam& p = kModel[i];
    const std::vector<float> g = GlobalGrad(d, i);
    int64_t begin = 0, end = p.rows * p.cols;
    if (!p.replicated) {
      const int64_t rows = p.rows / tp;
      begin = t * rows * p.cols;
      end = begin + rows * p.cols;
    }
    spans->push_back(ParamSpan{static_cast<int64_t>(local.size()), end - begin, i % 2 == 0,
                               p.replicated});
    local.insert(local.end(), g.begin() + begin, g.begin() + end);
  }
  return local;
}

// The single-process norm: of the mean over DP ranks of the full gradients.
double ReferenceNorm(int dp) {
  double sum = 0;
  for (size_t i = 0; i < kModel.size(); ++i) {
    std::vector<double> mean(kModel[i].rows * kModel[i].cols, 0.0);
    for (int d = 0; d < dp; ++d) {
      const std::vector<float> g = GlobalGrad(d, i);
      for (size_t e = 0; e < g.size(); ++e) mean[e] += g[e] / static_cast<double>(dp);
    }
    for (double x : mean) sum += x * x;
  }
  return std::sqrt(sum);
}

TEST(GradNorm, PlainDpAndZero1GiveTheSingleProcessNorm) {
  const int world = World().size(), r = World().rank();
  for (int tp : {1, 2}) {
    if (world % tp != 0) continue;
    const int dp = world / tp, t = r % tp, d = r / tp;  // rank = tp + dp * TP
    auto group = World().Split(/*color=*/t, /*key=*/d, "dp");
    ASSERT_TRUE(group.ok());
    std::vector<ParamSpan> spans;
    const std::vector<float> local = LocalGrad(d, t, tp, &spans);
    const int64_t total = static_cast<int64_t>(local.size());
    const double want = ReferenceNorm(dp);

    // Plain DP: average, then DP rank 0 counts its (TP-local) buffer.
    std::vector<float> g = local;
    ASSERT_TRUE((*group)->AllReduce(std::span<float>(g), comm::ReduceOp::kAvg).ok());
    NormShare share = NormShareFor(t, d, total, /*zero1=*/false, 0, 0);
    auto norm = GlobalGradNorm(&World(),
                               SquaredNormContribution(g.data(), spans, share.count_replicated,
                                                       share.begin, share.end));
    ASSERT_TRUE(norm.ok());
    EXPECT_NEAR(*norm, want, 1e-6 * want) << "plain DP, TP " << tp << " DP " << dp;

    // ZeRO-1: each DP rank counts its own slice of the reduce-scattered grads.
    ShardedAdamW zero(group->get(), spans, total, unified_train::OptimConfig());
    std::vector<float> z = local;
    ASSERT_TRUE(zero.ReduceScatterGrads(z.data()).ok());
    share = NormShareFor(t, d, total, /*zero1=*/true, zero.shard_begin(), zero.shard_end());
    norm = GlobalGradNorm(&World(), SquaredNormContribution(z.data(), spans, share.count_replicated,
                                                            share.begin, share.end));
    ASSERT_TRUE(norm.ok());
    EXPECT_NEAR(*norm, want, 1e-6 * want) << "ZeRO-1, TP " << tp << " DP " << dp;
    if (r == 0) std::printf("TP %d DP %d: norm %.9f (single process %.9f)\n", tp, dp, *norm, want);
  }
}

// The contribution counts exactly the elements asked for.
TEST(GradNorm, ContributionRespectsRangeAndReplication) {
  struct Info {  // the shape of ParamInfo, for the template overload
    int64_t offset, numel;
    bool decay;
  };
  const std::vector<Info> params = {{0, 3, true}, {3, 2, false}, {5, 4, true}};
  const std::vector<float> g = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<bool> replicated = {false, true, false};
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), params, replicated, true, 0, 9), 285.0);
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), params, replicated, false, 0, 9),
                   285.0 - 16 - 25);
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), params, replicated, false, 2, 7),
                   9.0 + 36 + 49);
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), params, {}, true, 4, 4), 0.0);
}

}  // namespace
}  // namespace ut::dp
