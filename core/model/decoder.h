// The LLaMA-style decoder: token embedding (visual rows are written in by the
// caller between Embed and Forward), pre-norm blocks (RMSNorm, causal GQA with
// RoPE, no biases, SwiGLU MLP), final RMSNorm. The LM head and the loss live
// in mllm.cc. Shapes: B rows of T tokens, N = B*T, width C, H query heads and
// Hkv key/value heads of D, SwiGLU width F, vocab V.
//
// q/k/v and gate/up weights are adjacent in the parameter buffer, so each
// group is one GEMM: [q | k | v] = x @ [Wq; Wk; Wv]^T into one [N, (H+2Hkv)*D]
// array that RoPE and attention read in place (strided), and [gate | up] into
// one [N, 2F] array; their backward is one GEMM each as well.
#pragma once

#include <cstdint>
#include <vector>

#include "core/model/arena.h"
#include "core/model/layout.h"

namespace ut::model {

class Decoder {
 public:
  // CHECKs that q/k/v and gate/up weights are adjacent (layout.cc's order).
  Decoder(const Dims& dims, const DecoderOffsets& offsets);

  void Plan(Bump& bump, int B, int T);

  // ids [N] -> input() [N,C] = embed_tokens[ids] (ids < 0 give zero rows).
  void Embed(const float* params, const int32_t* ids);
  float* input() { return a_.res[0]; }  // [N,C]; the caller may overwrite rows

  // input() -> final() [N,C] (after the final RMSNorm). pos [N]: RoPE
  // positions; lens [B]: valid length of each row.
  void Forward(const float* params, const int32_t* pos, const int32_t* lens);
  const float* final() const { return a_.final; }
  // Scratch [N,C] for the caller to write the gradient of final() into.
  float* final_grad() { return a_.dfinal; }

  // final_grad() -> parameter grads (+=), embedding grads through ids, and
  // input_grad() [N,C] (the gradient of input(), written).
  void Backward(const float* params, float* grads, const int32_t* ids, const int32_t* pos,
                const int32_t* lens);
  const float* input_grad() const { return a_.dres; }

 private:
  struct LayerActs {
    float* ln1;    // [N,C] input_layernorm output
    float* rstd1;  // [N]
    float* qkv;    // [N,QKV] = [q | k | v] per row, QKV = (H+2Hkv)*D; q and k after RoPE
    float* att;    // [N,H*D] attention output before o_proj
    float* lse;    // [B,H,T]
    float* mid;    // [N,C] residual after attention
    float* ln2;    // [N,C]
    float* rstd2;  // [N]
    float* gu;     // [N,2F] = [gate | up] per row
    float* act;    // [N,F] silu(gate) * up
  };
  struct Acts {
    std::vector<float*> res;  // layers+1 of [N,C]; res[l] is the input of layer l
    std::vector<LayerActs> layers;
    float* final;       // [N,C]
    float* rstd_final;  // [N]
    // Backward scratch.
    float* dfinal;  // [N,C]
    float* dres;    // [N,C] gradient of the residual stream
    float* dln;     // [N,C]
    float* datt;    // [N,H*D]
    float* dqkv;    // [N,QKV]
    float* dact;    // [N,F]
    float* dgu;     // [N,2F]
  };

  Dims d_;
  DecoderOffsets o_;
  int B_ = 0, T_ = 0;
  Acts a_{};
};

}  // namespace ut::model
