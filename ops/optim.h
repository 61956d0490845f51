// AdamW and global-norm clipping (CPU).
#pragma once

#include <cstdint>

namespace ut::cpu {

struct AdamWParams {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;  // decoupled: p -= lr * wd * p
  int64_t step;        // 1-based, for bias correction
};

// PyTorch torch.optim.AdamW semantics, in this order:
//   p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// params, grads, m, v [n]; grads are multiplied by grad_scale first (clipping).
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n,
                  const AdamWParams& hp, float grad_scale = 1.0f);

// Sum of squares of x [n], accumulated in double.
double sum_squares(const float* x, int64_t n);

// Clip factor for a global norm: min(1, max_norm / (norm + 1e-6)); 1 if max_norm <= 0.
float clip_scale(double norm, float max_norm);

}  // namespace ut::cpu
