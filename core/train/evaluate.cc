#include "core/train/evaluate.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "core/base/timer.h"
#include "core/train/kv_cache_generate.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

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
  KvCacheGenerator cached(model);
  for (const data::Sample& sample : loader->samples()) {
    if (*total >= options.max_samples) break;
    if (sample.task != task) continue;
    data::Sample prompt;
    std::string reference;
    if (!SplitPrompt(sample, &prompt, &reference)) continue;
    ASSIGN_OR_RETURN(data::Batch batch, loader->MakeBatch({&prompt}, /*add_eos=*/false));
    const int max_new = static_cast<int>(tok.Encode(reference).size()) + options.max_new_tokens;
    // Exact early stop: NormalizeText(partial) is a prefix of NormalizeText of
    // any continuation, so once it is not a prefix of the reference the
    // generation cannot match any more.
    const std::string want = NormalizeText(reference);
    // (Text with U+FFFD, an incomplete UTF-8 sequence, is never cut short.)
    auto can_still_match = [&](const std::vector<int32_t>& so_far) {
      const std::string text = NormalizeText(tok.Decode(so_far));
      return want.rfind(text, 0) == 0 || text.find("\xEF\xBF\xBD") != std::string::npos;
    };
    std::vector<int32_t> ids = options.use_kv_cache
                                   ? cached.Generate(batch, max_new, tok.eos_id(), can_still_match)
                                   : model->Generate(batch, max_new, tok.eos_id());
    const std::string generated = NormalizeText(tok.Decode(ids));
    const bool match = generated == want;
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
  Timer timer;
  EvalResult r;
  r.split = split;
  RETURN_IF_ERROR(EvalLoss(model, loader, options.max_samples, options.batch_size, &r));
  const double loss_s = timer.Seconds();
  RETURN_IF_ERROR(EvalGeneration(model, loader, tokenizer, "caption", options, &r.caption_correct,
                                 &r.caption_total));
  RETURN_IF_ERROR(
      EvalGeneration(model, loader, tokenizer, "vqa", options, &r.vqa_correct, &r.vqa_total));
  const double generation_s = timer.Seconds() - loss_s;
  if (options.retrieval) {
    const RetrievalPlan plan = PlanRetrieval(loader->samples(), options.max_samples);
    ASSIGN_OR_RETURN(r.retrieval,
                     EvalRetrieval(model, loader, tokenizer, plan, options.batch_size));
    r.has_retrieval = true;
  }
  LOG(INFO) << "eval " << split << ": loss " << loss_s << " s, generation " << generation_s
            << " s, retrieval " << timer.Seconds() - loss_s - generation_s << " s";
  r.seconds = timer.Seconds();
  return r;
}

absl::StatusOr<std::vector<EvalResult>> EvaluateSplits(MLLM* model, const Config& config,
                                                       const data::Tokenizer& tokenizer,
                                                       const std::vector<std::string>& splits,
                                                       const EvalOptions& options) {
  std::vector<EvalResult> results;
  for (const std::string& split : splits) {
    data::LoaderOptions lo;
    lo.manifest = (std::filesystem::path(config.data().data_dir()) / (split + ".jsonl")).string();
    if (!std::filesystem::exists(lo.manifest)) {
      LOG(WARNING) << "no " << lo.manifest << ": skipping evaluation on " << split;
      continue;
    }
    lo.seq_len = config.data().seq_len();
    lo.micro_batch_size = 1;  // batches come from MakeBatch; any split size works
    lo.image_size = config.model().vision().image_size();
    lo.visual_tokens = model->num_visual_tokens();
    lo.seed = config.data().seed();
    lo.on_bad_image = config.data().on_bad_image();
    lo.prefetch = 0;  // evaluation builds its own batches (MakeBatch)
    ASSIGN_OR_RETURN(std::unique_ptr<data::Loader> loader, data::Loader::Create(lo, &tokenizer));
    ASSIGN_OR_RETURN(EvalResult r, Evaluate(model, loader.get(), tokenizer, split, options));
    results.push_back(std::move(r));
  }
  return results;
}

namespace {

std::string Percent(int correct, int total) {
  return total == 0 ? std::string("n/a")
                    : absl::StrFormat("%.1f%% (%d/%d)", 100.0 * correct / total, correct, total);
}

std::string Recall(double r1, double r5, int n) {
  return n == 0 ? std::string("n/a")
                : absl::StrFormat("%.1f%% / %.1f%% (n=%d)", 100.0 * r1, 100.0 * r5, n);
}

}  // namespace

