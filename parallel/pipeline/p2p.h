// Activation transport between pipeline stages over the PP-group
// Communicator (group rank = stage).
//
// A message is a shape header {micro, chunk, B, T, C} followed by the payload
// [B*T*C floats]: forward activations flow to the next stage, backward
// gradients to the previous one. Sequence lengths vary per micro-batch
// (images expand to visual tokens), and every stage runs the loader itself,
// so the receiver knows what it expects and checks the header against it: a
// mismatch means the ranks disagree on the data or the schedule (a desync)
// and is reported naming both headers and both ranks, never waited out.
//
// Deadlock freedom: sends never block (ISend on an owned copy of the data,
// waited later), so a stage only ever waits on a receive. A stage then waits
// only for an op its peer runs earlier in its own list, which the schedule
// simulator (schedule.h) checks is always possible. Receives block under the
// Communicator's deadline, so a wrong schedule ends in a message, not a hang.
//
// Tags encode (flow, micro, chunk, header/payload). MPI keeps messages
// between two ranks with the same tag in order, and passes in flight are few,
// so the tag only needs to be unique among those (it wraps at 2048 micro-
// batches and 128 chunks).
//
// Verbose (P2pOptions::verbose, or UT_PP_VERBOSE=1 in the environment): every
// send and receive logs group, rank, peer, flow, micro, chunk and shape; the
// last line of each rank shows where a stuck pipeline waits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "parallel/comm/communicator.h"

namespace ut::pipeline {

// What crosses a stage boundary: hidden states (forward) or their gradient
// (backward) of one micro-batch, [B, T, C]. `chunk` is the model chunk that
// produced the tensor (its output, or its input gradient).
struct ActHeader {
  int32_t micro = 0, chunk = 0, B = 0, T = 0, C = 0;
  int64_t numel() const { return int64_t{B} * T * C; }
  bool operator==(const ActHeader&) const = default;
};
std::string HeaderString(const ActHeader& h);  // "{micro 1, chunk 0, B 2, T 7, C 16}"

enum class Flow { kForward = 0, kBackward = 1 };  // activations / activation gradients
const char* FlowName(Flow flow);                  // "forward activation" / "backward gradient"

// Tag of a header (payload = false) or payload message.
int ActivationTag(Flow flow, int micro, int chunk, bool payload);

struct P2pOptions {
  bool verbose = false;  // also on when UT_PP_VERBOSE=1
};
// The env switch (read once). The one place below launch/ that reads the
// environment: a debugging aid, so it works without plumbing a flag through.
bool PipeVerboseFromEnv();

// A send in flight. Owns copies of header and payload, so the caller may
// reuse or free its buffer as soon as SendActivation returns.
class PendingSend {
 public:
  absl::Status Wait();          // finishes both messages under the comm deadline
  absl::StatusOr<bool> Test();  // true when Wait() would return at once
  const ActHeader& header() const { return *header_; }

 private:
  friend absl::StatusOr<std::unique_ptr<PendingSend>> SendActivation(comm::Communicator&, int, Flow,
                                                                     const ActHeader&,
                                                                     std::span<const float>,
                                                                     const P2pOptions&);
  std::unique_ptr<ActHeader> header_;  // stable address for the ISend
  std::vector<float> payload_;
  std::vector<std::unique_ptr<comm::Request>> requests_;
};

// Posts the header, then the payload (payload.size() == header.numel()),
// to group rank `dst`.
absl::StatusOr<std::unique_ptr<PendingSend>> SendActivation(comm::Communicator& comm, int dst,
                                                            Flow flow, const ActHeader& header,
                                                            std::span<const float> payload,
                                                            const P2pOptions& options);

// Receives the header from group rank `src`, checks it equals `expected`
// (FailedPrecondition "pipeline desync ..." otherwise, after draining the
// payload so the channel stays clean), then the payload into `payload`
// (size expected.numel()).
absl::Status RecvActivation(comm::Communicator& comm, int src, Flow flow, const ActHeader& expected,
                            std::span<float> payload, const P2pOptions& options);

}  // namespace ut::pipeline
