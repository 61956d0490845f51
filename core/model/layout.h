// Model dimensions and the parameter layout: where every parameter lives in
// the single contiguous buffer (offsets in floats), in params() order.
// The same offsets index the gradient buffer.
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"

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
};

// Checks the model config and derives Dims; errors name the field to change.
absl::StatusOr<Dims> MakeDims(const unified_train::ModelConfig& config);

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

// The init recipe documented at MLLM::InitParams.
void InitParams(float* params, const std::vector<ParamInfo>& list, float init_std, uint64_t seed);

}  // namespace ut::model
