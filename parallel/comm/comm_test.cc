// Collectives with closed-form answers: every rank fills its buffer from its
// rank id, so the expected result is a formula of (rank, size). Run under
// mpirun by comm_test.sh with 4 ranks (any size >= 2 works).
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "parallel/comm/mpi_test_main.h"

namespace ut::comm {
namespace {

using testing::Runtime;
using testing::World;

TEST(Comm, AllReduceSumAvgMax) {
  const int r = World().rank(), n = World().size();
  std::vector<float> x(5, static_cast<float>(r + 1));
  ASSERT_TRUE(World().AllReduce(std::span<float>(x), ReduceOp::kSum).ok());
  for (float v : x) EXPECT_EQ(v, n * (n + 1) / 2.0f);  // 1 + 2 + ... + n
  std::vector<double> y(3, r);
  ASSERT_TRUE(World().AllReduce(std::span<double>(y), ReduceOp::kAvg).ok());
  for (double v : y) EXPECT_DOUBLE_EQ(v, (n - 1) / 2.0);
  std::vector<int64_t> z(2, r * 10);
  ASSERT_TRUE(World().AllReduce(std::span<int64_t>(z), ReduceOp::kMax).ok());
  for (int64_t v : z) EXPECT_EQ(v, (n - 1) * 10);
}

TEST(Comm, NonBlockingAllReduceOverlapsAndAverages) {
  const int r = World().rank(), n = World().size();
  std::vector<float> a(7, static_cast<float>(r)), b(3, static_cast<float>(r + 1));
  auto ra = World().IAllReduce(std::span<float>(a), ReduceOp::kAvg);
  auto rb = World().IAllReduce(std::span<float>(b), ReduceOp::kSum);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_TRUE((*rb)->Wait().ok());  // finishing out of order is fine
  ASSERT_TRUE((*ra)->Wait().ok());
  ASSERT_TRUE((*ra)->Wait().ok());  // a second Wait is a no-op (no second division)
  for (float v : a) EXPECT_FLOAT_EQ(v, (n - 1) / 2.0f);
  for (float v : b) EXPECT_EQ(v, n * (n + 1) / 2.0f);
}

TEST(Comm, StatsCountCallsAndPayloadBytes) {
  World().ResetStats();
  std::vector<double> x(10, 1.0);
  ASSERT_TRUE(World().AllReduce(std::span<double>(x), ReduceOp::kSum).ok());
  std::vector<int32_t> send(3, 0), recv(3 * World().size());
  ASSERT_TRUE(World().AllGather(std::span<const int32_t>(send), std::span<int32_t>(recv)).ok());
  EXPECT_EQ(World().stats().calls, 2);
  EXPECT_EQ(World().stats().bytes, 10 * 8 + 3 * 4);
}

TEST(Comm, NonBlockingSendRecvBothWaysAroundARing) {
  // Every rank sends to both neighbours and receives from both at once; with
  // blocking calls this pattern can deadlock, with ISend/IRecv it cannot.
  const int r = World().rank(), n = World().size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  std::vector<int64_t> to_next(1000, r), to_prev(1000, -r), from_prev(1000), from_next(1000);
  std::vector<std::unique_ptr<Request>> reqs;
  auto keep = [&](absl::StatusOr<std::unique_ptr<Request>> s) {
    ASSERT_TRUE(s.ok()) << s.status();
    reqs.push_back(std::move(*s));
  };
  keep(World().ISend(std::span<const int64_t>(to_next), next, 1));
  keep(World().ISend(std::span<const int64_t>(to_prev), prev, 2));
  keep(World().IRecv(std::span<int64_t>(from_prev), prev, 1));
  keep(World().IRecv(std::span<int64_t>(from_next), next, 2));
  ASSERT_EQ(reqs.size(), 4u);
  for (auto& q : reqs) {
    auto t = q->Test();
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(q->Wait().ok());
  }
  for (int64_t v : from_prev) EXPECT_EQ(v, prev);
  for (int64_t v : from_next) EXPECT_EQ(v, -next);
}

TEST(Comm, AllGatherPlacesBlocksInRankOrder) {
  const int r = World().rank(), n = World().size();
  std::vector<int32_t> send = {r, 100 + r};
  std::vector<int32_t> recv(2 * n);
  ASSERT_TRUE(World().AllGather(std::span<const int32_t>(send), std::span<int32_t>(recv)).ok());
  for (int q = 0; q < n; ++q) {
    EXPECT_EQ(recv[2 * q], q);
    EXPECT_EQ(recv[2 * q + 1], 100 + q);
  }
  std::vector<int32_t> wrong(2 * n + 1);
  EXPECT_FALSE(World().AllGather(std::span<const int32_t>(send), std::span<int32_t>(wrong)).ok());
}

TEST(Comm, AllGatherVWithRankDependentCounts) {
  const int r = World().rank(), n = World().size();
  std::vector<int64_t> counts(n);
  for (int q = 0; q < n; ++q) counts[q] = q + 1;  // rank q sends q+1 elements
  std::vector<float> send(r + 1, static_cast<float>(r));
  std::vector<float> recv(n * (n + 1) / 2);
  ASSERT_TRUE(World()
                  .AllGatherV(std::span<const float>(send), std::span<float>(recv),
                               std::span<const int64_t>(counts))
                  .ok());
  size_t i = 0;
  for (int q = 0; q < n; ++q)
    for (int k = 0; k <= q; ++k) EXPECT_EQ(recv[i++], static_cast<float>(q));
}

TEST(Comm, ReduceScatterGivesEachRankItsBlockSum) {
  const int r = World().rank(), n = World().size();
  // Element j of block b on rank r = r + 10*b + 100*j.
  const int block = 3;
  std::vector<double> send(block * n);
  for (int b = 0; b < n; ++b)
    for (int j = 0; j < block; ++j) send[b * block + j] = r + 10 * b + 100 * j;
  std::vector<double> recv(block);
  ASSERT_TRUE(World()
                  .ReduceScatter(std::span<const double>(send), std::span<double>(recv),
                                  ReduceOp::kSum)
                  .ok());
  for (int j = 0; j < block; ++j) {
    EXPECT_DOUBLE_EQ(recv[j], n * (n - 1) / 2.0 + n * (10.0 * r + 100.0 * j));
  }
}

TEST(Comm, BroadcastSendRecvBarrier) {
  const int r = World().rank(), n = World().size();
  std::vector<int32_t> b(4, r == 1 ? 42 : -1);
  ASSERT_TRUE(World().Broadcast(std::span<int32_t>(b), /*root=*/1).ok());
  for (int v : b) EXPECT_EQ(v, 42);
  // Ring: send rank id to the right neighbour, receive from the left.
  std::vector<int32_t> out = {r}, in = {-1};
  const int right = (r + 1) % n, left = (r + n - 1) % n;
  if (r % 2 == 0) {
    ASSERT_TRUE(World().Send(std::span<const int32_t>(out), right, 7).ok());
    ASSERT_TRUE(World().Recv(std::span<int32_t>(in), left, 7).ok());
  } else {
    ASSERT_TRUE(World().Recv(std::span<int32_t>(in), left, 7).ok());
    ASSERT_TRUE(World().Send(std::span<const int32_t>(out), right, 7).ok());
  }
  EXPECT_EQ(in[0], left);
  EXPECT_TRUE(World().Barrier().ok());
}

TEST(Comm, SplitMakesSubgroups) {
  const int r = World().rank(), n = World().size();
  // Even and odd ranks; within a group, rank order follows world rank.
  auto sub = World().Split(r % 2, r, r % 2 ? "odd" : "even");
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_EQ((*sub)->rank(), r / 2);
  EXPECT_EQ((*sub)->size(), (n + 1 - r % 2) / 2);
  std::vector<int32_t> x = {r};
  ASSERT_TRUE((*sub)->AllReduce(std::span<int32_t>(x), ReduceOp::kSum).ok());
  int expect = 0;
  for (int q = r % 2; q < n; q += 2) expect += q;
  EXPECT_EQ(x[0], expect);
}

TEST(Comm, TimeoutNamesRankGroupAndOperation) {
  // Rank 0 waits for a message nobody sends; with a short deadline it must
  // come back with DeadlineExceeded naming the rank, group and operation.
  if (World().rank() == 0) {
    CommOptions opts;
    opts.timeout_s = 0.3;
    opts.abort_on_timeout = false;
    auto world = Runtime().World(opts);
    std::vector<int32_t> in(1);
    absl::Status s = world->Recv(std::span<int32_t>(in), /*src=*/1, /*tag=*/999);
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    const std::string msg(s.message());
    EXPECT_NE(msg.find("rank 0 (world rank 0/"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Recv from rank 1 tag 999"), std::string::npos) << msg;
  }
  EXPECT_TRUE(World().Barrier().ok());
}

}  // namespace
}  // namespace ut::comm
