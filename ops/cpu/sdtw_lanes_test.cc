// The lane sweep (ops/cpu/sdtw_lanes.h) in both of its domains against the
// double-precision references (ops/testing/sdtw_reference.h), its fallback,
// band, spare lanes, scaling and aliasing, finite differences, the plan that
// groups equal shapes, and the batch and sequence APIs that use it.
#include "ops/cpu/sdtw_lanes.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"
#include "ops/cpu/sdtw_internal.h"
#include "ops/gak.h"
#include "ops/sdtw.h"
#include "ops/testing/gradcheck.h"
#include "ops/testing/sdtw_reference.h"

namespace ut::cpu::internal {
namespace {

using ::ut::testing::BruteForce;
using ::ut::testing::CheckGradient;
using ::ut::testing::ExpectMatches;
using ::ut::testing::PlainDp;
using ::ut::testing::RandomUniform;
using ::ut::testing::SdtwReference;

// count pairs of shape [n, m] with their own cost and E buffers.
struct Pairs {
  std::vector<std::vector<float>> cost, E;
  LaneGroup group;
  Pairs(Rng& rng, int count, int n, int m, float lo, float hi) {
    group.count = count;
    for (int p = 0; p < count; ++p) {
      cost.push_back(RandomUniform(rng, int64_t{n} * m, lo, hi));
      E.emplace_back(int64_t{n} * m, -7.0f);
    }
    for (int p = 0; p < count; ++p) {
      group.cost[p] = cost[p].data();
      group.E[p] = E[p].data();
      group.scale[p] = 1.0f;
    }
  }
};

std::string Name(int n, int m, double gamma, int count) {
  return "n=" + std::to_string(n) + " m=" + std::to_string(m) +
         " gamma=" + std::to_string(gamma) + " count=" + std::to_string(count);
}

TEST(SdtwLanes, ExpDoubleIsAccurateOverItsRange) {
  double worst = 0.0, worst_x = 0.0;
  for (int k = -200000; k <= 200000; ++k) {
    const double x = 708.0 * k / 200000.0;
    const double err = std::fabs(ExpDouble(x) / std::exp(x) - 1.0);
    if (!(err <= worst)) worst = err, worst_x = x;
  }
  EXPECT_LE(worst, 2e-12) << "at x = " << worst_x;
}

// The ratio domain (no band) runs for costs / gamma that vary by up to ~15
// per cell here, and matches the double DP far more tightly than the float
// log-domain sweep can (value 1e-10 relative; that sweep's own error is
// ~1e-8). At gamma 0.05 (variations of 80 per cell) the ratios may leave
// their range: either sweep may run, each at its own accuracy.
TEST(SdtwLanes, RatioSweepMatchesDoubleDp) {
  Rng rng(21);
  const int shapes[][2] = {{1, 1}, {1, 6}, {6, 1}, {2, 3}, {7, 7}, {16, 9}, {9, 16}, {40, 33},
                           {128, 128}};
  int ratio_runs = 0, log_runs = 0;
  for (const auto& shape : shapes) {
    const int n = shape[0], m = shape[1];
    for (double gamma : {0.05, 0.3, 1.0, 10.0}) {
      for (int count : {1, 5, 16}) {
        if (n * m > 1000 && count != 16) continue;  // keep the test short
        Pairs pairs(rng, count, n, m, -1.0f, 3.0f);
        std::vector<double> values(count), forward_only(count);
        const std::string what = Name(n, m, gamma, count);
        const LaneSweep sweep = soft_dtw_lanes(pairs.group, n, m, gamma, -1, true, values.data());
        EXPECT_EQ(soft_dtw_lanes(pairs.group, n, m, gamma, -1, false, forward_only.data()), sweep)
            << what;
        if (gamma > 0.1) {
          EXPECT_EQ(sweep, LaneSweep::kRatio) << what;
        }
        ++(sweep == LaneSweep::kRatio ? ratio_runs : log_runs);
        const double value_tol = sweep == LaneSweep::kRatio ? 1e-10 : 1e-6;
        for (int p = 0; p < count; ++p) {
          const SdtwReference ref = PlainDp(pairs.cost[p], n, m, gamma);
          EXPECT_LE(std::fabs(values[p] - ref.value), value_tol * (1.0 + std::fabs(ref.value)))
              << what << " lane " << p << ": " << values[p] << " vs " << ref.value;
          EXPECT_EQ(forward_only[p], values[p]) << what;
          ExpectMatches(ref, values[p], pairs.E[p], what + " lane " + std::to_string(p));
        }
      }
    }
  }
  EXPECT_GT(ratio_runs, 40);
  EXPECT_GT(log_runs, 0);  // gamma 0.05 on 40 x 33 and 128 x 128 leaves the range
}

// |cost| / gamma above 700 or an infinite cost in any lane sends the whole
// group to the log domain, which still matches the references.
TEST(SdtwLanes, FallsBackToTheLogDomainOutsideTheRatioRange) {
  Rng rng(22);
  {
    const int n = 30, m = 25, count = 4;
    Pairs pairs(rng, count, n, m, 0.0f, 2.0f);  // gamma 1e-3: |c| / gamma up to 2000
    std::vector<double> values(count);
    EXPECT_EQ(soft_dtw_lanes(pairs.group, n, m, 1e-3, -1, true, values.data()), LaneSweep::kLog);
    for (int p = 0; p < count; ++p) {
      ExpectMatches(PlainDp(pairs.cost[p], n, m, 1e-3), values[p], pairs.E[p], "gamma 1e-3");
    }
  }
  {
    const int n = 5, m = 5, count = 3;
    Pairs pairs(rng, count, n, m, 0.0f, 1.0f);
    const float inf = std::numeric_limits<float>::infinity();
    for (int k : {1, 7, 12, 13, 18}) pairs.cost[1][k] = inf;  // lane 1: blocked cells
    std::vector<double> values(count);
    EXPECT_EQ(soft_dtw_lanes(pairs.group, n, m, 0.7, -1, true, values.data()), LaneSweep::kLog);
    for (int p = 0; p < count; ++p) {
      ExpectMatches(BruteForce(pairs.cost[p], n, m, 0.7, -1), values[p], pairs.E[p],
                    "blocked cells, lane " + std::to_string(p));
    }
    for (int k : {1, 7, 12, 13, 18}) EXPECT_EQ(pairs.E[1][k], 0.0f);
  }
}

TEST(SdtwLanes, BandRunsTheLogDomainAndMatches) {
  Rng rng(23);
  const int cases[][3] = {{5, 5, 0}, {5, 3, 0}, {3, 5, 1}, {12, 12, 2}, {40, 31, 3}};
  for (const auto& c : cases) {
    const int n = c[0], m = c[1], band = c[2], count = 6;
    Pairs pairs(rng, count, n, m, 0.0f, 2.0f);
    std::vector<double> values(count);
    const std::string what = Name(n, m, 0.5, count) + " band=" + std::to_string(band);
    EXPECT_EQ(soft_dtw_lanes(pairs.group, n, m, 0.5, band, true, values.data()), LaneSweep::kLog)
        << what;
    for (int p = 0; p < count; ++p) {
      ExpectMatches(PlainDp(pairs.cost[p], n, m, 0.5, band), values[p], pairs.E[p], what);
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < m; ++j) {
          if (!SdtwInBand(i, j, n, m, band)) {
            EXPECT_EQ(pairs.E[p][i * m + j], 0.0f) << what;
          }
        }
      }
    }
  }
  // A band as wide as the matrix is no band: the ratio domain runs.
  Pairs pairs(rng, 2, 6, 4, 0.0f, 2.0f);
  std::vector<double> values(2);
  EXPECT_EQ(soft_dtw_lanes(pairs.group, 6, 4, 0.5, 4, true, values.data()), LaneSweep::kRatio);
}

