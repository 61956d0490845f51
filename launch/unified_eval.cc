// unified_eval: evaluate a checkpoint on a held-out split and print one table.
//
//   unified_eval (--out_dir RUN | --checkpoint DIR) [--config FILE] [--split test]
//                [--json PATH] [--eval_samples N] [--no_kv_cache]
//                [--path.to.field=value ...] [--help]
//
// Every user error prints one "unified_eval: error: ..." line and exits 2.
// The metrics are defined in docs/evaluation.md.
#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/train/checkpoint.h"
#include "core/train/evaluate.h"
#include "launch/flags.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace ut {
namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] =
    R"(usage: unified_eval (--out_dir RUN | --checkpoint DIR) [--config FILE]
                    [--split test] [--json PATH] [--eval_samples N] [--no_kv_cache]
                    [--path.to.field=value ...] [--help]

Loads a checkpoint written by unified_train and prints one evaluation table
for the held-out split(s): loss, caption exact-match and VQA accuracy (greedy
decoding), image<->text retrieval R@1/R@5, hard-negative and Winoground scores,
and story next-panel retrieval R@1/R@5 (docs/evaluation.md defines each).

flags:
  --out_dir RUN          evaluate the newest complete checkpoint of the run in
                         RUN (RUN/checkpoints/step_NNNNNN with a COMPLETE marker).
  --checkpoint DIR       evaluate this checkpoint directory instead.
  --config FILE          text-proto config. Default: the config the checkpoint
                         was trained with (its state.json).
  --split NAMES          comma-separated splits (default: test); each needs
                         <data.data_dir>/<split>.jsonl.
  --json PATH            where to write the results as JSON. Default:
                         RUN/eval_step_NNNNNN.json for RUN/checkpoints/step_NNNNNN
                         (a checkpoint elsewhere: next to its directory).
  --eval_samples N       samples per metric and split (default 100).
  --no_kv_cache          decode with MLLM::Generate (no KV cache; slower, same
                         tokens up to float rounding).
  --path.to.field=value  override any config field, e.g. --data.data_dir=DIR.
  --help, -h             print this message and exit.

exit status: 0 done; 2 user error (bad flag, config, data or checkpoint).
When run with `bazel run`, paths are relative to the workspace.
)";

struct Flags {
  bool help = false;
  bool kv_cache = true;
  std::string out_dir, checkpoint, config, json;
  std::vector<std::string> splits = {"test"};
  std::vector<std::string> overrides;  // "path=value", in order
  int eval_samples = 100;
};

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  ASSIGN_OR_RETURN(
      std::vector<launch::ParsedFlag> parsed,
      launch::ParseArgs(argc, argv, {"help", "no_kv_cache"},
                        {"out_dir", "checkpoint", "config", "split", "json", "eval_samples"}));
  Flags f;
  for (const launch::ParsedFlag& p : parsed) {
    if (p.name == "help") {
      f.help = true;
    } else if (p.name == "no_kv_cache") {
      f.kv_cache = false;
    } else if (p.name == "out_dir") {
      f.out_dir = p.value;
    } else if (p.name == "checkpoint") {
      f.checkpoint = p.value;
    } else if (p.name == "config") {
      f.config = p.value;
    } else if (p.name == "json") {
      f.json = p.value;
    } else if (p.name == "split") {
      f.splits = absl::StrSplit(p.value, ',', absl::SkipEmpty());
      if (f.splits.empty()) return launch::BadFlag(p.arg, "needs at least one split name");
    } else if (p.name == "eval_samples") {
      RETURN_IF_ERROR(launch::IntFlag(p, 1, &f.eval_samples));
    } else {  // a config override
      f.overrides.push_back(p.name + "=" + p.value);
    }
  }
  if (!f.help && f.out_dir.empty() == f.checkpoint.empty()) {
    return absl::InvalidArgumentError(
        "give exactly one of --out_dir RUN (its newest complete checkpoint) and --checkpoint DIR "
        "(run with --help for the list of flags)");
  }
  return f;
}

// The checkpoint directory to evaluate.
absl::StatusOr<std::string> ChooseCheckpoint(const Flags& flags) {
  if (!flags.checkpoint.empty()) {
    if (!fs::is_directory(flags.checkpoint)) {
      return absl::NotFoundError(absl::StrCat("--checkpoint '", flags.checkpoint,
                                              "' is not a directory; pass a checkpoint directory "
                                              "such as RUN/checkpoints/step_000300"));
    }
    return flags.checkpoint;
  }
  if (!fs::is_directory(flags.out_dir)) {
    return absl::NotFoundError(absl::StrCat("--out_dir '", flags.out_dir,
                                            "' is not a directory; pass the out_dir of a "
                                            "unified_train run"));
  }
  std::vector<std::string> all = train::ListCheckpoints(flags.out_dir);
  if (all.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no complete checkpoint in ", (fs::path(flags.out_dir) / "checkpoints").string(),
        " (a checkpoint is a step_NNNNNN directory with a COMPLETE file); train longer than "
        "train.ckpt_every steps, or pass --checkpoint DIR"));
  }
  return all.back();
}

