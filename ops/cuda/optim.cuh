// AdamW and global-norm helpers on the GPU, same contract as ops/optim.h with
// DEVICE pointers (default stream). AdamWParams is the CPU header's struct.
#pragma once

#include <cstdint>

#include "ops/optim.h"

namespace ut::cuda {

// Call as cuda::adamw_update(...): the parameter struct lives in ut::cpu, so an
// unqualified call also finds the CPU overload by argument-dependent lookup and
// is ambiguous (a compile error, never a silent call of the wrong one).

using AdamWParams = ::ut::cpu::AdamWParams;

// PyTorch torch.optim.AdamW semantics, in this order:
//   p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// params, grads, m, v [n]; grads are multiplied by grad_scale first (clipping).
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n,
                  const AdamWParams& hp, float grad_scale = 1.0f);

// Sum of squares of x [n], accumulated in double (fixed order: deterministic).
// Synchronises: the result comes back to the host.
double sum_squares(const float* x, int64_t n);

// Clip factor for a global norm: min(1, max_norm / (norm + 1e-6)); 1 if max_norm <= 0.
// Host arithmetic, the same as ut::cpu::clip_scale.
float clip_scale(double norm, float max_norm);

}  // namespace ut::cuda
