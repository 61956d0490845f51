#include "parallel/pipeline/executor.h"

#include <cmath>
#include <limits>
#include <list>
#include <memory>

#include "core/base/logging.h"
#include "core/base/timer.h"

namespace ut::pipeline {
namespace {

// Adds "where" to an error and logs it at once: pending sends are finished
// while unwinding, and with abort-on-timeout that may end the process before
// the caller sees the status.
absl::Status Annotate(const absl::Status& s, const comm::Communicator& comm, const PipeOp& op) {
  absl::Status out(s.code(),
                   absl::StrCat(s.message(), " [while running ", OpName(op, true),
                                " on pipeline stage ", comm.rank(), " of ", comm.size(), "]"));
  LOG(ERROR) << out.message();
  return out;
}

// Drops the sends that have completed (their copies are freed).
absl::Status Reap(std::list<std::unique_ptr<PendingSend>>& pending) {
  for (auto it = pending.begin(); it != pending.end();) {
    ASSIGN_OR_RETURN(bool done, (*it)->Test());
    it = done ? pending.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

// One op: receive its input (if it has a neighbour upstream in its flow),
// compute, send its result on. Returns the loss of a last-chunk forward.
absl::Status RunOp(const PipeOp& op, int num_model_chunks, bool forward_only, PipelineStage& stage,
                   comm::Communicator& comm, const P2pOptions& p2p, std::vector<float>& recv_buf,
                   std::list<std::unique_ptr<PendingSend>>& pending, const Timer& wall,
                   PipeRunResult& result) {
  const int p = comm.size(), s = comm.rank();
  const int prev = (s + p - 1) % p, next = (s + 1) % p;
  const int k = op.chunk, c = op.local_chunk, m = op.micro;
  ActHeader shape = stage.Shape(c, m);
  shape.micro = m;
  OpTiming timing{op};
  if (op.kind == PipeOp::kForward) {
    const float* in = nullptr;
    if (k > 0) {  // hidden states from chunk k-1 on the previous stage
      ActHeader expected = shape;
      expected.chunk = k - 1;
      recv_buf.resize(expected.numel());
      RETURN_IF_ERROR(RecvActivation(comm, prev, Flow::kForward, expected, recv_buf, p2p));
      in = recv_buf.data();
    }
    timing.start_s = wall.Seconds();
    const float loss = forward_only ? stage.ForwardNoGrad(c, m, in) : stage.Forward(c, m, in);
    timing.end_s = wall.Seconds();
    if (k == num_model_chunks - 1) {
      result.losses[m] = loss;
    } else {
      ActHeader header = shape;
      header.chunk = k;
      ASSIGN_OR_RETURN(auto send,
                       SendActivation(comm, next, Flow::kForward, header,
                                      {stage.Output(c, m), size_t(header.numel())}, p2p));
      pending.push_back(std::move(send));
    }
  } else {
    const float* dout = nullptr;
    if (k < num_model_chunks - 1) {  // gradient from chunk k+1 on the next stage
      ActHeader expected = shape;
      expected.chunk = k + 1;
      recv_buf.resize(expected.numel());
      RETURN_IF_ERROR(RecvActivation(comm, next, Flow::kBackward, expected, recv_buf, p2p));
      dout = recv_buf.data();
    }
    timing.start_s = wall.Seconds();
    stage.Backward(c, m, dout);
    timing.end_s = wall.Seconds();
    if (k > 0) {
      ActHeader header = shape;
      header.chunk = k;
      ASSIGN_OR_RETURN(auto send,
                       SendActivation(comm, prev, Flow::kBackward, header,
                                      {stage.InputGrad(c, m), size_t(header.numel())}, p2p));
      pending.push_back(std::move(send));
    }
  }
  result.busy_s += timing.end_s - timing.start_s;
  result.timeline.push_back(timing);
  return absl::OkStatus();
}

absl::StatusOr<PipeRunResult> Run(const std::vector<PipeOp>& ops, int micro_batches,
                                  bool forward_only, PipelineStage& stage, comm::Communicator& comm,
                                  const PipeRunOptions& options) {
  const int p = comm.size(), s = comm.rank(), v = stage.num_chunks();
  const int num_model_chunks = p * v;
  PipeRunResult result;
  result.losses.assign(micro_batches, std::numeric_limits<float>::quiet_NaN());
  result.timeline.reserve(ops.size());
  std::list<std::unique_ptr<PendingSend>> pending;
  std::vector<float> recv_buf;
  Timer wall;
  for (const PipeOp& op : ops) {
    CHECK(op.chunk % p == s && op.local_chunk == op.chunk / p && op.local_chunk < v)
        << OpName(op, true) << " is not a chunk of stage " << s << " (" << p << " stages, " << v
        << " chunks each)";
    CHECK(op.micro >= 0 && op.micro < micro_batches) << OpName(op, true);
    absl::Status st = Reap(pending);
    if (st.ok()) {
      st = RunOp(op, num_model_chunks, forward_only, stage, comm, options.p2p, recv_buf, pending,
                 wall, result);
    }
    if (!st.ok()) return Annotate(st, comm, op);
  }
  for (auto& send : pending) {
    absl::Status st = send->Wait();
    if (!st.ok()) {
      LOG(ERROR) << st.message();
      return st;
    }
  }
  result.wall_s = wall.Seconds();
  return result;
}

}  // namespace

absl::StatusOr<PipeRunResult> RunSchedule(const std::vector<PipeOp>& ops, int micro_batches,
                                          PipelineStage& stage, comm::Communicator& pp_comm,
                                          const PipeRunOptions& options) {
  stage.SetNumSlots(std::max(1, MaxInFlightPerChunk(ops)));
  return Run(ops, micro_batches, /*forward_only=*/false, stage, pp_comm, options);
}

absl::StatusOr<double> GroupBubbleFraction(const PipeRunResult& result,
                                           comm::Communicator& pp_comm) {
  std::vector<double> busy = {result.busy_s}, wall = {result.wall_s};
  RETURN_IF_ERROR(pp_comm.AllReduce(std::span<double>(busy), comm::ReduceOp::kSum));
  RETURN_IF_ERROR(pp_comm.AllReduce(std::span<double>(wall), comm::ReduceOp::kMax));
  return wall[0] > 0 ? 1.0 - busy[0] / (pp_comm.size() * wall[0]) : 0.0;
}

absl::StatusOr<PipeRunResult> ForwardOnly(int micro_batches, PipelineStage& stage,
                                          comm::Communicator& pp_comm,
                                          const PipeRunOptions& options) {
  const auto ops =
      ForwardOnlyOrder(pp_comm.size(), pp_comm.rank(), micro_batches, stage.num_chunks());
  return Run(ops, micro_batches, /*forward_only=*/true, stage, pp_comm, options);
}

}  // namespace ut::pipeline
