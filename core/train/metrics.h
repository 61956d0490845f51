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
  float loss = 0;            // mean objective of the step, L_g + alpha * L_d (mean over micro-batches)
  // Set when the discriminative loss is on (objective.alpha > 0), else only loss_g.
  bool has_ld = false;
  float loss_g = 0;          // mean next-token CE (L_g)
  float loss_d = 0;          // mean discriminative loss (L_d, before alpha)
  int64_t ld_units = 0;      // units of the step (all micro-batches)
  int64_t ld_skipped = 0;    // samples of the step without teacher features
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
// With the discriminative loss on, the loss reads "loss 2.3100 (L_g 2.1000, L_d 0.2100)".
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
