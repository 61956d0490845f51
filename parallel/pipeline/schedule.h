// Pipeline schedules: the ordered list of forward and backward passes one
// pipeline stage runs in a training step, plus a discrete-event simulator that
// runs every stage's list against the data dependencies and measures the
// bubble (idle fraction).
//
// Model chunks. The decoder is cut into K = stages * virtual_stages chunks;
// chunk k runs on stage k % stages, where it is local chunk k / stages.
// Without interleaving (virtual_stages = 1) chunk k is simply stage k.
//
// 1F1B (PipeDream-Flush; Megatron's non-interleaved schedule; picotron's
// "1f1b"). A stage runs three phases:
//   warm-up:      min(stages - stage - 1, M) forwards, filling the pipe;
//   steady state: alternately one forward and one backward (1F1B);
//   cool-down:    the remaining backwards, draining the pipe.
// At most stages - stage micro-batches are in flight (forwarded, not yet
// backwarded) on a stage, instead of all M as in GPipe.
//
// Timeline, 4 stages, 8 micro-batches, forward and backward one unit each
// (FormatTimeline of SimulateBubble; digit = micro-batch, '.' = idle):
//
//   stage 0 | F0 F1 F2 F3 .  .  .  B0 F4 B1 F5 B2 F6 B3 F7 B4 .  B5 .  B6 .  B7
//   stage 1 | .  F0 F1 F2 .  .  B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 .  B6 .  B7 .
//   stage 2 | .  .  F0 F1 .  B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 .  B7 .  .
//   stage 3 | .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 .  .  .
//
// Every stage is idle 2(p-1) of the 2(m+p-1) units: bubble (p-1)/(m+p-1) =
// 3/11 here.
//
// Interleaved 1F1B (Megatron-LM, Narayanan et al. 2021, "Efficient
// large-scale language model training on GPU clusters"). Each stage holds
// virtual_stages chunks; forwards go through micro-batches in groups of
// `stages`: chunk 0's pass for micro-batches 0..p-1, then chunk 1's pass for
// the same group, ..., then the next group. Backwards mirror it, last chunk
// first. Warm-up is (stages - stage - 1) * 2 + (virtual_stages - 1) * stages
// forwards (capped at M * virtual_stages). The bubble shrinks by v:
// (p-1)/(v*m+p-1). Requires M % stages == 0, as Megatron does.
#pragma once

#include <string>
#include <vector>

#include "core/base/status.h"

namespace ut::pipeline {

struct PipeOp {
  enum Kind { kForward, kBackward };
  Kind kind;
  int micro;        // micro-batch index within the step, 0..M-1
  int chunk;        // model chunk k, 0..stages*virtual_stages-1, runs on stage k % stages
  int local_chunk;  // k / stages: which of this stage's chunks
  bool operator==(const PipeOp&) const = default;
};

// "F3", "B3" (1F1B) or "F3.1" (micro 3, model chunk 1) when `with_chunk`.
std::string OpName(const PipeOp& op, bool with_chunk = false);

// The 1F1B op list of `stage` (0-based) of `stages`, for M micro-batches.
// Arguments must be in range (CHECK).
std::vector<PipeOp> OneFOneB(int stages, int stage, int micro_batches);

// Megatron's interleaved 1F1B. virtual_stages == 1 gives OneFOneB. Errors
// (InvalidArgument) when virtual_stages > 1 and micro_batches % stages != 0.
absl::StatusOr<std::vector<PipeOp>> Interleaved(int stages, int stage, int micro_batches,
                                                int virtual_stages);

// Forwards only, in interleaved order (groups of `stages` micro-batches, chunk
// by chunk; the last group may be short, so any M works): for forward-only
// passes such as embedding every micro-batch for the gradient-cache L_d pool.
std::vector<PipeOp> ForwardOnlyOrder(int stages, int stage, int micro_batches, int virtual_stages);

// What a schedule promises: the most micro-batch passes a stage holds in
// flight (forwarded, backward not yet run), over all its chunks.
// 1F1B: min(stages - stage, M); interleaved: min(warm-up + 1, M * v).
int InFlightLimit(int stages, int stage, int micro_batches, int virtual_stages);

// Measured on an op list: the most passes in flight at once, over all local
// chunks together, and the most for any single local chunk (the activation
// slots a chunk needs). Both CHECK that every backward follows its forward.
int MaxInFlight(const std::vector<PipeOp>& ops);
int MaxInFlightPerChunk(const std::vector<PipeOp>& ops);

// The closed-form bubble fraction (idle time / wall time) of 1F1B with
// v = 1 and of interleaved 1F1B with v chunks per stage: (p-1)/(v*m+p-1).
double BubbleClosedForm(int stages, int micro_batches, int virtual_stages);

// Discrete-event simulation of one step. Each stage runs its list in order;
// an op starts when the stage is free and its inputs exist:
//   forward (m, k) needs forward (m, k-1) (k > 0);
//   backward (m, k) needs backward (m, k+1), or forward (m, K-1) on the last chunk.
// Sends are free and buffered (as in the executor, which copies what it sends),
// so an op list deadlocks exactly when the simulation gets stuck.
struct SimResult {
  double makespan = 0;                     // time when the last op ends
  std::vector<double> busy;                // [stages] compute time per stage
  std::vector<std::vector<double>> start;  // [stages][op] start time of each op
  double bubble_fraction = 0;              // sum(makespan - busy) / (stages * makespan)
};
// ops_per_stage[s] is stage s's list; num_model_chunks = stages * virtual_stages.
// A forward takes forward_time, a backward backward_time. Errors
// (FailedPrecondition) on deadlock, naming each stuck stage's next op.
absl::StatusOr<SimResult> SimulateBubble(const std::vector<std::vector<PipeOp>>& ops_per_stage,
                                         int num_model_chunks, double forward_time,
                                         double backward_time);

// Convenience: build every stage's Interleaved list and simulate it.
absl::StatusOr<SimResult> SimulateSchedule(int stages, int micro_batches, int virtual_stages,
                                           double forward_time, double backward_time);

// ASCII timeline (one row per stage, one column per time unit, as above) of a
// simulation whose op times are whole numbers of units.
std::string FormatTimeline(const std::vector<std::vector<PipeOp>>& ops_per_stage,
                           const SimResult& sim, double forward_time, double backward_time,
                           bool with_chunk = false);

}  // namespace ut::pipeline
