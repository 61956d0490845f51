// Test helpers: a small model config and deterministic synthetic batches.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/base/config.h"
#include "core/base/rng.h"
#include "data/batch.h"

namespace ut::model::testing {

// A model small enough for finite differences: NP = 4 visual tokens of width 8,
// a 2-layer decoder of width 16 with GQA (4 heads, 2 kv heads), vocab 32.
inline unified_train::ModelConfig SmallConfig() {
  unified_train::ModelConfig c;
  auto* v = c.mutable_vision();
  v->set_image_size(8);
  v->set_patch_size(4);
  v->set_width(8);
  v->set_layers(1);
  v->set_heads(2);
  v->set_mlp(16);
  auto* l = c.mutable_llm();
  l->set_width(16);
  l->set_layers(2);
  l->set_heads(4);
  l->set_kv_heads(2);
  l->set_ffn(24);
  l->set_vocab_size(32);
  c.set_init_std(0.2f);
  return c;
}

struct ImagePlacement {
  int row;
  int start;
};

// B rows of T tokens with valid lengths `lens`; images of `visual_tokens`
// tokens (id `image_token`) at the given places; random text ids in
// [3, vocab); padding id 0. targets[t] = tokens[t+1] for text tokens inside the
// row, except position 1 of every row (a "prompt" target) and image positions.
inline data::Batch MakeBatch(uint64_t seed, int T, const std::vector<int>& lens,
                             const std::vector<ImagePlacement>& images, int visual_tokens,
                             int image_size, int vocab, int image_token = 2) {
  Rng rng(seed);
  data::Batch b;
  b.B = static_cast<int>(lens.size());
  b.T = T;
  b.lens.assign(lens.begin(), lens.end());
  b.tokens.assign(b.B * T, 0);
  b.targets.assign(b.B * T, -1);
  std::vector<bool> is_image(b.B * T, false);
  for (const ImagePlacement& im : images) {
    for (int p = 0; p < visual_tokens; ++p) is_image[im.row * T + im.start + p] = true;
    b.image_row.push_back(im.row);
    b.image_start.push_back(im.start);
  }
  for (int r = 0; r < b.B; ++r) {
    for (int t = 0; t < lens[r]; ++t) {
      const int n = r * T + t;
      b.tokens[n] = is_image[n] ? image_token : 3 + static_cast<int>(rng.Below(vocab - 3));
    }
    for (int t = 0; t + 1 < lens[r]; ++t) {
      const int n = r * T + t;
      if (t != 1 && !is_image[n + 1]) b.targets[n] = b.tokens[n + 1];
    }
  }
  b.num_images = static_cast<int>(images.size());
  b.image_size = image_size;
  b.images.resize(static_cast<size_t>(b.num_images) * 3 * image_size * image_size);
  for (float& x : b.images) x = static_cast<float>(rng.Uniform());
  return b;
}

}  // namespace ut::model::testing
