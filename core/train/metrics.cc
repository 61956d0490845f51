#include "core/train/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace ut::train {

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string ProgressLine(const StepMetrics& m) {
  const std::string loss =
      m.has_ld ? absl::StrFormat("loss %.4f (L_g %.4f, L_d %.4f)", m.loss, m.loss_g, m.loss_d)
               : absl::StrFormat("loss %.4f", m.loss);
  return absl::StrFormat("step %d/%d | %s | lr %.2e | grad-norm %.3f | %.0f tok/s | ETA %s",
                         m.step, m.total_steps, loss, m.lr, m.grad_norm, m.tokens_per_s,
                         FormatDuration(m.eta_s));
}

std::string MetricsJson(const StepMetrics& m) {
  nlohmann::ordered_json j;
  j["step"] = m.step;
  j["loss"] = m.loss;
  j["loss_g"] = m.has_ld ? m.loss_g : m.loss;
  if (m.has_ld) {
    j["loss_d"] = m.loss_d;
    j["ld_units"] = m.ld_units;
    j["ld_skipped"] = m.ld_skipped;
  }
  j["lr"] = m.lr;
  j["grad_norm"] = m.grad_norm;
  j["tokens_per_s"] = m.tokens_per_s;
  j["tokens"] = m.tokens;
  j["elapsed_s"] = m.elapsed_s;
  return j.dump();
}

absl::Status MetricsLog::Open(const std::string& path, int64_t keep_up_to) {
  path_ = path;
  std::vector<std::string> kept;
  if (keep_up_to >= 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
          j["step"].get<int64_t>() <= keep_up_to) {
        kept.push_back(line);
      }
    }
  }
  // Rewrite through a temp file so a crash here never loses the old log.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const std::string& line : kept) out << line << "\n";
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  out_.open(path, std::ios::app);
  if (!out_) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, " for appending: ",
                                                    std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status MetricsLog::Append(const StepMetrics& m) {
  out_ << MetricsJson(m) << "\n";
  out_.flush();
  if (!out_) return absl::DataLossError(absl::StrCat("writing ", path_, " failed (disk full?)"));
  return absl::OkStatus();
}

void ProgressClock::Fill(StepMetrics* m, int64_t total_steps, int64_t tokens_seen) {
  const double elapsed = run_timer_.Seconds();
  m->total_steps = total_steps;
  m->tokens_per_s = tokens_since_log_ / std::max(1e-9, log_timer_.Seconds());
  m->elapsed_s = elapsed;
  m->eta_s = elapsed / (m->step - first_step_) * (total_steps - m->step);
  m->tokens = tokens_seen;
  log_timer_.Reset();
  tokens_since_log_ = 0;
}

}  // namespace ut::train
