// Set-up shared by unified_train's single-process and distributed paths
// (launch/unified_train.cc, launch/dist_train.cc): the out_dir rules, data
// generation, the tokenizer check, loader options, small file helpers.
#pragma once

#include <memory>
#include <string>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "data/loader.h"
#include "data/tokenizer.h"

namespace ut::launch {

// unified_train's flags after parsing (unified_train.cc).
struct TrainFlags {
  bool help = false;
  bool resume = false;
  std::string config = "configs/tiny.textproto";
  std::vector<std::string> overrides;  // "path=value", in order
  int eval_samples = 100;
  bool out_dir_given = false;  // --out_dir or --train.out_dir on the command line
};

// Where a run writes and where it starts, decided before anything is written:
//   - no --resume, out_dir from the config and already holding a run: moves on
//     to <out_dir>_2, _3, ... (config->train.out_dir is updated);
//   - no --resume, out_dir given on the command line and holding a run: error;
//   - --resume: the newest complete checkpoint (error if none).
struct OutDirPlan {
  std::string out_dir;
  std::string resume_dir;  // empty: start from step 0
};
absl::StatusOr<OutDirPlan> PlanOutDir(const TrainFlags& flags, Config* config);

// Generates the synthetic set if data.data_dir has no train.jsonl (and
// data.generate_if_missing allows it).
absl::Status EnsureData(const Config& config);

// The tokenizer of the data set, checked against model.llm.vocab_size.
absl::StatusOr<std::unique_ptr<data::Tokenizer>> LoadTokenizer(const Config& config);

// Loader options of `split` (this DP rank's share of the global stream).
data::LoaderOptions LoaderOptionsFor(const Config& config, const MLLM& model,
                                     const std::string& split, int dp_rank = 0, int dp_size = 1);

absl::Status WriteFile(const std::string& path, const std::string& text);

// Creates out_dir and writes out_dir/config.textproto.
absl::Status PrepareOutDir(const Config& config);

}  // namespace ut::launch
