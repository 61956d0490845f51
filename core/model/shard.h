// Which part of the model one rank holds (docs: /work/briefs/dist_design.md,
// DESIGN.md section 4): a tensor-parallel share (tp_rank of tp_size) of some
// pipeline chunks. A chunk is a contiguous range of decoder layers; the first
// chunk ("pre") also holds vision tower + projector + embed_tokens, the last
// ("post") final norm + LM head + retrieval projector.
//
// With `pp` stages and `virtual_stages` chunks per stage the decoder is cut
// into K = pp * virtual_stages chunks in model order, and chunk k runs on
// stage k % pp (Megatron interleaving): stage 0 of pp = 2, vs = 2 holds
// chunks 0 and 2, stage 1 chunks 1 and 3.
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"

namespace ut {

namespace model {
struct Dims;
}  // namespace model

struct ModelShard {
  struct Chunk {
    int begin = 0;     // first decoder layer
    int end = -1;      // one past the last decoder layer; -1: the model's layer count
    bool pre = true;   // holds vision tower, projector, embed_tokens (begin == 0)
    bool post = true;  // holds final norm, lm_head, retrieval projector (end == layers)
  };
  int tp_rank = 0, tp_size = 1;
  // This rank's chunks in model order. Default: the whole model as one chunk.
  std::vector<Chunk> chunks = std::vector<Chunk>(1);
};

// Estimated training FLOPs per sequence token (forward + backward, matmuls
// only, 6 per weight) of one decoder layer, of the pre part (vision tower +
// projector for kVisualTokenFraction of the tokens; the embedding lookup is
// free) and of the post part (final norm is free, LM head V*C).
inline constexpr double kVisualTokenFraction = 0.5;
struct LayerCosts {
  double layer = 0, pre = 0, post = 0;
};
LayerCosts EstimateCosts(const model::Dims& dims);

// All stages * virtual_stages chunks in model order, contiguous, each >= 1
// layer, chosen to minimise the largest chunk cost (pre cost on chunk 0, post
// cost on the last), ties broken by the smallest sum of squared chunk costs.
// Errors name parallel.pp / parallel.virtual_stages and the layer count, and
// model.llm.tie_embeddings with stages > 1 (a tied head across stages is not
// supported yet).
absl::StatusOr<std::vector<ModelShard::Chunk>> PartitionLayers(const model::Dims& dims,
                                                               int stages, int virtual_stages);
absl::StatusOr<std::vector<ModelShard::Chunk>> PartitionLayers(
    const unified_train::ModelConfig& config, int stages, int virtual_stages);

// The shard of pipeline stage `stage`: chunks k with k % stages == stage.
ModelShard ShardFor(const std::vector<ModelShard::Chunk>& chunks, int stage, int stages,
                    int tp_rank, int tp_size);

}  // namespace ut
