// unified_train: train the multimodal LLM from a config, checkpoint, evaluate.
//
//   unified_train [--config FILE] [--out_dir DIR] [--resume] [--steps N]
//                 [--eval_samples N] [--path.to.field=value ...] [--help]
//
// Every user error prints one "unified_train: error: ..." line and exits 2
// before anything in out_dir is written or overwritten.
#include <omp.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/train/checkpoint.h"
#include "core/train/discriminative_loss.h"
#include "core/train/evaluate.h"
#include "core/train/trainer.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "launch/dist_train.h"
#include "launch/flags.h"
#include "launch/train_setup.h"
#include "nlohmann/json.hpp"

namespace ut {
namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] = R"(usage: unified_train [--config FILE] [--out_dir DIR] [--resume] [--steps N]
                     [--eval_samples N] [--path.to.field=value ...] [--help]

Trains the multimodal LLM described by a config, writes checkpoints and
metrics to the output directory, and prints an evaluation table at the end.
With no arguments it runs configs/tiny.textproto, generating the synthetic
data set first if data.data_dir has no train.jsonl.

flags:
  --config FILE          text-proto config (default: configs/tiny.textproto).
                         Every field is documented in core/base/config.proto.
  --out_dir DIR          output directory (same as --train.out_dir=DIR).
  --resume               continue from the newest complete checkpoint in
                         <out_dir>/checkpoints; the continued run is
                         bit-identical to an uninterrupted one. Without it, an
                         out_dir given on the command line that already holds
                         checkpoints is an error; an out_dir taken from the
                         config moves on to <out_dir>_2, _3, ... instead.
  --steps N              total optimizer steps (same as --train.steps=N).
  --eval_samples N       samples per evaluation metric and split (default 100).
  --path.to.field=value  override any config field, e.g. --optim.lr=3e-4,
                         --model.llm.layers=2, --data.on_bad_image=SKIP.
                         Applied in command-line order after --config.
  --help, -h             print this message and exit.

outputs (in out_dir):
  config.textproto       the resolved config of the run
  metrics.jsonl          one JSON object per logged step
  checkpoints/step_NNNNNN/{model.safetensors, optimizer.safetensors,
                           state.json, COMPLETE}
  eval.json              the evaluation results

distributed (docs/parallel.md): started by mpirun/srun with more than one
rank, or with parallel.tp * pp * dp > 1, every rank trains its shard of a
TP x PP x DP grid (world size must equal tp * pp * dp), e.g.
  mpirun -np 4 unified_train --parallel.tp=2 --parallel.pp=2
Rank 0 prints progress, writes metrics, checkpoints (the same format: any
layout resumes any other) and evaluates.

exit status: 0 done; 2 user error (bad flag, config, data, checkpoint);
130 stopped by SIGINT/SIGTERM after checkpointing (continue with --resume;
distributed: SIGUSR1 too, which mpirun forwards to every rank).
When run with `bazel run`, paths are relative to the workspace.
See docs/training.md and docs/config.md.
)";

using Flags = launch::TrainFlags;

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  ASSIGN_OR_RETURN(std::vector<launch::ParsedFlag> parsed,
                   launch::ParseArgs(argc, argv, {"help", "resume"},
                                     {"config", "out_dir", "steps", "eval_samples"}));
  Flags f;
  for (const launch::ParsedFlag& p : parsed) {
    if (p.name == "help") {
      f.help = true;
    } else if (p.name == "resume") {
      f.resume = true;
    } else if (p.name == "config") {
      f.config = p.value;
    } else if (p.name == "out_dir") {
      f.overrides.push_back("train.out_dir=" + p.value);
      f.out_dir_given = true;
    } else if (p.name == "steps") {
      f.overrides.push_back("train.steps=" + p.value);
    } else if (p.name == "eval_samples") {
      RETURN_IF_ERROR(launch::IntFlag(p, 0, &f.eval_samples));
    } else {  // a config override
      f.overrides.push_back(p.name + "=" + p.value);
      if (p.name == "train.out_dir") f.out_dir_given = true;
    }
  }
  return f;
}

