#include "core/train/trainer.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/base/logging.h"
#include "core/base/timer.h"
#include "core/train/discriminative_loss.h"
#include "core/train/lr_schedule.h"
#include "ops/optim.h"

namespace ut::train {
namespace {

std::atomic<bool> g_stop_requested{false};

}  // namespace

void RequestStop() { g_stop_requested.store(true); }
bool StopRequested() { return g_stop_requested.load(); }
void ClearStopRequest() { g_stop_requested.store(false); }

Trainer::Trainer(const Config& config, MLLM* model, data::Loader* loader)
    : config_(config), model_(model), loader_(loader),
      adamw_(model->params(), model->num_params(), config.optim()), rng_(config.train().seed()) {
  model_->InitParams(config_.train().seed());
}

ModelBuffers Trainer::Buffers() {
  return ModelBuffers{&model_->params(), model_->num_params(), model_->param_data(), adamw_.m(),
                      adamw_.v()};
}

TrainState Trainer::State() const {
  TrainState s;
  s.step = step_;
  const data::Position pos = loader_->position();
  s.data_epoch = pos.epoch;
  s.data_index = pos.index;
  s.rng_state = rng_.state();
  s.tokens_seen = tokens_seen_;
  s.param_count = model_->num_params();
  s.config_text = ConfigToText(config_);
  return s;
}

absl::Status Trainer::Resume(const std::string& checkpoint_dir) {
  TrainState s;
  RETURN_IF_ERROR(LoadCheckpoint(checkpoint_dir, Buffers(), &s));
  if (s.config_text != ConfigToText(config_)) {
    LOG(WARNING) << "the config differs from the one saved in " << checkpoint_dir
                 << "/state.json; continuing with the new one";
  }
  step_ = s.step;
  adamw_.set_step(s.step);
  loader_->Seek(data::Position{s.data_epoch, s.data_index});
  rng_.set_state(s.rng_state);
  tokens_seen_ = s.tokens_seen;
  last_checkpoint_step_ = s.step;
  LOG(INFO) << "resumed from " << checkpoint_dir << " at step " << step_;
  return absl::OkStatus();
}

absl::Status Trainer::Preflight() {
  const data::Position start = loader_->position();
  RETURN_IF_ERROR(loader_->Next().status());
  loader_->Seek(start);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Trainer::SaveCheckpointNow() {
  ASSIGN_OR_RETURN(std::string dir, SaveCheckpoint(config_.train().out_dir(), Buffers(), State(),
                                                   config_.train().keep_checkpoints()));
  last_checkpoint_step_ = step_;
  LOG(INFO) << "checkpoint " << dir;
  return dir;
}

absl::Status Trainer::TrainStep(StepMetrics* m, int64_t* tokens) {
  const int accum = config_.train().grad_accum();
  const auto& objective = config_.objective();
  const float alpha = objective.alpha();
  model_->ZeroGrad();
  double lg_sum = 0, ld_sum = 0;
  for (int micro = 0; micro < accum; ++micro) {
    ASSIGN_OR_RETURN(data::Batch batch, loader_->Next());
    lg_sum += model_->Forward(batch);
    if (alpha > 0) {
      // alpha * L_d / accum: its gradient goes into the final hidden states and
      // the retrieval projector, and the Backward below carries it on.
      ASSIGN_OR_RETURN(LdResult ld, DiscriminativeLossStep(model_, batch, objective,
                                                           config_.train().seed(), step_ + 1,
                                                           micro, alpha / accum));
      ld_sum += ld.loss;
      if (ld.skipped_samples > 0 && !warned_no_teacher_) {
        warned_no_teacher_ = true;
        LOG(WARNING) << ld.skipped_samples << " of the " << batch.sample_ids.size()
                     << " samples of a micro-batch have a slice without a teacher feature; "
                     << "L_d skips such samples (metrics.jsonl counts them in ld_skipped)";
      }
      m->ld_units += ld.units;
      m->ld_skipped += ld.skipped_samples;
    }
    model_->Backward(1.0f / accum);  // d(mean over micro-batches)
    for (int32_t len : batch.lens) *tokens += len;
  }
  const float loss_g = static_cast<float>(lg_sum / accum);
  const float loss_d = static_cast<float>(ld_sum / accum);
  const float loss = static_cast<float>((lg_sum + alpha * ld_sum) / accum);
  const double norm = GlobalNorm(model_->grad_data(), model_->num_params());
  if (!std::isfinite(loss) || !std::isfinite(norm)) {
    return absl::InternalError(absl::StrCat(
        "training diverged at step ", step_ + 1, " (loss ", loss, ", grad-norm ", norm,
        "); lower optim.lr or keep optim.grad_clip > 0, and resume from the last checkpoint"));
  }
  const float scale = cpu::clip_scale(norm, config_.optim().grad_clip());
  const float lr = LearningRate(step_ + 1, config_.train().steps(), config_.optim());
  adamw_.Step(model_->param_data(), model_->grad_data(), lr, scale);
  ++step_;
  losses_.push_back(loss);
  m->step = step_;
  m->loss = loss;
  m->loss_g = loss_g;
  m->loss_d = loss_d;
  m->has_ld = alpha > 0;
  m->lr = lr;
  m->grad_norm = norm;
  return absl::OkStatus();
}

absl::Status Trainer::Run(int64_t stop_at) {
  const auto& tc = config_.train();
  RETURN_IF_ERROR(ValidateObjective(config_.objective()));
  const int64_t total = tc.steps();
  const int64_t end = stop_at > 0 ? std::min<int64_t>(stop_at, total) : total;
  std::error_code ec;
  std::filesystem::create_directories(tc.out_dir(), ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create train.out_dir '", tc.out_dir(),
                                                    "': ", ec.message()));
  }
  MetricsLog metrics;
  RETURN_IF_ERROR(metrics.Open(tc.out_dir() + "/metrics.jsonl", step_ > 0 ? step_ : -1));
  const bool rank0 = LogRank() == 0;
  const int64_t first_step = step_;
  Timer run_timer, log_timer;
  int64_t tokens_since_log = 0;

  while (step_ < end) {
    StepMetrics m;
    int64_t tokens = 0;
    RETURN_IF_ERROR(TrainStep(&m, &tokens));
    tokens_seen_ += tokens;
    tokens_since_log += tokens;
    if (step_ % tc.log_every() == 0 || step_ == total || step_ == end) {
      const double elapsed = run_timer.Seconds();
      m.total_steps = total;
      m.tokens_per_s = tokens_since_log / std::max(1e-9, log_timer.Seconds());
      m.elapsed_s = elapsed;
      m.eta_s = elapsed / (step_ - first_step) * (total - step_);
      m.tokens = tokens_seen_;
      if (rank0) {
        RETURN_IF_ERROR(metrics.Append(m));
        if (print_progress_) {
          std::printf("%s\n", ProgressLine(m).c_str());
          std::fflush(stdout);
        }
      }
      log_timer.Reset();
      tokens_since_log = 0;
    }
    if (StopRequested()) {
      stopped_by_request_ = true;
      LOG(WARNING) << "stop requested: checkpointing step " << step_ << " and stopping";
      break;
    }
    if (tc.ckpt_every() > 0 && step_ % tc.ckpt_every() == 0 && step_ != end) {
      RETURN_IF_ERROR(SaveCheckpointNow().status());
    }
  }
  if (last_checkpoint_step_ != step_) RETURN_IF_ERROR(SaveCheckpointNow().status());
  return absl::OkStatus();
}

}  // namespace ut::train
