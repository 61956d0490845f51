// Retrieval planning and scoring on hand-made samples and embeddings: which
// items are embedded, which pairs are compared, and the resulting numbers.
#include "core/train/retrieval_eval.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"

namespace ut::train {
namespace {

using data::Sample;
using data::Slice;

Slice Image(const std::string& path) {
  Slice s;
  s.kind = Slice::Kind::kImage;
  s.image_path = path;
  return s;
}

Slice Text(const std::string& text, bool prompt = false) {
  Slice s;
  s.text = text;
  s.prompt = prompt;
  return s;
}

Sample Make(const std::string& id, const std::string& task, std::vector<Slice> slices,
            std::vector<std::string> negatives = {}) {
  Sample s;
  s.id = id;
  s.task = task;
  s.slices = std::move(slices);
  s.negatives = std::move(negatives);
  return s;
}

// cap0 and cap1 are each other's swaps; cap2 repeats cap0's caption; story1's
// first panel holds one of cap0's negatives; story0 has three panels.
std::vector<Sample> Samples() {
  return {
      Make("cap0", "caption", {Image("c0.png"), Text("red circle")},
           {"blue circle", "small red circle", "green square"}),
      Make("vqa0", "vqa", {Image("v0.png"), Text("what color ?", true), Text("red")}),
      Make("cap1", "caption", {Image("c1.png"), Text("blue circle")}, {"red circle"}),
      Make("cap2", "caption", {Image("c2.png"), Text("red circle")}),
      Make("story0", "story",
           {Image("s0_0.png"), Text("green square"), Image("s0_1.png"), Text("it moves"),
            Image("s0_2.png"), Text("it turns red")}),
      Make("story1", "story",
           {Image("s1_0.png"), Text("small red circle"), Image("s1_1.png"), Text("it grows")}),
  };
}

std::map<std::string, int> TextIndex(const RetrievalPlan& plan) {
  std::map<std::string, int> index;
  for (size_t t = 0; t < plan.texts.size(); ++t) {
    EXPECT_EQ(plan.texts[t].slices.size(), 1u);
    index[plan.texts[t].slices[0].text] = t;
  }
  return index;
}

std::string ImagePath(const RetrievalPlan& plan, int i) {
  return plan.images[i].slices.at(0).image_path;
}

TEST(PlanRetrieval, ItemsPairsAndPrefixes) {
  const std::vector<Sample> samples = Samples();
  const RetrievalPlan plan = PlanRetrieval(samples, 100);
  const std::map<std::string, int> text = TextIndex(plan);
  // Distinct strings: the captions red, blue (cap2 repeats red) and cap0's
  // negatives blue (again), small red, green.
  EXPECT_EQ(text.size(), 4u);
  EXPECT_EQ(plan.texts.size(), 4u);

  ASSERT_EQ(plan.caption_image.size(), 3u);  // cap0, cap1, cap2 (not the vqa sample)
  EXPECT_EQ(ImagePath(plan, plan.caption_image[0]), "c0.png");
  EXPECT_EQ(ImagePath(plan, plan.caption_image[1]), "c1.png");
  EXPECT_EQ(ImagePath(plan, plan.caption_image[2]), "c2.png");
  EXPECT_EQ(plan.caption_text[0], text.at("red circle"));
  EXPECT_EQ(plan.caption_text[1], text.at("blue circle"));
  EXPECT_EQ(plan.caption_text[2], text.at("red circle"));  // shared with cap0

  ASSERT_EQ(plan.hard_negatives.size(), 2u);  // cap0, cap1
  EXPECT_EQ(plan.hard_negatives[0].image, plan.caption_image[0]);
  EXPECT_EQ(plan.hard_negatives[0].negatives,
            (std::vector<int>{text.at("blue circle"), text.at("small red circle"),
                              text.at("green square")}));
  EXPECT_EQ(plan.hard_negatives[1].negatives, (std::vector<int>{text.at("red circle")}));

  // Pairs: cap0-cap1 (once, though each lists the other), cap0-story1 panel 0,
  // cap0-story0 panel 0 ("green square" is story0's first caption).
  ASSERT_EQ(plan.swap_pairs.size(), 3u);
  const RetrievalPlan::SwapPair& a = plan.swap_pairs[0];
  EXPECT_EQ(ImagePath(plan, a.image0), "c0.png");
  EXPECT_EQ(ImagePath(plan, a.image1), "c1.png");
  EXPECT_EQ(a.caption0, text.at("red circle"));
  EXPECT_EQ(a.caption1, text.at("blue circle"));
  EXPECT_EQ(ImagePath(plan, plan.swap_pairs[1].image1), "s1_0.png");
  EXPECT_EQ(plan.swap_pairs[1].caption1, text.at("small red circle"));
  EXPECT_EQ(ImagePath(plan, plan.swap_pairs[2].image1), "s0_0.png");

  // Stories: the prefix stops before the last image; its target is that image.
  ASSERT_EQ(plan.prefixes.size(), 2u);
  EXPECT_EQ(plan.prefixes[0].slices.size(), 4u);
  EXPECT_EQ(plan.prefixes[0].slices.back().text, "it moves");
  EXPECT_EQ(plan.prefixes[1].slices.size(), 2u);
  EXPECT_EQ(ImagePath(plan, plan.story_target[0]), "s0_2.png");
  EXPECT_EQ(ImagePath(plan, plan.story_target[1]), "s1_1.png");
  // 3 caption images + 2 first panels + 2 last panels, each embedded once.
  EXPECT_EQ(plan.images.size(), 7u);
}

TEST(PlanRetrieval, MaxSamplesCapsCaptionsAndStories) {
  const RetrievalPlan plan = PlanRetrieval(Samples(), 1);
  EXPECT_EQ(plan.caption_image.size(), 1u);  // cap0
  EXPECT_EQ(plan.prefixes.size(), 1u);       // story0
  // cap1 is not chosen, so cap0's only partner is story0's first panel.
  ASSERT_EQ(plan.swap_pairs.size(), 1u);
  EXPECT_EQ(ImagePath(plan, plan.swap_pairs[0].image1), "s0_0.png");
}

// Embeddings: unit vectors along axes, R = 8.
constexpr int kR = 8;
std::vector<float> Axis(int a) {
  std::vector<float> v(kR, 0.0f);
  v[a] = 1.0f;
  return v;
}
std::vector<float> Mix(int a, int b, float wa) {  // normalised wa*e_a + wb*e_b
  std::vector<float> v(kR, 0.0f);
  const float wb = std::sqrt(1.0f - wa * wa);
  v[a] += wa;
  v[b] += wb;
  return v;
}

ItemEmbeddings Rows(const std::vector<std::vector<float>>& rows) {
  ItemEmbeddings e;
  e.R = kR;
  for (const auto& r : rows) e.rows.insert(e.rows.end(), r.begin(), r.end());
  e.ok.assign(rows.size(), 1);
  return e;
}

TEST(ScoreRetrieval, HandMadeEmbeddings) {
  const RetrievalPlan plan = PlanRetrieval(Samples(), 100);
  const std::map<std::string, int> text = TextIndex(plan);
  // Texts: axis = meaning. red circle 0, blue circle 1, small red circle 2, green square 3.
  std::vector<std::vector<float>> t(plan.texts.size());
  t[text.at("red circle")] = Axis(0);
  t[text.at("blue circle")] = Axis(1);
  t[text.at("small red circle")] = Axis(2);
  t[text.at("green square")] = Axis(3);
  // Images by path: c0 is close to red (but closer to small red than blue);
  // c1 is mostly red circle (wrong); c2 is red circle; s0_0 green square;
  // s1_0 small red circle; story targets s0_2, s1_1 on axes 4, 5.
  std::map<std::string, std::vector<float>> by_path = {
      {"c0.png", Mix(0, 2, 0.8f)}, {"c1.png", Mix(0, 1, 0.8f)}, {"c2.png", Axis(0)},
      {"s0_0.png", Axis(3)},       {"s1_0.png", Axis(2)},       {"s0_2.png", Axis(4)},
      {"s1_1.png", Axis(5)},
  };
  std::vector<std::vector<float>> im;
  for (size_t i = 0; i < plan.images.size(); ++i) im.push_back(by_path.at(ImagePath(plan, i)));
  // Story queries: story0 points at s1_1 (wrong), story1 at s1_1 (right).
  const ItemEmbeddings prefixes = Rows({Axis(5), Mix(5, 4, 0.9f)});
  const RetrievalResult r = ScoreRetrieval(plan, Rows(im), Rows(t), prefixes);

  // image->text over 3 images and 2 distinct captions (red, blue):
  //   c0 -> red 0.8, blue 0 -> rank 0; c1 -> red 0.8 > blue 0.6 -> rank 1;
  //   c2 -> red 1 -> rank 0. R@1 = 2/3, R@5 = 1.
  EXPECT_EQ(r.caption_queries, 3);
  EXPECT_EQ(r.caption_texts, 2);
  EXPECT_DOUBLE_EQ(r.i2t_r1, 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.i2t_r5, 1.0);
  // text->image: "red circle" is relevant to c0 and c2 (c2 scores 1: rank 0);
  // "blue circle" -> c1 0.6, c0 0, c2 0 -> rank 0. R@1 = 1.
  EXPECT_DOUBLE_EQ(r.t2i_r1, 1.0);
  EXPECT_DOUBLE_EQ(r.t2i_r5, 1.0);
  // Hard negatives: c0 vs {blue 0, small red 0.6, green 0}: 0.8 wins;
  // c1 vs {red 0.8}: its caption scores 0.6 -> loses. 1/2.
  EXPECT_EQ(r.hard_negative_total, 2);
  EXPECT_EQ(r.hard_negative_correct, 1);
  // One negative at a time: c0 beats all three, c1 loses its one; every one
  // of them changes a word ("blue" for "red", "small" added, ...).
  EXPECT_EQ(r.hn_changed_pairs, 4);
  EXPECT_EQ(r.hn_changed_won, 3);
  EXPECT_EQ(r.hn_reordered_pairs, 0);
  // Winoground pairs:
  //   (c0, red | c1, blue): s00 = .8, s01 = red.c1 = .8, s10 = blue.c0 = 0, s11 = .6
  //     text: .8 > 0 and .6 > .8? no. image: .8 > .8? no. group no.
  //   (c0, red | s1_0, small red): s00 = .8, s01 = 0, s10 = .6, s11 = 1
  //     text: .8 > .6 and 1 > 0 yes; image: .8 > 0 and 1 > .6 yes; group yes.
  //   (c0, red | s0_0, green): s00 = .8, s01 = 0, s10 = 0, s11 = 1: all yes.
  EXPECT_EQ(r.wino_pairs, 3);
  EXPECT_EQ(r.wino_text, 2);
  EXPECT_EQ(r.wino_image, 2);
  EXPECT_EQ(r.wino_group, 2);
  // Stories: story0's query is s1_1 itself -> its target s0_2 ranks 1;
  // story1's query is closest to s1_1 -> rank 0. R@1 = 1/2, R@5 = 1.
  EXPECT_EQ(r.story_queries, 2);
  EXPECT_DOUBLE_EQ(r.story_r1, 0.5);
  EXPECT_DOUBLE_EQ(r.story_r5, 1.0);
  EXPECT_EQ(r.skipped_items, 0);
}

// Negatives that only reorder the caption's words are told apart from ones
// that change a word, in the plan and in the pairwise scores.
TEST(ScoreRetrieval, HardNegativesSplitByKind) {
  const std::vector<Sample> samples = {
      Make("cap", "caption", {Image("c.png"), Text("red circle left of blue square")},
           {"blue square left of red circle", "blue circle left of red square",
            "red circle above blue square"}),
  };
  const RetrievalPlan plan = PlanRetrieval(samples, 100);
  const std::map<std::string, int> text = TextIndex(plan);
  ASSERT_EQ(plan.hard_negatives.size(), 1u);
  EXPECT_EQ(plan.hard_negatives[0].reordered, (std::vector<char>{1, 1, 0}));
  std::vector<std::vector<float>> t(plan.texts.size());
  t[text.at("red circle left of blue square")] = Axis(0);
  t[text.at("blue square left of red circle")] = Axis(1);
  t[text.at("blue circle left of red square")] = Axis(2);
  t[text.at("red circle above blue square")] = Axis(3);
  // The image: its caption 0.5, the first swap 0.7 (wins), the second 0.1,
  // the changed relation 0.2.
  const std::vector<float> image = {0.5f, 0.7f, 0.1f, 0.2f, 0.f, 0.f, 0.f, 0.f};
  const RetrievalResult r = ScoreRetrieval(plan, Rows({image}), Rows(t), Rows({}));
  EXPECT_EQ(r.hard_negative_total, 1);
  EXPECT_EQ(r.hard_negative_correct, 0);
  EXPECT_EQ(r.hn_reordered_pairs, 2);
  EXPECT_EQ(r.hn_reordered_won, 1);
  EXPECT_EQ(r.hn_changed_pairs, 1);
  EXPECT_EQ(r.hn_changed_won, 1);
}

TEST(ScoreRetrieval, SkippedItemsLeaveTheirMetrics) {
  const RetrievalPlan plan = PlanRetrieval(Samples(), 100);
  const std::map<std::string, int> text = TextIndex(plan);
  ItemEmbeddings im = Rows(std::vector<std::vector<float>>(plan.images.size(), Axis(0)));
  ItemEmbeddings t = Rows(std::vector<std::vector<float>>(plan.texts.size(), Axis(0)));
  ItemEmbeddings pre = Rows({Axis(0), Axis(0)});
  // Drop cap1's image and the "green square" text.
  for (size_t i = 0; i < plan.images.size(); ++i) {
    if (ImagePath(plan, i) == "c1.png") im.ok[i] = 0;
  }
  t.ok[text.at("green square")] = 0;
  pre.ok[0] = 0;
  const RetrievalResult r = ScoreRetrieval(plan, im, t, pre);
  EXPECT_EQ(r.skipped_items, 3);
  EXPECT_EQ(r.caption_queries, 2);      // c0, c2
  EXPECT_EQ(r.caption_texts, 1);        // only "red circle" is left
  EXPECT_EQ(r.hard_negative_total, 0);  // cap0 lost a negative, cap1 its image
  EXPECT_EQ(r.wino_pairs, 1);           // only cap0 / story1 panel 0 remains
  EXPECT_EQ(r.story_queries, 1);
  // Every score ties, so no strict comparison passes ...
  EXPECT_EQ(r.wino_text, 0);
  EXPECT_EQ(r.wino_image, 0);
  // ... and a query always ranks ahead of nothing when it is the only candidate.
  EXPECT_DOUBLE_EQ(r.story_r1, 1.0);  // a single candidate is always rank 0
}

}  // namespace
}  // namespace ut::train
