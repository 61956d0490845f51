// Scaled dot-product attention, forward and backward (CPU), flash-style:
// keys are processed in blocks with an online softmax, so no T x T matrix is
// materialised; the backward recomputes probabilities from the saved
// log-sum-exp. Multi-head and grouped-query (H query heads share Hkv key/value
// heads, H % Hkv == 0, query head h uses kv head h / (H/Hkv)).
// Scale is 1/sqrt(D).
#pragma once

#include <cstdint>

namespace ut::cpu {

struct AttentionShape {
  int B;       // batch
  int T;       // sequence length (padded)
  int H;       // query heads
  int Hkv;     // key/value heads
  int D;       // head dim
  bool causal; // mask keys j > i
};

// q [B,T,H,D], k [B,T,Hkv,D], v [B,T,Hkv,D] -> out [B,T,H,D], lse [B,H,T].
// lens [B] (or nullptr = all T): keys j >= lens[b] are masked; query rows
// i >= lens[b] produce zeros (and get zero gradients).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* lens, const AttentionShape& s);

// dout [B,T,H,D] -> dq [B,T,H,D], dk [B,T,Hkv,D], dv [B,T,Hkv,D] (all written).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* lens, const AttentionShape& s);

// Row strides (in floats) of the [B*T, heads*D] arrays, for projections packed
// side by side, e.g. q, k, v as column blocks of one [B*T, (H+2Hkv)*D] buffer
// (q = qkv, k = qkv + H*D, v = qkv + (H+Hkv)*D, all strides (H+2Hkv)*D).
// The plain functions above use q = out = H*D and k = v = Hkv*D.
struct AttentionStrides {
  int64_t q;    // q and dq
  int64_t k;    // k and dk
  int64_t v;    // v and dv
  int64_t out;  // out and dout
};

// As attention_forward / attention_backward, with rows `ld` apart. Results
// are identical to the plain functions on the same values.
void attention_forward_strided(float* out, float* lse, const float* q, const float* k,
                               const float* v, const int32_t* lens, const AttentionShape& s,
                               const AttentionStrides& ld);
void attention_backward_strided(float* dq, float* dk, float* dv, const float* dout,
                                const float* q, const float* k, const float* v, const float* out,
                                const float* lse, const int32_t* lens, const AttentionShape& s,
                                const AttentionStrides& ld);

}  // namespace ut::cpu
