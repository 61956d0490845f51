#include "parallel/grid.h"

#include "gtest/gtest.h"

namespace ut {
namespace {

Config Grid(int tp, int dp, int pp) {
  Config c;
  c.mutable_parallel()->set_tp(tp);
  c.mutable_parallel()->set_dp(dp);
  c.mutable_parallel()->set_pp(pp);
  return c;
}

TEST(ProcessGrid, WorkedExampleFromTheHeader) {
  auto g = ProcessGrid::Create(Grid(2, 2, 4), 16);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->TpGroup(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(g->DpGroup(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(g->PpGroup(2), (std::vector<int>{2, 6, 10, 14}));
  for (int r = 0; r < 16; ++r) EXPECT_EQ(g->RankOf(g->CoordOf(r)), r);
  GridCoord c = g->CoordOf(13);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 0);
  EXPECT_EQ(c.pp, 3);
}

TEST(ProcessGrid, ValidationNamesTheProblem) {
  auto msg = [](const absl::StatusOr<ProcessGrid>& g) { return std::string(g.status().message()); };
  auto bad_world = ProcessGrid::Create(Grid(2, 1, 2), 3);
  ASSERT_FALSE(bad_world.ok());
  EXPECT_NE(msg(bad_world).find("mpirun -np 4"), std::string::npos) << msg(bad_world);

  Config heads = Grid(3, 1, 1);  // tiny defaults: 8 heads
  auto bad_heads = ProcessGrid::Create(heads, 3);
  ASSERT_FALSE(bad_heads.ok());
  EXPECT_NE(msg(bad_heads).find("model.llm.heads"), std::string::npos) << msg(bad_heads);

  Config vocab = Grid(4, 1, 1);
  vocab.mutable_model()->mutable_llm()->set_vocab_size(510);
  auto bad_vocab = ProcessGrid::Create(vocab, 4);
  ASSERT_FALSE(bad_vocab.ok());
  EXPECT_NE(msg(bad_vocab).find("vocab_size"), std::string::npos) << msg(bad_vocab);

  Config ffn = Grid(2, 1, 1);
  ffn.mutable_model()->mutable_llm()->set_ffn(689);
  auto bad_ffn = ProcessGrid::Create(ffn, 2);
  ASSERT_FALSE(bad_ffn.ok());
  EXPECT_NE(msg(bad_ffn).find("model.llm.ffn"), std::string::npos) << msg(bad_ffn);

  auto too_many_stages = ProcessGrid::Create(Grid(1, 1, 8), 8);  // 4 layers by default
  ASSERT_FALSE(too_many_stages.ok());
  EXPECT_NE(msg(too_many_stages).find("model.llm.layers"), std::string::npos);
}

}  // namespace
}  // namespace ut
