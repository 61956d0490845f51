// Training metrics: the rank-0 progress line and out_dir/metrics.jsonl (one
// JSON object per logged step).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

#include "core/base/status.h"

namespace ut::train {

struct StepMetrics {
  int64_t step = 0;          // 1-based optimizer step
  int64_t total_steps = 0;
  float loss = 0;            // mean next-token CE of the step (mean over micro-batches)
  float lr = 0;
  double grad_norm = 0;      // global norm before clipping
  double tokens_per_s = 0;   // non-pad tokens per second since the previous log line
  double eta_s = 0;          // estimated seconds to the last step
  double elapsed_s = 0;      // seconds since this process started training
  int64_t tokens = 0;        // non-pad tokens seen since step 0 (including before a resume)
};

// "1m12s", "2h03m", "45s".
std::string FormatDuration(double seconds);

// "step 40/300 | loss 3.1234 | lr 1.20e-03 | grad-norm 0.812 | 5234 tok/s | ETA 1m12s"
std::string ProgressLine(const StepMetrics& m);

// {"step":40,"loss":3.1234,...}: floats with enough digits to round-trip.
std::string MetricsJson(const StepMetrics& m);

// Appends to out_dir/metrics.jsonl.
class MetricsLog {
 public:
  // Opens `path` for appending. When resuming from step `keep_up_to` (>= 0),
  // lines of later steps (logged after that checkpoint by the interrupted run)
  // are dropped first so the file reads as one run; -1 truncates the file.
  absl::Status Open(const std::string& path, int64_t keep_up_to);
  absl::Status Append(const StepMetrics& m);

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace ut::train
