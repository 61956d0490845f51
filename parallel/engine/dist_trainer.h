// The distributed training step (docs/parallel.md): one optimizer step of
//
//   L = (1/(A*DP)) sum_j L_g(j) + alpha * (1/P) sum_pools L_d(pool)
//
// over the global batch of A*DP micro-batches (this DP rank takes j = m*DP+d,
// m = 0..A-1), exactly the single-process step of the same global batch
// (core/train/trainer.h with grad_accum = A*DP and ld_round = DP).
//
//   1. every rank loads its A micro-batches (PP stages load the same ones);
//   2. GLOBAL_BATCH pool only: a forward-only pipeline pass embeds every
//      micro-batch; the last stage computes the distributed L_d of the whole
//      pool and keeps each micro-batch's dr (gradient cache);
//   3. the 1F1B (or interleaved) schedule runs forward and backward of every
//      micro-batch; on the last chunk, right after each forward, the L_d
//      gradient enters through the retrieval head: MICRO_BATCH pools compute
//      the distributed L_d of the round (the DP ranks' m-th micro-batches)
//      there; GLOBAL_BATCH pools inject the dr of step 2;
//   4. the last micro-batch's backward starts bucketed DP all-reduces as
//      gradients become final (GradReducer), or ZeRO-1 reduce-scatters after;
//   5. global grad norm over unique elements (parallel/dp/grad_norm.h), clip,
//      AdamW (plain, or sharded over DP with ZeRO-1; then an all-gather).
//
// Every rank of the world calls Step() together.
#pragma once

#include <memory>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/train/adamw.h"
#include "core/train/metrics.h"
#include "data/loader.h"
#include "parallel/dp/grad_reducer.h"
#include "parallel/dp/zero1.h"
#include "parallel/engine/dist_context.h"
#include "parallel/engine/model_stage.h"
#include "parallel/pipeline/executor.h"

namespace ut::parallel {

struct DistStepResult {
  train::StepMetrics metrics;  // loss, L_g, L_d, lr, grad-norm (same on every rank)
  int64_t tokens = 0;          // non-pad tokens of the global batch
  double bubble = 0;           // this stage's idle fraction of the schedule
  double seconds = 0;          // wall time of the step
};

class DistTrainer {
 public:
  // model: this rank's shard (MLLM::Create(config, shard, ctx->tp)), with
  // parameters already initialised; loader: this DP rank's micro-batches.
  // Errors: a config the engine cannot run (names the field).
  static absl::StatusOr<std::unique_ptr<DistTrainer>> Create(const Config& config,
                                                             DistContext* ctx, MLLM* model,
                                                             data::Loader* loader);

  // One optimizer step. After it, the model's grad_data() still holds the
  // step's averaged, unclipped gradients (plain DP; with ZeRO-1 only this
  // rank's slice is defined), until the next Step.
  absl::Status Step(DistStepResult* result);

  int64_t step() const { return step_; }

  // Checkpoints (launch/dist_train.cc). AdamW m and v of this rank's shard,
  // laid out like its param buffer [num_params]. With ZeRO-1 the slices are
  // gathered over the DP group first, so every DP rank must call it.
  absl::Status OptimizerState(std::vector<float>* m, std::vector<float>* v);
  // Resume: optimizer steps taken and m, v [num_params] in the same layout.
  void Restore(int64_t step, const float* m, const float* v);
  // With ZeRO-1, the owned slice [begin, end) of the flat buffer.
  bool zero1() const { return zero_ != nullptr; }
  const dp::ShardedAdamW* zero() const { return zero_.get(); }
  const dp::GradReducer& reducer() const { return *reducer_; }
  // The last Step's pipeline run (per-op timeline, busy and wall time), e.g.
  // for pipeline::GroupBubbleFraction.
  const pipeline::PipeRunResult& last_run() const { return last_run_; }

 private:
  DistTrainer(const Config& config, DistContext* ctx, MLLM* model, data::Loader* loader);
  absl::Status EmbedPool(int A);  // GLOBAL_BATCH pass 1 (all stages)
  // L_d of the pool formed by the given local micro-batches (last stage).
  absl::Status PoolLd(const std::vector<int>& micros, bool with_grad);

  Config config_;
  DistContext* ctx_;
  MLLM* model_;
  data::Loader* loader_;
  ModelStage stage_;
  std::unique_ptr<dp::GradReducer> reducer_;
  std::unique_ptr<dp::ShardedAdamW> zero_;
  std::unique_ptr<train::AdamW> adamw_;
  int64_t step_ = 0;

  // Per step.
  std::vector<data::Batch> batches_;
  std::vector<std::vector<float>> r_;   // [A][S_m*R] retrieval embeddings (pool pass 1)
  std::vector<std::vector<float>> dr_;  // [A][S_m*R] scaled L_d gradient to inject
  double ld_sum_ = 0;                   // sum over this step's pools of L_d
  int64_t ld_units_ = 0;
  int ld_pools_ = 0;
  absl::Status hook_status_;
  pipeline::PipeRunResult last_run_;  // of the last Step
};

}  // namespace ut::parallel