// Each lane's E is scaled by its own factor (0 and negative included), E may
// overwrite the costs, and nothing past a pair's cells is written.
TEST(SdtwLanes, ScalesPerLaneWritesInPlaceAndStaysInsideEachPair) {
  Rng rng(24);
  const int n = 11, m = 13, count = 5;
  const float scales[count] = {1.0f, -2.5f, 0.0f, 0.3f, 7.0f};
  Pairs ref_pairs(rng, count, n, m, 0.0f, 2.0f);
  std::vector<double> ref_values(count);
  soft_dtw_lanes(ref_pairs.group, n, m, 0.4, -1, true, ref_values.data());
  // The same costs, each in a buffer with guard cells after it; E written in place.
  std::vector<std::vector<float>> buffers(count);
  LaneGroup g;
  g.count = count;
  for (int p = 0; p < count; ++p) {
    buffers[p] = ref_pairs.cost[p];
    buffers[p].resize(n * m + 16, 99.0f);
    g.cost[p] = g.E[p] = buffers[p].data();
    g.scale[p] = scales[p];
  }
  std::vector<double> values(count);
  soft_dtw_lanes(g, n, m, 0.4, -1, true, values.data());
  for (int p = 0; p < count; ++p) {
    EXPECT_EQ(values[p], ref_values[p]);
    for (int k = 0; k < n * m; ++k) {
      ASSERT_EQ(buffers[p][k], scales[p] * ref_pairs.E[p][k]) << "lane " << p << " cell " << k;
    }
    for (int k = n * m; k < n * m + 16; ++k) EXPECT_EQ(buffers[p][k], 99.0f) << "lane " << p;
  }
}