// The config the checkpoint was trained with (state.json "config").
absl::StatusOr<Config> CheckpointConfig(const std::string& dir) {
  const std::string path = (fs::path(dir) / "state.json").string();
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, "; is '", dir,
                                            "' a checkpoint directory? (or pass --config FILE)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("config") || !j["config"].is_string()) {
    return absl::DataLossError(absl::StrCat(
        path, " is not valid JSON with a \"config\" string; pass --config FILE instead"));
  }
  return ParseConfigText(j["config"].get<std::string>(), path + " (config)");
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write --json file ", path));
  return absl::OkStatus();
}

absl::Status Run(const Flags& flags) {
  ASSIGN_OR_RETURN(const std::string ckpt, ChooseCheckpoint(flags));
  Config config;
  if (flags.config.empty()) {
    ASSIGN_OR_RETURN(config, CheckpointConfig(ckpt));
  } else {
    ASSIGN_OR_RETURN(config, LoadConfigFile(flags.config));
  }
  for (const std::string& o : flags.overrides) RETURN_IF_ERROR(ApplyOverride(&config, o));
  RETURN_IF_ERROR(ValidateConfig(config));
  if (config.train().threads() > 0) omp_set_num_threads(config.train().threads());

  for (const std::string& split : flags.splits) {
    const fs::path manifest = fs::path(config.data().data_dir()) / (split + ".jsonl");
    if (!fs::exists(manifest)) {
      return absl::NotFoundError(
          absl::StrCat("split '", split, "': no ", manifest.string(), "; check --split, or point ",
                       "--data.data_dir at the data set the run was trained on"));
    }
  }
  const std::string tokenizer_path =
      config.data().tokenizer_model().empty()
          ? (fs::path(config.data().data_dir()) / "tokenizer.model").string()
          : config.data().tokenizer_model();
  ASSIGN_OR_RETURN(std::unique_ptr<data::Tokenizer> tokenizer,
                   data::Tokenizer::Load(tokenizer_path));
  if (tokenizer->vocab_size() != config.model().llm().vocab_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config field 'model.llm.vocab_size' is ", config.model().llm().vocab_size(),
                     " but the tokenizer ", tokenizer_path, " has ", tokenizer->vocab_size(),
                     " tokens; evaluate with the tokenizer and config of the run"));
  }

  // Weights; the optimizer state is read (and validated) but not used.
  ASSIGN_OR_RETURN(std::unique_ptr<MLLM> model, MLLM::Create(config.model()));
  std::vector<float> exp_avg(model->num_params()), exp_avg_sq(model->num_params());
  train::ModelBuffers buffers{&model->params(), model->num_params(), model->param_data(),
                              exp_avg.data(), exp_avg_sq.data()};
  train::TrainState state;
  RETURN_IF_ERROR(train::LoadCheckpoint(ckpt, buffers, &state));
  LOG(INFO) << "evaluating " << ckpt << " (step " << state.step << ", " << model->num_params()
            << " parameters)";

  train::EvalOptions eo;
  eo.max_samples = flags.eval_samples;
  eo.batch_size = config.data().micro_batch_size();
  eo.use_kv_cache = flags.kv_cache;
  ASSIGN_OR_RETURN(std::vector<train::EvalResult> results,
                   train::EvaluateSplits(model.get(), config, *tokenizer, flags.splits, eo));
  std::printf("checkpoint %s (step %lld)\n\n%s", ckpt.c_str(), static_cast<long long>(state.step),
              train::FormatEvalTable(results).c_str());

  std::string json_path = flags.json;
  if (json_path.empty()) {
    // RUN/checkpoints/step_N -> RUN/eval_step_N.json; any other DIR -> DIR/../eval_<name>.json.
    fs::path dir = fs::path(ckpt).lexically_normal();
    if (!dir.has_filename()) dir = dir.parent_path();  // trailing '/'
    fs::path run = dir.parent_path();
    if (run.filename() == "checkpoints") run = run.parent_path();
    json_path = (run / ("eval_" + dir.filename().string() + ".json")).string();
  }
  nlohmann::ordered_json j = {{"checkpoint", ckpt}, {"step", state.step}};
  const nlohmann::ordered_json splits =
      nlohmann::ordered_json::parse(train::EvalResultsToJson(results));
  for (const auto& [split, value] : splits.items()) j[split] = value;
  RETURN_IF_ERROR(WriteFile(json_path, j.dump(2) + "\n"));
  std::printf("wrote %s\n", json_path.c_str());
  return absl::OkStatus();
}

}  // namespace
}  // namespace ut

int main(int argc, char** argv) {
  ut::InitLogging(argv[0]);
  if (absl::Status ws = ut::launch::EnterWorkspace(); !ws.ok()) {
    std::fprintf(stderr, "unified_eval: error: %s\n", std::string(ws.message()).c_str());
    return ut::kUserErrorExitCode;
  }
  absl::StatusOr<ut::Flags> flags = ut::ParseFlags(argc, argv);
  absl::Status status =
      flags.ok() ? (flags->help ? absl::OkStatus() : ut::Run(*flags)) : flags.status();
  if (flags.ok() && flags->help) std::printf("%s", ut::kUsage);
  if (!status.ok()) {
    std::fprintf(stderr, "unified_eval: error: %s\n", std::string(status.message()).c_str());
    return ut::kUserErrorExitCode;
  }
  return 0;
}
