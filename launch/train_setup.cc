#include "launch/train_setup.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/base/logging.h"
#include "core/train/checkpoint.h"
#include "data/synthetic.h"

namespace ut::launch {

namespace fs = std::filesystem;

absl::StatusOr<OutDirPlan> PlanOutDir(const TrainFlags& flags, Config* config) {
  OutDirPlan plan;
  plan.out_dir = config->train().out_dir();
  if (!flags.resume && !flags.out_dir_given && train::LatestCheckpoint(plan.out_dir).ok()) {
    // The out_dir came from the config, not from the user: start a fresh run
    // beside the old one (runs/tiny -> runs/tiny_2, ...) instead of refusing,
    // so the default job can simply be run again. Nothing is overwritten.
    std::string next;
    for (int k = 2; fs::exists(next = absl::StrCat(plan.out_dir, "_", k)); ++k) {
    }
    LOG(INFO) << "out_dir '" << plan.out_dir << "' already holds a run; this run writes to '"
              << next << "' (pass --resume to continue the old run instead)";
    plan.out_dir = next;
    config->mutable_train()->set_out_dir(plan.out_dir);
  }
  if (flags.resume) {
    ASSIGN_OR_RETURN(plan.resume_dir, train::LatestCheckpoint(plan.out_dir));
  } else if (auto existing = train::LatestCheckpoint(plan.out_dir); existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "out_dir '", plan.out_dir, "' already holds a run (", *existing, "); pass --resume to "
        "continue it, or choose a new --out_dir"));
  }
  return plan;
}

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

absl::StatusOr<std::unique_ptr<data::Tokenizer>> LoadTokenizer(const Config& config) {
  const std::string path = config.data().tokenizer_model().empty()
                               ? (fs::path(config.data().data_dir()) / "tokenizer.model").string()
                               : config.data().tokenizer_model();
  ASSIGN_OR_RETURN(std::unique_ptr<data::Tokenizer> tokenizer, data::Tokenizer::Load(path));
  if (tokenizer->vocab_size() != config.model().llm().vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'model.llm.vocab_size' is ", config.model().llm().vocab_size(),
        " but the tokenizer ", path, " has ", tokenizer->vocab_size(),
        " tokens; set --model.llm.vocab_size=", tokenizer->vocab_size()));
  }
  return tokenizer;
}

data::LoaderOptions LoaderOptionsFor(const Config& config, const MLLM& model,
                                     const std::string& split, int dp_rank, int dp_size) {
  data::LoaderOptions o = data::LoaderOptionsFromConfig(config, split, dp_rank, dp_size);
  o.visual_tokens = model.num_visual_tokens();  // the model's own count wins
  return o;
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status PrepareOutDir(const Config& config) {
  const std::string& out_dir = config.train().out_dir();
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create out_dir '", out_dir, "': ",
                                                    ec.message()));
  }
  return WriteFile(out_dir + "/config.textproto", ConfigToText(config));
}

}  // namespace ut::launch
