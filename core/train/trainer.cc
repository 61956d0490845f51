#include "core/train/trainer.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/base/logging.h"
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

absl::StatusOr<int> LdPoolSize(const unified_train::ObjectiveConfig& objective, int grad_accum,
                               int ld_round) {
  if (objective.pool() == unified_train::ObjectiveConfig::GLOBAL_BATCH) return grad_accum;
  if (ld_round < 1 || grad_accum % ld_round != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "L_d pools of ld_round = ", ld_round, " micro-batches do not divide train.grad_accum = ",
        grad_accum, "; use a grad_accum that is a multiple of the data-parallel size"));
  }
  return ld_round;
}

absl::StatusOr<StepSums> AccumulateStep(MLLM* model, const NextBatch& next, int accum, int group,
                                        const unified_train::ObjectiveConfig& objective,
                                        uint64_t seed, int64_t step) {
  CHECK(group >= 1 && accum % group == 0) << "pool size " << group << " vs accum " << accum;
  const float alpha = objective.alpha();
  StepSums sums;
  sums.pools = accum / group;
  // Each pool's L_d gradient: alpha / P (with P = accum when group = 1).
  const float ld_scale = alpha / sums.pools;
  const int R = model->retrieval_dim();
  for (int first = 0; first < accum; first += group) {
    if (alpha == 0 || group == 1) {
      for (int micro = first; micro < first + group; ++micro) {
        ASSIGN_OR_RETURN(data::Batch batch, next());
        sums.loss_g += model->Forward(batch);
        if (alpha > 0) {
          // Its gradient goes into the final hidden states and the retrieval
          // projector; the Backward below carries it on.
          ASSIGN_OR_RETURN(LdResult ld, DiscriminativeLossStep(model, batch, objective, seed, step,
                                                               micro, ld_scale));
          sums.loss_d += ld.loss;
          sums.ld_units += ld.units;
          sums.ld_skipped += ld.skipped_samples;
        }
        model->Backward(1.0f / accum);  // d(mean over micro-batches)
        for (int32_t len : batch.lens) sums.tokens += len;
      }
      continue;
    }
    // Gradient cache. Pass 1: r of every micro-batch of the pool.
    std::vector<data::Batch> batches(group);
    std::vector<std::vector<float>> r(group);
    std::vector<PoolPart> parts(group);
    for (int i = 0; i < group; ++i) {
      ASSIGN_OR_RETURN(batches[i], next());
      model->Forward(batches[i]);
      r[i].resize(batches[i].slices.size() * static_cast<size_t>(R));
      if (!r[i].empty()) model->RetrievalForward(batches[i].slices, r[i].data());
      parts[i] = PoolPart{&batches[i], first + i, r[i].data()};
    }
    std::vector<std::vector<float>> dr;
    ASSIGN_OR_RETURN(LdResult ld, PoolLoss(parts, R, objective, seed, step, ld_scale, &dr));
    sums.loss_d += ld.loss;
    sums.ld_units += ld.units;
    sums.ld_skipped += ld.skipped_samples;
    // Pass 2: each micro-batch again, its dr into the retrieval head, backward.
    for (int i = 0; i < group; ++i) {
      sums.loss_g += model->Forward(batches[i]);
      if (ld.units > 0 && !r[i].empty()) {
        model->RetrievalForward(batches[i].slices, r[i].data());
        model->RetrievalBackward(dr[i].data());
      }
      model->Backward(1.0f / accum);
      for (int32_t len : batches[i].lens) sums.tokens += len;
    }
  }
  return sums;
}

absl::Status Trainer::TrainStep(StepMetrics* m, int64_t* tokens) {
  const int accum = config_.train().grad_accum();
  const auto& objective = config_.objective();
  const float alpha = objective.alpha();
  ASSIGN_OR_RETURN(const int group, LdPoolSize(objective, accum, ld_round_));
  model_->ZeroGrad();
  ASSIGN_OR_RETURN(StepSums sums,
                   AccumulateStep(model_, [this] { return loader_->Next(); }, accum, group,
                                  objective, config_.train().seed(), step_ + 1));
  if (sums.ld_skipped > 0 && !warned_no_teacher_) {
    warned_no_teacher_ = true;
    LOG(WARNING) << sums.ld_skipped << " samples of a step have a slice without a teacher "
                 << "feature; L_d skips such samples (metrics.jsonl counts them in ld_skipped)";
  }
  *tokens += sums.tokens;
  m->ld_units += sums.ld_units;
  m->ld_skipped += sums.ld_skipped;
  // loss = mean L_g + alpha * mean over pools of L_d (group = accum / pools).
  const double lg_sum = sums.loss_g, ld_sum = sums.loss_d;
  const float loss_g = static_cast<float>(lg_sum / accum);
  const float loss_d = static_cast<float>(ld_sum / sums.pools);
  const float loss = static_cast<float>((lg_sum + alpha * ld_sum * group) / accum);
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
  RETURN_IF_ERROR(LdPoolSize(config_.objective(), tc.grad_accum(), ld_round_).status());
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
  ProgressClock clock(step_);

  while (step_ < end) {
    StepMetrics m;
    int64_t tokens = 0;
    RETURN_IF_ERROR(TrainStep(&m, &tokens));
    tokens_seen_ += tokens;
    clock.AddTokens(tokens);
    if (step_ % tc.log_every() == 0 || step_ == total || step_ == end) {
      clock.Fill(&m, total, tokens_seen_);
      if (rank0) {
        RETURN_IF_ERROR(metrics.Append(m));
        if (print_progress_) {
          std::printf("%s\n", ProgressLine(m).c_str());
          std::fflush(stdout);
        }
      }
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
