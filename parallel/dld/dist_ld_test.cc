// The distributed L_d against the single-process PoolLoss over the union of
// the ranks' micro-batches: loss and every dr row within 1e-5 (relative), in
// SEQUENCE and PAPER mode, for MICRO_BATCH-like pools (one micro-batch per DP
// rank) and GLOBAL_BATCH-like pools (several per rank), with unequal unit
// counts per rank. Run by dist_ld_test.sh under mpirun: 2 ranks = DP 2, 4 ranks
// = DP 2 x TP 2 (rank = tp + dp * TP, parallel/grid.h).
#include "parallel/dld/dist_ld.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "core/train/discriminative_loss.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "parallel/comm/mpi_test_main.h"

namespace ut::dld {
namespace {

using unified_train::ObjectiveConfig;

using comm::testing::World;

// The layout of these tests: world = DP (kDp) x TP ranks, one pipeline stage.
constexpr int kDp = 2;
struct Groups {
  int tp = 1;
  std::unique_ptr<comm::Communicator> dp;     // same tp rank, ordered by rank
  std::unique_ptr<comm::Communicator> dp_tp;  // the whole world
};
// Built once, by every rank at the same (first) call; never freed, so that no
// communicator outlives MPI_Finalize.
const Groups& G() {
  static const Groups* g = [] {
    CHECK_EQ(World().size() % kDp, 0) << "dist_ld_test needs a multiple of " << kDp << " ranks";
    auto* groups = new Groups;
    groups->tp = World().size() / kDp;
    const int tp_rank = World().rank() % groups->tp;
    auto dp = World().Split(tp_rank, World().rank(), "dp[tp=" + std::to_string(tp_rank) + "]");
    auto dp_tp = World().Split(0, World().rank(), "dp_tp");
    CHECK(dp.ok() && dp_tp.ok());
    groups->dp = std::move(*dp);
    groups->dp_tp = std::move(*dp_tp);
    return groups;
  }();
  return *g;
}

int DpRank() { return World().rank() / G().tp; }
int TpRank() { return World().rank() % G().tp; }

// Micro-batch j: samples with 1..4 slices each (the count depends on j, so
// ranks hold different numbers of units), random modalities, teacher features
// [uni (3) ; cross (3)] with each part L2-normalised (split 3), or single-part
// features of 5 values (split 0) when `single_part`.
data::Batch MicroBatch(int j, bool single_part) {
  Rng rng(1000 + j);
  data::Batch b;
  const int samples = 2 + (j * 5) % 4;
  for (int s = 0; s < samples; ++s) {
    b.sample_ids.push_back("j" + std::to_string(j) + "s" + std::to_string(s));
    const int slices = 1 + static_cast<int>(rng.Below(4));
    for (int i = 0; i < slices; ++i) {
      data::SliceSpan span;
      span.sample = s;
      span.is_image = rng.Below(2) == 1;
      const int parts = single_part ? 1 : 2, width = single_part ? 5 : 3;
      for (int part = 0; part < parts; ++part) {
        double n2 = 0;
        std::vector<float> x(width);
        for (float& v : x) {
          v = static_cast<float>(rng.Normal());
          n2 += double{v} * v;
        }
        for (float v : x) span.teacher.push_back(static_cast<float>(v / std::sqrt(n2)));
      }
      span.teacher_split = single_part ? 0 : 3;
      b.slices.push_back(span);
    }
  }
  return b;
}

// r [S,R] of micro-batch j: random L2-normalised rows.
std::vector<float> Embeddings(int j, int S, int R) {
  Rng rng(5000 + j);
  std::vector<float> r(static_cast<size_t>(S) * R);
  for (int i = 0; i < S; ++i) {
    double n2 = 0;
    for (int c = 0; c < R; ++c) {
      r[i * R + c] = static_cast<float>(rng.Normal());
      n2 += double{r[i * R + c]} * r[i * R + c];
    }
    for (int c = 0; c < R; ++c) r[i * R + c] = static_cast<float>(r[i * R + c] / std::sqrt(n2));
  }
  return r;
}

ObjectiveConfig Objective(ObjectiveConfig::Mode mode, int cuts) {
  ObjectiveConfig o;
  o.set_alpha(1.0f);
  o.set_delta(0.8f);
  o.set_cuts_per_sample(cuts);
  o.set_mode(mode);
  return o;
}

// |a - b| <= 1e-5 |b| (2-norms of a row); rows no unit uses are exactly 0 in both.
double RowRelError(const float* a, const float* b, int R) {
  double diff = 0, ref = 0;
  for (int c = 0; c < R; ++c) {
    diff += (double{a[c]} - b[c]) * (double{a[c]} - b[c]);
    ref += double{b[c]} * b[c];
  }
  if (ref == 0) return diff == 0 ? 0 : 1;
  return std::sqrt(diff / ref);
}

struct Case {
  ObjectiveConfig::Mode mode;
  int micro_per_rank;  // 1: MICRO_BATCH round; > 1: GLOBAL_BATCH step
  bool single_part;
};

// Runs one pool both ways on every rank and compares.
void ExpectDistributedEqualsSingleProcess(const Case& c) {
  const int R = 6, A = c.micro_per_rank;
  const ObjectiveConfig objective = Objective(c.mode, /*cuts=*/2);
  const uint64_t seed = 11;
  const int64_t step = 3;
  const float grad_scale = 0.7f;
  // All micro-batches of the pool, j = m * DP + d (every rank builds them all
  // for the reference).
  std::vector<data::Batch> batches;
  std::vector<std::vector<float>> r;
  for (int j = 0; j < A * kDp; ++j) {
    batches.push_back(MicroBatch(j, c.single_part));
    r.push_back(Embeddings(j, static_cast<int>(batches.back().slices.size()), R));
  }
  std::vector<train::PoolPart> all;
  for (int j = 0; j < A * kDp; ++j) all.push_back({&batches[j], j, r[j].data()});
  std::vector<std::vector<float>> ref_dr;
  auto ref = train::PoolLoss(all, R, objective, seed, step, grad_scale, &ref_dr);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_GT(ref->loss, 1e-3);

  // This rank's parts: its DP rank's micro-batches.
  std::vector<train::PoolPart> mine;
  for (int m = 0; m < A; ++m) mine.push_back(all[m * kDp + DpRank()]);
  auto units = train::FlattenPool(mine, objective.cuts_per_sample(), seed, step, nullptr);
  ASSERT_TRUE(units.ok()) << units.status();
  const std::vector<float> my_r = train::ConcatPoolRows(mine, R);
  std::vector<float> dr(my_r.size(), 0.0f);
  DistLdOptions o;
  o.mode = c.mode;
  o.delta = objective.delta();
  o.grad_scale = grad_scale;
  auto got = DistributedLd(*units, my_r.data(), R, o, G().dp.get(), G().dp_tp.get(), dr.data());
  ASSERT_TRUE(got.ok()) << got.status();

  EXPECT_EQ(got->units, ref->units);
  EXPECT_NEAR(got->loss, ref->loss, 1e-5 * ref->loss);
  std::vector<std::vector<float>> dr_parts;
  train::SplitPoolRows(mine, R, dr.data(), &dr_parts);
  double worst = 0, largest = 0;
  for (int m = 0; m < A; ++m) {
    const std::vector<float>& want = ref_dr[m * kDp + DpRank()];
    ASSERT_EQ(dr_parts[m].size(), want.size());
    for (size_t row = 0; row * R < want.size(); ++row) {
      const double e = RowRelError(&dr_parts[m][row * R], &want[row * R], R);
      EXPECT_LE(e, 1e-5) << "micro " << m * kDp + DpRank() << " row " << row;
      worst = std::max(worst, e);
      for (int k = 0; k < R; ++k) largest = std::max(largest, std::fabs(double{want[row * R + k]}));
    }
  }
  EXPECT_GT(largest, 1e-3);  // the gradient is not trivially zero
  // Units differ per DP rank (unequal parts), and the work split covers every rank.
  std::vector<int64_t> my_units = {units->num_units()}, all_units(World().size());
  ASSERT_TRUE(World().AllGather(std::span<const int64_t>(my_units),
                                 std::span<int64_t>(all_units)).ok());
  EXPECT_NE(all_units[0], all_units[G().tp]);
  if (World().rank() == 0) {
    std::printf("[%s, %d micro-batch(es)/rank, %s teacher] N=%d L_d=%.6f (ref %.6f) | rank units:",
                c.mode == ObjectiveConfig::PAPER ? "PAPER" : "SEQUENCE", A,
                c.single_part ? "1-part" : "2-part", got->units, got->loss, ref->loss);
    for (int64_t u : all_units) std::printf(" %ld", static_cast<long>(u));
    std::printf(" | pair work max/mean %ld/%.1f = %.3f | worst dr row rel err %.2e\n",
                static_cast<long>(got->work_max), got->work_mean,
                got->work_max / got->work_mean, worst);
    std::fflush(stdout);
  }
}

TEST(DistributedLd, SequenceMicroBatchPool) {
  ExpectDistributedEqualsSingleProcess({ObjectiveConfig::SEQUENCE, 1, false});
}
TEST(DistributedLd, PaperMicroBatchPool) {
  ExpectDistributedEqualsSingleProcess({ObjectiveConfig::PAPER, 1, false});
}
TEST(DistributedLd, SequenceGlobalBatchPool) {
  ExpectDistributedEqualsSingleProcess({ObjectiveConfig::SEQUENCE, 3, false});
}
TEST(DistributedLd, PaperGlobalBatchPool) {
  ExpectDistributedEqualsSingleProcess({ObjectiveConfig::PAPER, 3, false});
}
TEST(DistributedLd, SequenceSinglePartTeacher) {
  ExpectDistributedEqualsSingleProcess({ObjectiveConfig::SEQUENCE, 2, true});
}

TEST(DistributedLd, PairSplitIsContiguousAndBalanced) {
  // Weights of a SEQUENCE pool: n_u * n_v for lengths 1..6.
  std::vector<int> len;
  for (int u = 0; u < 37; ++u) len.push_back(1 + (u * 7) % 6);
  std::vector<int64_t> w;
  for (int u = 0; u < 37; ++u) {
    for (int v = u + 1; v < 37; ++v) w.push_back(int64_t{len[u]} * len[v]);
  }
  const int64_t total = std::accumulate(w.begin(), w.end(), int64_t{0});
  for (int ranks : {1, 2, 3, 4, 8, 64}) {
    const std::vector<int> owner = SplitPairs(w, ranks);
    std::vector<int64_t> work(ranks, 0);
    for (size_t p = 0; p < w.size(); ++p) {
      work[owner[p]] += w[p];
      if (p > 0) {
        EXPECT_GE(owner[p], owner[p - 1]);  // contiguous runs
      }
    }
    for (int q = 0; q < ranks; ++q) {
      EXPECT_LE(work[q], total / ranks + 36) << ranks << " ranks, rank " << q;  // max w = 36
      EXPECT_GT(work[q], 0) << ranks << " ranks, rank " << q;
    }
  }
}

TEST(DistributedLd, RanksWithDifferentPoolsAreADesyncError) {
  if (G().tp == 1) GTEST_SKIP() << "needs TP > 1";
  // The TP ranks of a DP rank load different micro-batches: every rank fails.
  const int R = 4;
  const int j = DpRank() + (TpRank() == 1 && DpRank() == 0 ? 4 : 0);
  const data::Batch b = MicroBatch(j, false);
  const std::vector<float> r = Embeddings(j, static_cast<int>(b.slices.size()), R);
  const train::PoolPart part{&b, j, r.data()};
  auto units = train::FlattenPool({&part, 1}, 2, 1, 1, nullptr);
  ASSERT_TRUE(units.ok());
  std::vector<float> dr(r.size());
  auto got = DistributedLd(*units, r.data(), R, {}, G().dp.get(), G().dp_tp.get(), dr.data());
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("different pools"), std::string::npos) << got.status();
}

TEST(DistributedLd, DifferentEmbeddingSizesAreAnErrorOnEveryRank) {
  const int R = DpRank() == 1 ? 5 : 4;
  const data::Batch b = MicroBatch(DpRank(), false);
  const std::vector<float> r = Embeddings(DpRank(), static_cast<int>(b.slices.size()), R);
  const train::PoolPart part{&b, DpRank(), r.data()};
  auto units = train::FlattenPool({&part, 1}, 2, 1, 1, nullptr);
  ASSERT_TRUE(units.ok());
  auto got = DistributedLd(*units, r.data(), R, {}, G().dp.get(), G().dp_tp.get(), nullptr);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("model.retrieval_dim"), std::string::npos)
      << got.status();
}

}  // namespace
}  // namespace ut::dld
