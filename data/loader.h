// Deterministic micro-batch loader over a JSONL manifest.
//
// Order: a seeded shuffle per epoch (seed, epoch) of the split's samples,
// sharded by DP rank (sample i goes to rank i % dp_size), then grouped by
// length (sort within windows of 64 * micro_batch_size samples) so rows of a
// micro-batch have similar lengths, padded to the longest row. The batch at
// a given Position is a pure function of (config, seed, position): resuming
// from a saved Position reproduces the stream exactly. A background thread
// prepares `prefetch` batches ahead.
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

struct Position {
  int64_t epoch = 0;
  int64_t index = 0;  // micro-batches consumed within the epoch
};

class Loader {
 public:
  // Reads the manifest (errors name file and line) and checks image paths.
  static absl::StatusOr<std::unique_ptr<Loader>> Create(const LoaderOptions& options,
                                                        const Tokenizer* tokenizer);
  ~Loader();

  // The next micro-batch; advances position(). Errors: unreadable image under
  // the FAIL policy (names sample id and path).
  absl::StatusOr<Batch> Next();
  Position position() const;
  void Seek(const Position& p);

  int64_t num_samples() const;       // in this rank's shard
  int64_t batches_per_epoch() const;
  int64_t skipped_images() const;    // samples dropped under the SKIP policy
  int64_t truncated() const;         // samples cut to seq_len so far
  const std::vector<Sample>& samples() const;  // this shard, manifest order

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
