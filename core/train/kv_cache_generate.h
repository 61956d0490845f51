// Greedy decoding with a key/value cache, for evaluation.
//
// MLLM::Generate re-runs the whole decoder over the growing sequence for every
// new token (O(T) layer passes of T rows each). This decoder runs the prompt
// once (vision tower + projector for its images, then the decoder over all
// prompt rows, keeping every layer's RoPE'd keys and values), and then each
// new token as ONE row that attends to the cache. It reads the model's
// parameter buffer through the public layout (core/model/layout.h) and uses
// the same ops in the same order as core/model/decoder.cc, so its logits equal
// a full Forward's up to float rounding (kv_cache_generate_test checks both
// the logits and the tokens against MLLM::Forward / MLLM::Generate).
//
// Shapes: C width, L layers, H query heads, Hkv key/value heads of D, F SwiGLU
// width, V vocab, NP visual tokens per image, T cached positions.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/model/arena.h"
#include "core/model/layout.h"
#include "core/model/mllm.h"
#include "core/model/projector.h"
#include "core/model/vit.h"
#include "data/batch.h"

namespace ut::train {

class KvCacheGenerator {
 public:
  // Reads `model`'s parameters at each Generate (so it sees later updates);
  // `model` must outlive this object.
  explicit KvCacheGenerator(MLLM* model);

  // Same contract as MLLM::Generate: `prompt` is one row (may contain images);
  // returns up to max_new greedy token ids, stopping at eos_id (included).
  // Uses the first lens[0] tokens. Does not touch the model's activations.
  // `keep_going` (optional) sees the tokens generated so far after each new
  // one; returning false stops decoding there (evaluation stops a generation
  // as soon as it can no longer match the reference).
  std::vector<int32_t> Generate(
      const data::Batch& prompt, int max_new, int eos_id,
      const std::function<bool(const std::vector<int32_t>&)>& keep_going = nullptr);

  // The logits [V] of the last position after the last Generate step, and of
  // every step when `record_logits` is set (for tests): logits_history()[s] is
  // the [V] row that chose generated token s.
  void set_record_logits(bool record) { record_logits_ = record; }
  const std::vector<std::vector<float>>& logits_history() const { return history_; }

 private:
  // Rows x [n,C] at positions [t0, t0+n) -> appends their keys/values to the
  // cache and leaves the final-normed hidden state of the last row in final_.
  void Step(int n, int t0);
  // q [n,H,D] of rows at positions [t0, t0+n) against cache layer l -> att [n,H,D].
  void Attend(int l, int n, int t0);
  void Reserve(int rows, int positions);

  MLLM* model_;
  model::Dims d_;
  model::Layout layout_;
  model::VisionTower vision_;
  model::Projector projector_;
  model::Arena vision_arena_;
  int capacity_ = 0;          // positions the cache holds
  std::vector<float> k_, v_;  // [L, capacity, Hkv*D] after RoPE (k)
  std::vector<float> x_, ln_, q_, kn_, vn_, att_, gate_, up_, act_;  // per-step scratch
  std::vector<float> rstd_, final_, logits_;
  std::vector<int32_t> ids_, pos_;
  bool record_logits_ = false;
  std::vector<std::vector<float>> history_;
};

}  // namespace ut::train
