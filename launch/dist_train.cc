#include "launch/dist_train.h"

#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/base/logging.h"
#include "core/base/rng.h"
#include "core/model/mllm.h"
#include "core/train/checkpoint.h"
#include "core/train/discriminative_loss.h"
#include "core/train/evaluate.h"
#include "core/train/metrics.h"
#include "core/train/trainer.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/grid.h"
#include "parallel/engine/dist_context.h"
#include "parallel/engine/dist_trainer.h"
#include "parallel/engine/gather.h"
#include "parallel/engine/rank_model.h"

namespace ut::launch {
namespace {

using parallel::FullTensor;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int out = 0;
  return v != nullptr && absl::SimpleAtoi(v, &out) ? out : fallback;
}

void OnSignal(int) { train::RequestStop(); }

// Ends a set-up phase that every rank runs: all ranks learn whether any
// failed. The lowest failing rank keeps its own error; every other rank gets
// kAborted "rank K failed ...", which only rank 0 prints (RunDistributed).
absl::Status Agree(comm::Communicator* world, const absl::Status& s) {
  const int n = world->size(), r = world->rank();
  int32_t v = s.ok() ? 0 : n - r;  // max over ranks = n - (lowest failing rank)
  RETURN_IF_ERROR(world->AllReduce(std::span<int32_t>(&v, 1), comm::ReduceOp::kMax));
  if (v == 0) return absl::OkStatus();
  const int first = n - v;
  if (first == r) return s;
  return absl::AbortedError(absl::StrCat("rank ", first, " failed (its error line is above)"));
}

// Rank 0's string to every rank.
absl::Status BroadcastString(comm::Communicator* world, std::string* s) {
  int64_t len = static_cast<int64_t>(s->size());
  RETURN_IF_ERROR(world->Broadcast(std::span<int64_t>(&len, 1), 0));
  std::vector<int32_t> chars(len);
  for (int64_t i = 0; i < len && world->rank() == 0; ++i) chars[i] = (*s)[i];
  RETURN_IF_ERROR(world->Broadcast(std::span<int32_t>(chars), 0));
  s->assign(chars.begin(), chars.end());
  return absl::OkStatus();
}

// name -> whole tensor, from a buffer laid out like `params` (a whole model).
std::map<std::string, FullTensor> ToFull(const std::vector<ParamInfo>& params, const float* buf) {
  std::map<std::string, FullTensor> full;
  for (const ParamInfo& p : params) {
    full[p.name] = {p.shape, std::vector<float>(buf + p.offset, buf + p.offset + p.numel)};
  }
  return full;
}

// The other way: whole tensors into a buffer laid out like `params`.
absl::Status FromFull(const std::map<std::string, FullTensor>& full,
                      const std::vector<ParamInfo>& params, float* buf) {
  for (const ParamInfo& p : params) {
    auto it = full.find(p.name);
    if (it == full.end() || it->second.shape != p.shape) {
      return absl::InternalError(absl::StrCat("gathered tensors lack '", p.name,
                                              "' or have another shape"));
    }
    std::copy(it->second.data.begin(), it->second.data.end(), buf + p.offset);
  }
  return absl::OkStatus();
}

// One distributed training job. Every rank calls Run() together.
class DistJob {
 public:
  DistJob(const TrainFlags& flags, Config config, comm::Communicator* setup,
          comm::Communicator* world)
      : flags_(flags), config_(std::move(config)), setup_(setup), world_(world),
        rank_(world->rank()) {}

  absl::StatusOr<int> Run() {
    RETURN_IF_ERROR(SetUp());
    // SIGUSR1 too: mpirun forwards it to every rank (SIGINT/SIGTERM sent to
    // mpirun itself kill the ranks at once), and `sbatch --signal=USR1@120`
    // asks for it before the time limit.
    for (int sig : {SIGINT, SIGTERM, SIGUSR1}) std::signal(sig, OnSignal);
    RETURN_IF_ERROR(Train());
    if (stopped_) {
      if (rank_ == 0) {
        std::printf("stopped at step %lld; continue with --resume\n",
                    static_cast<long long>(trainer_->step()));
      }
      return 130;
    }
    RETURN_IF_ERROR(Agree(setup_, rank_ == 0 ? Evaluate() : absl::OkStatus()));
    if (rank_ == 0) std::printf("done: %s\n", config_.train().out_dir().c_str());
    return 0;
  }

