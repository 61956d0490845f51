#include "core/train/adamw.h"

#include <cmath>

#include "glog/logging.h"
#include "ops/optim.h"

namespace ut::train {

AdamW::AdamW(std::vector<ParamInfo> params, int64_t total,
             const unified_train::OptimConfig& config)
    : params_(std::move(params)), total_(total), config_(config), m_(total, 0.0f),
      v_(total, 0.0f) {
  int64_t covered = 0;
  for (const ParamInfo& p : params_) {
    CHECK_GE(p.offset, 0) << p.name;
    CHECK_LE(p.offset + p.numel, total_) << p.name;
    covered += p.numel;
  }
  CHECK_EQ(covered, total_) << "parameter list does not tile the buffer";
}

void AdamW::Step(float* params, const float* grads, float lr, float grad_scale) {
  ++step_;
  cpu::AdamWParams hp{lr, config_.beta1(), config_.beta2(), config_.eps(), 0.0f, step_};
  for (const ParamInfo& p : params_) {
    hp.weight_decay = p.decay ? config_.weight_decay() : 0.0f;
    cpu::adamw_update(params + p.offset, grads + p.offset, m_.data() + p.offset,
                      v_.data() + p.offset, p.numel, hp, grad_scale);
  }
}

double GlobalNorm(const float* grads, int64_t n) { return std::sqrt(cpu::sum_squares(grads, n)); }

}  // namespace ut::train
