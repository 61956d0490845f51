// Deterministic, seeded generator of synthetic "scenes" (RGB PNGs of 1-3
// shapes) and interleaved samples: captions, VQA pairs, multi-image stories
// whose objects change between panels, and hard-negative captions (attribute
// or relation swaps) for evaluation. Writes train/val/test manifests, the
// images, and tokenizer.model trained on the train split's text.
//
// Teacher features: each slice gets [uni-modal part ; cross-modal part], both
// L2-normalised, computed from the slice's *semantics* (the objects and
// relations it describes), never from pixels or wording. They stand in for
// frozen-encoder features (DINOv2/BGE + CLIP in the paper) and are documented
// as such in docs/data_format.md.
#pragma once

#include <cstdint>
#include <string>

#include "core/base/status.h"

namespace ut::data {

struct SyntheticOptions {
  std::string out_dir;
  int image_size = 32;
  int num_train = 4000;
  int num_val = 200;
  int num_test = 200;
  uint64_t seed = 7;
  int vocab_size = 512;
};

// Generates the whole data set into out_dir (created if needed). Same options
// give byte-identical files. Prints progress to the log.
absl::Status GenerateSynthetic(const SyntheticOptions& options);

}  // namespace ut::data
