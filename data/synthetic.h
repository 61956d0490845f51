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
  // Share of *train* caption samples written text-first, [caption, image],
  // so that the prefix cut k = 1 of such a sample is the caption on its own,
  // as evaluation embeds it (docs/data_format.md, "Text-first captions").
  // Drawn from a stream of its own: 0 gives the image-first data set bit for
  // bit; the slices, teachers and images of a sample do not depend on it.
  // Val and test stay image-first (evaluation's task layout).
  double text_first_captions = 0.5;
  // Whether a text-first caption is context only (`prompt`, no L_g target).
  // Measured: as a prompt it leaves the caption's hidden states to L_d and
  // caption retrieval / Winoground rise well above chance; as a target they
  // stay near chance (docs/results.md, "Text-first samples").
  bool text_first_prompt = true;
};

// Generates the whole data set into out_dir (created if needed). Same options
// give byte-identical files. Prints progress to the log.
absl::Status GenerateSynthetic(const SyntheticOptions& options);

}  // namespace ut::data
