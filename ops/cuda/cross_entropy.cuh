// Fused softmax + cross-entropy over the vocabulary on the GPU, same contract
// as ops/cross_entropy.h with DEVICE pointers (logits, targets, dlogits).
// Synchronises: the loss sum and count come back to the host.
#pragma once

#include <cstdint>

namespace ut::cuda {

// logits [N,V], targets [N] (target == ignore_index, or < 0, is skipped;
// target >= V is a programmer error: a device assert fires).
// Returns the SUM of -log softmax(logits)[target] over counted rows (in double,
// a fixed summation order: deterministic) and sets *count (if not nullptr) to their
// number. If dlogits != nullptr, writes dlogits [N,V] = (softmax - onehot) *
// grad_scale for counted rows, 0 for skipped rows (dlogits may alias logits).
double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int N,
                             int V, int ignore_index, float grad_scale, int64_t* count);

}  // namespace ut::cuda