TEST(SdtwLanes, GradientMatchesFiniteDifferences) {
  Rng rng(25);
  const int n = 6, m = 8, count = 3;
  const double gamma = 0.5;
  // All pairs' costs in one buffer, so one check covers every lane.
  std::vector<float> costs = RandomUniform(rng, int64_t{count} * n * m, 0.0f, 2.0f);
  const float weights[count] = {1.0f, -0.7f, 2.0f};
  auto group_of = [&](float* E) {
    LaneGroup g;
    g.count = count;
    for (int p = 0; p < count; ++p) {
      g.cost[p] = costs.data() + p * n * m;
      g.E[p] = E + p * n * m;
      g.scale[p] = weights[p];
    }
    return g;
  };
  std::vector<float> E(costs.size());
  double values[count];
  ASSERT_EQ(soft_dtw_lanes(group_of(E.data()), n, m, gamma, -1, true, values), LaneSweep::kRatio);
  std::vector<float> unused(costs.size());  // the forward does not write E
  auto loss = [&] {
    double v[count];
    EXPECT_EQ(soft_dtw_lanes(group_of(unused.data()), n, m, gamma, -1, false, v),
              LaneSweep::kRatio);
    double l = 0.0;
    for (int p = 0; p < count; ++p) l += weights[p] * v[p];
    return l;
  };
  EXPECT_TRUE(CheckGradient("dL/dcost", loss, costs.data(), E.data(),
                            static_cast<int64_t>(costs.size())));
}

TEST(SdtwLanes, PlanGroupsEqualShapes) {
  std::vector<int> n, m;
  auto add = [&](int count, int rows, int cols) {
    for (int k = 0; k < count; ++k) n.push_back(rows), m.push_back(cols);
  };
  add(3, 40, 40);    // too few for a group of 40 x 40 (MinLanes 8): 3 singles
  add(20, 16, 16);   // a full group of 16 and a group of 4 (MinLanes 2)
  add(13, 128, 128); // one group of 13 (MinLanes 12)
  add(1, 8, 9);      // alone: a single
  add(2, 300, 300);  // beyond kLaneMaxCells: singles
  std::vector<int> order;
  const std::vector<PairTask> tasks =
      PlanPairTasks(static_cast<int>(n.size()), n.data(), m.data(), -1, &order);
  std::vector<int> seen(n.size(), 0);
  int groups = 0, singles = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const PairTask& task = tasks[t];
    if (t > 0) {
      EXPECT_GE(tasks[t - 1].cells, task.cells);  // largest first
    }
    const int b0 = order[task.begin];
    EXPECT_EQ(task.cells, int64_t{n[b0]} * m[b0] * task.count);
    for (int q = 0; q < task.count; ++q) {
      const int b = order[task.begin + q];
      ++seen[b];
      EXPECT_EQ(n[b], n[b0]);
      EXPECT_EQ(m[b], m[b0]);
    }
    if (task.lanes) {
      ++groups;
      const int count = task.count;
      EXPECT_TRUE((n[b0] == 16 && (count == 16 || count == 4)) || (n[b0] == 128 && count == 13))
          << n[b0] << " x " << count;
    } else {
      ++singles;
      EXPECT_EQ(task.count, 1);
      EXPECT_TRUE(n[b0] == 40 || n[b0] == 8 || n[b0] == 300) << n[b0];
    }
  }
  EXPECT_EQ(groups, 3);
  EXPECT_EQ(singles, 6);
  for (size_t b = 0; b < n.size(); ++b) EXPECT_EQ(seen[b], 1) << b;
  // With a band only short pairs (log domain) are grouped.
  order.clear();
  const std::vector<int> bn = {8, 8, 8, 64, 64, 64, 64, 64, 64, 64, 64, 64};
  const std::vector<PairTask> banded =
      PlanPairTasks(static_cast<int>(bn.size()), bn.data(), bn.data(), 2, &order);
  for (const PairTask& task : banded) EXPECT_EQ(task.lanes, bn[order[task.begin]] == 8);
}

