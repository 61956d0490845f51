// The ParamInfo adapters: replication from shard_dim, and the norm overload
// that takes the model's parameter list directly.
#include "parallel/dp/param_span.h"

#include <vector>

#include "core/model/mllm.h"
#include "gtest/gtest.h"
#include "parallel/dp/grad_norm.h"

namespace ut::dp {
namespace {

std::vector<ParamInfo> Params() {
  std::vector<ParamInfo> params(3);
  const int shard_dim[] = {0, -1, 1};
  const int64_t numel[] = {4, 2, 3};
  int64_t offset = 0;
  for (int i = 0; i < 3; ++i) {
    params[i].name = "p" + std::to_string(i);
    params[i].offset = offset;
    params[i].numel = numel[i];
    params[i].decay = i != 1;
    params[i].shard_dim = shard_dim[i];
    offset += numel[i];
  }
  return params;
}

TEST(ParamSpan, ReplicationFollowsShardDimUnlessGiven) {
  const auto spans = ToParamSpans(Params());
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_FALSE(spans[0].replicated);
  EXPECT_TRUE(spans[1].replicated);
  EXPECT_FALSE(spans[2].replicated);
  EXPECT_EQ(spans[2].offset, 6);
  EXPECT_EQ(spans[2].numel, 3);
  EXPECT_FALSE(spans[1].decay);
  const auto given = ToParamSpans(Params(), {true, false, true});
  EXPECT_TRUE(given[0].replicated);
  EXPECT_FALSE(given[1].replicated);
}

TEST(ParamSpan, NormFromParamInfo) {
  const std::vector<float> g = {1, 1, 1, 1, 2, 2, 3, 3, 3};
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), Params(), true, 0, 9), 4 + 8 + 27);
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), Params(), false, 0, 9), 4 + 27);
  EXPECT_DOUBLE_EQ(SquaredNormContribution(g.data(), Params(), false, 3, 7), 1 + 9);
}

}  // namespace
}  // namespace ut::dp
