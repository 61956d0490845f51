// GradReducer under mpirun (2 and 4 ranks): rank r fills its gradients with
// r + 1, so after averaging every element is (size + 1) / 2 exactly.
#include "parallel/dp/grad_reducer.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"
#include "parallel/comm/mpi_test_main.h"

namespace ut::dp {
namespace {

using comm::testing::World;

// [0, n) cut into pieces of 1..max_piece floats (the "parameters"), the same
// on every rank.
std::vector<std::pair<int64_t, int64_t>> Pieces(int64_t n, int max_piece, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::pair<int64_t, int64_t>> pieces;
  for (int64_t at = 0; at < n;) {
    const int64_t len = std::min<int64_t>(n - at, 1 + rng.Below(max_piece));
    pieces.push_back({at, at + len});
    at += len;
  }
  return pieces;
}

float Mean() { return (World().size() + 1) / 2.0f; }  // of 1, 2, ..., size

TEST(GradReducer, BucketsTileTheBufferFromTheEnd) {
  std::vector<float> g(1000);
  GradReducer reducer(&World(), g.data(), 1000, 96);
  ASSERT_EQ(reducer.num_buckets(), 11);  // 10 x 96 + 40
  EXPECT_EQ(reducer.bucket_end(0), 1000);
  EXPECT_EQ(reducer.bucket_begin(0), 904);
  for (int b = 1; b < reducer.num_buckets(); ++b) {
    EXPECT_EQ(reducer.bucket_end(b), reducer.bucket_begin(b - 1));
  }
  EXPECT_EQ(reducer.bucket_begin(10), 0);
  EXPECT_EQ(reducer.bucket_end(10), 40);
}

// Marks in a rank-dependent scrambled order: buckets still start in the same
// order on every rank (else MPI would mismatch the collectives), all start
// before Finish, and the average is exact.
TEST(GradReducer, ScrambledMarksGiveTheClosedFormMean) {
  const int r = World().rank();
  for (int64_t bucket : {96, 1, 7, 5000}) {
    const int64_t n = 1000;
    std::vector<float> g(n, static_cast<float>(r + 1));
    GradReducer reducer(&World(), g.data(), n, bucket);
    auto pieces = Pieces(n, 50, 3);
    Rng rng(100 + r);
    for (size_t i = pieces.size(); i > 1; --i) std::swap(pieces[i - 1], pieces[rng.Below(i)]);
    for (const auto& [b, e] : pieces) reducer.OnReady(b, e);
    EXPECT_EQ(reducer.buckets_started(), reducer.num_buckets()) << "bucket " << bucket;
    ASSERT_TRUE(reducer.Finish().ok());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(g[i], Mean()) << "element " << i << " bucket " << bucket;
    EXPECT_EQ(reducer.last_step().buckets, reducer.num_buckets());
    EXPECT_EQ(reducer.last_step().started_before_finish, reducer.num_buckets());
    EXPECT_EQ(reducer.last_step().bytes, n * 4);
  }
}

// Marking in backward order (the buffer's end first): each bucket starts the
// moment its last float is marked, not later; a bucket completed out of order
// waits for its predecessors.
TEST(GradReducer, BucketsStartDuringBackwardInOrder) {
  const int r = World().rank();
  const int64_t n = 1000, bucket = 96;
  std::vector<float> g(n, static_cast<float>(r + 1));
  GradReducer reducer(&World(), g.data(), n, bucket);
  auto pieces = Pieces(n, 30, 9);
  std::reverse(pieces.begin(), pieces.end());
  // The first bucket's range [0, 40) is complete long before its turn.
  reducer.OnReady(0, 40);
  EXPECT_EQ(reducer.buckets_started(), 0);
  for (const auto& [b, e] : pieces) {
    const int64_t lo = std::max<int64_t>(b, 40), hi = e;
    if (lo < hi) reducer.OnReady(lo, hi);
    // Buckets fully marked now: those with begin >= b (all but the [0,40) one
    // until b reaches 40, which then starts with its predecessor).
    int expect = 0;
    for (int k = 0; k < reducer.num_buckets(); ++k) {
      if (reducer.bucket_begin(k) >= b || reducer.bucket_end(k) <= 40) ++expect;
      else break;
    }
    ASSERT_EQ(reducer.buckets_started(), expect) << "after marking [" << b << ", " << e << ")";
  }
  EXPECT_EQ(reducer.buckets_started(), reducer.num_buckets());
  ASSERT_TRUE(reducer.Finish().ok());
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(g[i], Mean()) << i;
}

// Gradient accumulation: unarmed micro-batches start nothing; Finish still
// reduces everything; Reset starts a fresh step; partial marks are finished
// by Finish; bytes are counted per step and in total.
TEST(GradReducer, ArmResetAndPartialMarks) {
  const int r = World().rank();
  const int64_t n = 777;
  std::vector<float> g(n, 0.0f);
  GradReducer reducer(&World(), g.data(), n, 64);
  const auto pieces = Pieces(n, 40, 5);
  // Step 1: two micro-batches, only the second armed.
  for (int micro = 0; micro < 2; ++micro) {
    reducer.Arm(micro == 1);
    for (float& x : g) x += static_cast<float>(r + 1);  // backward accumulates
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
      reducer.OnReady(it->first, it->second);
      if (micro == 0) {
        ASSERT_EQ(reducer.buckets_started(), 0);
      }
    }
  }
  EXPECT_EQ(reducer.buckets_started(), reducer.num_buckets());
  ASSERT_TRUE(reducer.Finish().ok());
  for (float x : g) ASSERT_EQ(x, 2 * Mean());
  // Step 2: nothing armed at all.
  reducer.Reset();
  reducer.Arm(false);
  std::fill(g.begin(), g.end(), static_cast<float>(r + 1));
  for (const auto& [b, e] : pieces) reducer.OnReady(b, e);
  EXPECT_EQ(reducer.buckets_started(), 0);
  ASSERT_TRUE(reducer.Finish().ok());
  EXPECT_EQ(reducer.last_step().started_before_finish, 0);
  for (float x : g) ASSERT_EQ(x, Mean());
  // Step 3: only the upper half marked; Finish starts the rest.
  reducer.Reset();
  reducer.Arm(true);
  std::fill(g.begin(), g.end(), static_cast<float>(r + 1));
  reducer.OnReady(n / 2, n);
  EXPECT_GT(reducer.buckets_started(), 0);
  EXPECT_LT(reducer.buckets_started(), reducer.num_buckets());
  ASSERT_TRUE(reducer.Finish().ok());
  for (float x : g) ASSERT_EQ(x, Mean());
  EXPECT_EQ(reducer.last_step().bytes, n * 4);
  EXPECT_EQ(reducer.total_bytes(), 3 * n * 4);
}

// A one-rank group has nothing to average: no communication, no bytes.
TEST(GradReducer, SingleRankGroupIsANoOp) {
  const int r = World().rank();
  auto alone = World().Split(/*color=*/r, /*key=*/0, "alone");
  ASSERT_TRUE(alone.ok());
  std::vector<float> g(100, static_cast<float>(r + 1));
  GradReducer reducer(alone->get(), g.data(), 100, 16);
  reducer.OnReady(0, 100);
  EXPECT_EQ(reducer.buckets_started(), 0);
  ASSERT_TRUE(reducer.Finish().ok());
  for (float x : g) ASSERT_EQ(x, static_cast<float>(r + 1));
  EXPECT_EQ(reducer.total_bytes(), 0);
}

// Reduction inside a sub-group: DP groups of a TP = 2 layout (4 ranks).
TEST(GradReducer, AveragesWithinItsGroupOnly) {
  if (World().size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
  const int r = World().rank(), tp = 2, t = r % tp, d = r / tp, dp_size = World().size() / tp;
  auto dp = World().Split(/*color=*/t, /*key=*/d, "dp");
  ASSERT_TRUE(dp.ok());
  std::vector<float> g(300, static_cast<float>(100 * t + d));
  GradReducer reducer(dp->get(), g.data(), 300, 50);
  for (int64_t b = 300; b > 0; b -= 25) reducer.OnReady(b - 25, b);
  ASSERT_TRUE(reducer.Finish().ok());
  const float want = 100.0f * t + (dp_size - 1) / 2.0f;
  for (float x : g) ASSERT_EQ(x, want);
}

}  // namespace
}  // namespace ut::dp
