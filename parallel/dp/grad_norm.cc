#include "parallel/dp/grad_norm.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "ops/optim.h"

namespace ut::dp {

double SquaredNormContribution(const float* g, const std::vector<ParamSpan>& params,
                               bool count_replicated, int64_t shard_begin, int64_t shard_end) {
  double sum = 0.0;
  for (const ParamSpan& p : params) {
    if (p.replicated && !count_replicated) continue;
    const int64_t lo = std::max(shard_begin, p.offset);
    const int64_t hi = std::min(shard_end, p.offset + p.numel);
    if (lo < hi) sum += cpu::sum_squares(g + lo, hi - lo);
  }
  return sum;
}

NormShare NormShareFor(int tp_rank, int dp_rank, int64_t total, bool zero1, int64_t zero_begin,
                       int64_t zero_end) {
  NormShare s;
  s.count_replicated = tp_rank == 0;
  if (zero1) {
    s.begin = zero_begin;
    s.end = zero_end;
  } else if (dp_rank == 0) {
    s.end = total;
  }
  return s;
}

absl::StatusOr<double> GlobalGradNorm(comm::Communicator* world, double contribution) {
  double sum = contribution;
  RETURN_IF_ERROR(world->AllReduce(std::span<double>(&sum, 1), comm::ReduceOp::kSum));
  return std::sqrt(sum);
}

}  // namespace ut::dp
