#include "parallel/pipeline/schedule.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/str_format.h"
#include "core/base/logging.h"

namespace ut::pipeline {
namespace {

void CheckArgs(int stages, int stage, int micro_batches, int virtual_stages) {
  CHECK_GE(stages, 1);
  CHECK(stage >= 0 && stage < stages) << "stage " << stage << " of " << stages;
  CHECK_GE(micro_batches, 1);
  CHECK_GE(virtual_stages, 1);
}

PipeOp MakeOp(PipeOp::Kind kind, int micro, int local_chunk, int stages, int stage) {
  return {kind, micro, local_chunk * stages + stage, local_chunk};
}

// Interleaved order of the i-th forward (or backward) pass of a stage: passes
// go in groups of `stages` micro-batches, chunk by chunk; backwards visit the
// chunks last to first. i in [0, M*v).
PipeOp InterleavedOp(int i, bool forward, int stages, int stage, int virtual_stages) {
  const int group_size = stages * virtual_stages;
  int local_chunk = (i % group_size) / stages;
  if (!forward) local_chunk = virtual_stages - 1 - local_chunk;
  const int micro = (i / group_size) * stages + i % stages;
  return MakeOp(forward ? PipeOp::kForward : PipeOp::kBackward, micro, local_chunk, stages, stage);
}

int InterleavedWarmup(int stages, int stage, int micro_batches, int virtual_stages) {
  const int warmup = (stages - stage - 1) * 2 + (virtual_stages - 1) * stages;
  return std::min(warmup, micro_batches * virtual_stages);
}

}  // namespace

std::string OpName(const PipeOp& op, bool with_chunk) {
  std::string name = absl::StrCat(op.kind == PipeOp::kForward ? "F" : "B", op.micro);
  if (with_chunk) absl::StrAppend(&name, ".", op.chunk);
  return name;
}

// Stage s of p, M micro-batches: warm-up w = min(p-s-1, M) forwards, then
// M-w (forward, backward) pairs, then w backwards.
std::vector<PipeOp> OneFOneB(int stages, int stage, int micro_batches) {
  CheckArgs(stages, stage, micro_batches, 1);
  std::vector<PipeOp> ops;
  ops.reserve(2 * micro_batches);
  const int warmup = std::min(stages - stage - 1, micro_batches);
  const int steady = micro_batches - warmup;
  // Warm-up.
  for (int m = 0; m < warmup; ++m) ops.push_back(MakeOp(PipeOp::kForward, m, 0, stages, stage));
  // Steady state: forward micro warmup+i, then backward micro i.
  for (int i = 0; i < steady; ++i) {
    ops.push_back(MakeOp(PipeOp::kForward, warmup + i, 0, stages, stage));
    ops.push_back(MakeOp(PipeOp::kBackward, i, 0, stages, stage));
  }
  // Cool-down.
  for (int m = steady; m < micro_batches; ++m) {
    ops.push_back(MakeOp(PipeOp::kBackward, m, 0, stages, stage));
  }
  return ops;
}

// Megatron's forward_backward_pipelining_with_interleaving, op list only:
// total = M*v passes each way; warm-up forwards, then (forward, backward)
// pairs, then the cool-down backwards.
absl::StatusOr<std::vector<PipeOp>> Interleaved(int stages, int stage, int micro_batches,
                                                int virtual_stages) {
  CheckArgs(stages, stage, micro_batches, virtual_stages);
  if (virtual_stages == 1) return OneFOneB(stages, stage, micro_batches);
  if (micro_batches % stages != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interleaved pipeline schedule (parallel.virtual_stages = ", virtual_stages,
        ") needs the micro-batches per step (train.grad_accum = ", micro_batches,
        ") to be a multiple of the pipeline stages (parallel.pp = ", stages,
        "): set train.grad_accum to a multiple of ", stages, " or parallel.virtual_stages = 1"));
  }
  const int total = micro_batches * virtual_stages;
  const int warmup = InterleavedWarmup(stages, stage, micro_batches, virtual_stages);
  const int steady = total - warmup;
  std::vector<PipeOp> ops;
  ops.reserve(2 * total);
  // Warm-up.
  for (int i = 0; i < warmup; ++i) {
    ops.push_back(InterleavedOp(i, true, stages, stage, virtual_stages));
  }
  // Steady state.
  for (int i = 0; i < steady; ++i) {
    ops.push_back(InterleavedOp(warmup + i, true, stages, stage, virtual_stages));
    ops.push_back(InterleavedOp(i, false, stages, stage, virtual_stages));
  }
  // Cool-down.
  for (int i = steady; i < total; ++i) {
    ops.push_back(InterleavedOp(i, false, stages, stage, virtual_stages));
  }
  return ops;
}

