#include "parallel/comm/mpi_communicator.h"

#include <mpi.h>

#include <chrono>
#include <climits>
#include <thread>
#include <vector>

#include "core/base/logging.h"
#include "core/base/timer.h"

namespace ut::comm {

namespace {

MPI_Datatype ToMpi(ElemType t) {
  switch (t) {
    case ElemType::kF32: return MPI_FLOAT;
    case ElemType::kF64: return MPI_DOUBLE;
    case ElemType::kI32: return MPI_INT32_T;
    case ElemType::kI64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op ToMpi(ReduceOp op) { return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM; }

// After a kAvg reduction with MPI_SUM: divide by the group size.
void DivideInPlace(void* data, size_t count, ElemType t, int n) {
  switch (t) {
    case ElemType::kF32: for (size_t i = 0; i < count; ++i) static_cast<float*>(data)[i] /= n; break;
    case ElemType::kF64: for (size_t i = 0; i < count; ++i) static_cast<double*>(data)[i] /= n; break;
    case ElemType::kI32: for (size_t i = 0; i < count; ++i) static_cast<int32_t*>(data)[i] /= n; break;
    case ElemType::kI64: for (size_t i = 0; i < count; ++i) static_cast<int64_t*>(data)[i] /= n; break;
  }
}

class MpiCommunicator;

// A non-blocking MPI operation; Wait() polls it against the communicator's deadline.
class MpiRequest : public Request {
 public:
  MpiRequest(MpiCommunicator* comm, MPI_Request req, std::string op, size_t count,
             void* avg_data, ElemType t)
      : comm_(comm), req_(req), op_(std::move(op)), count_(count), avg_data_(avg_data), t_(t) {}
  ~MpiRequest() override {
    if (!done_) Wait().IgnoreError();
  }
  absl::Status Wait() override;
  absl::StatusOr<bool> Test() override;

 private:
  MpiCommunicator* comm_;
  MPI_Request req_;
  std::string op_;
  size_t count_;
  void* avg_data_;  // non-null: divide by the group size when done (kAvg)
  ElemType t_;
  bool done_ = false;
};

class MpiCommunicator : public Communicator {
  friend class MpiRequest;

 public:
  MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options)
      : comm_(comm), name_(std::move(name)), options_(options) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }
  ~MpiCommunicator() override {
    if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  absl::Status Barrier() override {
    MPI_Request req;
    RETURN_IF_ERROR(Check(MPI_Ibarrier(comm_, &req), "Barrier"));
    return Wait(&req, "Barrier", 0);
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key,
                                                      const std::string& name) override {
    MPI_Comm sub;
    RETURN_IF_ERROR(Check(MPI_Comm_split(comm_, color, key, &sub), "Split"));
    return std::unique_ptr<Communicator>(new MpiCommunicator(sub, name, options_));
  }

 protected:
  absl::Status AllReduceRaw(void* data, size_t count, ElemType t, ReduceOp op) override {
    Count(count, t);
    RETURN_IF_ERROR(FitsInt(count, "AllReduce"));
    MPI_Request req;
    RETURN_IF_ERROR(Check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), ToMpi(t),
                                         ToMpi(op), comm_, &req),
                          "AllReduce"));
    RETURN_IF_ERROR(Wait(&req, "AllReduce", count));
    if (op == ReduceOp::kAvg) DivideInPlace(data, count, t, size_);
    return absl::OkStatus();
  }

  absl::Status AllGatherRaw(const void* send, size_t send_count, void* recv, size_t recv_count,
                            ElemType t) override {
    Count(send_count, t);
    if (recv_count != send_count * size_) {
      return Mismatch("AllGather", absl::StrCat("recv has ", recv_count, " elements, expected ",
                                                send_count, " x ", size_, " ranks"));
    }
    RETURN_IF_ERROR(FitsInt(recv_count, "AllGather"));
    MPI_Request req;
    RETURN_IF_ERROR(Check(MPI_Iallgather(send, static_cast<int>(send_count), ToMpi(t), recv,
                                         static_cast<int>(send_count), ToMpi(t), comm_, &req),
                          "AllGather"));
    return Wait(&req, "AllGather", recv_count);
  }

