// The training loop (single process): the objective L = L_g + alpha * L_d
// (next-token CE plus objective.alpha times the discriminative loss of
// core/train/discriminative_loss.h, docs/objective.md) per micro-batch,
// gradient accumulation over train.grad_accum micro-batches (each backward
// scaled by 1/grad_accum),
// global-norm clipping, AdamW with the warm-up + cosine schedule, a progress
// line and a metrics.jsonl record every train.log_every steps, and atomic
// checkpoints every train.ckpt_every steps and at the end.
//
//   Trainer trainer(config, model, loader);   // initialises the parameters
//   RETURN_IF_ERROR(trainer.Resume(dir));     // optional: continue a run
//   RETURN_IF_ERROR(trainer.Run());
//
// A resumed run is bit-identical to an uninterrupted one: the checkpoint
// holds the weights, AdamW m/v, the step, the loader position and the RNG;
// L_d's prefix cuts are a pure function of (train.seed, step, micro-batch,
// sample), so they need no state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/rng.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/train/adamw.h"
#include "core/train/checkpoint.h"
#include "core/train/metrics.h"
#include "data/loader.h"

namespace ut::train {

// Asks every running Trainer to stop after its current step and checkpoint
// (async-signal-safe: call it from a SIGINT/SIGTERM handler).
void RequestStop();
bool StopRequested();
void ClearStopRequest();

class Trainer {
 public:
  // `model` and `loader` must outlive the trainer. Parameters are initialised
  // from train.seed; Resume() replaces them.
  Trainer(const Config& config, MLLM* model, data::Loader* loader);

  // Restores weights, optimizer state, step, loader position and RNG from a
  // checkpoint directory; on error nothing has changed.
  absl::Status Resume(const std::string& checkpoint_dir);

  // Loads the next micro-batch and rewinds the loader, so that data errors
  // (an unreadable image, ...) surface before anything is written.
  absl::Status Preflight();

  // Trains until train.steps (or until step `stop_at` when > 0, or a
  // RequestStop()), then writes a checkpoint of the last step.
  absl::Status Run(int64_t stop_at = 0);

  // Writes a checkpoint of the current step now; returns its directory.
  absl::StatusOr<std::string> SaveCheckpointNow();

  int64_t step() const { return step_; }
  bool stopped_by_request() const { return stopped_by_request_; }
  const std::vector<float>& losses() const { return losses_; }  // steps run by this object (L)
  const AdamW& optimizer() const { return adamw_; }
  void set_print_progress(bool on) { print_progress_ = on; }

 private:
  // One optimizer step over grad_accum micro-batches.
  absl::Status TrainStep(StepMetrics* metrics, int64_t* tokens);
  ModelBuffers Buffers();
  TrainState State() const;

  Config config_;
  MLLM* model_;
  data::Loader* loader_;
  AdamW adamw_;
  Rng rng_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  int64_t last_checkpoint_step_ = -1;
  bool stopped_by_request_ = false;
  bool print_progress_ = true;
  bool warned_no_teacher_ = false;
  std::vector<float> losses_;
};

}  // namespace ut::train
