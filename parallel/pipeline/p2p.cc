#include "parallel/pipeline/p2p.h"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/base/logging.h"

namespace ut::pipeline {
namespace {

constexpr int kTagBase = 1 << 20;  // clear of small hand-picked tags
constexpr int kMicroWrap = 2048, kChunkWrap = 128;

std::span<const int32_t> AsInts(const ActHeader& h) { return {&h.micro, 5}; }
std::span<int32_t> AsInts(ActHeader& h) { return {&h.micro, 5}; }
static_assert(sizeof(ActHeader) == 5 * sizeof(int32_t), "ActHeader must be 5 packed int32");

std::string Me(const comm::Communicator& comm) {
  return absl::StrCat("pipeline group '", comm.name(), "' rank ", comm.rank(), "/", comm.size());
}

}  // namespace

std::string HeaderString(const ActHeader& h) {
  return absl::StrCat("{micro ", h.micro, ", chunk ", h.chunk, ", B ", h.B, ", T ", h.T, ", C ",
                      h.C, "}");
}

const char* FlowName(Flow flow) {
  return flow == Flow::kForward ? "forward activation" : "backward gradient";
}

int ActivationTag(Flow flow, int micro, int chunk, bool payload) {
  const int code =
      (((micro % kMicroWrap) * kChunkWrap + chunk % kChunkWrap) * 2 + static_cast<int>(flow)) * 2 +
      (payload ? 1 : 0);
  return kTagBase + code;  // < 2^21, well inside OpenMPI's MPI_TAG_UB
}

bool PipeVerboseFromEnv() {
  static const bool verbose = [] {
    const char* v = std::getenv("UT_PP_VERBOSE");
    return v != nullptr && std::strcmp(v, "0") != 0 && *v != '\0';
  }();
  return verbose;
}

absl::Status PendingSend::Wait() {
  for (auto& r : requests_) RETURN_IF_ERROR(r->Wait());
  return absl::OkStatus();
}

absl::StatusOr<bool> PendingSend::Test() {
  for (auto& r : requests_) {
    ASSIGN_OR_RETURN(bool done, r->Test());
    if (!done) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<PendingSend>> SendActivation(comm::Communicator& comm, int dst,
                                                            Flow flow, const ActHeader& header,
                                                            std::span<const float> payload,
                                                            const P2pOptions& options) {
  CHECK_EQ(static_cast<int64_t>(payload.size()), header.numel())
      << "payload size does not match header " << HeaderString(header);
  if (options.verbose || PipeVerboseFromEnv()) {
    LOG(INFO) << Me(comm) << " send " << FlowName(flow) << " " << HeaderString(header)
              << " to rank " << dst;
  }
  auto send = std::make_unique<PendingSend>();
  send->header_ = std::make_unique<ActHeader>(header);
  send->payload_.assign(payload.begin(), payload.end());
  ASSIGN_OR_RETURN(auto h,
                   comm.ISend<int32_t>(AsInts(std::as_const(*send->header_)), dst,
                                       ActivationTag(flow, header.micro, header.chunk, false)));
  send->requests_.push_back(std::move(h));
  ASSIGN_OR_RETURN(auto p, comm.ISend(std::span<const float>(send->payload_), dst,
                                      ActivationTag(flow, header.micro, header.chunk, true)));
  send->requests_.push_back(std::move(p));
  return send;
}

absl::Status RecvActivation(comm::Communicator& comm, int src, Flow flow, const ActHeader& expected,
                            std::span<float> payload, const P2pOptions& options) {
  CHECK_EQ(static_cast<int64_t>(payload.size()), expected.numel())
      << "receive buffer does not match expected header " << HeaderString(expected);
  const bool verbose = options.verbose || PipeVerboseFromEnv();
  if (verbose) {
    LOG(INFO) << Me(comm) << " recv " << FlowName(flow) << " " << HeaderString(expected)
              << " from rank " << src << " ...";
  }
  ActHeader got;
  RETURN_IF_ERROR(
      comm.Recv(AsInts(got), src, ActivationTag(flow, expected.micro, expected.chunk, false)));
  if (!(got == expected)) {
    // Drain the payload the sender posted (its size is in its header) so the
    // channel stays clean and the sender's request completes.
    if (got.B >= 0 && got.T >= 0 && got.C >= 0 && got.numel() <= INT_MAX) {
      std::vector<float> sink(got.numel());
      comm.Recv(std::span<float>(sink), src, ActivationTag(flow, got.micro, got.chunk, true))
          .IgnoreError();
    }
    const std::string msg = absl::StrCat(
        "pipeline desync: ", Me(comm), " expected the ", FlowName(flow), " ",
        HeaderString(expected), " from rank ", src, " but rank ", src, " sent ", HeaderString(got),
        ". The stages disagree on the micro-batch (every rank must load the same micro-batches "
        "in the same order: same data config, seed and train.grad_accum) or on the schedule "
        "(same parallel.pp and parallel.virtual_stages everywhere). Rerun with UT_PP_VERBOSE=1 "
        "to log every pipeline send and receive");
    LOG(ERROR) << msg;
    return absl::FailedPreconditionError(msg);
  }
  RETURN_IF_ERROR(
      comm.Recv(payload, src, ActivationTag(flow, expected.micro, expected.chunk, true)));
  if (verbose) {
    LOG(INFO) << Me(comm) << " recv " << FlowName(flow) << " " << HeaderString(expected)
              << " from rank " << src << " done";
  }
  return absl::OkStatus();
}

}  // namespace ut::pipeline
