// Scaled dot-product attention on the GPU, same contract as ops/attention.h
// with DEVICE pointers (lens too): multi-head and grouped-query (query head h
// uses kv head h / (H/Hkv)), causal or bidirectional, per-sequence lengths.
// Scale 1/sqrt(D). Head dim D <= 256 here (the CPU allows 1024).
#pragma once

#include <cstdint>

#include "ops/attention.h"

namespace ut::cuda {

// Call as cuda::attention_forward(...): the parameter struct lives in ut::cpu, so an
// unqualified call also finds the CPU overload by argument-dependent lookup and
// is ambiguous (a compile error, never a silent call of the wrong one).

using AttentionShape = ::ut::cpu::AttentionShape;

// q [B,T,H,D], k [B,T,Hkv,D], v [B,T,Hkv,D] -> out [B,T,H,D], lse [B,H,T].
// lens [B] (device, or nullptr = all T): keys j >= lens[b] are masked; query
// rows i >= lens[b] produce zeros (lse 0) and get zero gradients.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* lens, const AttentionShape& s);

// dout [B,T,H,D] -> dq [B,T,H,D], dk [B,T,Hkv,D], dv [B,T,Hkv,D] (all written).
// Recomputes the probabilities from lse; deterministic (no atomics).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* lens, const AttentionShape& s);

}  // namespace ut::cuda
