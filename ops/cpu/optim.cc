// AdamW and global-norm helpers on the CPU.
#include "ops/optim.h"

#include <cmath>
#include <vector>

#include "ops/cpu/vec_math.h"

namespace ut::cpu {

// params, grads, m, v [n]. torch.optim.AdamW order (ops/optim.h):
//   p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// Scalars that torch computes in Python (double) are computed in double here and
// rounded to float once.
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n,
                  const AdamWParams& hp, float grad_scale) {
  const double t = static_cast<double>(hp.step);
  const float decay = static_cast<float>(1.0 - static_cast<double>(hp.lr) * hp.weight_decay);
  const float b1 = hp.beta1;
  const float b2 = hp.beta2;
  const float one_minus_b1 = static_cast<float>(1.0 - hp.beta1);
  const float one_minus_b2 = static_cast<float>(1.0 - hp.beta2);
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta1), t));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta2), t));
  const float lr = hp.lr;
  const float eps = hp.eps;
#pragma omp parallel for simd schedule(static) if (parallel : n >= (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i] * grad_scale;
    float p = params[i] * decay;
    const float mi = b1 * m[i] + one_minus_b1 * g;
    const float vi = b2 * v[i] + one_minus_b2 * (g * g);
    p -= lr * (mi / bc1) / (std::sqrt(vi / bc2) + eps);
    params[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

// x [n] -> sum of x^2 in double. Fixed-size blocks (independent of the thread
// count) are summed in parallel, then the block sums in order: deterministic.
double sum_squares(const float* x, int64_t n) {
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock;
    const int64_t end = std::min(n, begin + kBlock);
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = begin; i < end; ++i) acc += static_cast<double>(x[i]) * x[i];
    partial[b] = acc;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (clipping off).
float clip_scale(double norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  const double scale = static_cast<double>(max_norm) / (norm + 1e-6);
  return scale < 1.0 ? static_cast<float>(scale) : 1.0f;
}

}  // namespace ut::cpu