// Groups of `stages` micro-batches (the last one may be short); within a
// group, chunk by chunk. Forward (m, k) needs (m, k-1), which comes earlier
// in the same order on its stage, so every stage's list is consistent.
std::vector<PipeOp> ForwardOnlyOrder(int stages, int stage, int micro_batches, int virtual_stages) {
  CheckArgs(stages, stage, micro_batches, virtual_stages);
  std::vector<PipeOp> ops;
  ops.reserve(micro_batches * virtual_stages);
  for (int first = 0; first < micro_batches; first += stages) {
    const int last = std::min(first + stages, micro_batches);
    for (int c = 0; c < virtual_stages; ++c) {
      for (int m = first; m < last; ++m) {
        ops.push_back(MakeOp(PipeOp::kForward, m, c, stages, stage));
      }
    }
  }
  return ops;
}

int InFlightLimit(int stages, int stage, int micro_batches, int virtual_stages) {
  CheckArgs(stages, stage, micro_batches, virtual_stages);
  if (virtual_stages == 1) return std::min(stages - stage, micro_batches);
  return std::min(InterleavedWarmup(stages, stage, micro_batches, virtual_stages) + 1,
                  micro_batches * virtual_stages);
}

namespace {
// Walks the list keeping the (micro, chunk) passes in flight; returns the
// peak count over all chunks (per_chunk = false) or over any single chunk.
int PeakInFlight(const std::vector<PipeOp>& ops, bool per_chunk) {
  std::map<std::pair<int, int>, bool> live;  // (chunk, micro) -> in flight
  std::map<int, int> count_of_chunk;
  int total = 0, peak = 0;
  for (const PipeOp& op : ops) {
    const auto key = std::make_pair(op.chunk, op.micro);
    if (op.kind == PipeOp::kForward) {
      CHECK(!live.count(key)) << "forward " << OpName(op, true) << " runs twice";
      live[key] = true;
      ++total;
      ++count_of_chunk[op.chunk];
    } else {
      CHECK(live.count(key)) << "backward " << OpName(op, true) << " before its forward";
      live.erase(key);
      --total;
      --count_of_chunk[op.chunk];
    }
    peak = std::max(peak, per_chunk ? count_of_chunk[op.chunk] : total);
  }
  return peak;
}
}  // namespace

int MaxInFlight(const std::vector<PipeOp>& ops) { return PeakInFlight(ops, false); }
int MaxInFlightPerChunk(const std::vector<PipeOp>& ops) { return PeakInFlight(ops, true); }

double BubbleClosedForm(int stages, int micro_batches, int virtual_stages) {
  const double p = stages;
  return (p - 1) / (virtual_stages * static_cast<double>(micro_batches) + p - 1);
}

