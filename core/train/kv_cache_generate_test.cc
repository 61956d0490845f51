// The KV-cache decoder against the model itself: the same tokens as
// MLLM::Generate and, at every step, the logits of a full MLLM::Forward over
// the sequence so far.
#include "core/train/kv_cache_generate.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/model/test_util.h"
#include "gtest/gtest.h"

namespace ut::train {
namespace {

using model::testing::ImagePlacement;
using model::testing::MakeBatch;
using model::testing::SmallConfig;

constexpr int kVocab = 32;
constexpr int kNP = 4;  // visual tokens per image in SmallConfig
constexpr int kImageSize = 8;

std::unique_ptr<MLLM> MakeModel(uint64_t seed) {
  auto model = MLLM::Create(SmallConfig());
  CHECK(model.ok()) << model.status();
  (*model)->InitParams(seed);
  return std::move(*model);
}

// Checks generator vs model on `prompt` for `max_new` tokens with no eos.
void ExpectSameAsModel(MLLM* model, KvCacheGenerator* gen, const data::Batch& prompt, int max_new) {
  gen->set_record_logits(true);
  const std::vector<int32_t> cached = gen->Generate(prompt, max_new, /*eos_id=*/-1);
  const std::vector<int32_t> full = model->Generate(prompt, max_new, -1);
  ASSERT_EQ(cached.size(), static_cast<size_t>(max_new));
  EXPECT_EQ(cached, full);
  ASSERT_EQ(gen->logits_history().size(), cached.size());

  // One Forward over prompt + generated tokens (but the last): its logits at
  // position len-1+s chose token s.
  const int len = prompt.lens[0];
  data::Batch seq = prompt;
  seq.T = len + max_new - 1;
  seq.tokens.assign(prompt.tokens.begin(), prompt.tokens.begin() + len);
  seq.tokens.insert(seq.tokens.end(), cached.begin(), cached.end() - 1);
  seq.targets.assign(seq.T, -1);
  seq.lens = {seq.T};
  model->Forward(seq);
  for (int s = 0; s < max_new; ++s) {
    const float* want = model->logits() + static_cast<int64_t>(len - 1 + s) * kVocab;
    const std::vector<float>& got = gen->logits_history()[s];
    float scale = 0;
    for (int v = 0; v < kVocab; ++v) scale = std::max(scale, std::fabs(want[v]));
    ASSERT_GT(scale, 0.1f);  // the comparison means something
    for (int v = 0; v < kVocab; ++v) {
      ASSERT_FALSE(std::isnan(got[v]));
      ASSERT_NEAR(got[v], want[v], 1e-5f * scale + 1e-6f) << "step " << s << " token " << v;
    }
  }
}

TEST(KvCacheGenerator, MatchesModelWithOneImage) {
  auto model = MakeModel(1);
  KvCacheGenerator gen(model.get());
  // bos, image (4 tokens at 1..4), 3 text tokens.
  const data::Batch prompt = MakeBatch(11, 8, {8}, {{0, 1}}, kNP, kImageSize, kVocab);
  ExpectSameAsModel(model.get(), &gen, prompt, 12);
}

TEST(KvCacheGenerator, MatchesModelWithTwoImagesAndTextOnly) {
  auto model = MakeModel(2);
  KvCacheGenerator gen(model.get());
  const data::Batch two = MakeBatch(12, 14, {14}, {{0, 1}, {0, 7}}, kNP, kImageSize, kVocab);
  ExpectSameAsModel(model.get(), &gen, two, 9);
  // The same generator again, now text only and longer: the cache grows.
  const data::Batch text = MakeBatch(13, 5, {5}, {}, kNP, kImageSize, kVocab);
  ExpectSameAsModel(model.get(), &gen, text, 20);
}

TEST(KvCacheGenerator, UsesOnlyTheValidPrefixOfThePromptRow) {
  auto model = MakeModel(3);
  KvCacheGenerator gen(model.get());
  data::Batch padded = MakeBatch(14, 10, {7}, {{0, 1}}, kNP, kImageSize, kVocab);
  data::Batch exact = padded;
  exact.T = 7;
  exact.tokens.resize(7);
  exact.targets.resize(7);
  std::fill(padded.tokens.begin() + 7, padded.tokens.end(), 5);  // junk after lens[0]
  EXPECT_EQ(gen.Generate(padded, 6, -1), gen.Generate(exact, 6, -1));
}

TEST(KvCacheGenerator, StopsAtEosAndIncludesIt) {
  auto model = MakeModel(4);
  KvCacheGenerator gen(model.get());
  const data::Batch prompt = MakeBatch(15, 8, {8}, {{0, 1}}, kNP, kImageSize, kVocab);
  const std::vector<int32_t> free_run = gen.Generate(prompt, 6, -1);
  ASSERT_EQ(free_run.size(), 6u);
  // Declare the third generated token the eos: decoding stops right there.
  const std::vector<int32_t> stopped = gen.Generate(prompt, 6, free_run[2]);
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[2]);
  EXPECT_EQ(stopped, std::vector<int32_t>(free_run.begin(), first + 1));
  EXPECT_TRUE(gen.Generate(prompt, 0, -1).empty());
}

}  // namespace
}  // namespace ut::train
