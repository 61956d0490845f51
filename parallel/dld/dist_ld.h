// The distributed discriminative loss L_d of one pool (DESIGN.md section 4,
// docs/objective.md "Distributed L_d"). Equal, up to float summation order, to
// the single-process L_d over the union of the ranks' units
// (core/train PoolLoss), in loss and in every dr row.
//
// Each rank of the DP group holds its part of the pool (dld::PoolUnits plus
// its slice embeddings r [S,R]); the TP ranks of one DP rank hold identical
// parts. Steps (all collective):
//   1. sizes: AllGather over `dp` of {S, U, sum k, D, split, R} per rank;
//   2. data: AllGatherV over `dp` of r, teacher rows, modalities, unit
//      lengths, unit slices, sample keys -> every rank has the pool's N units;
//   3. work: the upper-triangle pairs u < v (the diagonal is exactly 0: M^r =
//      M^l = 1 there) are split over the `dp_tp` group (DP x TP ranks) into
//      contiguous runs of balanced weight (n_u * n_v in SEQUENCE mode, the DTW
//      cost; 1 in PAPER mode); each rank computes M^l and M^r of its pairs,
//      its partial sum of squares and its partial dL/dr of the gathered rows;
//   4. loss: AllReduce(sum) over `dp_tp`, L_d = sum / N;
//   5. gradients: one ReduceScatter over `dp_tp` with padded equal blocks of
//      S_max * R values, block q holding the rows of the DP rank that dp_tp
//      rank q belongs to, so every rank (each TP rank too) receives the summed
//      dr of its own slices.
// (A TP reduce followed by a DP reduce-scatter would move TP times less data;
// one collective over dp_tp needs no TP communicator. Sizes here are small.)
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "parallel/comm/communicator.h"
#include "parallel/dld/pool_units.h"

namespace ut::dld {

struct DistLdOptions {
  unified_train::ObjectiveConfig::Mode mode = unified_train::ObjectiveConfig::SEQUENCE;
  double delta = 1.0;      // GAK bandwidth (objective.delta)
  float grad_scale = 1.0;  // dr += grad_scale * dL_d/dr
};

struct DistLdResult {
  double loss = 0;         // L_d of the pool (same on every rank; 0 without units)
  int units = 0;           // N, units of the whole pool
  int64_t pairs = 0;       // upper-triangle pairs this rank computed
  // Work (sum of pair weights) of this rank, and the max and mean over dp_tp.
  int64_t work = 0, work_max = 0;
  double work_mean = 0;
};

// The rank's units `local` over its slice embeddings r [S,R] (S =
// local.num_slices()); with dr != nullptr and grad_scale != 0, adds
// grad_scale * dL_d/dr to dr [S,R] (+=). `dp` = the DP group of this rank,
// `dp_tp` = the DP x TP ranks of its pipeline stage (dp_tp->size() must be a
// multiple of dp->size()). Errors (the same on every rank): R or the teacher
// feature size/split differs between ranks, or the TP ranks of one DP rank
// hold different pools (a desync).
absl::StatusOr<DistLdResult> DistributedLd(const PoolUnits& local, const float* r, int R,
                                           const DistLdOptions& options, comm::Communicator* dp,
                                           comm::Communicator* dp_tp, float* dr);

// Pair split used by DistributedLd, exposed for tests: owner[p] in
// [0, ranks) for pairs of weight w[p] in order; contiguous runs, each rank's
// total at most total/ranks + max weight.
std::vector<int> SplitPairs(const std::vector<int64_t>& weight, int ranks);

}  // namespace ut::dld
