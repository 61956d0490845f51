// Retrieval evaluation with the model's own slice embeddings
// (MLLM::EmbedSlices; docs/evaluation.md has the definitions and choices):
//
//   caption retrieval  image->text and text->image R@1/R@5 over caption samples
//   hard negatives     text score: the image prefers its caption over each negative
//   Winoground         text/image/group scores over "swap pairs": two samples
//                      where one's true caption is a hard negative of the other
//   story next panel   a story's prefix (every slice before its last image)
//                      retrieves that image among all stories' last images
//
// Every image and caption is embedded ON ITS OWN (bos + that slice), so an
// embedding never sees the item it is compared with; a story query is the
// embedding of the last slice of its prefix, run as one sequence.
//
// Planning (which items to embed, which metrics compare what) is a pure
// function of the samples, separate from embedding and scoring.
#pragma once

#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/model/mllm.h"
#include "data/loader.h"
#include "data/sample.h"

namespace ut::train {

struct RetrievalPlan {
  // Items to embed. images[i] / texts[t] are one-slice samples; prefixes[s]
  // is a story prefix whose LAST slice is the query.
  std::vector<data::Sample> images;
  std::vector<data::Sample> texts;  // one per distinct string
  std::vector<data::Sample> prefixes;

  // Caption retrieval: caption sample k has image caption_image[k] and text
  // caption_text[k] (texts are deduplicated: equal captions share one index).
  std::vector<int> caption_image, caption_text;

  // Hard negatives of caption sample k: its image, its caption, the negatives.
  struct HardNegative {
    int image = 0, caption = 0;
    std::vector<int> negatives;  // text indices
    std::vector<char> reordered;  // per negative: SameWordsReordered(caption, negative)
  };
  std::vector<HardNegative> hard_negatives;

  // Winoground: caption1 is a hard negative of caption0 and the true caption of
  // another sample, whose image is image1. Each unordered pair once.
  struct SwapPair {
    int image0 = 0, caption0 = 0, image1 = 0, caption1 = 0;
  };
  std::vector<SwapPair> swap_pairs;

  // Story s: query prefixes[s], target image story_target[s].
  std::vector<int> story_target;
};

// Takes up to max_samples caption samples (task "caption": an image then its
// caption) and up to max_samples story samples (task "story": >= 2 images), in
// manifest order. Swap partners are looked up among the chosen caption samples
// and the chosen stories' first panels (image + caption).
RetrievalPlan PlanRetrieval(const std::vector<data::Sample>& samples, int max_samples);

struct RetrievalResult {
  int caption_queries = 0;  // caption samples used (image->text queries)
  int caption_texts = 0;    // distinct captions (text->image queries)
  double i2t_r1 = 0, i2t_r5 = 0, t2i_r1 = 0, t2i_r5 = 0;
  int hard_negative_correct = 0, hard_negative_total = 0;  // text score, all negatives
  // The same, one negative at a time (chance 1/2), split by kind: negatives
  // that reorder the caption's words (order / attribute-binding swaps) and
  // negatives that change a word (another relation or attribute).
  int hn_reordered_won = 0, hn_reordered_pairs = 0, hn_changed_won = 0, hn_changed_pairs = 0;
  int wino_text = 0, wino_image = 0, wino_group = 0, wino_pairs = 0;
  int story_queries = 0;
  double story_r1 = 0, story_r5 = 0;
  int skipped_items = 0;  // items whose image could not be read (SKIP policy) or cut by seq_len
};

// Embeddings of one item list of a plan (images, texts or prefixes): rows
// [n,R], L2-normalised; ok[i] = 0 for an item the loader dropped or cut.
struct ItemEmbeddings {
  int R = 0;
  std::vector<float> rows;
  std::vector<char> ok;
  const float* row(int i) const { return rows.data() + static_cast<size_t>(i) * R; }
};

// The embedding of each item's LAST slice (model->EmbedSlices), batch_size
// items per batch. ok[i] = 0 when the loader dropped item i (unreadable image
// under data.on_bad_image=SKIP) or cut it at seq_len.
absl::StatusOr<ItemEmbeddings> EmbedItems(MLLM* model, data::Loader* loader,
                                          const data::Tokenizer& tokenizer,
                                          const std::vector<data::Sample>& items, int batch_size);

// Every metric from given embeddings (a pure function; EvalRetrieval supplies
// the model's). Items with ok == 0 are left out of the metrics that need them.
RetrievalResult ScoreRetrieval(const RetrievalPlan& plan, const ItemEmbeddings& images,
                               const ItemEmbeddings& texts, const ItemEmbeddings& prefixes);

// Embeds the plan's items `batch_size` rows at a time with model->EmbedSlices
// and scores them with ScoreRetrieval. Items that the loader drops or truncates are left out of
// every metric that needs them (counted in skipped_items).
absl::StatusOr<RetrievalResult> EvalRetrieval(MLLM* model, data::Loader* loader,
                                              const data::Tokenizer& tokenizer,
                                              const RetrievalPlan& plan, int batch_size);

}  // namespace ut::train
