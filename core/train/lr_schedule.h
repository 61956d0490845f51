// Learning-rate schedule: linear warm-up, then cosine decay to min_lr.
//
//   step s is 1-based (the optimizer step being taken), W = warmup_steps, N = total steps
//   s <= W : lr * s / W
//   s >  W : min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * (s - W) / (N - W)))
// so the first step after warm-up is just below the peak and step N lands on min_lr.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/base/config.h"

namespace ut::train {

inline float LearningRate(int64_t step, int64_t total_steps, const unified_train::OptimConfig& o) {
  const int64_t warmup = o.warmup_steps();
  if (warmup > 0 && step <= warmup) {
    return o.lr() * static_cast<float>(step) / static_cast<float>(warmup);
  }
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup);
  const double progress =
      std::clamp(static_cast<double>(step - warmup) / static_cast<double>(decay_steps), 0.0, 1.0);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(o.min_lr() + (o.lr() - o.min_lr()) * cosine);
}

}  // namespace ut::train
