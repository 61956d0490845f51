// Training metrics: the rank-0 progress line and out_dir/metrics.jsonl (one
// JSON object per logged step).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

#include "core/base/status.h"
#include "core/base/timer.h"

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

// The timing fields of the progress line, shared by the single-process and
// distributed training loops: tokens/s since the previous logged step,
// seconds since training started, ETA, tokens so far.
class ProgressClock {
 public:
  // first_step: the step training (re)started from.
  explicit ProgressClock(int64_t first_step) : first_step_(first_step) {}
  void AddTokens(int64_t n) { tokens_since_log_ += n; }
  // Fills m's total_steps, tokens_per_s, elapsed_s, eta_s and tokens (m->step
  // must be set) and starts the next logging interval.
  void Fill(StepMetrics* m, int64_t total_steps, int64_t tokens_seen);

 private:
  int64_t first_step_;
  int64_t tokens_since_log_ = 0;
  Timer run_timer_, log_timer_;
};

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
