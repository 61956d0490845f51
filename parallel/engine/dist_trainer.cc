#include "parallel/engine/dist_trainer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/base/logging.h"
#include "core/base/timer.h"
#include "core/train/discriminative_loss.h"
#include "core/train/lr_schedule.h"
#include "ops/optim.h"
#include "parallel/dld/dist_ld.h"
#include "parallel/dp/grad_norm.h"
#include "parallel/pipeline/schedule.h"

namespace ut::parallel {

using unified_train::ObjectiveConfig;

DistTrainer::DistTrainer(const Config& config, DistContext* ctx, MLLM* model,
                         data::Loader* loader)
    : config_(config), ctx_(ctx), model_(model), loader_(loader), stage_(model) {}

absl::StatusOr<std::unique_ptr<DistTrainer>> DistTrainer::Create(const Config& config,
                                                                 DistContext* ctx, MLLM* model,
                                                                 data::Loader* loader) {
  const auto& p = config.parallel();
  const int A = config.train().grad_accum();
  if (p.virtual_stages() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'parallel.virtual_stages' = ", p.virtual_stages(), " must be >= 1"));
  }
  if (p.virtual_stages() > 1 && A % p.pp() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interleaved pipelining (parallel.virtual_stages = ", p.virtual_stages(),
        ") needs train.grad_accum (", A, ") to be a multiple of parallel.pp (", p.pp(), ")"));
  }
  if (p.bucket_mb() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config field 'parallel.bucket_mb' = ", p.bucket_mb(), " must be > 0"));
  }
  std::unique_ptr<DistTrainer> t(new DistTrainer(config, ctx, model, loader));
  const int64_t n = model->num_params();
  if (p.zero1()) {
    t->zero_ = std::make_unique<dp::ShardedAdamW>(ctx->dp.get(), model->params(), n,
                                                  config.optim());
  } else {
    t->adamw_ = std::make_unique<train::AdamW>(model->params(), n, config.optim());
  }
  const int64_t bucket = std::max<int64_t>(1, static_cast<int64_t>(p.bucket_mb() * (1 << 20) / 4));
  t->reducer_ = std::make_unique<dp::GradReducer>(ctx->dp.get(), model->grad_data(), n, bucket,
                                                  p.verbose_comm());
  if (!p.zero1()) {
    dp::GradReducer* r = t->reducer_.get();
    model->SetGradReadyCallback([r](int64_t b, int64_t e) { r->OnReady(b, e); });
  }
  return t;
}

absl::Status DistTrainer::OptimizerState(std::vector<float>* m, std::vector<float>* v) {
  if (zero_) return zero_->GatherState(m, v);
  const int64_t n = model_->num_params();
  m->assign(adamw_->m(), adamw_->m() + n);
  v->assign(adamw_->v(), adamw_->v() + n);
  return absl::OkStatus();
}

void DistTrainer::Restore(int64_t step, const float* m, const float* v) {
  step_ = step;
  if (zero_) {
    zero_->LoadState(m, v);
    zero_->set_step(step);
    return;
  }
  const int64_t n = model_->num_params();
  std::copy(m, m + n, adamw_->m());
  std::copy(v, v + n, adamw_->v());
  adamw_->set_step(step);
}

