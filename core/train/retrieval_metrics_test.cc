// Hand-checkable cases for the retrieval and Winoground metrics.
#include "core/train/retrieval_metrics.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace ut::train {
namespace {

TEST(InnerProducts, SmallMatrix) {
  // a = [[1,0],[0,1],[0.6,0.8]], b = [[1,0],[0.6,0.8]]
  const std::vector<float> a = {1, 0, 0, 1, 0.6f, 0.8f};
  const std::vector<float> b = {1, 0, 0.6f, 0.8f};
  const std::vector<float> sim = InnerProducts(a, 3, b, 2, 2);
  ASSERT_EQ(sim.size(), 6u);
  EXPECT_FLOAT_EQ(sim[0], 1.0f);  // a0.b0
  EXPECT_FLOAT_EQ(sim[1], 0.6f);  // a0.b1
  EXPECT_FLOAT_EQ(sim[2], 0.0f);  // a1.b0
  EXPECT_FLOAT_EQ(sim[3], 0.8f);  // a1.b1
  EXPECT_FLOAT_EQ(sim[4], 0.6f);  // a2.b0
  EXPECT_FLOAT_EQ(sim[5], 1.0f);  // a2.b1
}

TEST(BestRelevantRanks, OneRelevantPerQuery) {
  // 3 queries x 4 candidates; query q's relevant candidate is q.
  const std::vector<float> sim = {
      0.9f, 0.1f, 0.2f, 0.3f,  // q0: c0 is the best -> rank 0
      0.5f, 0.4f, 0.3f, 0.6f,  // q1: c1 (0.4) is beaten by c0 (0.5) and c3 (0.6) -> rank 2
      0.1f, 0.2f, 0.0f, 0.3f,  // q2: c2 (0.0) is the worst -> rank 3
  };
  const std::vector<int> ranks = BestRelevantRanks(sim, 3, 4, {{0}, {1}, {2}});
  EXPECT_EQ(ranks, (std::vector<int>{0, 2, 3}));
  EXPECT_DOUBLE_EQ(RecallAtK(ranks, 1), 1.0 / 3);
  EXPECT_DOUBLE_EQ(RecallAtK(ranks, 3), 2.0 / 3);
  EXPECT_DOUBLE_EQ(RecallAtK(ranks, 4), 1.0);
}

TEST(BestRelevantRanks, SeveralRelevantUseTheBestAndSkipEachOther) {
  // Candidates 1 and 3 are both relevant: the best of them (c3, 0.7) is beaten
  // only by c0 (0.8); c1 does not count against c3.
  const std::vector<float> sim = {0.8f, 0.75f, 0.1f, 0.7f};
  EXPECT_EQ(BestRelevantRanks(sim, 1, 4, {{1, 3}}), (std::vector<int>{1}));
}

TEST(BestRelevantRanks, TiesAndNaNCountAgainstTheQuery) {
  // A constant scorer gets the worst rank, not the best.
  const std::vector<float> flat = {0.5f, 0.5f, 0.5f};
  EXPECT_EQ(BestRelevantRanks(flat, 1, 3, {{0}}), (std::vector<int>{2}));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Relevant NaN: nothing to rank by, every other candidate is ahead.
  EXPECT_EQ(BestRelevantRanks({nan, 0.1f, 0.2f}, 1, 3, {{0}}), (std::vector<int>{2}));
  // Non-relevant NaN ranks ahead of a real score.
  EXPECT_EQ(BestRelevantRanks({0.9f, nan, 0.2f}, 1, 3, {{0}}), (std::vector<int>{1}));
}

TEST(RecallAtK, EmptyIsZero) { EXPECT_EQ(RecallAtK({}, 5), 0.0); }

TEST(Winoground, AllFourCases) {
  // Both images prefer their captions and both captions their images.
  WinogroundOutcome o = Winoground(/*s00=*/0.9f, /*s01=*/0.2f, /*s10=*/0.3f, /*s11=*/0.8f);
  EXPECT_TRUE(o.text);
  EXPECT_TRUE(o.image);
  EXPECT_TRUE(o.group);
  // Image 1 prefers caption 0 (s01 = 0.85 > s11 = 0.8): text fails. Captions
  // still prefer their own images (0.9 > 0.85, 0.8 > 0.3): image passes.
  o = Winoground(0.9f, 0.85f, 0.3f, 0.8f);
  EXPECT_FALSE(o.text);
  EXPECT_TRUE(o.image);
  EXPECT_FALSE(o.group);
  // Caption 0 prefers image 1 (s01 = 0.95 > s00 = 0.9): image fails; images
  // prefer their captions (0.9 > 0.1, 0.99 > 0.95): text passes.
  o = Winoground(0.9f, 0.95f, 0.1f, 0.99f);
  EXPECT_TRUE(o.text);
  EXPECT_FALSE(o.image);
  EXPECT_FALSE(o.group);
  // Equal similarities everywhere: strict comparisons fail.
  o = Winoground(0.5f, 0.5f, 0.5f, 0.5f);
  EXPECT_FALSE(o.text);
  EXPECT_FALSE(o.image);
  EXPECT_FALSE(o.group);
}

TEST(PrefersTrueCaption, StrictlyAboveEveryNegative) {
  EXPECT_TRUE(PrefersTrueCaption(0.5f, {0.1f, 0.4f}));
  EXPECT_FALSE(PrefersTrueCaption(0.5f, {0.1f, 0.5f}));
  EXPECT_FALSE(PrefersTrueCaption(0.5f, {0.6f}));
  EXPECT_FALSE(PrefersTrueCaption(std::nanf(""), {0.1f}));
  EXPECT_TRUE(PrefersTrueCaption(0.5f, {}));
}

TEST(SameWordsReordered, SwapsOnlyNotChangedWords) {
  EXPECT_TRUE(SameWordsReordered("a red circle left of a blue square",
                                 "a blue square left of a red circle"));  // order swap
  EXPECT_TRUE(SameWordsReordered("a red circle left of a blue square",
                                 "a blue circle left of a red square"));  // attribute swap
  EXPECT_FALSE(SameWordsReordered("a red circle left of a blue square",
                                  "a red circle above a blue square"));  // relation changed
  EXPECT_FALSE(SameWordsReordered("a red circle", "a small red circle"));  // word added
  EXPECT_FALSE(SameWordsReordered("a red circle", "a red circle"));        // not a negative
  EXPECT_FALSE(SameWordsReordered("a a red", "a red red"));                // counts matter
}

}  // namespace
}  // namespace ut::train
