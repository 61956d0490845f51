// The evaluation suite end to end on a tiny synthetic data set and an
// untrained tiny model: every metric is computed over the samples it should
// be, the output is deterministic, and a generation equal to its reference is
// counted as a match with and without the KV cache (and its early stop).
#include "core/train/evaluate.h"

#include <omp.h>

#include <filesystem>
#include <fstream>

#include "data/manifest.h"
#include "data/synthetic.h"
#include "glog/logging.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ut::train {
namespace {

namespace fs = std::filesystem;

std::string DataDir() { return std::string(std::getenv("TEST_TMPDIR")) + "/data"; }

Config TinyConfig() {
  auto config = ParseConfigText(R"(
    model {
      vision { image_size: 16 patch_size: 4 width: 16 layers: 1 heads: 2 mlp: 32 }
      llm { width: 32 layers: 1 heads: 2 kv_heads: 1 ffn: 64 vocab_size: 128 }
      retrieval_dim: 16
    }
    data { seq_len: 160 micro_batch_size: 4 }
  )",
                                "tiny");
  CHECK(config.ok()) << config.status();
  config->mutable_data()->set_data_dir(DataDir());
  CHECK(ValidateConfig(*config).ok());
  return *config;
}

class EvaluateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    omp_set_num_threads(2);
    if (!fs::exists(DataDir() + "/train.jsonl")) {
      data::SyntheticOptions o;
      o.out_dir = DataDir();
      o.image_size = 16;
      o.num_train = 24;
      o.num_val = 4;
      o.num_test = 40;
      o.vocab_size = 128;
      ASSERT_TRUE(data::GenerateSynthetic(o).ok());
    }
  }
  void SetUp() override {
    config_ = TinyConfig();
    auto tok = data::Tokenizer::Load(DataDir() + "/tokenizer.model");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok);
    auto model = MLLM::Create(config_.model());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    model_->InitParams(5);
  }
  absl::StatusOr<std::unique_ptr<data::Loader>> MakeLoader(const std::string& manifest) {
    data::LoaderOptions o;
    o.manifest = manifest;
    o.seq_len = config_.data().seq_len();
    o.micro_batch_size = 1;
    o.image_size = 16;
    o.visual_tokens = model_->num_visual_tokens();
    o.prefetch = 0;
    return data::Loader::Create(o, tokenizer_.get());
  }

  Config config_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::unique_ptr<MLLM> model_;
};

TEST_F(EvaluateTest, EveryMetricCoversItsSamplesDeterministically) {
  EvalOptions o;
  o.max_new_tokens = 4;
  auto first = EvaluateSplits(model_.get(), config_, *tokenizer_, {"test", "missing"}, o);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u);  // "missing" has no manifest: skipped
  const EvalResult& r = first->front();
  EXPECT_EQ(r.split, "test");
  ASSERT_TRUE(r.has_retrieval);

  // The counts are what the plan of the manifest says.
  auto samples = data::ReadManifest(DataDir() + "/test.jsonl");
  ASSERT_TRUE(samples.ok());
  const RetrievalPlan plan = PlanRetrieval(*samples, o.max_samples);
  const RetrievalResult& x = r.retrieval;
  EXPECT_EQ(x.skipped_items, 0);
  ASSERT_GT(plan.caption_image.size(), 3u);
  ASSERT_GT(plan.prefixes.size(), 3u);
  EXPECT_EQ(x.caption_queries, static_cast<int>(plan.caption_image.size()));
  EXPECT_EQ(x.caption_queries, r.caption_total);  // the same caption samples
  EXPECT_EQ(x.hard_negative_total, static_cast<int>(plan.hard_negatives.size()));
  EXPECT_EQ(x.hard_negative_total, x.caption_queries);  // every test caption has negatives
  EXPECT_EQ(x.wino_pairs, static_cast<int>(plan.swap_pairs.size()));
  EXPECT_EQ(x.story_queries, static_cast<int>(plan.prefixes.size()));
  for (const auto& [r1, r5] : {std::pair{x.i2t_r1, x.i2t_r5}, std::pair{x.t2i_r1, x.t2i_r5},
                               std::pair{x.story_r1, x.story_r5}}) {
    EXPECT_GE(r1, 0.0);
    EXPECT_LE(r1, r5);
    EXPECT_LE(r5, 1.0);
  }
  EXPECT_LE(x.wino_group, std::min(x.wino_text, x.wino_image));

  // Deterministic, and the JSON and the table carry the same numbers.
  auto second = EvaluateSplits(model_.get(), config_, *tokenizer_, {"test"}, o);
  ASSERT_TRUE(second.ok());
  const nlohmann::json j = nlohmann::json::parse(EvalResultsToJson(*first));
  const nlohmann::json k = nlohmann::json::parse(EvalResultsToJson(*second));
  EXPECT_EQ(j["test"]["retrieval"], k["test"]["retrieval"]);
  EXPECT_EQ(j["test"]["loss"], k["test"]["loss"]);
  EXPECT_EQ(j["test"]["retrieval"]["winoground_pairs"].get<int>(), x.wino_pairs);
  EXPECT_EQ(j["test"]["retrieval"]["image_to_text_r5"].get<double>(), x.i2t_r5);
  const std::string table = FormatEvalTable(*first);
  for (const char* row :
       {"loss (mean CE)", "caption exact-match", "VQA accuracy", "image->text R@1 / R@5",
        "text->image R@1 / R@5", "hard-negative text score", "Winoground group (swap pairs)",
        "story next panel R@1 / R@5"}) {
    EXPECT_NE(table.find(row), std::string::npos) << row << "\n" << table;
  }
}