 private:
  absl::Status SetUp();
  absl::Status BuildShard();
  absl::Status Resume(const std::string& dir);
  absl::Status Train();
  absl::Status Checkpoint();
  absl::Status Evaluate();
  // An error in a phase where other ranks may be blocked in a collective:
  // print it and end the whole job (there is no agreeing any more).
  [[noreturn]] void Fatal(const absl::Status& s) {
    std::fprintf(stderr, "unified_train: error: rank %d: %s\n", rank_,
                 std::string(s.message()).c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kUserErrorExitCode);
    std::abort();
  }

  TrainFlags flags_;
  Config config_;
  comm::Communicator* setup_;  // world, long deadline: waiting for rank 0's files
  comm::Communicator* world_;  // world, parallel.comm_timeout_s
  int rank_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::unique_ptr<parallel::DistContext> ctx_;
  std::unique_ptr<MLLM> model_;  // this rank's shard
  std::unique_ptr<MLLM> whole_;  // rank 0: the whole model (checkpoints, evaluation)
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<parallel::DistTrainer> trainer_;
  int64_t tokens_seen_ = 0;
  int64_t last_checkpoint_step_ = -1;
  bool stopped_ = false;
};

absl::Status DistJob::SetUp() {
  if (config_.train().threads() > 0) omp_set_num_threads(config_.train().threads());
  RETURN_IF_ERROR(Agree(setup_, train::ValidateObjective(config_.objective())));
  // Where to write and start: rank 0 decides (one file system view), tells all.
  OutDirPlan plan;
  absl::Status s;
  if (rank_ == 0) {
    absl::StatusOr<OutDirPlan> p = PlanOutDir(flags_, &config_);
    if (p.ok()) plan = *p;
    s = p.status();
  }
  RETURN_IF_ERROR(Agree(setup_, s));
  RETURN_IF_ERROR(BroadcastString(setup_, &plan.out_dir));
  RETURN_IF_ERROR(BroadcastString(setup_, &plan.resume_dir));
  config_.mutable_train()->set_out_dir(plan.out_dir);

  // Data: rank 0 generates a missing data set while the others wait.
  RETURN_IF_ERROR(Agree(setup_, rank_ == 0 ? EnsureData(config_) : absl::OkStatus()));
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tok = LoadTokenizer(config_);
  RETURN_IF_ERROR(Agree(setup_, tok.status()));
  tokenizer_ = std::move(*tok);

  // The grid (world == tp*pp*dp, the model divides), then this rank's part.
  RETURN_IF_ERROR(Agree(setup_, ProcessGrid::Create(config_, world_->size()).status()));
  absl::StatusOr<std::unique_ptr<parallel::DistContext>> ctx =
      parallel::MakeDistContext(config_, world_);
  RETURN_IF_ERROR(Agree(setup_, ctx.status()));
  ctx_ = std::move(*ctx);
  RETURN_IF_ERROR(Agree(setup_, BuildShard()));
  if (!plan.resume_dir.empty()) RETURN_IF_ERROR(Agree(setup_, Resume(plan.resume_dir)));

  // Data errors before anything is written (as Trainer::Preflight).
  const data::Position start = loader_->position();
  absl::Status first = loader_->Next().status();
  loader_->Seek(start);
  RETURN_IF_ERROR(Agree(setup_, first));
  return Agree(setup_, rank_ == 0 ? PrepareOutDir(config_) : absl::OkStatus());
}

absl::Status DistJob::BuildShard() {
  const auto& p = config_.parallel();
  ASSIGN_OR_RETURN(model_, parallel::CreateRankModel(config_, *ctx_));
  if (rank_ == 0) {
    ASSIGN_OR_RETURN(whole_, MLLM::Create(config_.model()));
    whole_->InitParams(config_.train().seed());
  }
  ASSIGN_OR_RETURN(loader_, data::Loader::Create(
                                LoaderOptionsFor(config_, *model_, "train", ctx_->coord.dp,
                                                 p.dp()),
                                tokenizer_.get()));
  ASSIGN_OR_RETURN(trainer_,
                   parallel::DistTrainer::Create(config_, ctx_.get(), model_.get(), loader_.get()));
  if (rank_ == 0) {
    LOG(INFO) << "model: " << whole_->num_params() << " parameters on " << world_->size()
              << " ranks (tp " << p.tp() << ", pp " << p.pp() << ", dp " << p.dp()
              << "); data: " << loader_->num_samples() << " training samples, "
              << loader_->batches_per_epoch() << " micro-batches per epoch";
  }
  return absl::OkStatus();
}

// Every rank reads the single-process checkpoint and keeps its slices.
absl::Status DistJob::Resume(const std::string& dir) {
  std::unique_ptr<MLLM> temp;
  MLLM* whole = whole_.get();
  if (whole == nullptr) {
    ASSIGN_OR_RETURN(temp, MLLM::Create(config_.model()));
    whole = temp.get();
  }
  const int64_t n = whole->num_params();
  std::vector<float> m(n), v(n);
  train::TrainState state;
  RETURN_IF_ERROR(train::LoadCheckpoint(
      dir, train::ModelBuffers{&whole->params(), n, whole->param_data(), m.data(), v.data()},
      &state));
  const int64_t local = model_->num_params();
  std::vector<float> m_local(local), v_local(local);
  RETURN_IF_ERROR(parallel::SliceFromFull(ToFull(whole->params(), whole->param_data()),
                                          model_->params(), model_->param_data()));
  RETURN_IF_ERROR(
      parallel::SliceFromFull(ToFull(whole->params(), m.data()), model_->params(), m_local.data()));
  RETURN_IF_ERROR(
      parallel::SliceFromFull(ToFull(whole->params(), v.data()), model_->params(), v_local.data()));
  trainer_->Restore(state.step, m_local.data(), v_local.data());
  loader_->Seek(data::Position{state.data_epoch, state.data_index});
  tokens_seen_ = state.tokens_seen;
  last_checkpoint_step_ = state.step;
  if (rank_ == 0) LOG(INFO) << "resumed from " << dir << " at step " << state.step;
  return absl::OkStatus();
}

// Params and AdamW m/v gathered to whole tensors; rank 0 writes them in the
// single-process format (atomic, core/train/checkpoint.h).
absl::Status DistJob::Checkpoint() {
  std::vector<float> m_local, v_local;
  absl::Status s = trainer_->OptimizerState(&m_local, &v_local);
  if (!s.ok()) Fatal(s);
  const bool contribute = ctx_->coord.dp == 0;  // DP replicas are identical
  auto gather = [&](const float* buf) {
    absl::StatusOr<std::map<std::string, FullTensor>> g =
        parallel::GatherFull(world_, model_->params(), buf, contribute);
    if (!g.ok()) Fatal(g.status());
    return std::move(*g);
  };
  std::map<std::string, FullTensor> params = gather(model_->param_data());
  std::map<std::string, FullTensor> m_full = gather(m_local.data());
  std::map<std::string, FullTensor> v_full = gather(v_local.data());
  absl::Status saved;
  if (rank_ == 0) {
    saved = [&]() -> absl::Status {
      const int64_t n = whole_->num_params();
      std::vector<float> m(n), v(n);
      RETURN_IF_ERROR(FromFull(params, whole_->params(), whole_->param_data()));
      RETURN_IF_ERROR(FromFull(m_full, whole_->params(), m.data()));
      RETURN_IF_ERROR(FromFull(v_full, whole_->params(), v.data()));
      train::TrainState st;
      st.step = trainer_->step();
      const data::Position pos = loader_->position();
      st.data_epoch = pos.epoch;
      st.data_index = pos.index;
      st.rng_state = Rng(config_.train().seed()).state();  // as the single-process trainer's
      st.tokens_seen = tokens_seen_;
      st.param_count = n;
      st.config_text = ConfigToText(config_);
      ASSIGN_OR_RETURN(std::string dir,
                       train::SaveCheckpoint(
                           config_.train().out_dir(),
                           train::ModelBuffers{&whole_->params(), n, whole_->param_data(),
                                               m.data(), v.data()},
                           st, config_.train().keep_checkpoints()));
      LOG(INFO) << "checkpoint " << dir;
      return absl::OkStatus();
    }();
  }
  RETURN_IF_ERROR(Agree(setup_, saved));
  last_checkpoint_step_ = trainer_->step();
  return absl::OkStatus();
}

// The loop of core/train/trainer.cc's Trainer::Run, over DistTrainer steps.
absl::Status DistJob::Train() {
  const auto& tc = config_.train();
  const int64_t total = tc.steps();
  train::MetricsLog metrics;
  const int64_t first_step = trainer_->step();
  if (rank_ == 0) {
    RETURN_IF_ERROR(Agree(setup_, metrics.Open(tc.out_dir() + "/metrics.jsonl",
                                               first_step > 0 ? first_step : -1)));
  } else {
    RETURN_IF_ERROR(Agree(setup_, absl::OkStatus()));
  }
  train::ProgressClock clock(first_step);
  while (trainer_->step() < total) {
    parallel::DistStepResult res;
    if (absl::Status s = trainer_->Step(&res); !s.ok()) Fatal(s);
    const int64_t step = trainer_->step();
    tokens_seen_ += res.tokens;
    clock.AddTokens(res.tokens);
    if (step % tc.log_every() == 0 || step == total) {
      train::StepMetrics m = res.metrics;
      clock.Fill(&m, total, tokens_seen_);
      if (rank_ == 0) {
        if (absl::Status s = metrics.Append(m); !s.ok()) Fatal(s);
        std::printf("%s\n", train::ProgressLine(m).c_str());
        std::fflush(stdout);
      }
    }
    // A signal may reach some ranks only (or at different steps): agree.
    int32_t stop = train::StopRequested() ? 1 : 0;
    if (absl::Status s = world_->AllReduce(std::span<int32_t>(&stop, 1), comm::ReduceOp::kMax);
        !s.ok()) {
      Fatal(s);
    }
    if (stop) {
      stopped_ = true;
      if (rank_ == 0) {
        LOG(WARNING) << "stop requested: checkpointing step " << step << " and stopping";
      }
      break;
    }
    if (tc.ckpt_every() > 0 && step % tc.ckpt_every() == 0 && step != total) {
      RETURN_IF_ERROR(Checkpoint());
    }
  }
  if (last_checkpoint_step_ != trainer_->step()) RETURN_IF_ERROR(Checkpoint());
  return absl::OkStatus();
}

// Rank 0, on the whole model (the last checkpoint left its params in whole_).
absl::Status DistJob::Evaluate() {
  if (!config_.train().eval_at_end() || flags_.eval_samples <= 0) return absl::OkStatus();
  train::EvalOptions eo;
  eo.max_samples = flags_.eval_samples;
  eo.batch_size = config_.data().micro_batch_size();
  ASSIGN_OR_RETURN(std::vector<train::EvalResult> results,
                   train::EvaluateSplits(whole_.get(), config_, *tokenizer_, {"val", "test"}, eo));
  if (results.empty()) return absl::OkStatus();
  std::printf("\n%s", train::FormatEvalTable(results).c_str());
  return WriteFile(config_.train().out_dir() + "/eval.json", train::EvalResultsToJson(results));
}

}  // namespace

