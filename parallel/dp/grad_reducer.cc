#include "parallel/dp/grad_reducer.h"

#include <algorithm>
#include <chrono>
#include <span>

#include "glog/logging.h"

namespace ut::dp {

// Bucket progress: always with verbose, else at --v=1.
#define UT_DP_LOG LOG_IF(INFO, verbose_ || VLOG_IS_ON(1))

GradReducer::GradReducer(comm::Communicator* dp, float* grads, int64_t n, int64_t bucket_floats,
                         bool verbose)
    : dp_(dp), grads_(grads), n_(n), bucket_floats_(bucket_floats), verbose_(verbose) {
  CHECK(dp_ != nullptr);
  CHECK(grads_ != nullptr || n_ == 0);
  CHECK_GE(n_, 0);
  CHECK_GE(bucket_floats_, 1) << "bucket size must be at least one float";
  for (int64_t end = n_; end > 0; end -= bucket_floats_) {
    Bucket b;
    b.begin = std::max<int64_t>(0, end - bucket_floats_);
    b.end = end;
    buckets_.push_back(std::move(b));
  }
  Reset();
}

GradReducer::~GradReducer() = default;  // a Request in flight waits in its destructor

void GradReducer::Reset() {
  for (Bucket& b : buckets_) {
    b.request.reset();
    b.unmarked = b.end - b.begin;
    b.done = false;
  }
  next_to_start_ = 0;
  marked_.clear();
  error_ = absl::OkStatus();
}

int GradReducer::buckets_done() const {
  return static_cast<int>(std::count_if(buckets_.begin(), buckets_.end(),
                                        [](const Bucket& b) { return b.done; }));
}

void GradReducer::OnReady(int64_t begin, int64_t end) {
  if (!armed_ || dp_->size() == 1 || begin == end) return;
  CHECK(0 <= begin && begin < end && end <= n_)
      << "OnReady range [" << begin << ", " << end << ") outside the gradient buffer [0, " << n_
      << ")";
  // Overlap check against the ranges marked so far, then merge neighbours.
  auto next = marked_.lower_bound(begin);
  CHECK(next == marked_.end() || next->first >= end)
      << "gradient range [" << begin << ", " << end << ") marked ready twice in one step";
  int64_t merged_begin = begin, merged_end = end;
  if (next != marked_.begin()) {
    auto prev = std::prev(next);
    CHECK_LE(prev->second, begin)
        << "gradient range [" << begin << ", " << end << ") marked ready twice in one step";
    if (prev->second == begin) {
      merged_begin = prev->first;
      marked_.erase(prev);
    }
  }
  if (next != marked_.end() && next->first == end) {
    merged_end = next->second;
    marked_.erase(next);
  }
  marked_[merged_begin] = merged_end;

  // Count the floats into their buckets (bucket of float x: (n-1-x) / B).
  const int first = static_cast<int>((n_ - end) / bucket_floats_);
  const int last = static_cast<int>((n_ - 1 - begin) / bucket_floats_);
  for (int k = first; k <= last; ++k) {
    Bucket& b = buckets_[k];
    const int64_t overlap = std::min(end, b.end) - std::max(begin, b.begin);
    CHECK_GT(overlap, 0);
    b.unmarked -= overlap;
    CHECK_GE(b.unmarked, 0);
  }
  StartReadyBuckets(/*force=*/false);
  Poll();
}

void GradReducer::StartReadyBuckets(bool force) {
  while (next_to_start_ < num_buckets() &&
         (force || buckets_[next_to_start_].unmarked == 0)) {
    Bucket& b = buckets_[next_to_start_];
    const int64_t count = b.end - b.begin;
    UT_DP_LOG << dp_->name() << ": bucket " << next_to_start_ << " [" << b.begin << ", " << b.end
              << ") all-reduce start (" << count << " floats"
              << (b.unmarked > 0 ? ", not all marked" : "") << ")";
    auto request = dp_->IAllReduce(std::span<float>(grads_ + b.begin, count), comm::ReduceOp::kAvg);
    if (!request.ok()) {
      Keep(request.status());
      b.done = true;  // nothing in flight for it
    } else {
      b.request = std::move(*request);
    }
    ++next_to_start_;
  }
}

void GradReducer::Poll() {
  for (int k = 0; k < next_to_start_; ++k) {
    Bucket& b = buckets_[k];
    if (b.done || b.request == nullptr) continue;
    auto finished = b.request->Test();
    if (!finished.ok()) {
      Keep(finished.status());
      continue;
    }
    if (*finished) {
      b.done = true;  // Wait() in Finish still applies the kAvg division
      UT_DP_LOG << dp_->name() << ": bucket " << k << " all-reduce complete (seen by Test)";
    }
  }
}

absl::Status GradReducer::Finish() {
  const auto t0 = std::chrono::steady_clock::now();
  ReducerStepStats stats;
  if (dp_->size() > 1) {
    stats.started_before_finish = next_to_start_;
    Poll();
    stats.done_before_finish = buckets_done();
    StartReadyBuckets(/*force=*/true);
    for (int k = 0; k < num_buckets(); ++k) {
      Bucket& b = buckets_[k];
      if (b.request != nullptr) {
        Keep(b.request->Wait());
        b.request.reset();
      }
      if (!b.done) UT_DP_LOG << dp_->name() << ": bucket " << k << " all-reduce complete";
      b.done = true;
      stats.bytes += (b.end - b.begin) * static_cast<int64_t>(sizeof(float));
    }
    stats.buckets = num_buckets();
  }
  stats.finish_wait_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  last_ = stats;
  total_bytes_ += stats.bytes;
  UT_DP_LOG << dp_->name() << ": gradient all-reduce done: " << stats.buckets << " buckets, "
            << stats.started_before_finish << " started during backward, " << stats.bytes
            << " bytes, " << stats.finish_wait_s * 1e3 << " ms waited in Finish";
  return error_;
}

}  // namespace ut::dp