absl::StatusOr<Config> ResolveConfig(const Flags& flags) {
  ASSIGN_OR_RETURN(Config config, LoadConfigFile(flags.config));
  for (const std::string& o : flags.overrides) RETURN_IF_ERROR(ApplyOverride(&config, o));
  RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

void OnSignal(int) { train::RequestStop(); }

// Returns the process exit code (0 or 130); errors come back as a status.
absl::StatusOr<int> Run(const Flags& flags, Config config) {
  RETURN_IF_ERROR(train::ValidateObjective(config.objective()));
  if (config.train().threads() > 0) omp_set_num_threads(config.train().threads());
  ASSIGN_OR_RETURN(const launch::OutDirPlan plan, launch::PlanOutDir(flags, &config));
  const std::string& out_dir = plan.out_dir;
  const std::string& resume_dir = plan.resume_dir;

  RETURN_IF_ERROR(launch::EnsureData(config));
  ASSIGN_OR_RETURN(std::unique_ptr<data::Tokenizer> tokenizer, launch::LoadTokenizer(config));
  ASSIGN_OR_RETURN(std::unique_ptr<MLLM> model, MLLM::Create(config.model()));
  ASSIGN_OR_RETURN(std::unique_ptr<data::Loader> loader,
                   data::Loader::Create(launch::LoaderOptionsFor(config, *model, "train"),
                                        tokenizer.get()));
  LOG(INFO) << "model: " << model->num_params() << " parameters; data: " << loader->num_samples()
            << " training samples, " << loader->batches_per_epoch() << " micro-batches per epoch";

  train::Trainer trainer(config, model.get(), loader.get());
  if (!resume_dir.empty()) RETURN_IF_ERROR(trainer.Resume(resume_dir));
  RETURN_IF_ERROR(trainer.Preflight());  // data errors before anything is written

  RETURN_IF_ERROR(launch::PrepareOutDir(config));
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  RETURN_IF_ERROR(trainer.Run());
  if (trainer.stopped_by_request()) {
    std::printf("stopped at step %lld; continue with --resume\n",
                static_cast<long long>(trainer.step()));
    return 130;
  }
  if (loader->skipped_images() > 0) {
    LOG(WARNING) << loader->skipped_images() << " samples were skipped for bad images";
  }

  if (config.train().eval_at_end() && flags.eval_samples > 0) {
    // The same evaluation as unified_eval (docs/evaluation.md).
    train::EvalOptions eo;
    eo.max_samples = flags.eval_samples;
    eo.batch_size = config.data().micro_batch_size();
    ASSIGN_OR_RETURN(std::vector<train::EvalResult> results,
                     train::EvaluateSplits(model.get(), config, *tokenizer, {"val", "test"}, eo));
    if (!results.empty()) {
      std::printf("\n%s", train::FormatEvalTable(results).c_str());
      RETURN_IF_ERROR(launch::WriteFile(out_dir + "/eval.json", train::EvalResultsToJson(results)));
    }
  }
  std::printf("done: %s\n", out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace ut

int main(int argc, char** argv) {
  // Under mpirun/srun every rank runs this; the rank comes from the launcher's
  // environment until MPI is initialised (launch/dist_train.h).
  const ut::launch::MpiEnv env = ut::launch::DetectMpiEnv();
  ut::InitLogging(argv[0], env.rank);
  auto fail = [&](const absl::Status& s) {
    // Flags and config are the same on every rank: one error line, from rank 0.
    if (env.rank == 0) {
      std::fprintf(stderr, "unified_train: error: %s\n", std::string(s.message()).c_str());
    }
    return ut::kUserErrorExitCode;
  };
  if (absl::Status ws = ut::launch::EnterWorkspace(); !ws.ok()) return fail(ws);
  absl::StatusOr<ut::Flags> flags = ut::ParseFlags(argc, argv);
  if (!flags.ok()) return fail(flags.status());
  if (flags->help) {
    if (env.rank == 0) std::printf("%s", ut::kUsage);
    return 0;
  }
  absl::StatusOr<ut::Config> config = ut::ResolveConfig(*flags);
  if (!config.ok()) return fail(config.status());
  if (ut::launch::WantsDistributed(env, *config)) {
    return ut::launch::RunDistributed(&argc, &argv, *flags, *std::move(config));
  }
  absl::StatusOr<int> code = ut::Run(*flags, *std::move(config));
  if (!code.ok()) return fail(code.status());
  return *code;
}
