// Model dimensions and the parameter layout: where every parameter lives in
// the single contiguous buffer (offsets in floats), in params() order.
// The same offsets index the gradient buffer.
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/model/shard.h"

namespace ut::model {

// Every size the model code needs, derived once from the config.
struct Dims {
  // Vision tower.
  int image_size = 0;  // S
  int patch = 0;       // P
  int patches = 0;     // NP = (S/P)^2 visual tokens per image
  int patch_dim = 0;   // 3*P*P
  int vwidth = 0;      // Wv
  int vlayers = 0;
  int vheads = 0;     // Hv
  int vhead_dim = 0;  // Wv / Hv
  int vmlp = 0;       // Fv
  float ln_eps = 0;
  float pixel_mean = 0;  // patches enter as (x - pixel_mean) / pixel_std
  float pixel_std = 1;
  // Decoder.
  int width = 0;  // C
  int layers = 0;
  int heads = 0;     // H
  int kv_heads = 0;  // Hkv
  int head_dim = 0;  // D = C / H
  int ffn = 0;       // F
  int vocab = 0;     // V
  float rope_theta = 0;
  float rms_eps = 0;
  bool tied = false;  // lm_head is embed_tokens
  // Retrieval projector.
  int retrieval = 0;  // R

  // Tensor parallelism. MakeDims gives tp_size 1 (the whole model). LocalDims
  // gives this rank's share: then vheads, vmlp, heads, kv_heads, ffn and vocab
  // hold the LOCAL counts (global / tp_size) and vocab_start the first global
  // vocab row; widths (vwidth, width), head dims and the rest stay global.
  int tp_rank = 0;
  int tp_size = 1;
  int vocab_start = 0;
};

// Checks the model config and derives Dims; errors name the field to change.
absl::StatusOr<Dims> MakeDims(const unified_train::ModelConfig& config);

// This TP rank's Dims (see Dims). Errors name the field that tp_size must
// divide (model.llm.heads, kv_heads, ffn, vocab_size, model.vision.heads, mlp).
absl::StatusOr<Dims> LocalDims(const Dims& global, int tp_rank, int tp_size);

// Checks a shard against the model (chunk ranges in order, non-overlapping,
// pre iff begin == 0, post iff end == layers, tp_rank < tp_size) and resolves
// end == -1 to the layer count.
absl::StatusOr<ModelShard> ResolveShard(const Dims& global, const ModelShard& shard);

// How tensor parallelism splits the parameter `name` (an HF name of mllm.h):
// 0 rows (column-parallel weights and their biases, vocab-parallel embed_tokens
// and lm_head), 1 columns (row-parallel weights), -1 replicated.
int TpSplitDim(const std::string& name);

// Offsets (in floats) of one ViT block's parameters.
struct VitLayerOffsets {
  int64_t ln1_w, ln1_b;
  int64_t q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
  int64_t ln2_w, ln2_b;
  int64_t fc1_w, fc1_b, fc2_w, fc2_b;
};

struct VitOffsets {
  int64_t patch_w, patch_b, pos;
  std::vector<VitLayerOffsets> layers;
  int64_t post_w, post_b;
};

struct ProjectorOffsets {
  int64_t l1_w, l1_b, l2_w, l2_b;
};

// Offsets of one decoder block's parameters (no biases).
struct DecoderLayerOffsets {
  int64_t ln1_w, q_w, k_w, v_w, o_w, ln2_w, gate_w, up_w, down_w;
};

struct DecoderOffsets {
  int64_t embed;
  std::vector<DecoderLayerOffsets> layers;
  int64_t norm_w;
  int64_t lm_head;  // == embed when the head is tied
};

// The retrieval projector (the last parameters of the buffer).
struct RetrievalOffsets {
  int64_t l1_w, l1_b, l2_w, l2_b;  // [R,C],[R],[R,R],[R]
};

struct Layout {
  std::vector<ParamInfo> params;  // the order of the buffer
  int64_t total = 0;              // floats
  VitOffsets vit;
  ProjectorOffsets projector;
  DecoderOffsets decoder;
  RetrievalOffsets retrieval;
};

// The parameter list of mllm.h, in that order.
Layout BuildLayout(const Dims& d);

// The parameters a shard (ResolveShard'ed) holds: the global list filtered to
// its chunks, in global order, TP-split ones with local shapes (global_shape,
// shard_dim, shard_start say which slice). Offsets of parameters the shard
// does not hold are -1 in the offset structs.
Layout BuildLayout(const Dims& global, const ModelShard& shard);

// full: the whole tensor (p.global_shape) -> local [p.shape]: this shard's slice.
void ExtractSlice(const ParamInfo& p, const float* full, float* local);
// The inverse: writes local [p.shape] into its place in full [p.global_shape].
void InsertSlice(const ParamInfo& p, const float* local, float* full);

// The init recipe documented at MLLM::InitParams.
void InitParams(float* params, const std::vector<ParamInfo>& list, float init_std, uint64_t seed);

}  // namespace ut::model
