// Soft-DTW with one pair per SIMD lane: up to kPairLanes pairs of the same
// shape (n, m, band) are swept together, cell by cell, each vector lane
// holding the same cell of a different pair. Internal to //ops:sdtw; the batch
// APIs (ops/sdtw.h, ops/gak.h) route groups of equal-shape pairs here.
//
// Why: the anti-diagonal sweep (ops/cpu/sdtw.cc) vectorises along a diagonal,
// which short pairs fill badly (a 128 x 128 pair pads 12% of its vector work
// and pays per-diagonal set-up 255 times; an 8 x 8 pair is nearly all
// padding). Across pairs every lane does useful work, and without a band the
// sweep can run in the ratio domain (ops/cpu/sdtw_lanes.cc): one exp per cell
// outside the dependency chain and one division in it, instead of two exps
// and a log in it. Measured per cell, forward + backward, 16 pairs on one core
// (bench/sdtw_lanes_bench, docs/results.md): 14x the diagonal sweep at 8 x 8,
// 3x at 32 x 32, 1.4x at 128 x 128. The cost: the softmin weights of a whole
// group (192 bytes per cell) stream through memory, so beyond kLaneMaxCells
// the diagonal sweep wins.
//
// Results agree with the diagonal sweep to rounding: values to ~1e-9
// relative (the ratio sweep is the more accurate of the two: ~1e-12 against a
// double reference), E to ~1e-6 absolute (both keep the weights in float).
#pragma once

#include <cstdint>
#include <vector>

namespace ut::cpu::internal {

inline constexpr int kPairLanes = 16;
// Largest n * m swept by lanes (bench/sdtw_lanes_bench, forward + backward
// against the diagonal sweep: 1.37x at 192 x 192, 0.95x at 256 x 256).
inline constexpr int64_t kLaneMaxCells = 192 * 192;

// Fewest pairs of shape (n, m) worth a lane group: the spare lanes of a group
// cost as much as used ones, so longer pairs need fuller groups. Above
// kPairLanes (never) for pairs of more than kLaneMaxCells cells.
int MinLanes(int n, int m);

// count in [1, kPairLanes] pairs of one shape. cost[p]: row-major [n, m].
// For the backward, E[p] [n, m] gets scale[p] * dR_p[n,m]/dcost_p (it may
// alias cost[p]: all costs are read before any E is written).
struct LaneGroup {
  int count = 0;
  const float* cost[kPairLanes] = {};
  float* E[kPairLanes] = {};
  float scale[kPairLanes] = {};
};

// Which sweep produced a group's results: the ratio domain (no band, every
// lane's ratios stayed in range), or the log domain (a band, or a lane whose
// |cost| / gamma exceeded 700 or whose ratios left the double range: the
// whole group is then swept again in the log domain).
enum class LaneSweep { kRatio, kLog };

// values[p] = R_p[n, m] for p < count; with backward, also E (see LaneGroup).
// Uses this thread's lane scratch (kept between calls; see TrimLaneScratch).
LaneSweep soft_dtw_lanes(const LaneGroup& group, int n, int m, double gamma, int band,
                         bool backward, double* values);

// How a batch is split into work items for the threads: a lane group of
// pairs of one shape, or one pair for the diagonal sweep.
struct PairTask {
  int begin = 0;  // the task's pairs are order[begin .. begin + count)
  int count = 0;
  bool lanes = false;
  int64_t cells = 0;  // n * m * count, to schedule the largest first
};

// Plans B pairs with lengths n[b], m[b]: full groups of kPairLanes pairs of one
// shape, then a last group of the rest if it has MinLanes(n, m) pairs, else
// single pairs (so only bands of 32 x 32 cells and less use the lanes: with a
// band they run the log-domain sweep, which gains only on short pairs).
// Fills order (a permutation of 0..B-1) and returns the tasks, largest
// first. Depends only on the lengths and the band, never on the threads.
std::vector<PairTask> PlanPairTasks(int B, const int* n, const int* m, int band,
                                    std::vector<int>* order);

// Frees this thread's lane scratch above max_floats per buffer.
void TrimLaneScratch(int64_t max_floats);

}  // namespace ut::cpu::internal
