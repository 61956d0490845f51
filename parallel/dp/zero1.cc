#include "parallel/dp/zero1.h"

#include <algorithm>
#include <span>

#include "glog/logging.h"
#include "ops/optim.h"

namespace ut::dp {

ShardedAdamW::ShardedAdamW(comm::Communicator* dp, std::vector<ParamSpan> params, int64_t total,
                           const unified_train::OptimConfig& config)
    : dp_(dp), params_(std::move(params)), total_(total), config_(config) {
  CHECK(dp_ != nullptr);
  dp_size_ = dp_->size();
  dp_rank_ = dp_->rank();
  int64_t covered = 0;
  for (const ParamSpan& p : params_) {
    CHECK(p.offset >= 0 && p.numel >= 0 && p.offset + p.numel <= total_)
        << "param at " << p.offset << " (" << p.numel << " floats) outside [0, " << total_ << ")";
    covered += p.numel;
  }
  CHECK_EQ(covered, total_) << "parameter list does not tile the buffer";
  shard_ = total_ / dp_size_;
  begin_ = ShardBegin(dp_rank_);
  end_ = ShardEnd(dp_rank_);
  m_.assign(shard_size(), 0.0f);
  v_.assign(shard_size(), 0.0f);
  scratch_.resize(shard_size());
}

// Reduce-scatter of the DP-divisible part [0, DP*shard) into scratch, copied
// back into the owned range; the remainder [DP*shard, total) is averaged by
// an all-reduce (every rank gets it; only the last rank owns it).
absl::Status ShardedAdamW::ReduceScatterGrads(float* grads) {
  if (dp_size_ == 1) return absl::OkStatus();
  const int64_t divisible = shard_ * dp_size_;
  if (shard_ > 0) {
    RETURN_IF_ERROR(dp_->ReduceScatter(std::span<const float>(grads, divisible),
                                       std::span<float>(scratch_.data(), shard_),
                                       comm::ReduceOp::kAvg));
    std::copy(scratch_.begin(), scratch_.begin() + shard_, grads + begin_);
  }
  if (divisible < total_) {
    RETURN_IF_ERROR(dp_->AllReduce(std::span<float>(grads + divisible, total_ - divisible),
                                   comm::ReduceOp::kAvg));
  }
  return absl::OkStatus();
}

absl::Status ShardedAdamW::Step(float* params, const float* grads, float lr, float grad_scale) {
  ++step_;
  cpu::AdamWParams hp{lr, config_.beta1(), config_.beta2(), config_.eps(), 0.0f, step_};
  for (const ParamSpan& p : params_) {
    const int64_t lo = std::max(begin_, p.offset), hi = std::min(end_, p.offset + p.numel);
    if (lo >= hi) continue;
    hp.weight_decay = p.decay ? config_.weight_decay() : 0.0f;
    cpu::adamw_update(params + lo, grads + lo, m_.data() + (lo - begin_), v_.data() + (lo - begin_),
                      hi - lo, hp, grad_scale);
  }
  if (dp_size_ == 1) return absl::OkStatus();
  std::copy(params + begin_, params + end_, scratch_.begin());
  return GatherSlices(scratch_.data(), params);
}

absl::Status ShardedAdamW::GatherSlices(const float* slice, float* full) {
  std::vector<int64_t> counts(dp_size_);
  for (int r = 0; r < dp_size_; ++r) counts[r] = ShardEnd(r) - ShardBegin(r);
  return dp_->AllGatherV(std::span<const float>(slice, shard_size()), std::span<float>(full, total_),
                         std::span<const int64_t>(counts));
}

absl::Status ShardedAdamW::GatherState(std::vector<float>* m_full, std::vector<float>* v_full) {
  m_full->resize(total_);
  v_full->resize(total_);
  if (dp_size_ == 1) {
    std::copy(m_.begin(), m_.end(), m_full->begin());
    std::copy(v_.begin(), v_.end(), v_full->begin());
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(GatherSlices(m_.data(), m_full->data()));
  return GatherSlices(v_.data(), v_full->data());
}

void ShardedAdamW::LoadState(const float* m_full, const float* v_full) {
  std::copy(m_full + begin_, m_full + end_, m_.begin());
  std::copy(v_full + begin_, v_full + end_, v_.begin());
}

}  // namespace ut::dp