// Batched embedding (padded rows, several items per batch) gives each item the
// embedding of its own last slice, as if embedded alone; cut items are marked.
TEST_F(EvaluateTest, EmbedItemsTakesEachItemsLastSliceWhateverTheBatching) {
  auto samples = data::ReadManifest(DataDir() + "/test.jsonl");
  ASSERT_TRUE(samples.ok());
  const RetrievalPlan plan = PlanRetrieval(*samples, 100);
  // Mixed lengths in one list: prefixes, then texts, then images.
  std::vector<data::Sample> items = plan.prefixes;
  items.insert(items.end(), plan.texts.begin(), plan.texts.begin() + 5);
  items.insert(items.end(), plan.images.begin(), plan.images.begin() + 3);
  auto loader = MakeLoader(DataDir() + "/test.jsonl");
  ASSERT_TRUE(loader.ok());
  auto batched = EmbedItems(model_.get(), loader->get(), *tokenizer_, items, 4);
  ASSERT_TRUE(batched.ok()) << batched.status();
  const int R = model_->retrieval_dim();
  ASSERT_EQ(batched->R, R);
  std::vector<float> alone;
  for (size_t i = 0; i < items.size(); ++i) {
    ASSERT_TRUE(batched->ok[i]) << items[i].id;
    auto batch = (*loader)->MakeBatch({&items[i]}, /*add_eos=*/false);
    ASSERT_TRUE(batch.ok());
    model_->EmbedSlices(*batch, &alone);
    ASSERT_EQ(alone.size(), items[i].slices.size() * R) << items[i].id;
    const float* want = alone.data() + alone.size() - R;  // the last slice
    double norm = 0;
    for (int k = 0; k < R; ++k) {
      EXPECT_NEAR(batched->row(i)[k], want[k], 1e-5f) << items[i].id << " dim " << k;
      norm += double{batched->row(i)[k]} * batched->row(i)[k];
    }
    EXPECT_NEAR(norm, 1.0, 1e-5) << items[i].id;
  }
  // A loader whose seq_len cuts the longer prefixes marks exactly those.
  Config short_config = config_;
  short_config.mutable_data()->set_seq_len(40);
  std::swap(config_, short_config);
  auto short_loader = MakeLoader(DataDir() + "/test.jsonl");
  std::swap(config_, short_config);
  ASSERT_TRUE(short_loader.ok());
  auto cut = EmbedItems(model_.get(), short_loader->get(), *tokenizer_, items, 4);
  ASSERT_TRUE(cut.ok());
  int cut_items = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    int length = 1;
    for (const data::Slice& s : items[i].slices) {
      length += s.kind == data::Slice::Kind::kImage ? model_->num_visual_tokens()
                                                    : tokenizer_->Encode(s.text).size();
    }
    EXPECT_EQ(cut->ok[i], length <= 40) << items[i].id << " length " << length;
    cut_items += length > 40;
  }
  EXPECT_GT(cut_items, 0);
}

// Rewrites the first caption sample's reference to what the model itself
// generates (k greedy tokens), and the decoding budget to exactly k tokens.
// That generation must count as a match, with and without the KV cache.
TEST_F(EvaluateTest, AGenerationEqualToItsReferenceCountsAsAMatch) {
  auto samples = data::ReadManifest(DataDir() + "/test.jsonl");
  ASSERT_TRUE(samples.ok());
  data::Sample caption;
  for (const data::Sample& s : *samples) {
    if (s.task == "caption") {
      caption = s;
      break;
    }
  }
  ASSERT_FALSE(caption.id.empty());
  auto loader = MakeLoader(DataDir() + "/test.jsonl");
  ASSERT_TRUE(loader.ok()) << loader.status();
  data::Sample prompt;
  std::string reference;
  ASSERT_TRUE(SplitPrompt(caption, &prompt, &reference));
  auto batch = (*loader)->MakeBatch({&prompt}, /*add_eos=*/false);
  ASSERT_TRUE(batch.ok());
  constexpr int k = 6;
  const std::vector<int32_t> ids = model_->Generate(*batch, k, tokenizer_->eos_id());
  ASSERT_EQ(ids.size(), static_cast<size_t>(k)) << "the untrained model stopped early";
  const std::string own = tokenizer_->Decode(ids);
  ASSERT_FALSE(NormalizeText(own).empty());

  for (const bool exact : {true, false}) {
    data::Sample edited = caption;
    edited.slices.back().text = exact ? own : own + " x";
    const std::string manifest = DataDir() + (exact ? "/own.jsonl" : "/own_x.jsonl");
    std::ofstream(manifest) << data::SampleToJsonLine(edited) << "\n";
    auto one = MakeLoader(manifest);
    ASSERT_TRUE(one.ok()) << one.status();
    for (const bool kv : {true, false}) {
      EvalOptions o;
      o.use_kv_cache = kv;
      o.retrieval = false;
      // Budget = reference tokens + max_new_tokens = k (the reference's own
      // tokenization may differ from the generated ids).
      o.max_new_tokens = k - static_cast<int>(tokenizer_->Encode(edited.slices.back().text).size());
      if (!exact) o.max_new_tokens += 2;  // room for " x": still no match
      auto r = Evaluate(model_.get(), one->get(), *tokenizer_, "own", o);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->caption_total, 1);
      EXPECT_EQ(r->caption_correct, exact ? 1 : 0)
          << "kv_cache=" << kv << " reference '" << edited.slices.back().text << "'";
    }
  }
}

}  // namespace
}  // namespace ut::train
