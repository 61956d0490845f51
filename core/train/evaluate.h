// Evaluation on a held-out split (val or test):
//   loss         mean next-token cross-entropy over the first max_samples samples
//   caption EM   greedy MLLM::Generate from the prompt <bos> + image; exact match of the
//                decoded text with the reference caption (whitespace-normalised)
//   VQA acc      prompt <bos> + image + question; exact match of the generated answer
// Each metric looks at up to max_samples samples of its task, in manifest order,
// so the numbers are deterministic and the whole table takes seconds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/model/mllm.h"
#include "data/loader.h"
#include "data/tokenizer.h"

namespace ut::train {

struct EvalOptions {
  int max_samples = 100;    // per metric
  int max_new_tokens = 32;  // generation budget beyond the reference length
  int batch_size = 8;       // rows per forward for the loss
};

struct EvalResult {
  std::string split;
  double loss = 0;          // mean CE over counted targets
  int64_t loss_tokens = 0;  // targets counted
  int64_t loss_samples = 0;
  int caption_correct = 0, caption_total = 0;
  int vqa_correct = 0, vqa_total = 0;
};

// `loader` reads the split's manifest (its samples() are evaluated; its
// position is not used or changed).
absl::StatusOr<EvalResult> Evaluate(MLLM* model, data::Loader* loader,
                                    const data::Tokenizer& tokenizer, const std::string& split,
                                    const EvalOptions& options = {});

// A plain-text table, one row per metric and a column per split.
std::string FormatEvalTable(const std::vector<EvalResult>& results);

// Lower-level pieces, exposed for tests.
// The generation prompt of a caption/VQA sample: every slice before the last
// non-prompt text slice, whose text is returned as the reference. False if
// the sample has no such slice.
bool SplitPrompt(const data::Sample& sample, data::Sample* prompt, std::string* reference);
// Trims and collapses runs of whitespace.
std::string NormalizeText(const std::string& text);

}  // namespace ut::train
