// The training loop (single process): the objective
//
//   L = (1/A) sum_j L_g(j) + alpha * (1/P) sum_pools L_d(pool)
//
// (A = train.grad_accum micro-batches j = 0..A-1 per step, next-token CE;
// the discriminative loss of core/train/discriminative_loss.h over P pools,
// docs/objective.md), gradient accumulation (each micro-batch's backward
// scaled by 1/A, each pool's L_d gradient by alpha/P), global-norm clipping, AdamW with the warm-up + cosine schedule, a progress
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
//
// L_d pools (objective.pool): MICRO_BATCH pools ld_round consecutive
// micro-batches (set_ld_round; default 1 = each micro-batch alone; the
// single-process reference of a DP layout sets it to DP); GLOBAL_BATCH pools
// the whole step. A pool of more than one micro-batch runs the gradient cache:
// pass 1 = Forward + RetrievalForward of each micro-batch (only r is kept),
// PoolLoss over the pool, pass 2 = per micro-batch Forward,
// RetrievalForward, RetrievalBackward(its dr), Backward. The step's reported
// loss_d is the mean over pools and loss = loss_g + alpha * loss_d.
#pragma once

#include <cstdint>
#include <functional>
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

// Sums over one optimizer step (AccumulateStep).
struct StepSums {
  double loss_g = 0;       // sum over the A micro-batches of L_g
  double loss_d = 0;       // sum over the pools of L_d (alpha > 0 only)
  int pools = 0;           // P = A / group
  int64_t ld_units = 0;    // units over all pools
  int64_t ld_skipped = 0;  // samples without teacher features
  int64_t tokens = 0;      // non-pad tokens
};

// Micro-batches per L_d pool: ld_round (MICRO_BATCH) or grad_accum
// (GLOBAL_BATCH). Errors: ld_round < 1 or not dividing grad_accum.
absl::StatusOr<int> LdPoolSize(const unified_train::ObjectiveConfig& objective, int grad_accum,
                               int ld_round);

// One step's forward and backward: `accum` micro-batches from `next` (j =
// 0..accum-1 in order), L_d (alpha > 0) over pools of `group` consecutive
// micro-batches (the gradient cache when group > 1). Gradients of
// L = (1/accum) sum_j L_g(j) + alpha * (1/P) sum_pools L_d accumulate (+=)
// into model->grad_data(). `step` is the 1-based step the cuts are drawn for.
using NextBatch = std::function<absl::StatusOr<data::Batch>()>;
absl::StatusOr<StepSums> AccumulateStep(MLLM* model, const NextBatch& next, int accum, int group,
                                        const unified_train::ObjectiveConfig& objective,
                                        uint64_t seed, int64_t step);

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
  // MICRO_BATCH pools of n consecutive micro-batches (n must divide
  // train.grad_accum; checked by Run). Default 1.
  void set_ld_round(int n) { ld_round_ = n; }

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
  int ld_round_ = 1;
  std::vector<float> losses_;
};

}  // namespace ut::train
