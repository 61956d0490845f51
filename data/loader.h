// Deterministic micro-batch loader over a JSONL manifest.
//
// Order: a seeded shuffle per epoch (seed, epoch) of the split's samples,
// then grouped by length (sort within windows of 64 * micro_batch_size
// samples) so rows of a micro-batch have similar lengths, padded to the
// longest row. This is the single-process (global) stream: micro-batches
// j = 0, 1, 2, ... numbered across epochs (j = epoch * batches_per_epoch() +
// index).
//
// Data parallelism strides micro-batches, not samples: DP rank d yields
// exactly the global micro-batches j = m * dp_size + d for m = 0, 1, ...
// (same shuffle, same length grouping, same padding), so the dp_size ranks'
// m-th micro-batches together are the m-th "round" of the one-process
// stream and a DP step sees the same global batch as one process. Every rank
// reads and tokenizes the whole split (the plan needs every length) but only
// builds (decodes the images of) its own micro-batches.
//
// Position is GLOBAL: position() is the global stream position of the start
// of this rank's current round, i.e. micro-batch k * dp_size after this rank
// has taken k micro-batches. At a step boundary all DP ranks report the same
// Position, equal to the one-process reference's position after the same
// global batches; a checkpoint saves it once. The batch at a given Position
// is a pure function of (config, seed, position, dp_rank, dp_size): resuming
// from a saved Position reproduces the stream exactly. A background thread
// prepares `prefetch` batches ahead.
//
// Exactness caveat: under on_bad_image = SKIP a micro-batch whose every
// sample is dropped is skipped; one process then takes the next global
// micro-batch while a DP rank takes its own next one, so the layouts diverge
// from that point (never happens when image headers are checked at Create
// and the files do not change mid-run).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/base/config.h"
#include "core/base/status.h"
#include "data/batch.h"
#include "data/sample.h"
#include "data/tokenizer.h"

namespace ut::data {

struct LoaderOptions {
  std::string manifest;       // path to <split>.jsonl
  int seq_len = 256;          // longer rows are truncated (and counted)
  int micro_batch_size = 8;
  int image_size = 32;        // images are resized to S x S if needed
  int visual_tokens = 64;     // tokens each image expands to
  uint64_t seed = 0;
  unified_train::DataConfig::BadImagePolicy on_bad_image = unified_train::DataConfig::FAIL;
  int prefetch = 2;
  int dp_rank = 0;
  int dp_size = 1;
};

// The options of `split` (train/val/test) from a run's config: the manifest
// <data.data_dir>/<split>.jsonl, data.* settings, the model's image size and
// visual tokens per image ((image_size / patch_size)^2), this DP rank's share.
LoaderOptions LoaderOptionsFromConfig(const Config& config, const std::string& split,
                                      int dp_rank = 0, int dp_size = 1);

struct Position {
  int64_t epoch = 0;
  int64_t index = 0;  // global micro-batches consumed within the epoch (all DP ranks)
};

class Loader {
 public:
  // Reads the manifest (errors name file and line) and checks image paths.
  static absl::StatusOr<std::unique_ptr<Loader>> Create(const LoaderOptions& options,
                                                        const Tokenizer* tokenizer);
  ~Loader();

  // This rank's next micro-batch; advances position() by dp_size global
  // micro-batches (one round). Errors: unreadable image under
  // the FAIL policy (names sample id and path).
  absl::StatusOr<Batch> Next();
  Position position() const;  // global, at this rank's round start (see top)
  // Resume at a global position. One that is not a multiple of dp_size (a
  // checkpoint from another DP layout) is rounded down to its round start,
  // with a warning. An index past the epoch's end carries into later epochs.
  void Seek(const Position& p);

  int64_t num_samples() const;       // the whole split (every rank plans all of it)
  int64_t batches_per_epoch() const; // of the global stream; this rank gets ~1/dp_size
  int64_t skipped_images() const;    // samples dropped under the SKIP policy
  int64_t truncated() const;         // samples cut to seq_len so far
  const std::vector<Sample>& samples() const;  // the whole split, manifest order

  // Builds a batch from explicit samples (evaluation, tests). With
  // `add_eos` false the last text slice gets no eos (a generation prompt).
  absl::StatusOr<Batch> MakeBatch(const std::vector<const Sample*>& samples, bool add_eos = true);

 private:
  Loader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a JSONL manifest (docs/data_format.md). Errors name file and line.
absl::StatusOr<std::vector<Sample>> ReadManifest(const std::string& path);

}  // namespace ut::data
