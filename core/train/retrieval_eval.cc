// Retrieval evaluation (retrieval_eval.h): plan, embed, score.
#include "core/train/retrieval_eval.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/train/retrieval_metrics.h"
#include "glog/logging.h"

namespace ut::train {
namespace {

using data::Sample;
using data::Slice;

bool IsImage(const Slice& s) { return s.kind == Slice::Kind::kImage; }

// An image followed by its (non-prompt) caption at slices 0 and 1.
bool StartsWithImageCaption(const Sample& s) {
  return s.slices.size() >= 2 && IsImage(s.slices[0]) && !IsImage(s.slices[1]) &&
         !s.slices[1].prompt;
}

// A one-slice sample holding `slice` (without its teacher feature).
Sample OneSlice(const std::string& id, const Slice& slice) {
  Sample s;
  s.id = id;
  s.task = "retrieval_item";
  s.slices.push_back(slice);
  s.slices.back().teacher.clear();
  s.slices.back().teacher_split = 0;
  return s;
}

class Planner {
 public:
  int Image(const Sample& owner, int slice) {
    const std::string id = absl::StrCat(owner.id, "/slice", slice);
    auto [it, added] = image_index_.emplace(id, static_cast<int>(plan.images.size()));
    if (added) plan.images.push_back(OneSlice(id, owner.slices[slice]));
    return it->second;
  }
  int Text(const std::string& text) {
    auto [it, added] = text_index_.emplace(text, static_cast<int>(plan.texts.size()));
    if (added) {
      Slice slice;
      slice.text = text;
      plan.texts.push_back(OneSlice(absl::StrCat("text/", it->second), slice));
    }
    return it->second;
  }
  RetrievalPlan plan;

