// Bucketed, overlapped data-parallel gradient all-reduce (average).
//
// The flat gradient buffer grads [n] is tiled into buckets of bucket_floats
// from the END backwards (backward produces the last parameters first):
//
//   bucket 0 = [n - B, n), bucket 1 = [n - 2B, n - B), ..., the last one
//   starts at 0 and may be shorter (B need not divide n).
//
// The model's grad-ready callback calls OnReady(begin, end) when the
// gradient of [begin, end) is final for this step. When a bucket is fully
// marked its IAllReduce(kAvg) starts at once, overlapping the rest of the
// backward. Buckets always START in bucket order 0, 1, 2, ... (a bucket that
// is complete early waits for its predecessors), whatever order OnReady is
// called in: MPI requires every rank to start collectives on a communicator
// in the same order, and this makes that hold even if ranks mark ranges in
// different orders. Every OnReady also Test()s the requests in flight so MPI
// makes progress while the backward computes.
//
// Per step:
//   reducer.Reset();                     // or after construction
//   for m in 0..A-1: reducer.Arm(m == A-1); forward; backward (-> OnReady)
//   RETURN_IF_ERROR(reducer.Finish());   // starts what is left, waits all
// Gradient accumulation: only the last micro-batch's backward is armed (the
// earlier ones just accumulate with +=; an unarmed OnReady does nothing).
// Finish() reduces every bucket, marked or not, so a step is always fully
// averaged even if no callback is wired.
//
// With a 1-rank group there is nothing to average: OnReady and Finish do no
// communication and count no bytes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "core/base/status.h"
#include "parallel/comm/communicator.h"

namespace ut::dp {

struct ReducerStepStats {
  int buckets = 0;                 // reduced this step
  int started_before_finish = 0;   // of those, started by OnReady (overlapped)
  int done_before_finish = 0;      // ... and already complete when Finish() began
  int64_t bytes = 0;               // payload all-reduced: 4 * floats (a ring sends ~2x this)
  double finish_wait_s = 0;        // time inside Finish(): the communication not hidden
};

class GradReducer {
 public:
  // dp: the data-parallel group (not owned). grads [n] (not owned) must stay
  // alive. bucket_floats >= 1 (from parallel.bucket_mb: MiB * 2^20 / 4).
  // verbose: LOG(INFO) each bucket start and finish (else VLOG(1)).
  GradReducer(comm::Communicator* dp, float* grads, int64_t n, int64_t bucket_floats,
              bool verbose = false);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Whether OnReady reacts (default true; Reset leaves it as it is).
  void Arm(bool armed) { armed_ = armed; }
  bool armed() const { return armed_; }

  // grads[begin, end) is final for this step. Ranges may span buckets; a
  // float marked twice in one step is a programmer error (CHECK). An error
  // from the communicator is kept and returned by Finish().
  void OnReady(int64_t begin, int64_t end);

  // Starts every bucket not yet started (in order), waits for all; after it
  // grads [n] holds the DP average. Returns the first error of the step.
  absl::Status Finish();

  // Forget this step's marks and stats (call before the next step).
  void Reset();

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // [begin, end) of bucket b (b = 0 is the end of the buffer).
  int64_t bucket_begin(int b) const { return buckets_[b].begin; }
  int64_t bucket_end(int b) const { return buckets_[b].end; }
  int buckets_started() const { return next_to_start_; }  // this step, so far
  int buckets_done() const;                                 // this step, so far
  const ReducerStepStats& last_step() const { return last_; }  // filled by Finish()
  int64_t total_bytes() const { return total_bytes_; }          // since construction

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;
    int64_t unmarked = 0;  // floats not yet marked this step
    std::unique_ptr<comm::Request> request;
    bool done = false;     // completion seen (Test or Wait)
  };
  void StartReadyBuckets(bool force);  // force: start even unmarked ones
  void Poll();
  void Keep(const absl::Status& s) {
    if (error_.ok() && !s.ok()) error_ = s;
  }

  comm::Communicator* dp_;
  float* grads_;
  int64_t n_;
  int64_t bucket_floats_;
  bool verbose_;
  bool armed_ = true;
  std::vector<Bucket> buckets_;
  int next_to_start_ = 0;
  std::map<int64_t, int64_t> marked_;  // begin -> end of marked ranges (overlap check)
  absl::Status error_;
  ReducerStepStats last_;
  int64_t total_bytes_ = 0;
};

}  // namespace ut::dp