  absl::Status AllGatherVRaw(const void* send, size_t send_count, void* recv, size_t recv_count,
                             std::span<const int64_t> counts, ElemType t) override {
    Count(send_count, t);
    if (counts.size() != static_cast<size_t>(size_)) {
      return Mismatch("AllGatherV", absl::StrCat(counts.size(), " counts for ", size_, " ranks"));
    }
    if (counts[rank_] != static_cast<int64_t>(send_count)) {
      return Mismatch("AllGatherV", absl::StrCat("counts[", rank_, "] = ", counts[rank_],
                                                 " but this rank sends ", send_count));
    }
    std::vector<int> icounts(size_), displs(size_);
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      RETURN_IF_ERROR(FitsInt(total + counts[r], "AllGatherV"));
      icounts[r] = static_cast<int>(counts[r]);
      displs[r] = static_cast<int>(total);
      total += counts[r];
    }
    if (static_cast<size_t>(total) != recv_count) {
      return Mismatch("AllGatherV", absl::StrCat("recv has ", recv_count,
                                                 " elements, counts sum to ", total));
    }
    MPI_Request req;
    RETURN_IF_ERROR(Check(MPI_Iallgatherv(send, static_cast<int>(send_count), ToMpi(t), recv,
                                          icounts.data(), displs.data(), ToMpi(t), comm_, &req),
                          "AllGatherV"));
    return Wait(&req, "AllGatherV", recv_count);
  }

  absl::Status ReduceScatterRaw(const void* send, size_t send_count, void* recv,
                                size_t recv_count, ElemType t, ReduceOp op) override {
    Count(send_count, t);
    if (send_count != recv_count * size_) {
      return Mismatch("ReduceScatter", absl::StrCat("send has ", send_count,
                                                    " elements, expected ", recv_count, " x ",
                                                    size_, " ranks"));
    }
    RETURN_IF_ERROR(FitsInt(send_count, "ReduceScatter"));
    MPI_Request req;
    RETURN_IF_ERROR(Check(MPI_Ireduce_scatter_block(send, recv, static_cast<int>(recv_count),
                                                    ToMpi(t), ToMpi(op), comm_, &req),
                          "ReduceScatter"));
    RETURN_IF_ERROR(Wait(&req, "ReduceScatter", send_count));
    if (op == ReduceOp::kAvg) DivideInPlace(recv, recv_count, t, size_);
    return absl::OkStatus();
  }

  absl::Status BroadcastRaw(void* data, size_t count, ElemType t, int root) override {
    Count(count, t);
    RETURN_IF_ERROR(FitsInt(count, "Broadcast"));
    MPI_Request req;
    RETURN_IF_ERROR(
        Check(MPI_Ibcast(data, static_cast<int>(count), ToMpi(t), root, comm_, &req), "Broadcast"));
    return Wait(&req, "Broadcast", count);
  }

  absl::Status SendRaw(const void* data, size_t count, ElemType t, int dst, int tag) override {
    Count(count, t);
    RETURN_IF_ERROR(FitsInt(count, "Send"));
    if (options_.verbose) LOG(INFO) << Where("Send") << " " << count << " elements to " << dst << " tag " << tag;
    MPI_Request req;
    RETURN_IF_ERROR(Check(
        MPI_Isend(data, static_cast<int>(count), ToMpi(t), dst, tag, comm_, &req), "Send"));
    return Wait(&req, absl::StrCat("Send to rank ", dst, " tag ", tag), count);
  }

  absl::Status RecvRaw(void* data, size_t count, ElemType t, int src, int tag) override {
    RETURN_IF_ERROR(FitsInt(count, "Recv"));
    if (options_.verbose) LOG(INFO) << Where("Recv") << " " << count << " elements from " << src << " tag " << tag;
    MPI_Request req;
    RETURN_IF_ERROR(Check(
        MPI_Irecv(data, static_cast<int>(count), ToMpi(t), src, tag, comm_, &req), "Recv"));
    return Wait(&req, absl::StrCat("Recv from rank ", src, " tag ", tag), count);
  }

  absl::StatusOr<std::unique_ptr<Request>> IAllReduceRaw(void* data, size_t count, ElemType t,
                                                         ReduceOp op) override {
    Count(count, t);
    RETURN_IF_ERROR(FitsInt(count, "IAllReduce"));
    MPI_Request req;
    RETURN_IF_ERROR(Check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), ToMpi(t),
                                         ToMpi(op), comm_, &req),
                          "IAllReduce"));
    if (options_.verbose) LOG(INFO) << Where("IAllReduce") << " (" << count << " elements) started";
    return std::unique_ptr<Request>(new MpiRequest(
        this, req, "IAllReduce", count, op == ReduceOp::kAvg ? data : nullptr, t));
  }

  absl::StatusOr<std::unique_ptr<Request>> ISendRaw(const void* data, size_t count, ElemType t,
                                                    int dst, int tag) override {
    Count(count, t);
    RETURN_IF_ERROR(FitsInt(count, "ISend"));
    if (options_.verbose) LOG(INFO) << Where("ISend") << " " << count << " elements to " << dst << " tag " << tag;
    MPI_Request req;
    RETURN_IF_ERROR(Check(
        MPI_Isend(data, static_cast<int>(count), ToMpi(t), dst, tag, comm_, &req), "ISend"));
    return std::unique_ptr<Request>(new MpiRequest(
        this, req, absl::StrCat("ISend to rank ", dst, " tag ", tag), count, nullptr, t));
  }

  absl::StatusOr<std::unique_ptr<Request>> IRecvRaw(void* data, size_t count, ElemType t, int src,
                                                    int tag) override {
    RETURN_IF_ERROR(FitsInt(count, "IRecv"));
    if (options_.verbose) LOG(INFO) << Where("IRecv") << " " << count << " elements from " << src << " tag " << tag;
    MPI_Request req;
    RETURN_IF_ERROR(Check(
        MPI_Irecv(data, static_cast<int>(count), ToMpi(t), src, tag, comm_, &req), "IRecv"));
    return std::unique_ptr<Request>(new MpiRequest(
        this, req, absl::StrCat("IRecv from rank ", src, " tag ", tag), count, nullptr, t));
  }

 private:
  std::string Where(const std::string& op) const {
    return absl::StrCat("rank ", world_rank_, " (", name_, " rank ", rank_, "/", size_, ") ", op);
  }

  absl::Status Check(int rc, const std::string& op) const {
    if (rc == MPI_SUCCESS) return absl::OkStatus();
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return absl::InternalError(absl::StrCat(Where(op), " failed: ", std::string(msg, len)));
  }

  absl::Status FitsInt(int64_t count, const std::string& op) const {
    if (count <= INT_MAX) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        Where(op), ": ", count, " elements exceed MPI's int count; split the buffer"));
  }

  absl::Status Mismatch(const std::string& op, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(Where(op), ": ", what));
  }

  // Polls `req` until done or the deadline passes.
  absl::Status Wait(MPI_Request* req, const std::string& op, size_t count) {
    if (options_.verbose) LOG(INFO) << Where(op) << " (" << count << " elements) started";
    Timer timer;
    int spins = 0;
    while (true) {
      int done = 0;
      RETURN_IF_ERROR(Check(MPI_Test(req, &done, MPI_STATUS_IGNORE), op));
      if (done) break;
      if (timer.Seconds() > options_.timeout_s) {
        std::string msg = absl::StrCat(
            Where(op), " (", count, " elements) did not finish within ", options_.timeout_s,
            " s: a peer rank in group '", name_,
            "' has probably died or is stuck; run with parallel verbose logging to see the last "
            "operation of every rank");
        if (options_.abort_on_timeout) {
          LOG(ERROR) << msg << ". Aborting the job.";
          MPI_Abort(MPI_COMM_WORLD, 3);
        }
        MPI_Cancel(req);
        MPI_Wait(req, MPI_STATUS_IGNORE);
        return absl::DeadlineExceededError(msg);
      }
      // Spin briefly, then back off so oversubscribed ranks leave the core.
      if (++spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (options_.verbose) LOG(INFO) << Where(op) << " done";
    return absl::OkStatus();
  }

  MPI_Comm comm_;
  std::string name_;
  CommOptions options_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
};

absl::Status MpiRequest::Wait() {
  if (done_) return absl::OkStatus();
  done_ = true;
  RETURN_IF_ERROR(comm_->Wait(&req_, op_, count_));
  if (avg_data_ != nullptr) DivideInPlace(avg_data_, count_, t_, comm_->size());
  return absl::OkStatus();
}

absl::StatusOr<bool> MpiRequest::Test() {
  if (done_) return true;
  int flag = 0;
  RETURN_IF_ERROR(comm_->Check(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE), op_));
  if (flag) {
    // MPI_Test freed the request; Wait() now only finishes the kAvg division.
    req_ = MPI_REQUEST_NULL;
  }
  return flag != 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Init(int* argc, char*** argv) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
    return absl::UnavailableError(
        "MPI_Init_thread failed: launch with mpirun/srun, or check the OpenMPI installation");
  }
  return std::unique_ptr<MpiRuntime>(new MpiRuntime());
}

MpiRuntime::~MpiRuntime() { MPI_Finalize(); }

std::unique_ptr<Communicator> MpiRuntime::World(const CommOptions& options) {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", options);
}

}  // namespace ut::comm
