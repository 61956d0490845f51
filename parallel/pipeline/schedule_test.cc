// Schedules without MPI: coverage of every pass, ordering, the in-flight
// promise, and the simulator's bubble against the closed forms.
#include "parallel/pipeline/schedule.h"

#include <map>
#include <set>
#include <utility>

#include "gtest/gtest.h"

namespace ut::pipeline {
namespace {

std::vector<std::vector<PipeOp>> AllStages(int p, int m, int v) {
  std::vector<std::vector<PipeOp>> lists;
  for (int s = 0; s < p; ++s) {
    auto ops = Interleaved(p, s, m, v);
    EXPECT_TRUE(ops.ok()) << ops.status();
    lists.push_back(*ops);
  }
  return lists;
}

// Every (micro, chunk) of this stage runs forward once and backward once,
// the backward after the forward; chunk ids belong to the stage.
void ExpectCoversEveryPassOnce(const std::vector<PipeOp>& ops, int p, int s, int m, int v) {
  std::map<std::pair<int, int>, int> forward_at, backward_at;  // (micro, chunk) -> index
  for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
    const PipeOp& op = ops[i];
    ASSERT_EQ(op.chunk % p, s) << OpName(op, true);
    ASSERT_EQ(op.local_chunk, op.chunk / p);
    ASSERT_TRUE(op.micro >= 0 && op.micro < m);
    ASSERT_TRUE(op.local_chunk >= 0 && op.local_chunk < v);
    auto& at = op.kind == PipeOp::kForward ? forward_at : backward_at;
    ASSERT_TRUE(at.emplace(std::make_pair(op.micro, op.chunk), i).second)
        << OpName(op, true) << " runs twice on stage " << s;
  }
  ASSERT_EQ(forward_at.size(), static_cast<size_t>(m * v));
  ASSERT_EQ(backward_at.size(), static_cast<size_t>(m * v));
  for (const auto& [key, f] : forward_at) {
    ASSERT_TRUE(backward_at.count(key));
    EXPECT_LT(f, backward_at[key]) << "micro " << key.first << " chunk " << key.second;
  }
}

TEST(Schedule, OneFOneBFourStagesEightMicroBatches) {
  // Hand-written from the phase rule: warm-up min(p-s-1, M), 1F1B, cool-down.
  auto names = [](const std::vector<PipeOp>& ops) {
    std::string s;
    for (const PipeOp& op : ops) s += OpName(op) + " ";
    return s;
  };
  EXPECT_EQ(names(OneFOneB(4, 0, 8)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7 ");
  EXPECT_EQ(names(OneFOneB(4, 2, 8)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7 ");
  EXPECT_EQ(names(OneFOneB(4, 3, 8)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 ");
  // Fewer micro-batches than the warm-up: all forwards, then all backwards.
  EXPECT_EQ(names(OneFOneB(4, 0, 2)), "F0 F1 B0 B1 ");
}

TEST(Schedule, InterleavedFollowsMegatronOrder) {
  // p = 2, v = 2, M = 4, stage 0: warm-up (2-0-1)*2 + (2-1)*2 = 4 forwards:
  // micro 0,1 on chunk 0, then micro 0,1 on chunk 2; backwards start on chunk 2.
  auto ops = Interleaved(2, 0, 4, 2);
  ASSERT_TRUE(ops.ok());
  std::string s;
  for (const PipeOp& op : *ops) s += OpName(op, true) + " ";
  EXPECT_EQ(s, "F0.0 F1.0 F0.2 F1.2 F2.0 B0.2 F3.0 B1.2 F2.2 B0.0 F3.2 B1.0 B2.2 B3.2 B2.0 B3.0 ");
}

TEST(Schedule, EveryPassOnceAndInFlightWithinPromise) {
  for (int p = 1; p <= 4; ++p) {
    for (int v = 1; v <= 3; ++v) {
      for (int m = 1; m <= 12; ++m) {
        if (v > 1 && m % p != 0) continue;
        for (int s = 0; s < p; ++s) {
          SCOPED_TRACE(testing::Message() << "p=" << p << " s=" << s << " m=" << m << " v=" << v);
          auto ops = Interleaved(p, s, m, v);
          ASSERT_TRUE(ops.ok()) << ops.status();
          ExpectCoversEveryPassOnce(*ops, p, s, m, v);
          const int limit = InFlightLimit(p, s, m, v);
          EXPECT_LE(MaxInFlight(*ops), limit);
          if (v == 1) {
            EXPECT_EQ(limit, std::min(p - s, m));
            EXPECT_EQ(MaxInFlight(*ops), limit);  // 1F1B reaches exactly p - s
          }
          EXPECT_LE(MaxInFlightPerChunk(*ops), MaxInFlight(*ops));
        }
      }
    }
  }
}

TEST(Schedule, InterleavedRefusesMicroBatchesNotMultipleOfStages) {
  auto ops = Interleaved(4, 1, 6, 2);
  ASSERT_FALSE(ops.ok());
  EXPECT_EQ(ops.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(ops.status().message());
  EXPECT_NE(msg.find("train.grad_accum = 6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("parallel.pp = 4"), std::string::npos) << msg;
  EXPECT_TRUE(Interleaved(4, 1, 6, 1).ok());  // plain 1F1B takes any M
}

// One time unit per chunk forward and per chunk backward (equal units), as
// the closed forms assume; also F = 1, B = 2 units, for which these schedules
// keep the same fraction: every stage computes m*v*(t_f+t_b) and idles
// (p-1)(t_f+t_b), out of a makespan of (m*v + p-1)(t_f+t_b) (a chunk is 1/v
// of a stage's layers, so per stage-sized unit the idle time is (p-1)/v).
TEST(Schedule, SimulatedBubbleMatchesClosedForm) {
  for (int p : {2, 4}) {
    for (int m : {4, 8, 16}) {
      for (int v : {1, 2}) {
        for (double tb : {1.0, 2.0}) {
          SCOPED_TRACE(testing::Message() << "p=" << p << " m=" << m << " v=" << v << " tb=" << tb);
          auto sim = SimulateSchedule(p, m, v, 1.0, tb);
          ASSERT_TRUE(sim.ok()) << sim.status();
          EXPECT_NEAR(sim->bubble_fraction, BubbleClosedForm(p, m, v), 1e-12);
          for (double b : sim->busy) EXPECT_DOUBLE_EQ(b, m * v * (1 + tb));
          EXPECT_DOUBLE_EQ(sim->makespan, (m * v + p - 1) * (1 + tb));
        }
      }
    }
  }
  EXPECT_NEAR(BubbleClosedForm(4, 8, 1), 3.0 / 11, 1e-15);
  EXPECT_NEAR(BubbleClosedForm(4, 8, 2), 3.0 / 19, 1e-15);
}

TEST(Schedule, SimulatorReportsDeadlock) {
  // Stage 1 (last chunk) lists B0 before F0: nothing can run its backward.
  PipeOp f0s0{PipeOp::kForward, 0, 0, 0}, b0s0{PipeOp::kBackward, 0, 0, 0};
  PipeOp f0s1{PipeOp::kForward, 0, 1, 0}, b0s1{PipeOp::kBackward, 0, 1, 0};
  auto sim = SimulateBubble({{f0s0, b0s0}, {b0s1, f0s1}}, 2, 1, 1);
  ASSERT_FALSE(sim.ok());
  EXPECT_EQ(sim.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(sim.status().message()).find("stage 1 waits at op 0 (B0.1)"),
            std::string::npos)
      << sim.status();
  // The same ops in a good order run.
  EXPECT_TRUE(SimulateBubble({{f0s0, b0s0}, {f0s1, b0s1}}, 2, 1, 1).ok());
}

TEST(Schedule, ForwardOnlyOrderRunsForAnyMicroBatchCount) {
  for (int p : {1, 2, 3, 4}) {
    for (int v : {1, 2, 3}) {
      for (int m = 1; m <= 9; ++m) {
        std::vector<std::vector<PipeOp>> lists;
        for (int s = 0; s < p; ++s) {
          lists.push_back(ForwardOnlyOrder(p, s, m, v));
          std::set<std::pair<int, int>> seen;
          for (const PipeOp& op : lists.back()) {
            EXPECT_EQ(op.kind, PipeOp::kForward);
            EXPECT_EQ(op.chunk % p, s);
            EXPECT_TRUE(seen.insert({op.micro, op.chunk}).second);
          }
          EXPECT_EQ(seen.size(), static_cast<size_t>(m * v));
        }
        auto sim = SimulateBubble(lists, p * v, 1, 1);
        EXPECT_TRUE(sim.ok()) << "p=" << p << " v=" << v << " m=" << m << ": " << sim.status();
      }
    }
  }
  // With M % p == 0 it is exactly the interleaved schedule's forward order.
  auto ops = Interleaved(4, 1, 8, 2);
  ASSERT_TRUE(ops.ok());
  std::vector<PipeOp> forwards;
  for (const PipeOp& op : *ops) {
    if (op.kind == PipeOp::kForward) forwards.push_back(op);
  }
  EXPECT_EQ(forwards, ForwardOnlyOrder(4, 1, 8, 2));
}

TEST(Schedule, TimelineOfFourStagesEightMicroBatches) {
  auto lists = AllStages(4, 8, 1);
  auto sim = SimulateBubble(lists, 4, 1, 1);
  ASSERT_TRUE(sim.ok());
  const std::string timeline = FormatTimeline(lists, *sim, 1, 1);
  // The diagram in schedule.h.
  EXPECT_EQ(timeline,
            "stage 0 | F0 F1 F2 F3 .  .  .  B0 F4 B1 F5 B2 F6 B3 F7 B4 .  B5 .  B6 .  B7\n"
            "stage 1 | .  F0 F1 F2 .  .  B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 .  B6 .  B7 .\n"
            "stage 2 | .  .  F0 F1 .  B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 .  B7 .  .\n"
            "stage 3 | .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 .  .  .\n")
      << timeline;
  std::cout << timeline << "\n"
            << FormatTimeline(AllStages(4, 8, 2), *SimulateSchedule(4, 8, 2, 1, 1), 1, 1, true);
}

}  // namespace
}  // namespace ut::pipeline
