// Fused softmax + cross-entropy over the vocabulary (CPU).
#pragma once

#include <cstdint>

namespace ut::cpu {

// logits [N,V], targets [N] (target == ignore_index, or < 0, is skipped).
// Returns the SUM of -log softmax(logits)[target] over counted rows and sets
// *count to their number. If dlogits != nullptr, writes
// dlogits [N,V] = (softmax - onehot) * grad_scale for counted rows, 0 for skipped
// rows (dlogits may alias logits). For a mean loss, pass grad_scale = 1/count.
double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int N,
                             int V, int ignore_index, float grad_scale, int64_t* count);

}  // namespace ut::cpu
