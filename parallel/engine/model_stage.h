// The pipeline executor's view of this rank's model chunks
// (pipeline::PipelineStage over MLLM's chunk API), plus the hook where the
// last stage adds the discriminative loss of each micro-batch.
//
// Slots: the executor promises that at most n micro-batches are live per
// local chunk and that they are consecutive, so micro m uses slot m % n of
// its chunk (MLLM keeps one activation set per (chunk, slot)).
#pragma once

#include <functional>
#include <vector>

#include "core/model/mllm.h"
#include "data/batch.h"
#include "parallel/dp/grad_reducer.h"
#include "parallel/pipeline/executor.h"

namespace ut::parallel {

class ModelStage : public pipeline::PipelineStage {
 public:
  // Runs on the model's last chunk right after its forward of local micro m
  // (with grad: the L_d backward goes in here, before the chunk's Backward;
  // no grad: only embeddings are collected).
  using PostHook = std::function<void(int micro, bool with_grad)>;

  explicit ModelStage(MLLM* model) : model_(model) {}

  // Per step: the micro-batches (every stage holds the same ones), the scale of
  // each micro-batch's CE gradient (1/A), the reducer to arm on the last
  // micro-batch's backward (nullptr: none), and the L_d hook (may be empty).
  void BeginStep(const std::vector<data::Batch>* batches, float loss_scale,
                 dp::GradReducer* reducer, PostHook post_hook);
  // Targets counted by each micro-batch's CE (last chunk only; 0 elsewhere).
  const std::vector<int64_t>& counts() const { return counts_; }

  int num_chunks() const override;
  void SetNumSlots(int n) override;
  float Forward(int local_chunk, int micro, const float* in) override;
  const float* Output(int local_chunk, int micro) override;
  void Backward(int local_chunk, int micro, const float* dout) override;
  const float* InputGrad(int local_chunk, int micro) override;
  pipeline::ActHeader Shape(int local_chunk, int micro) override;
  float ForwardNoGrad(int local_chunk, int micro, const float* in) override;

 private:
  float Run(int local_chunk, int micro, const float* in, bool with_grad);
  int Slot(int micro) const { return micro % slots_; }

  MLLM* model_;
  int slots_ = 1;
  const std::vector<data::Batch>* batches_ = nullptr;
  float loss_scale_ = 1.0f;
  dp::GradReducer* reducer_ = nullptr;
  PostHook post_hook_;
  std::vector<int64_t> counts_;
};

}  // namespace ut::parallel