std::string FormatEvalTable(const std::vector<EvalResult>& results) {
  constexpr int kName = 30, kCol = 24;
  std::string out = absl::StrFormat("%-*s", kName, "metric");
  for (const EvalResult& r : results) out += absl::StrFormat(" | %-*s", kCol, r.split);
  out += "\n" + std::string(kName, '-');
  for (size_t i = 0; i < results.size(); ++i) out += "-+-" + std::string(kCol, '-');
  auto row = [&](const char* name, auto cell) {
    out += "\n" + absl::StrFormat("%-*s", kName, name);
    for (const EvalResult& r : results) out += absl::StrFormat(" | %-*s", kCol, cell(r));
  };
  row("loss (mean CE)", [](const EvalResult& r) { return absl::StrFormat("%.4f", r.loss); });
  row("caption exact-match",
      [](const EvalResult& r) { return Percent(r.caption_correct, r.caption_total); });
  row("VQA accuracy", [](const EvalResult& r) { return Percent(r.vqa_correct, r.vqa_total); });
  if (std::any_of(results.begin(), results.end(),
                  [](const EvalResult& r) { return r.has_retrieval; })) {
    auto retrieval = [&](const char* name, auto cell) {
      row(name, [&](const EvalResult& r) {
        return r.has_retrieval ? cell(r.retrieval) : std::string("n/a");
      });
    };
    retrieval("image->text R@1 / R@5", [](const RetrievalResult& x) {
      return Recall(x.i2t_r1, x.i2t_r5, x.caption_queries);
    });
    retrieval("text->image R@1 / R@5",
              [](const RetrievalResult& x) { return Recall(x.t2i_r1, x.t2i_r5, x.caption_texts); });
    retrieval("hard-negative text score", [](const RetrievalResult& x) {
      return Percent(x.hard_negative_correct, x.hard_negative_total);
    });
    retrieval("hard-neg pairwise: reordered", [](const RetrievalResult& x) {
      return Percent(x.hn_reordered_won, x.hn_reordered_pairs);
    });
    retrieval("hard-neg pairwise: changed", [](const RetrievalResult& x) {
      return Percent(x.hn_changed_won, x.hn_changed_pairs);
    });
    retrieval("Winoground text (swap pairs)",
              [](const RetrievalResult& x) { return Percent(x.wino_text, x.wino_pairs); });
    retrieval("Winoground image (swap pairs)",
              [](const RetrievalResult& x) { return Percent(x.wino_image, x.wino_pairs); });
    retrieval("Winoground group (swap pairs)",
              [](const RetrievalResult& x) { return Percent(x.wino_group, x.wino_pairs); });
    retrieval("story next panel R@1 / R@5", [](const RetrievalResult& x) {
      return Recall(x.story_r1, x.story_r5, x.story_queries);
    });
  }
  row("eval seconds", [](const EvalResult& r) { return absl::StrFormat("%.1f", r.seconds); });
  return out + "\n";
}

std::string EvalResultsToJson(const std::vector<EvalResult>& results) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const EvalResult& r : results) {
    nlohmann::ordered_json s = {{"loss", r.loss},
                                {"loss_tokens", r.loss_tokens},
                                {"loss_samples", r.loss_samples},
                                {"caption_correct", r.caption_correct},
                                {"caption_total", r.caption_total},
                                {"vqa_correct", r.vqa_correct},
                                {"vqa_total", r.vqa_total}};
    if (r.has_retrieval) {
      const RetrievalResult& x = r.retrieval;
      s["retrieval"] = {
          {"caption_queries", x.caption_queries},
          {"caption_texts", x.caption_texts},
          {"image_to_text_r1", x.i2t_r1},
          {"image_to_text_r5", x.i2t_r5},
          {"text_to_image_r1", x.t2i_r1},
          {"text_to_image_r5", x.t2i_r5},
          {"hard_negative_text_correct", x.hard_negative_correct},
          {"hard_negative_total", x.hard_negative_total},
          {"hard_negative_reordered_won", x.hn_reordered_won},
          {"hard_negative_reordered_pairs", x.hn_reordered_pairs},
          {"hard_negative_changed_won", x.hn_changed_won},
          {"hard_negative_changed_pairs", x.hn_changed_pairs},
          {"winoground_pairs", x.wino_pairs},
          {"winoground_text_correct", x.wino_text},
          {"winoground_image_correct", x.wino_image},
          {"winoground_group_correct", x.wino_group},
          {"story_queries", x.story_queries},
          {"story_next_panel_r1", x.story_r1},
          {"story_next_panel_r5", x.story_r5},
          {"skipped_items", x.skipped_items},
      };
    }
    s["seconds"] = r.seconds;
    j[r.split] = std::move(s);
  }
  return j.dump(2) + "\n";
}

}  // namespace ut::train
