// The multimodal LLM: ViT encoder -> 2-layer GELU projector -> LLaMA-style
// decoder (DESIGN.md section 2), CPU, f32. One object holds the whole model
// (Create(config)) or one rank's shard (core/model/shard.h: some pipeline
// chunks, tensor-parallel over a TP communicator; params() then lists only
// the local slices, see ParamInfo).
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
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/shard.h"
#include "data/batch.h"

namespace ut {

namespace comm {
class Communicator;
}  // namespace comm

struct ParamInfo {
  std::string name;            // Hugging Face LLaVA name
  std::vector<int64_t> shape;
  int64_t offset = 0;          // in floats, into param_data() / grad_data()
  int64_t numel = 0;
  bool decay = true;           // AdamW weight decay applies (matrices yes; norms, biases no)
  // Tensor parallelism (core/model/shard.h): `shape` is this rank's local
  // slice of a tensor of `global_shape`, split along shard_dim (-1: whole
  // tensor, replicated over TP; 0: rows; 1: columns) starting at global index
  // shard_start. With tp_size == 1 every tensor is whole (shard_dim -1).
  std::vector<int64_t> global_shape;
  int shard_dim = -1;
  int64_t shard_start = 0;
};

class MLLM {
 public:
  // Validates the model config (errors name the field). The whole model.
  static absl::StatusOr<std::unique_ptr<MLLM>> Create(const unified_train::ModelConfig& config);
  // One rank's part of the model (core/model/shard.h): the shard's chunks,
  // tensor-parallel over `tp` (the TP group; may be null when tp_size == 1,
  // else its size and rank must equal the shard's). params() then lists only
  // the local parameters, in global order, with local shapes. Errors name the
  // config field that does not split (e.g. heads not divisible by parallel.tp).
  //
  // With tp_size > 1 every call that runs layers (Forward, Backward,
  // ChunkForward, ChunkBackward, EmbedSlices) makes TP collectives: all ranks
  // of the TP group must make the same calls, in the same order, on the same
  // batch. RetrievalForward/RetrievalBackward, InitParams and the accessors
  // never communicate.
  static absl::StatusOr<std::unique_ptr<MLLM>> Create(const unified_train::ModelConfig& config,
                                                      const ModelShard& shard,
                                                      comm::Communicator* tp);
  ~MLLM();

  const ModelShard& shard() const;  // resolved: every chunk's end is set

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

  // Forward over a micro-batch through all of this shard's chunks (which must
  // chain: the first pre, the last post, contiguous), in slot 0; keeps the
  // activations for Backward and
  // returns the mean next-token cross-entropy over counted targets (sets
  // *count to their number if non-null).
  float Forward(const data::Batch& batch, int64_t* count = nullptr);
  // Backward of (loss_scale * mean loss) for the last Forward; gradients
  // accumulate into grad_data(). Exactly one Backward per Forward.
  void Backward(float loss_scale);

  // ---- Pipeline chunks ----
  // A slot is one micro-batch's activation set (arena, shapes, ids/pos/lens)
  // per chunk: ChunkForward(c, s, ...) keeps chunk c's activations until
  // ChunkBackward(c, s, ...). n >= 1 slots (default 1; Forward/Backward use 0).
  void SetNumSlots(int n);
  int num_slots() const;
  // c indexes shard().chunks. in [B,T,C]: the previous chunk's output
  // (nullptr for a pre chunk). Non-post chunks return 0 (*count = 0); a post
  // chunk returns the mean CE (count of targets in *count) and selects `slot`.
  float ChunkForward(int c, int slot, const data::Batch& batch, const float* in,
                     int64_t* count = nullptr);
  const float* chunk_output(int c, int slot) const;  // [B,T,C], non-post chunks
  // dout [B,T,C]: gradient of chunk_output from the next chunk (nullptr for a
  // post chunk, whose CE gradient is scaled by loss_scale and which adds the
  // slot's final-hidden hook). Parameter grads +=.
  void ChunkBackward(int c, int slot, const float* dout, float loss_scale);
  const float* chunk_input_grad(int c, int slot) const;  // [B,T,C], non-pre chunks
  // Makes logits(), final_hidden(), mutable_final_hidden_grad() and
  // RetrievalForward/Backward refer to `slot` (of the post chunk). A post
  // ChunkForward selects its slot; Forward selects slot 0.
  void SelectSlot(int slot);

  // Called inside ChunkBackward/Backward each time a contiguous range
  // [begin, end) of grad_data() (floats) has received this backward's last
  // contribution: the post tail (retrieval projector, lm_head, final norm),
  // each decoder block, embed_tokens, projector, vision tower. One backward
  // over all of the shard's chunks covers every parameter exactly once. Empty
  // function: none.
  void SetGradReadyCallback(std::function<void(int64_t begin, int64_t end)> ready);

  // After Forward: logits [B,T,V] (TP: this rank's vocab columns [B,T,V/TP])
  // and final hidden states after the final RMSNorm [B,T,C] (the
  // discriminative loss reads the latter), of the selected slot.
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
  // the last Forward (no Backward after it). Whole model only (no TP, one chunk).
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