// List scheduling: sweep the stages, running each stage's next ops while
// their inputs exist, until nothing moves. Start times are exact (each op
// waits for max(stage free, inputs done)), independent of the sweep order.
absl::StatusOr<SimResult> SimulateBubble(const std::vector<std::vector<PipeOp>>& ops_per_stage,
                                         int num_model_chunks, double forward_time,
                                         double backward_time) {
  const int stages = static_cast<int>(ops_per_stage.size());
  CHECK_GE(stages, 1);
  SimResult sim;
  sim.busy.assign(stages, 0);
  sim.start.resize(stages);
  std::vector<double> clock(stages, 0);
  std::vector<size_t> next(stages, 0);
  // (kind, micro, chunk) -> finish time.
  std::map<std::tuple<int, int, int>, double> finish;
  auto done_at = [&](PipeOp::Kind kind, int micro, int chunk) -> const double* {
    auto it = finish.find({kind, micro, chunk});
    return it == finish.end() ? nullptr : &it->second;
  };
  bool moved = true;
  while (moved) {
    moved = false;
    for (int s = 0; s < stages; ++s) {
      while (next[s] < ops_per_stage[s].size()) {
        const PipeOp& op = ops_per_stage[s][next[s]];
        CHECK_EQ(op.chunk % stages, s) << OpName(op, true) << " listed on the wrong stage";
        double ready = clock[s];
        const double* dep = nullptr;
        bool has_dep = true;
        if (op.kind == PipeOp::kForward) {
          has_dep = op.chunk > 0;
          if (has_dep) dep = done_at(PipeOp::kForward, op.micro, op.chunk - 1);
        } else if (op.chunk < num_model_chunks - 1) {
          dep = done_at(PipeOp::kBackward, op.micro, op.chunk + 1);
        } else {
          dep = done_at(PipeOp::kForward, op.micro, op.chunk);
        }
        if (has_dep && dep == nullptr) break;  // input not there yet
        if (has_dep) ready = std::max(ready, *dep);
        const double t = op.kind == PipeOp::kForward ? forward_time : backward_time;
        sim.start[s].push_back(ready);
        clock[s] = ready + t;
        sim.busy[s] += t;
        finish[{op.kind, op.micro, op.chunk}] = clock[s];
        ++next[s];
        moved = true;
      }
    }
  }
  std::string stuck;
  for (int s = 0; s < stages; ++s) {
    if (next[s] < ops_per_stage[s].size()) {
      absl::StrAppend(&stuck, " stage ", s, " waits at op ", next[s], " (",
                      OpName(ops_per_stage[s][next[s]], true), ");");
    }
  }
  if (!stuck.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("pipeline schedule deadlocks:", stuck,
                     " each of these needs an op that a stuck stage runs later"));
  }
  sim.makespan = *std::max_element(clock.begin(), clock.end());
  double idle = 0;
  for (int s = 0; s < stages; ++s) idle += sim.makespan - sim.busy[s];
  sim.bubble_fraction = sim.makespan > 0 ? idle / (stages * sim.makespan) : 0;
  return sim;
}

absl::StatusOr<SimResult> SimulateSchedule(int stages, int micro_batches, int virtual_stages,
                                           double forward_time, double backward_time) {
  std::vector<std::vector<PipeOp>> lists;
  for (int s = 0; s < stages; ++s) {
    ASSIGN_OR_RETURN(auto ops, Interleaved(stages, s, micro_batches, virtual_stages));
    lists.push_back(std::move(ops));
  }
  return SimulateBubble(lists, stages * virtual_stages, forward_time, backward_time);
}

std::string FormatTimeline(const std::vector<std::vector<PipeOp>>& ops_per_stage,
                           const SimResult& sim, double forward_time, double backward_time,
                           bool with_chunk) {
  const int units = static_cast<int>(std::lround(sim.makespan));
  size_t width = 2;
  for (const auto& ops : ops_per_stage) {
    for (const PipeOp& op : ops) width = std::max(width, OpName(op, with_chunk).size());
  }
  std::string out;
  for (size_t s = 0; s < ops_per_stage.size(); ++s) {
    std::vector<std::string> cells(units, ".");
    for (size_t i = 0; i < ops_per_stage[s].size(); ++i) {
      const PipeOp& op = ops_per_stage[s][i];
      const int begin = static_cast<int>(std::lround(sim.start[s][i]));
      const int len =
          static_cast<int>(std::lround(op.kind == PipeOp::kForward ? forward_time : backward_time));
      for (int u = begin; u < begin + len && u < units; ++u) cells[u] = OpName(op, with_chunk);
    }
    absl::StrAppend(&out, "stage ", s, " |");
    for (const std::string& c : cells) {
      absl::StrAppend(&out, " ", c, std::string(width - c.size(), ' '));
    }
    out.erase(out.find_last_not_of(' ') + 1);
    out += "\n";
  }
  return out;
}

}  // namespace ut::pipeline