 private:
  std::map<std::string, int> image_index_, text_index_;
};

}  // namespace

RetrievalPlan PlanRetrieval(const std::vector<Sample>& samples, int max_samples) {
  std::vector<const Sample*> captions, stories;
  for (const Sample& s : samples) {
    if (s.task == "caption" && StartsWithImageCaption(s) &&
        static_cast<int>(captions.size()) < max_samples) {
      captions.push_back(&s);
    }
    const int images = std::count_if(s.slices.begin(), s.slices.end(), IsImage);
    if (s.task == "story" && images >= 2 && static_cast<int>(stories.size()) < max_samples) {
      stories.push_back(&s);
    }
  }
  Planner p;
  RetrievalPlan& plan = p.plan;
  for (const Sample* s : captions) {
    plan.caption_image.push_back(p.Image(*s, 0));
    plan.caption_text.push_back(p.Text(s->slices[1].text));
  }
  // Swap partners: a caption's first holder, caption samples before stories.
  std::map<std::string, const Sample*> holder;
  for (const Sample* s : captions) holder.emplace(s->slices[1].text, s);
  for (const Sample* s : stories) {
    if (StartsWithImageCaption(*s)) holder.emplace(s->slices[1].text, s);
  }
  std::set<std::pair<int, int>> paired;  // (min image, max image)
  for (size_t k = 0; k < captions.size(); ++k) {
    const Sample& s = *captions[k];
    if (s.negatives.empty()) continue;
    RetrievalPlan::HardNegative h;
    h.image = plan.caption_image[k];
    h.caption = plan.caption_text[k];
    for (const std::string& negative : s.negatives) {
      h.negatives.push_back(p.Text(negative));
      h.reordered.push_back(SameWordsReordered(s.slices[1].text, negative));
      auto it = holder.find(negative);
      if (it == holder.end() || it->second == &s) continue;
      RetrievalPlan::SwapPair w{h.image, h.caption, p.Image(*it->second, 0), h.negatives.back()};
      if (paired.insert(std::minmax(w.image0, w.image1)).second) plan.swap_pairs.push_back(w);
    }
    plan.hard_negatives.push_back(std::move(h));
  }
  for (const Sample* s : stories) {
    int last = static_cast<int>(s->slices.size()) - 1;
    while (!IsImage(s->slices[last])) --last;
    Sample prefix = *s;
    prefix.id = s->id + "/prefix";
    prefix.slices.resize(last);
    prefix.negatives.clear();
    plan.prefixes.push_back(std::move(prefix));
    plan.story_target.push_back(p.Image(*s, last));
  }
  return plan;
}

absl::StatusOr<ItemEmbeddings> EmbedItems(MLLM* model, data::Loader* loader,
                                          const data::Tokenizer& tok,
                                          const std::vector<Sample>& items, int batch_size) {
  CHECK_GT(batch_size, 0);
  ItemEmbeddings e;
  e.R = model->retrieval_dim();
  e.rows.assign(items.size() * static_cast<size_t>(e.R), 0.0f);
  e.ok.assign(items.size(), 0);
  const int NP = model->num_visual_tokens();
  std::vector<float> r;
  for (size_t begin = 0; begin < items.size(); begin += batch_size) {
    const size_t end = std::min(items.size(), begin + batch_size);
    std::vector<const Sample*> chunk;
    for (size_t i = begin; i < end; ++i) chunk.push_back(&items[i]);
    ASSIGN_OR_RETURN(data::Batch batch, loader->MakeBatch(chunk, /*add_eos=*/false));
    model->EmbedSlices(batch, &r);
    CHECK_EQ(r.size(), batch.slices.size() * static_cast<size_t>(e.R));
    // Rows are the chunk's items in order, minus those the loader dropped.
    size_t item = begin;
    for (int row = 0; row < batch.B; ++row) {
      while (item < end && items[item].id != batch.sample_ids[row]) ++item;
      CHECK_LT(item, end) << "batch row " << row << " matches no item";
      int length = 1;  // bos
      for (const Slice& s : items[item].slices) {
        length += IsImage(s) ? NP : static_cast<int>(tok.Encode(s.text).size());
      }
      int last = -1;
      for (int k = 0; k < static_cast<int>(batch.slices.size()); ++k) {
        if (batch.slices[k].row == row) last = k;
      }
      if (last >= 0 && batch.lens[row] == length) {
        std::copy(r.begin() + static_cast<size_t>(last) * e.R,
                  r.begin() + static_cast<size_t>(last + 1) * e.R, e.rows.begin() + item * e.R);
        e.ok[item] = 1;
      }
      ++item;
    }
  }
  return e;
}

namespace {

float Dot(const float* a, const float* b, int R) {
  double s = 0;
  for (int i = 0; i < R; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

// Rows `which` of e, stacked: [which.size(), R].
std::vector<float> Gather(const ItemEmbeddings& e, const std::vector<int>& which) {
  std::vector<float> out;
  out.reserve(which.size() * e.R);
  for (int i : which) out.insert(out.end(), e.row(i), e.row(i) + e.R);
  return out;
}

// image->text and text->image over the caption samples whose items are intact.
void ScoreCaptions(const RetrievalPlan& plan, const ItemEmbeddings& img, const ItemEmbeddings& txt,
                   RetrievalResult* out) {
  std::vector<int> images, texts;  // candidates / queries, by item index
  std::map<int, int> text_slot;    // text item -> position in `texts`
  std::vector<int> image_text;     // per image query: its text slot
  for (size_t k = 0; k < plan.caption_image.size(); ++k) {
    const int i = plan.caption_image[k], t = plan.caption_text[k];
    if (!img.ok[i] || !txt.ok[t]) continue;
    auto [it, added] = text_slot.emplace(t, static_cast<int>(texts.size()));
    if (added) texts.push_back(t);
    images.push_back(i);
    image_text.push_back(it->second);
  }
  const int NI = images.size(), NT = texts.size(), R = img.R;
  out->caption_queries = NI;
  out->caption_texts = NT;
  if (NI == 0) return;
  const std::vector<float> image_rows = Gather(img, images), text_rows = Gather(txt, texts);
  std::vector<std::vector<int>> i2t_relevant(NI), t2i_relevant(NT);
  for (int q = 0; q < NI; ++q) {
    i2t_relevant[q] = {image_text[q]};
    t2i_relevant[image_text[q]].push_back(q);
  }
  const std::vector<int> i2t =
      BestRelevantRanks(InnerProducts(image_rows, NI, text_rows, NT, R), NI, NT, i2t_relevant);
  const std::vector<int> t2i =
      BestRelevantRanks(InnerProducts(text_rows, NT, image_rows, NI, R), NT, NI, t2i_relevant);
  out->i2t_r1 = RecallAtK(i2t, 1);
  out->i2t_r5 = RecallAtK(i2t, 5);
  out->t2i_r1 = RecallAtK(t2i, 1);
  out->t2i_r5 = RecallAtK(t2i, 5);
}

void ScoreHardNegatives(const RetrievalPlan& plan, const ItemEmbeddings& img,
                        const ItemEmbeddings& txt, RetrievalResult* out) {
  const int R = img.R;
  for (const RetrievalPlan::HardNegative& h : plan.hard_negatives) {
    bool ok = img.ok[h.image] && txt.ok[h.caption];
    for (int n : h.negatives) ok = ok && txt.ok[n];
    if (!ok) continue;
    std::vector<float> s_neg;
    for (int n : h.negatives) s_neg.push_back(Dot(img.row(h.image), txt.row(n), R));
    const float s_true = Dot(img.row(h.image), txt.row(h.caption), R);
    ++out->hard_negative_total;
    out->hard_negative_correct += PrefersTrueCaption(s_true, s_neg);
    for (size_t j = 0; j < s_neg.size(); ++j) {
      const bool won = s_true > s_neg[j];
      if (h.reordered[j]) {
        ++out->hn_reordered_pairs;
        out->hn_reordered_won += won;
      } else {
        ++out->hn_changed_pairs;
        out->hn_changed_won += won;
      }
    }
  }
  for (const RetrievalPlan::SwapPair& w : plan.swap_pairs) {
    if (!img.ok[w.image0] || !img.ok[w.image1] || !txt.ok[w.caption0] || !txt.ok[w.caption1]) {
      continue;
    }
    auto s = [&](int caption, int image) { return Dot(txt.row(caption), img.row(image), R); };
    const WinogroundOutcome o = Winoground(s(w.caption0, w.image0), s(w.caption0, w.image1),
                                           s(w.caption1, w.image0), s(w.caption1, w.image1));
    ++out->wino_pairs;
    out->wino_text += o.text;
    out->wino_image += o.image;
    out->wino_group += o.group;
  }
}

void ScoreStories(const RetrievalPlan& plan, const ItemEmbeddings& img, const ItemEmbeddings& pre,
                  RetrievalResult* out) {
  std::vector<int> queries, targets;
  for (size_t s = 0; s < plan.prefixes.size(); ++s) {
    if (!pre.ok[s] || !img.ok[plan.story_target[s]]) continue;
    queries.push_back(s);
    targets.push_back(plan.story_target[s]);
  }
  const int N = queries.size();
  out->story_queries = N;
  if (N == 0) return;
  std::vector<std::vector<int>> relevant(N);
  for (int q = 0; q < N; ++q) relevant[q] = {q};
  const std::vector<int> ranks = BestRelevantRanks(
      InnerProducts(Gather(pre, queries), N, Gather(img, targets), N, img.R), N, N, relevant);
  out->story_r1 = RecallAtK(ranks, 1);
  out->story_r5 = RecallAtK(ranks, 5);
}

}  // namespace

RetrievalResult ScoreRetrieval(const RetrievalPlan& plan, const ItemEmbeddings& images,
                               const ItemEmbeddings& texts, const ItemEmbeddings& prefixes) {
  CHECK_EQ(images.ok.size(), plan.images.size());
  CHECK_EQ(texts.ok.size(), plan.texts.size());
  CHECK_EQ(prefixes.ok.size(), plan.prefixes.size());
  RetrievalResult out;
  int R = -1;
  for (const ItemEmbeddings* e : {&images, &texts, &prefixes}) {
    CHECK_EQ(e->rows.size(), e->ok.size() * e->R);
    if (e->ok.empty()) continue;
    CHECK(R < 0 || e->R == R) << "embedding widths differ: " << R << " vs " << e->R;
    R = e->R;
    out.skipped_items += std::count(e->ok.begin(), e->ok.end(), 0);
  }
  ScoreCaptions(plan, images, texts, &out);
  ScoreHardNegatives(plan, images, texts, &out);
  ScoreStories(plan, images, prefixes, &out);
  return out;
}

absl::StatusOr<RetrievalResult> EvalRetrieval(MLLM* model, data::Loader* loader,
                                              const data::Tokenizer& tokenizer,
                                              const RetrievalPlan& plan, int batch_size) {
  ASSIGN_OR_RETURN(ItemEmbeddings img,
                   EmbedItems(model, loader, tokenizer, plan.images, batch_size));
  ASSIGN_OR_RETURN(ItemEmbeddings txt,
                   EmbedItems(model, loader, tokenizer, plan.texts, batch_size));
  ASSIGN_OR_RETURN(ItemEmbeddings pre,
                   EmbedItems(model, loader, tokenizer, plan.prefixes, batch_size));
  return ScoreRetrieval(plan, img, txt, pre);
}

}  // namespace ut::train
