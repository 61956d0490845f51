#include "core/train/evaluate.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_format.h"
#include "glog/logging.h"

namespace ut::train {

std::string NormalizeText(const std::string& text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
    } else {
      if (space) out.push_back(' ');
      out.push_back(c);
      space = false;
    }
  }
  return out;
}

bool SplitPrompt(const data::Sample& sample, data::Sample* prompt, std::string* reference) {
  int last = -1;
  for (int i = 0; i < static_cast<int>(sample.slices.size()); ++i) {
    const data::Slice& s = sample.slices[i];
    if (s.kind == data::Slice::Kind::kText && !s.prompt) last = i;
  }
  if (last < 0) return false;
  *prompt = sample;
  prompt->slices.resize(last);
  prompt->negatives.clear();
  *reference = sample.slices[last].text;
  return true;
}

namespace {

// Mean CE over the first max_samples samples, micro-batch by micro-batch.
absl::Status EvalLoss(MLLM* model, data::Loader* loader, int max_samples, int batch_size,
                      EvalResult* r) {
  const auto& samples = loader->samples();
  const int n = std::min<int>(max_samples, samples.size());
  double weighted = 0;
  for (int begin = 0; begin < n; begin += batch_size) {
    std::vector<const data::Sample*> chunk;
    for (int i = begin; i < std::min(n, begin + batch_size); ++i) chunk.push_back(&samples[i]);
    ASSIGN_OR_RETURN(data::Batch batch, loader->MakeBatch(chunk, /*add_eos=*/true));
    int64_t count = 0;
    const float loss = model->Forward(batch, &count);
    weighted += static_cast<double>(loss) * count;
    r->loss_tokens += count;
  }
  r->loss_samples = n;
  r->loss = r->loss_tokens > 0 ? weighted / r->loss_tokens : 0.0;
  return absl::OkStatus();
}

// Exact-match generation accuracy over up to max_samples samples of `task`.
absl::Status EvalGeneration(MLLM* model, data::Loader* loader, const data::Tokenizer& tok,
                            const std::string& task, const EvalOptions& options, int* correct,
                            int* total) {
  for (const data::Sample& sample : loader->samples()) {
    if (*total >= options.max_samples) break;
    if (sample.task != task) continue;
    data::Sample prompt;
    std::string reference;
    if (!SplitPrompt(sample, &prompt, &reference)) continue;
    ASSIGN_OR_RETURN(data::Batch batch, loader->MakeBatch({&prompt}, /*add_eos=*/false));
    const int max_new = static_cast<int>(tok.Encode(reference).size()) + options.max_new_tokens;
    std::vector<int32_t> ids = model->Generate(batch, max_new, tok.eos_id());
    const std::string generated = NormalizeText(tok.Decode(ids));
    const bool match = generated == NormalizeText(reference);
    *correct += match;
    ++*total;
    VLOG(1) << task << " " << sample.id << ": '" << generated << "' vs '" << reference << "'"
            << (match ? " ok" : "");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EvalResult> Evaluate(MLLM* model, data::Loader* loader,
                                    const data::Tokenizer& tokenizer, const std::string& split,
                                    const EvalOptions& options) {
  EvalResult r;
  r.split = split;
  RETURN_IF_ERROR(EvalLoss(model, loader, options.max_samples, options.batch_size, &r));
  RETURN_IF_ERROR(EvalGeneration(model, loader, tokenizer, "caption", options, &r.caption_correct,
                                 &r.caption_total));
  RETURN_IF_ERROR(EvalGeneration(model, loader, tokenizer, "vqa", options, &r.vqa_correct,
                                 &r.vqa_total));
  return r;
}

std::string FormatEvalTable(const std::vector<EvalResult>& results) {
  auto pct = [](int correct, int total) {
    return total == 0 ? std::string("n/a")
                      : absl::StrFormat("%.1f%% (%d/%d)", 100.0 * correct / total, correct, total);
  };
  std::string out = absl::StrFormat("%-22s", "metric");
  for (const EvalResult& r : results) out += absl::StrFormat(" | %-16s", r.split);
  out += "\n" + std::string(22, '-');
  for (size_t i = 0; i < results.size(); ++i) out += "-+-" + std::string(16, '-');
  out += "\n" + absl::StrFormat("%-22s", "loss (mean CE)");
  for (const EvalResult& r : results) out += absl::StrFormat(" | %-16.4f", r.loss);
  out += "\n" + absl::StrFormat("%-22s", "caption exact-match");
  for (const EvalResult& r : results) {
    out += absl::StrFormat(" | %-16s", pct(r.caption_correct, r.caption_total));
  }
  out += "\n" + absl::StrFormat("%-22s", "VQA accuracy");
  for (const EvalResult& r : results) {
    out += absl::StrFormat(" | %-16s", pct(r.vqa_correct, r.vqa_total));
  }
  return out + "\n";
}

}  // namespace ut::train
