// The multimodal LLM: ViT encoder -> 2-layer GELU projector -> LLaMA-style
// decoder (DESIGN.md section 2), single process, CPU, f32.
//
// All parameters live in ONE contiguous buffer and all gradients in another,
// laid out in the order of params(); names follow the Hugging Face LLaVA
// layout so checkpoints map by name:
//   vision_tower.vision_model.embeddings.patch_embedding.weight   [Wv,3,P,P]
//   vision_tower.vision_model.embeddings.patch_embedding.bias     [Wv]
//   vision_tower.vision_model.embeddings.position_embedding.weight [NP,Wv]
//   vision_tower.vision_model.encoder.layers.{i}.layer_norm1.{weight,bias}      [Wv]
//   vision_tower.vision_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}
//   vision_tower.vision_model.encoder.layers.{i}.layer_norm2.{weight,bias}
//   vision_tower.vision_model.encoder.layers.{i}.mlp.fc1.{weight,bias}  [Fv,Wv],[Fv]
//   vision_tower.vision_model.encoder.layers.{i}.mlp.fc2.{weight,bias}  [Wv,Fv],[Wv]
//   vision_tower.vision_model.post_layernorm.{weight,bias}
//   multi_modal_projector.linear_1.{weight,bias}   [C,Wv],[C]
//   multi_modal_projector.linear_2.{weight,bias}   [C,C],[C]
//   language_model.model.embed_tokens.weight       [V,C]
//   language_model.model.layers.{i}.input_layernorm.weight            [C]
//   language_model.model.layers.{i}.self_attn.q_proj.weight           [H*hd,C]
//   language_model.model.layers.{i}.self_attn.{k,v}_proj.weight       [Hkv*hd,C]
//   language_model.model.layers.{i}.self_attn.o_proj.weight           [C,H*hd]
//   language_model.model.layers.{i}.post_attention_layernorm.weight   [C]
//   language_model.model.layers.{i}.mlp.{gate,up}_proj.weight         [F,C]
//   language_model.model.layers.{i}.mlp.down_proj.weight              [C,F]
//   language_model.model.norm.weight                                  [C]
//   language_model.lm_head.weight                  [V,C] (absent when tied)
//   retrieval_projector.linear_1.{weight,bias}     [R,C],[R]   (R = model.retrieval_dim)
//   retrieval_projector.linear_2.{weight,bias}     [R,R],[R]
// Brace lists expand in order, the first brace outermost (q_proj.weight,
// q_proj.bias, k_proj.weight, ...).
// Convention: parameter gradients accumulate (+=) so micro-batches add up;
// call ZeroGrad() once per optimizer step.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "data/batch.h"

namespace ut {

struct ParamInfo {
  std::string name;            // Hugging Face LLaVA name
  std::vector<int64_t> shape;
  int64_t offset = 0;          // in floats, into param_data() / grad_data()
  int64_t numel = 0;
  bool decay = true;           // AdamW weight decay applies (matrices yes; norms, biases no)
};

class MLLM {
 public:
  // Validates the model config (errors name the field).
  static absl::StatusOr<std::unique_ptr<MLLM>> Create(const unified_train::ModelConfig& config);
  ~MLLM();

  const std::vector<ParamInfo>& params() const;
  const ParamInfo* FindParam(const std::string& name) const;  // nullptr if absent
  int64_t num_params() const;
  float* param_data();
  float* grad_data();
  // Normal(0, init_std) for matrices and embeddings, 1 for norm weights, 0 for
  // biases; deterministic in the seed. Exact recipe (tests/golden/make_golden.py
  // reproduces it bit for bit): one ut::Rng seeded once with `seed`; walk
  // params() in order; a tensor with decay == true takes, for each element in
  // row-major order, float(rng.Normal() * double(init_std)) (Normal: Box-Muller,
  // one value per call, two Uniform draws); other tensors are 0 if the name ends
  // in ".bias", else 1, and draw nothing.
  void InitParams(uint64_t seed);
  void ZeroGrad();

  // Forward over a micro-batch; keeps the activations for Backward and
  // returns the mean next-token cross-entropy over counted targets (sets
  // *count to their number if non-null).
  float Forward(const data::Batch& batch, int64_t* count = nullptr);
  // Backward of (loss_scale * mean loss) for the last Forward; gradients
  // accumulate into grad_data(). Exactly one Backward per Forward.
  void Backward(float loss_scale);

  // After Forward: logits [B,T,V] and final hidden states after the final
  // RMSNorm [B,T,C] (the discriminative loss reads the latter).
  const float* logits() const;
  const float* final_hidden() const;
  // For the discriminative loss: extra gradient w.r.t. final_hidden() [B,T,C]
  // to add during the next Backward (nullptr = none). Cleared after Backward.
  // Returns a zeroed buffer on the first call after a Forward, nullptr when no
  // Forward awaits its Backward.
  float* mutable_final_hidden_grad();

  // Greedy decoding for evaluation: the prompt is one batch row (may contain
  // images); returns up to max_new generated token ids, stopping at eos_id
  // (which is included). Uses the first lens[0] tokens; replaces the state of
  // the last Forward (no Backward after it).
  std::vector<int32_t> Generate(const data::Batch& prompt, int max_new, int eos_id);

  // ---- Retrieval embeddings (DESIGN.md section 1; core/model/retrieval.h) ----
  // A slice's embedding: a text slice takes its last token's final hidden state
  // (final_hidden(), after the final norm), an image slice the mean over its
  // visual tokens; the retrieval projector (linear_1, GELU-tanh, linear_2) maps
  // it to R = retrieval_dim() values, then the row is L2-normalised, so the
  // inner product of two embeddings is their cosine.

  // For evaluation: r [S,R] (resized), one embedding per entry of batch.slices,
  // in that order (S = batch.slices.size(); empty when there are none). Runs the
  // vision tower and the decoder on `batch` (no LM head, no loss); replaces the
  // state of the last Forward (no Backward after it).
  void EmbedSlices(const data::Batch& batch, std::vector<float>* r);

  // For training (the discriminative loss), between Forward and Backward:
  // r [S,R] (written) for `slices` (spans into the batch of the last Forward).
  void RetrievalForward(const std::vector<data::SliceSpan>& slices, float* r);
  // dr [S,R] = dLoss/dr for the last RetrievalForward (already scaled by the
  // caller) -> retrieval projector gradients (+=) and mutable_final_hidden_grad()
  // (+=), which the next Backward carries into the rest of the model.
  void RetrievalBackward(const float* dr);

  const unified_train::ModelConfig& config() const;
  int num_visual_tokens() const;  // (image_size / patch_size)^2
  int retrieval_dim() const;      // R

 private:
  MLLM();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ut
