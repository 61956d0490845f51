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

#include "absl/strings/numbers.h"
#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/train/checkpoint.h"
#include "core/train/discriminative_loss.h"
#include "core/train/evaluate.h"
#include "core/train/trainer.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "launch/flags.h"
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

exit status: 0 done; 2 user error (bad flag, config, data, checkpoint);
130 stopped by SIGINT/SIGTERM after checkpointing (continue with --resume).
When run with `bazel run`, paths are relative to the workspace.
See docs/training.md and docs/config.md.
)";

struct Flags {
  bool help = false;
  bool resume = false;
  std::string config = "configs/tiny.textproto";
  std::vector<std::string> overrides;  // "path=value", in order
  int eval_samples = 100;
  bool out_dir_given = false;  // --out_dir or --train.out_dir on the command line
};

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
      if (!absl::SimpleAtoi(p.value, &f.eval_samples) || f.eval_samples < 0) {
        return launch::BadFlag(p.arg, "needs a non-negative integer");
      }
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

// Generates the synthetic set if the data directory has no train manifest.
absl::Status EnsureData(const Config& config) {
  const auto& d = config.data();
  if (fs::exists(fs::path(d.data_dir()) / "train.jsonl")) return absl::OkStatus();
  if (!d.generate_if_missing()) {
    return absl::NotFoundError(absl::StrCat(
        "data.data_dir '", d.data_dir(), "' has no train.jsonl and data.generate_if_missing is "
        "false; point --data.data_dir at a data set (docs/data_format.md) or set "
        "--data.generate_if_missing=true to generate the synthetic one"));
  }
  LOG(INFO) << "no " << d.data_dir() << "/train.jsonl: generating the synthetic data set";
  data::SyntheticOptions o;
  o.out_dir = d.data_dir();
  o.image_size = config.model().vision().image_size();
  o.num_train = d.synthetic_train();
  o.num_val = d.synthetic_val();
  o.num_test = d.synthetic_test();
  o.seed = d.synthetic_seed();
  o.vocab_size = d.tokenizer_vocab();
  return data::GenerateSynthetic(o);
}

data::LoaderOptions LoaderOptionsFor(const Config& config, const MLLM& model,
                                     const std::string& split) {
  data::LoaderOptions o;
  o.manifest = (fs::path(config.data().data_dir()) / (split + ".jsonl")).string();
  o.seq_len = config.data().seq_len();
  o.micro_batch_size = config.data().micro_batch_size();
  o.image_size = config.model().vision().image_size();
  o.visual_tokens = model.num_visual_tokens();
  o.seed = config.data().seed();
  o.on_bad_image = config.data().on_bad_image();
  o.prefetch = config.data().prefetch();
  return o;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

void OnSignal(int) { train::RequestStop(); }

// Returns the process exit code (0 or 130); errors come back as a status.
absl::StatusOr<int> Run(const Flags& flags) {
  ASSIGN_OR_RETURN(Config config, ResolveConfig(flags));
  RETURN_IF_ERROR(train::ValidateObjective(config.objective()));
  std::string out_dir = config.train().out_dir();
  if (config.train().threads() > 0) omp_set_num_threads(config.train().threads());
  if (!flags.resume && !flags.out_dir_given && train::LatestCheckpoint(out_dir).ok()) {
    // The out_dir came from the config, not from the user: start a fresh run
    // beside the old one (runs/tiny -> runs/tiny_2, ...) instead of refusing,
    // so the default job can simply be run again. Nothing is overwritten.
    std::string next;
    for (int k = 2; fs::exists(next = absl::StrCat(out_dir, "_", k)); ++k) {
    }
    LOG(INFO) << "out_dir '" << out_dir << "' already holds a run; this run writes to '" << next
              << "' (pass --resume to continue the old run instead)";
    out_dir = next;
    config.mutable_train()->set_out_dir(out_dir);
  }

  // Where to start, decided before anything is written.
  std::string resume_dir;
  if (flags.resume) {
    ASSIGN_OR_RETURN(resume_dir, train::LatestCheckpoint(out_dir));
  } else if (auto existing = train::LatestCheckpoint(out_dir); existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "out_dir '", out_dir, "' already holds a run (", *existing, "); pass --resume to "
        "continue it, or choose a new --out_dir"));
  }

  RETURN_IF_ERROR(EnsureData(config));
  const std::string tokenizer_path =
      config.data().tokenizer_model().empty()
          ? (fs::path(config.data().data_dir()) / "tokenizer.model").string()
          : config.data().tokenizer_model();
  ASSIGN_OR_RETURN(std::unique_ptr<data::Tokenizer> tokenizer, data::Tokenizer::Load(tokenizer_path));
  if (tokenizer->vocab_size() != config.model().llm().vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'model.llm.vocab_size' is ", config.model().llm().vocab_size(),
        " but the tokenizer ", tokenizer_path, " has ", tokenizer->vocab_size(),
        " tokens; set --model.llm.vocab_size=", tokenizer->vocab_size()));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<MLLM> model, MLLM::Create(config.model()));
  ASSIGN_OR_RETURN(std::unique_ptr<data::Loader> loader,
                   data::Loader::Create(LoaderOptionsFor(config, *model, "train"), tokenizer.get()));
  LOG(INFO) << "model: " << model->num_params() << " parameters; data: " << loader->num_samples()
            << " training samples, " << loader->batches_per_epoch() << " micro-batches per epoch";

  train::Trainer trainer(config, model.get(), loader.get());
  if (!resume_dir.empty()) RETURN_IF_ERROR(trainer.Resume(resume_dir));
  RETURN_IF_ERROR(trainer.Preflight());  // data errors before anything is written

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create out_dir '", out_dir, "': ",
                                                    ec.message()));
  }
  RETURN_IF_ERROR(WriteFile(out_dir + "/config.textproto", ConfigToText(config)));
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
      RETURN_IF_ERROR(WriteFile(out_dir + "/eval.json", train::EvalResultsToJson(results)));
    }
  }
  std::printf("done: %s\n", out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace ut

int main(int argc, char** argv) {
  ut::InitLogging(argv[0]);
  if (absl::Status ws = ut::launch::EnterWorkspace(); !ws.ok()) {
    std::fprintf(stderr, "unified_train: error: %s\n", std::string(ws.message()).c_str());
    return ut::kUserErrorExitCode;
  }
  absl::StatusOr<ut::Flags> flags = ut::ParseFlags(argc, argv);
  absl::StatusOr<int> code =
      flags.ok() ? (flags->help ? absl::StatusOr<int>(0) : ut::Run(*flags))
                 : absl::StatusOr<int>(flags.status());
  if (flags.ok() && flags->help) std::printf("%s", ut::kUsage);
  if (!code.ok()) {
    std::fprintf(stderr, "unified_train: error: %s\n", std::string(code.status().message()).c_str());
    return ut::kUserErrorExitCode;
  }
  return *code;
}
