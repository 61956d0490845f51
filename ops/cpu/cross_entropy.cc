// Fused softmax + cross-entropy on the CPU, parallel over rows. Row losses go
// to a per-row buffer and are summed in row order, so the result is
// deterministic for any thread count.
#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "glog/logging.h"
#include "ops/cpu/vec_math.h"

namespace ut::cpu {

// logits [N,V], targets [N] -> sum of -log softmax(logits)[target] over counted
// rows; dlogits [N,V] (optional, may alias logits) = (softmax - onehot) * grad_scale.
double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int N,
                             int V, int ignore_index, float grad_scale, int64_t* count) {
  std::vector<double> row_loss(N, 0.0);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * V >= (1 << 14))
  for (int n = 0; n < N; ++n) {
    const float* x = logits + static_cast<int64_t>(n) * V;
    const int32_t target = targets[n];
    const bool counted = target >= 0 && target != ignore_index;
    CHECK(!counted || target < V) << "softmax_cross_entropy: target " << target << " at row "
                                  << n << " is outside the vocabulary [0," << V << ")";
    if (!counted) {
      if (dlogits != nullptr) std::fill(dlogits + static_cast<int64_t>(n) * V,
                                        dlogits + static_cast<int64_t>(n + 1) * V, 0.0f);
      continue;
    }
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (int c = 0; c < V; ++c) mx = std::max(mx, x[c]);
    const float x_target = x[target];  // read before dx (may alias x) is written
    float sum = 0.0f;
    if (dlogits == nullptr) {
#pragma omp simd reduction(+ : sum)
      for (int c = 0; c < V; ++c) sum += internal::FastExp(x[c] - mx);
    } else {
      // dx = exp(x - max) first (in place is fine: element c only reads x[c]),
      // then scaled to softmax * grad_scale, minus grad_scale at the target.
      float* dx = dlogits + static_cast<int64_t>(n) * V;
#pragma omp simd reduction(+ : sum)
      for (int c = 0; c < V; ++c) {
        dx[c] = internal::FastExp(x[c] - mx);
        sum += dx[c];
      }
      const float scale = grad_scale / sum;
#pragma omp simd
      for (int c = 0; c < V; ++c) dx[c] *= scale;
      dx[target] -= grad_scale;
    }
    // -log p[target] = log(sum) + max - x[target], in double.
    row_loss[n] = std::log(static_cast<double>(sum)) + mx - x_target;
  }
  double total = 0.0;
  int64_t counted_rows = 0;
  for (int n = 0; n < N; ++n) {
    const bool counted = targets[n] >= 0 && targets[n] != ignore_index;
    total += row_loss[n];
    counted_rows += counted ? 1 : 0;
  }
  if (count != nullptr) *count = counted_rows;
  return total;
}

}  // namespace ut::cpu