// The batch API: grouped pairs agree with the single-pair sweep, and the
// output does not depend on the thread count.
TEST(SdtwLanes, BatchApiGroupsEqualShapesAndIsThreadCountIndependent) {
  Rng rng(26);
  std::vector<int> n, m;
  for (int k = 0; k < 18; ++k) n.push_back(12), m.push_back(20);
  for (int k = 0; k < 13; ++k) n.push_back(100), m.push_back(90);
  n.push_back(7), m.push_back(3);
  int64_t cells = 0;
  for (size_t b = 0; b < n.size(); ++b) cells += int64_t{n[b]} * m[b];
  const auto costs = RandomUniform(rng, cells, 0.0f, 2.0f);
  const auto dvalues = RandomUniform(rng, static_cast<int64_t>(n.size()), -2.0f, 2.0f);
  SdtwOptions opt;
  opt.gamma = 0.3;
  ::ut::testing::ExpectBatchMatchesSinglePairs(n, m, costs, dvalues, opt, 1e-7, 2e-6);
}

// The sequence API groups jobs of equal lengths: its values and gradients
// match the same pairs done one per call (each call a batch of one, which the
// plan never groups).
TEST(SdtwLanes, SequenceApiGroupsEqualLengths) {
  Rng rng(27);
  const int N = 12, d = 6;
  std::vector<int> lengths(N, 9);
  lengths[3] = lengths[7] = 4;
  std::vector<int64_t> start(N + 1, 0);
  for (int s = 0; s < N; ++s) start[s + 1] = start[s] + lengths[s];
  auto rows = RandomUniform(rng, start[N] * d, -1.0f, 1.0f);
  const Sequences seqs{rows.data(), d, N, lengths.data()};
  std::vector<int> pu, pv;
  for (int u = 0; u < N; ++u) {
    for (int v = u + 1; v < N; ++v) pu.push_back(u), pv.push_back(v);
  }
  const int P = static_cast<int>(pu.size());
  const auto dv = RandomUniform(rng, P, -1.0f, 1.0f);
  const std::vector<double> dvalues(dv.begin(), dv.end());
  for (LocalCost local : {LocalCost::kIdentity, LocalCost::kGak}) {
    SequenceSdtwOptions opt;
    opt.distance = SliceDistance::kSqEuclid;
    opt.local_cost = local;
    opt.gamma = 0.5;
    std::vector<double> values(P);
    std::vector<float> drows(rows.size(), 0.0f);
    ASSERT_TRUE(soft_dtw_sequences_backward(values.data(), drows.data(), dvalues.data(), seqs,
                                            {P, pu.data(), pv.data()}, opt).ok());
    std::vector<float> drows_one(rows.size(), 0.0f);
    for (int p = 0; p < P; ++p) {
      double value = 0.0;
      ASSERT_TRUE(soft_dtw_sequences_backward(&value, drows_one.data(), &dvalues[p], seqs,
                                              {1, &pu[p], &pv[p]}, opt).ok());
      EXPECT_NEAR(values[p], value, 1e-7 * (1.0 + std::fabs(value))) << p;
    }
    double worst = 0.0;
    for (size_t k = 0; k < rows.size(); ++k) {
      worst = std::max(worst, static_cast<double>(std::fabs(drows[k] - drows_one[k])));
    }
    EXPECT_LE(worst, 1e-5) << (local == LocalCost::kGak ? "gak" : "identity");
  }
}

}  // namespace
}  // namespace ut::cpu::internal
