// The pipeline executor: runs one stage's op list (schedule.h) against the
// stage's chunks of the model, moving activations and their gradients to the
// neighbouring stages (p2p.h), and measures busy vs wall time (the bubble).
//
// Model chunk k lives on stage k % stages as local chunk k / stages; chunk 0
// takes the micro-batch itself (in == nullptr), the last chunk K-1 (always on
// the last stage) computes the loss and starts the backward (dout == nullptr).
//
//   stage s-1 --[fwd: header, h [B,T,C]]--> stage s --[fwd]--> stage s+1
//   stage s-1 <--[bwd: header, dh [B,T,C]]- stage s <--[bwd]-- stage s+1
//
// (with interleaving, stage p-1 sends chunk k's output on to stage 0, which
// holds chunk k+1, and gradients flow back the same way round.)
#pragma once

#include <vector>

#include "parallel/comm/communicator.h"
#include "parallel/pipeline/p2p.h"
#include "parallel/pipeline/schedule.h"

namespace ut::pipeline {

// One rank's chunks of the model. The executor calls, for each op of its
// list, Forward or Backward of (local chunk, micro).
class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  // Local chunks on this stage (= parallel.virtual_stages).
  virtual int num_chunks() const = 0;
  // At most n micro-batches are live per local chunk (forwarded, backward not
  // yet run), and they are consecutive micro indices, so slot = micro % n
  // never collides. Called by RunSchedule before its first op.
  virtual void SetNumSlots(int n) = 0;
  // in: [B,T,C] of the micro-batch entering this chunk, nullptr on model
  // chunk 0; valid only during the call (copy what the backward needs).
  // Returns the micro-batch's loss on the model's last chunk (ignored elsewhere).
  virtual float Forward(int local_chunk, int micro, const float* in) = 0;
  // [B,T,C] leaving the chunk; read right after Forward (not on the last chunk).
  virtual const float* Output(int local_chunk, int micro) = 0;
  // dout: gradient w.r.t. Output, [B,T,C]; nullptr on the model's last chunk
  // (the loss starts the backward); valid only during the call. Parameter
  // gradients accumulate (+=).
  virtual void Backward(int local_chunk, int micro, const float* dout) = 0;
  // Gradient w.r.t. the chunk's input, [B,T,C]; read right after Backward
  // (not on model chunk 0).
  virtual const float* InputGrad(int local_chunk, int micro) = 0;
  // B, T, C of the hidden states entering and leaving this chunk for `micro`
  // (decoder chunks keep the shape); micro/chunk fields are ignored. Must be
  // answerable from the micro-batch alone, before Forward: it is what the
  // receiver expects in the header.
  virtual ActHeader Shape(int local_chunk, int micro) = 0;
  // Forward without keeping anything for a backward (ForwardOnly). The
  // default runs Forward; a stage may override it to free its activations.
  virtual float ForwardNoGrad(int local_chunk, int micro, const float* in) {
    return Forward(local_chunk, micro, in);
  }
};

struct PipeRunOptions {
  P2pOptions p2p;
};

struct OpTiming {
  PipeOp op;
  double start_s = 0, end_s = 0;  // compute only, from the start of the run
};

struct PipeRunResult {
  // [micro_batches]: the loss of each micro-batch, on the stage holding the
  // model's last chunk; NaN on the other stages.
  std::vector<float> losses;
  double busy_s = 0;  // inside Forward/Backward
  double wall_s = 0;  // the whole run, including waiting for the last sends
  std::vector<OpTiming> timeline;
  double bubble_fraction() const { return wall_s > 0 ? 1.0 - busy_s / wall_s : 0; }
};

// The pipeline's bubble fraction over all stages: 1 - sum(busy) / (stages *
// max(wall)), all-reduced over pp_comm (call on every stage). Comparable with
// BubbleClosedForm when the stages start together (e.g. after a barrier).
absl::StatusOr<double> GroupBubbleFraction(const PipeRunResult& result,
                                           comm::Communicator& pp_comm);

// Runs `ops` (this stage's list from OneFOneB / Interleaved) on `stage`.
// pp_comm is the pipeline group: size = stages, rank = this stage. Errors:
// a desync (header mismatch), a communicator deadline, or a failed send.
absl::StatusOr<PipeRunResult> RunSchedule(const std::vector<PipeOp>& ops, int micro_batches,
                                          PipelineStage& stage, comm::Communicator& pp_comm,
                                          const PipeRunOptions& options = {});

// Forward of every micro-batch through every chunk (ForwardOnlyOrder), with
// ForwardNoGrad: nothing is kept for a backward. Any micro_batches.
absl::StatusOr<PipeRunResult> ForwardOnly(int micro_batches, PipelineStage& stage,
                                          comm::Communicator& pp_comm,
                                          const PipeRunOptions& options = {});

}  // namespace ut::pipeline