// L_d over the pool made of local micro-batches `micros` (and, through the
// gather, the other DP ranks' micro-batches of the same rounds). Last stage only.
absl::Status DistTrainer::PoolLd(const std::vector<int>& micros, bool with_grad) {
  const auto& obj = config_.objective();
  const int R = model_->retrieval_dim(), DP = ctx_->grid.dp(), d = ctx_->coord.dp;
  const int A = static_cast<int>(batches_.size());
  std::vector<train::PoolPart> parts;
  for (int m : micros) {
    parts.push_back({&batches_[m], m * DP + d, r_[m].data()});
  }
  int skipped = 0;
  ASSIGN_OR_RETURN(dld::PoolUnits units,
                   train::FlattenPool(parts, obj.cuts_per_sample(), config_.train().seed(),
                                      step_ + 1, &skipped));
  const std::vector<float> rows = train::ConcatPoolRows(parts, R);
  std::vector<float> dr(rows.size(), 0.0f);
  // Pools per step: A rounds (MICRO_BATCH) or 1 (GLOBAL_BATCH). The DP
  // all-reduce averages, so the local gradient carries a factor DP.
  const int P = obj.pool() == ObjectiveConfig::GLOBAL_BATCH ? 1 : A;
  dld::DistLdOptions o;
  o.mode = obj.mode();
  o.delta = obj.delta();
  o.grad_scale = with_grad ? obj.alpha() * DP / P : 0.0f;
  ASSIGN_OR_RETURN(dld::DistLdResult res,
                   dld::DistributedLd(units, rows.data(), R, o, ctx_->dp.get(),
                                      ctx_->dp_tp.get(), with_grad ? dr.data() : nullptr));
  ld_sum_ += res.loss;
  ld_units_ += res.units;
  ++ld_pools_;
  if (with_grad) {
    std::vector<std::vector<float>> per_part;
    train::SplitPoolRows(parts, R, dr.data(), &per_part);
    for (size_t i = 0; i < micros.size(); ++i) dr_[micros[i]] = std::move(per_part[i]);
  }
  return absl::OkStatus();
}

