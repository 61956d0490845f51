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
//
// A Decoder may run only a pipeline chunk: layers [begin, end), with the
// embedding when it is the first chunk (embed) and the final RMSNorm when it
// is the last (final_norm). Tensor parallel (tp.h; dims from LocalDims): H,
// Hkv, F and V are this rank's share; q/k/v and gate/up column-parallel,
// o_proj and down_proj row-parallel, embed_tokens vocab-parallel.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/model/arena.h"
#include "core/model/layout.h"
#include "core/model/tp.h"

namespace ut::model {

class Decoder {
 public:
  // Called with [begin, end) of a parameter range (floats, into the grad
  // buffer) once it has received this Backward's last contribution.
  using GradReady = std::function<void(int64_t begin, int64_t end)>;

  // CHECKs that q/k/v and gate/up weights are adjacent (layout.cc's order).
  // end == -1: up to the last layer.
  Decoder(const Dims& dims, const DecoderOffsets& offsets, const Tp& tp = {}, int begin = 0,
          int end = -1, bool embed = true, bool final_norm = true);

  void Plan(Bump& bump, int B, int T);

  // ids [N] -> input() [N,C] = embed_tokens[ids] (ids < 0 give zero rows).
  // Vocab-parallel: each rank looks up the ids of its rows, then g.
  void Embed(const float* params, const int32_t* ids);
  float* input() { return a_.res[0]; }  // [N,C]; the caller may overwrite rows

  // input() -> output() [N,C]: the last layer's output, then the final
  // RMSNorm if final_norm. pos [N]: RoPE positions; lens [B]: valid lengths.
  void Forward(const float* params, const int32_t* pos, const int32_t* lens);
  const float* output() const { return final_norm_ ? a_.final : a_.res[end_ - begin_]; }
  const float* final() const { return output(); }
  // Scratch [N,C] for the caller to write the gradient of output() into.
  float* final_grad() { return a_.dfinal; }

  // final_grad() -> parameter grads (+=), embedding grads through ids (if
  // embed), and input_grad() [N,C] (the gradient of input(), written).
  // ready (may be empty) hears the final norm, each layer and embed_tokens.
  void Backward(const float* params, float* grads, const int32_t* ids, const int32_t* pos,
                const int32_t* lens, const GradReady& ready = {});
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
    std::vector<float*> res;  // layers+1 of [N,C]; res[l] is the input of layer begin+l
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
    float* partial;  // [N,C] row-parallel partial sums (TP only)
  };

  Dims d_;
  DecoderOffsets o_;
  Tp tp_;
  int begin_, end_;
  bool embed_, final_norm_;
  std::vector<int32_t> local_ids_;  // [N] ids - vocab_start on this rank's rows, else -1 (TP)
  int B_ = 0, T_ = 0;
  Acts a_{};
};

}  // namespace ut::model
