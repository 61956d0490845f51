// Tensor parallelism inside the layers (Megatron style; DESIGN.md section 4).
// A column-parallel linear holds rows of W (its outputs split over TP ranks),
// a row-parallel one columns of W (its inputs split; outputs are partial sums).
// Each pair column -> row is wrapped in two operators:
//
//   f = CopyToTpRegion:     forward identity;  backward all-reduce (sum) of the
//                           gradient entering the column-parallel block
//   g = ReduceFromTpRegion: forward all-reduce (sum) of the row-parallel
//                           partial outputs;   backward identity
//
// so every replicated tensor (residual stream, norms and their gradients)
// comes out identical on every TP rank. Every function here that
// communicates must be called by all ranks of the TP group in the same order.
// With size == 1 (no communicator) nothing communicates.
#pragma once

#include <cstdint>

#include "parallel/comm/communicator.h"

namespace ut::model {

struct Tp {
  comm::Communicator* comm = nullptr;  // the TP group; nullptr iff size == 1
  int rank = 0, size = 1;

  // x [n] = sum over the TP ranks (in place). `where` names the call site for
  // the error message (a failed collective aborts: peers are gone).
  void AllReduceSum(float* x, int64_t n, const char* where) const;
};

// f backward: dx [n] (the partial input gradient of a column-parallel block)
// = its sum over the TP group.
inline void CopyToTpRegionBackward(const Tp& tp, float* dx, int64_t n, const char* where) {
  tp.AllReduceSum(dx, n, where);
}

// g forward: y [n] (partial outputs of a row-parallel block) = its sum.
inline void ReduceFromTpRegion(const Tp& tp, float* y, int64_t n, const char* where) {
  tp.AllReduceSum(y, n, where);
}

// Row-parallel linear with a residual:
//   out [N,OC] = residual [N,OC] + g(inp [N,C] @ weight[OC,C]^T) + bias [OC]
// (C is the local input width; bias replicated, added once after the sum; may
// be nullptr). partial [N,OC] is scratch, used only when tp.size > 1; with
// size 1 this is exactly linear_residual_forward. out may alias residual.
void RowParallelResidualForward(const Tp& tp, float* out, const float* residual, const float* inp,
                                const float* weight, const float* bias, float* partial, int N,
                                int C, int OC, const char* where);

// Vocab-parallel softmax cross-entropy. logits [N,Vl]: this rank's vocab
// columns [vocab_start, vocab_start + Vl); targets [N] global ids (< 0
// skipped). Row max, sum of exp and the target logit are combined by TP
// all-reduces; the full [N,V] logits never exist. Returns the SUM over counted
// rows of -log softmax(logits)[target] (identical on every rank) and sets
// *count; dlogits [N,Vl] (may alias logits) = (softmax - onehot) * grad_scale
// on counted rows, 0 elsewhere.
double VocabParallelCrossEntropy(const Tp& tp, float* dlogits, const float* logits,
                                 const int32_t* targets, int N, int Vl, int vocab_start,
                                 float grad_scale, int64_t* count);

}  // namespace ut::model
