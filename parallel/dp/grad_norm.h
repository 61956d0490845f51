// Global gradient norm over a TP x DP x PP layout (dist_design.md "Grad norm"):
// every unique gradient element is counted exactly once in the world:
//   - a TP-replicated tensor (identical on all TP ranks) counts on TP rank 0
//     only; a TP-sharded one counts its local slice on every TP rank;
//   - after DP averaging every DP rank holds the same gradient: plain DP
//     counts it on DP rank 0 only; ZeRO-1 counts each DP rank's own slice;
//   - PP stages hold disjoint parameters: all count.
// norm = sqrt(world all-reduce(sum of contributions)).
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/status.h"
#include "parallel/comm/communicator.h"
#include "parallel/dp/param_span.h"

namespace ut::dp {

// Sum of squares (double) of g over the elements of `params` that lie in
// [shard_begin, shard_end) (offsets index g), skipping replicated params
// unless count_replicated.
double SquaredNormContribution(const float* g, const std::vector<ParamSpan>& params,
                               bool count_replicated, int64_t shard_begin, int64_t shard_end);

// The same from the model's ParamInfo list (or any record with offset, numel,
// decay) plus explicit replicated flags (empty: see ToParamSpans).
template <class P>
double SquaredNormContribution(const float* g, const std::vector<P>& params,
                               const std::vector<bool>& replicated, bool count_replicated,
                               int64_t shard_begin, int64_t shard_end) {
  return SquaredNormContribution(g, ToParamSpans(params, replicated), count_replicated,
                                 shard_begin, shard_end);
}

// The brief's form: from ParamInfo, replicated = shard_dim < 0.
template <class P>
  requires HasShardDim<P>
double SquaredNormContribution(const float* g, const std::vector<P>& params, bool count_replicated,
                               int64_t shard_begin, int64_t shard_end) {
  return SquaredNormContribution(g, ToParamSpans(params), count_replicated, shard_begin,
                                 shard_end);
}

// What this rank counts, by the rules above. total: the local buffer size;
// zero1 shard: [zero_begin, zero_end) (ignored unless zero1).
struct NormShare {
  bool count_replicated = true;
  int64_t begin = 0, end = 0;
};
NormShare NormShareFor(int tp_rank, int dp_rank, int64_t total, bool zero1, int64_t zero_begin,
                       int64_t zero_end);

// sqrt(sum over `world` of contribution). Every rank gets the norm.
absl::StatusOr<double> GlobalGradNorm(comm::Communicator* world, double contribution);

}  // namespace ut::dp
