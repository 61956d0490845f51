#include "parallel/engine/model_stage.h"

#include "core/base/logging.h"

namespace ut::parallel {

void ModelStage::BeginStep(const std::vector<data::Batch>* batches, float loss_scale,
                           dp::GradReducer* reducer, PostHook post_hook) {
  batches_ = batches;
  loss_scale_ = loss_scale;
  reducer_ = reducer;
  post_hook_ = std::move(post_hook);
  counts_.assign(batches->size(), 0);
}

int ModelStage::num_chunks() const { return static_cast<int>(model_->shard().chunks.size()); }

void ModelStage::SetNumSlots(int n) {
  CHECK_GE(n, 1);
  if (n > model_->num_slots()) model_->SetNumSlots(n);
  slots_ = n;
}

float ModelStage::Run(int local_chunk, int micro, const float* in, bool with_grad) {
  CHECK(batches_ != nullptr) << "ModelStage: BeginStep first";
  int64_t count = 0;
  const float loss =
      model_->ChunkForward(local_chunk, Slot(micro), (*batches_)[micro], in, &count);
  if (model_->shard().chunks[local_chunk].post) {
    counts_[micro] = count;
    if (post_hook_) post_hook_(micro, with_grad);
  }
  return loss;
}

float ModelStage::Forward(int local_chunk, int micro, const float* in) {
  return Run(local_chunk, micro, in, /*with_grad=*/true);
}

float ModelStage::ForwardNoGrad(int local_chunk, int micro, const float* in) {
  return Run(local_chunk, micro, in, /*with_grad=*/false);
}

const float* ModelStage::Output(int local_chunk, int micro) {
  return model_->chunk_output(local_chunk, Slot(micro));
}

void ModelStage::Backward(int local_chunk, int micro, const float* dout) {
  // Only the last micro-batch's backward gives final gradients: arm the DP
  // reducer for it (each chunk runs its micro-batches' backwards in order).
  if (reducer_ != nullptr) reducer_->Arm(micro + 1 == static_cast<int>(batches_->size()));
  model_->ChunkBackward(local_chunk, Slot(micro), dout, loss_scale_);
}

const float* ModelStage::InputGrad(int local_chunk, int micro) {
  return model_->chunk_input_grad(local_chunk, Slot(micro));
}

pipeline::ActHeader ModelStage::Shape(int local_chunk, int micro) {
  const data::Batch& b = (*batches_)[micro];
  pipeline::ActHeader h;
  h.micro = micro;
  h.chunk = local_chunk;
  h.B = b.B;
  h.T = b.T;
  h.C = model_->config().llm().width();
  return h;
}

}  // namespace ut::parallel
