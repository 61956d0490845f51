// Evaluation on a held-out split (val or test):
//   loss         mean next-token cross-entropy over the first max_samples samples
//   caption EM   greedy MLLM::Generate from the prompt <bos> + image; exact match of the
//                decoded text with the reference caption (whitespace-normalised)
//   VQA acc      prompt <bos> + image + question; exact match of the generated answer
//   retrieval    caption retrieval, hard negatives, Winoground, story next panel
//                from the model's slice embeddings (retrieval_eval.h)
// Each metric looks at up to max_samples samples of its task, in manifest order,
// so the numbers are deterministic and the whole table takes seconds.
// Greedy decoding uses a KV cache (kv_cache_generate.h) unless told otherwise.
// docs/evaluation.md defines every number.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "core/train/retrieval_eval.h"
#include "data/loader.h"
#include "data/tokenizer.h"

namespace ut::train {

struct EvalOptions {
  int max_samples = 100;     // per metric
  int max_new_tokens = 32;   // generation budget beyond the reference length
  int batch_size = 8;        // rows per forward for the loss and the embeddings
  bool use_kv_cache = true;  // false: MLLM::Generate (re-runs the prefix every token)
  bool retrieval = true;     // the retrieval metrics
};

struct EvalResult {
  std::string split;
  double loss = 0;          // mean CE over counted targets
  int64_t loss_tokens = 0;  // targets counted
  int64_t loss_samples = 0;
  int caption_correct = 0, caption_total = 0;
  int vqa_correct = 0, vqa_total = 0;
  bool has_retrieval = false;
  RetrievalResult retrieval;
  double seconds = 0;  // wall time of Evaluate
};

// `loader` reads the split's manifest (its samples() are evaluated; its
// position is not used or changed).
absl::StatusOr<EvalResult> Evaluate(MLLM* model, data::Loader* loader,
                                    const data::Tokenizer& tokenizer, const std::string& split,
                                    const EvalOptions& options = {});

// Evaluate on each split of `splits` whose manifest <data.data_dir>/<split>.jsonl
// exists (others are skipped with a warning), with the config's loader settings.
absl::StatusOr<std::vector<EvalResult>> EvaluateSplits(MLLM* model, const Config& config,
                                                       const data::Tokenizer& tokenizer,
                                                       const std::vector<std::string>& splits,
                                                       const EvalOptions& options = {});

// A plain-text table, one row per metric and a column per split.
std::string FormatEvalTable(const std::vector<EvalResult>& results);
// {"<split>": {"loss": ..., "caption_correct": ..., "retrieval": {...}}, ...}
std::string EvalResultsToJson(const std::vector<EvalResult>& results);

// Lower-level pieces, exposed for tests.
// The generation prompt of a caption/VQA sample: every slice before the last
// non-prompt text slice, whose text is returned as the reference. False if
// the sample has no such slice.
bool SplitPrompt(const data::Sample& sample, data::Sample* prompt, std::string* reference);
// Trims and collapses runs of whitespace.
std::string NormalizeText(const std::string& text);

}  // namespace ut::train
