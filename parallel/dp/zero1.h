// ZeRO-1: AdamW with its optimizer state sharded over the data-parallel group.
//
// Ownership. The flat buffer [total] is cut into DP contiguous slices:
// shard = total / DP (floor); rank r owns [r * shard, (r + 1) * shard), and
// the last rank also owns the remainder [DP * shard, total) (< DP floats).
// Instead of padding the buffer to a multiple of DP (which would need a padded
// copy of the whole gradient, as the collectives are not in place), the
// remainder rides on one tiny extra all-reduce; slices differ by < DP floats.
//
// A step:
//   1. ReduceScatterGrads(grads): reduce-scatter (average) of the local
//      gradient buffer; afterwards grads[shard_begin, shard_end) holds the DP
//      average. The rest of grads is left unspecified (do not read it).
//   2. (clipping) each rank adds the squared norm of its slice to a world
//      all-reduce (grad_norm.h) and gets the clip factor.
//   3. Step(params, grads, lr, clip): AdamW on the owned slice only, with the
//      slice's m and v (the optimizer state is sharded: [shard_size()] each),
//      then an all-gather of the updated slices so every rank holds all
//      params again.
// Master weights: params are f32 in this engine, so the owned f32 slice of
// the param buffer IS the master copy (no separate low-precision copy yet;
// with bf16 params the owned slice would get an f32 master here).
//
// The update is ops/optim.h's adamw_update, called per (parameter ∩ slice)
// piece with that parameter's weight decay: the element-wise math is exactly
// core/train/adamw.h's, and decay is right on both sides of any boundary.
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "parallel/comm/communicator.h"
#include "parallel/dp/param_span.h"

namespace ut::dp {

class ShardedAdamW {
 public:
  // params must tile [0, total). dp: the data-parallel group (not owned).
  ShardedAdamW(comm::Communicator* dp, std::vector<ParamSpan> params, int64_t total,
               const unified_train::OptimConfig& config);
  // From the model's ParamInfo list (offset, numel, decay).
  template <class P>
  ShardedAdamW(comm::Communicator* dp, const std::vector<P>& params, int64_t total,
               const unified_train::OptimConfig& config)
      : ShardedAdamW(dp, ToParamSpans(params), total, config) {}

  // grads [total] local sums -> grads[shard_begin, shard_end) = DP average.
  absl::Status ReduceScatterGrads(float* grads);
  // AdamW on params[shard) with grads[shard) * grad_scale, then all-gather of
  // params [total]. Increments step().
  absl::Status Step(float* params, const float* grads, float lr, float grad_scale = 1.0f);

  int64_t total() const { return total_; }
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  int64_t shard_size() const { return end_ - begin_; }
  // Which floats rank r owns.
  int64_t ShardBegin(int r) const { return r * shard_; }
  int64_t ShardEnd(int r) const { return r + 1 == dp_size_ ? total_ : (r + 1) * shard_; }

  float* m() { return m_.data(); }  // [shard_size()] exp_avg of the owned slice
  float* v() { return v_.data(); }  // [shard_size()] exp_avg_sq of the owned slice
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }

  // Checkpoints. GatherState: every rank gets the full m and v [total] (in
  // the layout of core/train/adamw.h, so one rank can save them as a plain
  // AdamW state). LoadState: from full [total] buffers, keep the own slice.
  absl::Status GatherState(std::vector<float>* m_full, std::vector<float>* v_full);
  void LoadState(const float* m_full, const float* v_full);

 private:
  absl::Status GatherSlices(const float* slice, float* full);  // [shard_size()] -> [total]

  comm::Communicator* dp_;
  std::vector<ParamSpan> params_;
  int64_t total_;
  unified_train::OptimConfig config_;
  int dp_size_, dp_rank_;
  int64_t shard_;        // floor(total / DP)
  int64_t begin_, end_;  // owned slice
  std::vector<float> m_, v_;
  std::vector<float> scratch_;  // [shard_size()]: reduce-scatter / all-gather staging
  int64_t step_ = 0;
};

}  // namespace ut::dp