MpiEnv DetectMpiEnv() {
  MpiEnv env;
  if (std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr) {  // mpirun (OpenMPI)
    env.size = EnvInt("OMPI_COMM_WORLD_SIZE", 1);
    env.rank = EnvInt("OMPI_COMM_WORLD_RANK", 0);
  } else if (std::getenv("PMIX_RANK") != nullptr) {  // srun --mpi=pmix
    env.rank = EnvInt("PMIX_RANK", 0);
    env.size = EnvInt("SLURM_STEP_NUM_TASKS", EnvInt("SLURM_NTASKS", 1));
  } else if (std::getenv("PMI_SIZE") != nullptr) {  // PMI-1/2 launchers
    env.size = EnvInt("PMI_SIZE", 1);
    env.rank = EnvInt("PMI_RANK", 0);
  }
  return env;
}

bool WantsDistributed(const MpiEnv& env, const Config& config) {
  const auto& p = config.parallel();
  return env.size > 1 || static_cast<int64_t>(p.tp()) * p.pp() * p.dp() > 1;
}

int RunDistributed(int* argc, char*** argv, const TrainFlags& flags, Config config) {
  absl::StatusOr<std::unique_ptr<comm::MpiRuntime>> runtime = comm::MpiRuntime::Init(argc, argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "unified_train: error: %s\n",
                 std::string(runtime.status().message()).c_str());
    return kUserErrorExitCode;
  }
  comm::CommOptions setup_options;
  setup_options.timeout_s = 24 * 3600;  // waits for rank 0's data generation and checkpoints
  comm::CommOptions options;
  options.timeout_s = config.parallel().comm_timeout_s();
  options.verbose = config.parallel().verbose_comm();
  std::unique_ptr<comm::Communicator> setup = (*runtime)->World(setup_options);
  std::unique_ptr<comm::Communicator> world = (*runtime)->World(options);
  const int rank = world->rank();
  int code = 0;
  {
    DistJob job(flags, std::move(config), setup.get(), world.get());
    absl::StatusOr<int> result = job.Run();
    if (result.ok()) {
      code = *result;
    } else {
      code = kUserErrorExitCode;
      const std::string msg(result.status().message());
      if (rank == 0) {
        std::fprintf(stderr, "unified_train: error: %s\n", msg.c_str());
      } else if (result.status().code() != absl::StatusCode::kAborted) {
        std::fprintf(stderr, "unified_train: error: rank %d: %s\n", rank, msg.c_str());
      }
    }
  }
  world.reset();
  setup.reset();
  runtime->reset();  // MPI_Finalize
  return code;
}

}  // namespace ut::launch
