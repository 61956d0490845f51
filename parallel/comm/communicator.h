// Communicator: the collectives the engine uses, typed and counted in
// elements (never bytes). Backends: MPI on CPU buffers (mpi_communicator.h);
// NCCL on GPU buffers later, behind the same interface.
//
// Every blocking call has a deadline (CommOptions::timeout_s). A call that
// does not finish in time logs which rank, which group and which operation,
// then either aborts the whole job (default: the only safe thing once a peer
// is gone) or returns DeadlineExceeded (for tests).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/base/status.h"

namespace ut::comm {

enum class ReduceOp { kSum, kAvg, kMax };

// Element types a collective may carry.
enum class ElemType { kF32, kF64, kI32, kI64 };
template <typename T> constexpr ElemType ElemTypeOf();
template <> constexpr ElemType ElemTypeOf<float>() { return ElemType::kF32; }
template <> constexpr ElemType ElemTypeOf<double>() { return ElemType::kF64; }
template <> constexpr ElemType ElemTypeOf<int32_t>() { return ElemType::kI32; }
template <> constexpr ElemType ElemTypeOf<int64_t>() { return ElemType::kI64; }
size_t ElemSize(ElemType t);

struct CommOptions {
  double timeout_s = 300;      // per blocking call
  bool abort_on_timeout = true;
  bool verbose = false;        // log every send/recv/collective (deadlock hunting)
};

// A started non-blocking operation. Wait() finishes it under the same deadline
// as a blocking call (and, for kAvg, divides by the group size); Test() makes
// progress and says whether Wait() would return at once. The buffers given to
// the I* call must stay alive and untouched until Wait() returns. Destroying
// an unfinished Request waits for it (a Request is never leaked in flight).
class Request {
 public:
  virtual ~Request() = default;
  virtual absl::Status Wait() = 0;
  virtual absl::StatusOr<bool> Test() = 0;
};

// What this rank has put into a group's operations since the last reset:
// calls, and payload bytes (the buffer this rank contributes: the whole buffer
// of an all-reduce or broadcast, its own block of a gather, the full input of
// a reduce-scatter, what it sends point-to-point; receives are counted by the
// sender). bench/parallel_bench reports them per group and step.
struct CommStats {
  int64_t calls = 0;
  int64_t bytes = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  const CommStats& stats() const { return stats_; }
  void ResetStats() { stats_ = {}; }

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Group name used in messages, e.g. "world", "tp[pp=0,dp=1]".
  virtual const std::string& name() const = 0;

  // In place: every rank ends with op over all ranks' data.
  template <typename T> absl::Status AllReduce(std::span<T> data, ReduceOp op) {
    return AllReduceRaw(data.data(), data.size(), ElemTypeOf<T>(), op);
  }
  // recv.size() == send.size() * size(); rank r's block lands at r * send.size().
  template <typename T> absl::Status AllGather(std::span<const T> send, std::span<T> recv) {
    return AllGatherRaw(send.data(), send.size(), recv.data(), recv.size(), ElemTypeOf<T>());
  }
  // Variable counts: counts[r] elements from rank r, packed in rank order;
  // recv.size() == sum(counts); counts.size() == size().
  template <typename T>
  absl::Status AllGatherV(std::span<const T> send, std::span<T> recv,
                          std::span<const int64_t> counts) {
    return AllGatherVRaw(send.data(), send.size(), recv.data(), recv.size(), counts,
                         ElemTypeOf<T>());
  }
  // send.size() == recv.size() * size(); rank r receives op over block r.
  template <typename T>
  absl::Status ReduceScatter(std::span<const T> send, std::span<T> recv, ReduceOp op) {
    return ReduceScatterRaw(send.data(), send.size(), recv.data(), recv.size(), ElemTypeOf<T>(),
                            op);
  }
  template <typename T> absl::Status Broadcast(std::span<T> data, int root) {
    return BroadcastRaw(data.data(), data.size(), ElemTypeOf<T>(), root);
  }
  template <typename T> absl::Status Send(std::span<const T> data, int dst, int tag) {
    return SendRaw(data.data(), data.size(), ElemTypeOf<T>(), dst, tag);
  }
  template <typename T> absl::Status Recv(std::span<T> data, int src, int tag) {
    return RecvRaw(data.data(), data.size(), ElemTypeOf<T>(), src, tag);
  }
  virtual absl::Status Barrier() = 0;

  // Non-blocking forms (overlap with compute: DP gradient buckets, pipeline
  // send/recv pairs that must not wait on each other).
  template <typename T>
  absl::StatusOr<std::unique_ptr<Request>> IAllReduce(std::span<T> data, ReduceOp op) {
    return IAllReduceRaw(data.data(), data.size(), ElemTypeOf<T>(), op);
  }
  template <typename T>
  absl::StatusOr<std::unique_ptr<Request>> ISend(std::span<const T> data, int dst, int tag) {
    return ISendRaw(data.data(), data.size(), ElemTypeOf<T>(), dst, tag);
  }
  template <typename T>
  absl::StatusOr<std::unique_ptr<Request>> IRecv(std::span<T> data, int src, int tag) {
    return IRecvRaw(data.data(), data.size(), ElemTypeOf<T>(), src, tag);
  }

  // Ranks with the same color form a new group, ordered by key.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                              const std::string& name) = 0;

 protected:
  void Count(size_t count, ElemType t) {
    ++stats_.calls;
    stats_.bytes += static_cast<int64_t>(count * ElemSize(t));
  }
  CommStats stats_;

  virtual absl::Status AllReduceRaw(void* data, size_t count, ElemType t, ReduceOp op) = 0;
  virtual absl::Status AllGatherRaw(const void* send, size_t send_count, void* recv,
                                    size_t recv_count, ElemType t) = 0;
  virtual absl::Status AllGatherVRaw(const void* send, size_t send_count, void* recv,
                                     size_t recv_count, std::span<const int64_t> counts,
                                     ElemType t) = 0;
  virtual absl::Status ReduceScatterRaw(const void* send, size_t send_count, void* recv,
                                        size_t recv_count, ElemType t, ReduceOp op) = 0;
  virtual absl::Status BroadcastRaw(void* data, size_t count, ElemType t, int root) = 0;
  virtual absl::Status SendRaw(const void* data, size_t count, ElemType t, int dst, int tag) = 0;
  virtual absl::Status RecvRaw(void* data, size_t count, ElemType t, int src, int tag) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> IAllReduceRaw(void* data, size_t count,
                                                                 ElemType t, ReduceOp op) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> ISendRaw(const void* data, size_t count,
                                                            ElemType t, int dst, int tag) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> IRecvRaw(void* data, size_t count, ElemType t,
                                                            int src, int tag) = 0;
};

}  // namespace ut::comm
