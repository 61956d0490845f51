// AdamW over the model's single contiguous parameter buffer (PyTorch
// torch.optim.AdamW semantics, see ops/optim.h), with decoupled weight decay
// only on parameters whose ParamInfo::decay is set, and global-norm clipping.
//
// State: m and v [total] floats laid out exactly like the parameters, and the
// number of steps taken (for bias correction).
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.h"
#include "core/model/mllm.h"

namespace ut::train {

class AdamW {
 public:
  // `params` is the model's parameter list (offsets into a buffer of `total` floats).
  AdamW(std::vector<ParamInfo> params, int64_t total, const unified_train::OptimConfig& config);

  // One update: grads are multiplied by grad_scale (the clip factor) first.
  // params, grads [total]. Increments step().
  void Step(float* params, const float* grads, float lr, float grad_scale = 1.0f);

  float* m() { return m_.data(); }  // [total] first moment (exp_avg)
  float* v() { return v_.data(); }  // [total] second moment (exp_avg_sq)
  int64_t total() const { return total_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }  // when restoring a checkpoint

 private:
  std::vector<ParamInfo> params_;
  int64_t total_;
  unified_train::OptimConfig config_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

// Global L2 norm of grads [n] (accumulated in double).
double GlobalNorm(const float* grads, int64_t n);

}  // namespace ut::train