absl::Status DistTrainer::Step(DistStepResult* result) {
  Timer timer;
  const auto& p = config_.parallel();
  const auto& obj = config_.objective();
  const int A = config_.train().grad_accum();
  const int pp = ctx_->grid.pp(), stage = ctx_->coord.pp;
  const bool last = ctx_->last_stage();
  const bool ld_on = obj.alpha() > 0;
  const bool global_pool = obj.pool() == ObjectiveConfig::GLOBAL_BATCH;
  const int R = model_->retrieval_dim();

  batches_.clear();
  for (int m = 0; m < A; ++m) {
    ASSIGN_OR_RETURN(data::Batch b, loader_->Next());
    batches_.push_back(std::move(b));
  }
  r_.assign(A, {});
  dr_.assign(A, {});
  ld_sum_ = 0;
  ld_units_ = 0;
  ld_pools_ = 0;
  hook_status_ = absl::OkStatus();
  model_->ZeroGrad();
  reducer_->Reset();

  pipeline::PipeRunOptions run_options;
  run_options.p2p.verbose = p.verbose_comm();

  // Embeddings of the last chunk's current slot -> r_[m].
  auto embed = [&](int m) {
    const data::Batch& b = batches_[m];
    r_[m].assign(b.slices.size() * static_cast<size_t>(R), 0.0f);
    if (!b.slices.empty()) model_->RetrievalForward(b.slices, r_[m].data());
  };

  // 2. Gradient cache for the GLOBAL_BATCH pool: embed everything first.
  if (ld_on && global_pool) {
    stage_.BeginStep(&batches_, 1.0f, nullptr, [&](int m, bool) { embed(m); });
    RETURN_IF_ERROR(pipeline::ForwardOnly(A, stage_, *ctx_->pp, run_options).status());
    if (last) {
      std::vector<int> all(A);
      for (int m = 0; m < A; ++m) all[m] = m;
      RETURN_IF_ERROR(PoolLd(all, /*with_grad=*/true));
    }
  }

  // 3. The schedule. On the last chunk, after each forward: the L_d gradient.
  auto post = [&](int m, bool with_grad) {
    if (!ld_on || !with_grad || !hook_status_.ok()) return;
    embed(m);
    if (!global_pool) {
      hook_status_ = PoolLd({m}, /*with_grad=*/true);
      if (!hook_status_.ok()) return;
    }
    if (!batches_[m].slices.empty()) model_->RetrievalBackward(dr_[m].data());
  };
  stage_.BeginStep(&batches_, 1.0f / A, p.zero1() ? nullptr : reducer_.get(), post);
  std::vector<pipeline::PipeOp> ops;
  if (p.virtual_stages() > 1) {
    ASSIGN_OR_RETURN(ops, pipeline::Interleaved(pp, stage, A, p.virtual_stages()));
  } else {
    ops = pipeline::OneFOneB(pp, stage, A);
  }
  ASSIGN_OR_RETURN(pipeline::PipeRunResult run,
                   pipeline::RunSchedule(ops, A, stage_, *ctx_->pp, run_options));
  RETURN_IF_ERROR(hook_status_);
  last_run_ = run;

  // 4. DP gradient averaging.
  const int64_t n = model_->num_params();
  float* grads = model_->grad_data();
  if (zero_) {
    RETURN_IF_ERROR(zero_->ReduceScatterGrads(grads));
  } else {
    RETURN_IF_ERROR(reducer_->Finish());
  }

  // 5. Norm, clip, AdamW.
  const dp::NormShare share =
      dp::NormShareFor(ctx_->coord.tp, ctx_->coord.dp, n, zero_ != nullptr,
                       zero_ ? zero_->shard_begin() : 0, zero_ ? zero_->shard_end() : 0);
  const double contribution = dp::SquaredNormContribution(grads, model_->params(),
                                                          share.count_replicated, share.begin,
                                                          share.end);
  ASSIGN_OR_RETURN(const double norm, dp::GlobalGradNorm(ctx_->world, contribution));

  // Losses: the last stage's TP rank 0 of every DP rank contributes its share.
  double lg_local = 0;
  for (int m = 0; m < A; ++m) lg_local += last ? run.losses[m] : 0.0;
  int64_t tokens_local = 0;
  for (const data::Batch& b : batches_) {
    for (int32_t len : b.lens) tokens_local += len;
  }
  const bool loss_owner = last && ctx_->coord.tp == 0;
  const int DP = ctx_->grid.dp();
  std::vector<double> sums = {
      loss_owner ? lg_local / (A * DP) : 0.0,
      loss_owner && ctx_->coord.dp == 0 && ld_pools_ > 0 ? ld_sum_ / ld_pools_ : 0.0,
      loss_owner && ctx_->coord.dp == 0 ? static_cast<double>(ld_units_) : 0.0,
      stage == 0 && ctx_->coord.tp == 0 ? static_cast<double>(tokens_local) : 0.0};
  RETURN_IF_ERROR(ctx_->world->AllReduce(std::span<double>(sums), comm::ReduceOp::kSum));
  const float loss_g = static_cast<float>(sums[0]);
  const float loss_d = static_cast<float>(sums[1]);
  const float loss = loss_g + (ld_on ? obj.alpha() * loss_d : 0.0f);
  if (!std::isfinite(loss) || !std::isfinite(norm)) {
    return absl::InternalError(absl::StrCat(
        "training diverged at step ", step_ + 1, " (loss ", loss, ", grad-norm ", norm,
        "); lower optim.lr or keep optim.grad_clip > 0, and resume from the last checkpoint"));
  }
  const float scale = cpu::clip_scale(norm, config_.optim().grad_clip());
  const float lr = train::LearningRate(step_ + 1, config_.train().steps(), config_.optim());
  if (zero_) {
    RETURN_IF_ERROR(zero_->Step(model_->param_data(), grads, lr, scale));
  } else {
    adamw_->Step(model_->param_data(), grads, lr, scale);
  }
  ++step_;

  train::StepMetrics& m = result->metrics;
  m = {};
  m.step = step_;
  m.total_steps = config_.train().steps();
  m.loss = loss;
  m.loss_g = loss_g;
  m.loss_d = loss_d;
  m.has_ld = ld_on;
  m.ld_units = static_cast<int64_t>(sums[2]);
  m.lr = lr;
  m.grad_norm = norm;
  result->tokens = static_cast<int64_t>(sums[3]);
  result->bubble = run.bubble_fraction();
  result->seconds = timer.Seconds();
  return absl::OkStatus();
}

}  // namespace ut::parallel
