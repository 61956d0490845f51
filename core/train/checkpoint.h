// Checkpoints: out_dir/checkpoints/step_000100/
//   model.safetensors      every parameter by its Hugging Face name, f32
//   optimizer.safetensors  "<name>.exp_avg" and "<name>.exp_avg_sq" (AdamW m, v), f32
//   state.json             step, data position, RNG state, param count, config text
//   COMPLETE               written last; a directory without it is ignored
// Writing is atomic: files go to step_000100.tmp/, each is fsynced, the
// directory is fsynced and renamed to step_000100, then COMPLETE is written
// and fsynced. Loading validates everything before changing any buffer.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/model/mllm.h"

namespace ut::train {

// What a checkpoint restores besides the buffers.
struct TrainState {
  int64_t step = 0;          // optimizer steps taken
  int64_t data_epoch = 0;    // data::Position of the training loader
  int64_t data_index = 0;
  std::array<uint64_t, 4> rng_state{};  // the trainer's ut::Rng
  int64_t tokens_seen = 0;   // non-pad training tokens so far (for metrics)
  int64_t param_count = 0;   // floats in the parameter buffer
  std::string config_text;   // the resolved config of the run that wrote it
};

// The buffers a checkpoint holds, all laid out as `params` describes.
struct ModelBuffers {
  const std::vector<ParamInfo>* params = nullptr;
  int64_t total = 0;          // floats in each buffer
  float* weights = nullptr;   // [total]
  float* exp_avg = nullptr;   // [total] AdamW m
  float* exp_avg_sq = nullptr;  // [total] AdamW v
};

// "step_000100".
std::string CheckpointName(int64_t step);

// Writes out_dir/checkpoints/step_<step>/ atomically (see above), then deletes
// all but the `keep` newest complete checkpoints (keep <= 0: keep all) and any
// leftover *.tmp directories. Returns the checkpoint directory.
absl::StatusOr<std::string> SaveCheckpoint(const std::string& out_dir, const ModelBuffers& buffers,
                                           const TrainState& state, int keep);

// Complete checkpoint directories under out_dir/checkpoints, oldest first.
std::vector<std::string> ListCheckpoints(const std::string& out_dir);

// The newest complete checkpoint; NotFound (naming the directory) if none.
absl::StatusOr<std::string> LatestCheckpoint(const std::string& out_dir);

// Reads and validates a checkpoint directory (names, shapes, dtypes, sizes,
// param count, state.json), then copies it into `buffers` and `state`. On any
// error nothing is changed and the message names the file and the problem.
absl::Status LoadCheckpoint(const std::string& dir, const ModelBuffers& buffers,
                            TrainState* state);

}  // namespace ut::train
