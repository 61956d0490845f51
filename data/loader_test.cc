#include "data/loader.h"

#include <algorithm>
#include <map>
#include <set>

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "data/manifest.h"
#include "glog/logging.h"
#include "data/test_util.h"
#include "gtest/gtest.h"

namespace ut::data {
namespace {

using testing::MakeTempDir;
using testing::SmallTokenizer;
using unified_train::DataConfig;

constexpr int kV = 4;  // visual tokens per image
constexpr int kS = 8;  // image size

Slice Text(const std::string& text, bool prompt = false) {
  Slice s;
  s.text = text;
  s.prompt = prompt;
  s.teacher = {1.0f, 0.0f};
  s.teacher_split = 1;
  return s;
}

Slice Image(const std::string& path) {
  Slice s;
  s.kind = Slice::Kind::kImage;
  s.image_path = path;
  s.teacher = {0.0f, 1.0f};
  s.teacher_split = 1;
  return s;
}

// A directory with `n` samples of varying length; image i is a pattern PNG
// (every third one 12 x 12, so it must be resized to 8 x 8).
std::string MakeDataset(int n, std::vector<Sample>* out = nullptr) {
  const std::string dir = MakeTempDir("loader");
  mkdir((dir + "/images").c_str(), 0755);
  const char* texts[] = {"a red circle", "a small blue square above a green triangle",
                         "what color is the circle ?", "a yellow square left of a red circle",
                         "blue"};
  std::string manifest;
  for (int i = 0; i < n; ++i) {
    Sample s;
    s.id = "s" + std::to_string(i);
    s.task = "caption";
    const std::string image = "images/" + std::to_string(i) + ".png";
    testing::WritePatternPng(dir + "/" + image, i % 3 == 0 ? 12 : kS, i % 3 == 0 ? 12 : kS);
    s.slices.push_back(Image(image));
    for (int k = 0; k <= i % 3; ++k) s.slices.push_back(Text(texts[(i + k) % 5]));
    manifest += SampleToJsonLine(s) + "\n";
    if (out != nullptr) out->push_back(s);
  }
  testing::WriteTextFile(dir + "/train.jsonl", manifest);
  return dir;
}

LoaderOptions Options(const std::string& dir) {
  LoaderOptions o;
  o.manifest = dir + "/train.jsonl";
  o.seq_len = 64;
  o.micro_batch_size = 4;
  o.image_size = kS;
  o.visual_tokens = kV;
  o.seed = 5;
  o.prefetch = 2;
  return o;
}

// The sample ids of the next batch.
std::vector<std::string> NextIds(Loader& loader) {
  auto batch = loader.Next();
  CHECK(batch.ok()) << batch.status();
  return batch->sample_ids;
}

std::unique_ptr<Loader> MustCreate(const LoaderOptions& o) {
  auto loader = Loader::Create(o, &SmallTokenizer());
  CHECK(loader.ok()) << loader.status();
  return std::move(*loader);
}

void ExpectSameBatch(const Batch& a, const Batch& b) {
  EXPECT_EQ(a.B, b.B);
  EXPECT_EQ(a.T, b.T);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_EQ(a.lens, b.lens);
  EXPECT_EQ(a.images, b.images);
  EXPECT_EQ(a.image_row, b.image_row);
  EXPECT_EQ(a.image_start, b.image_start);
  EXPECT_EQ(a.sample_ids, b.sample_ids);
  ASSERT_EQ(a.slices.size(), b.slices.size());
  for (size_t i = 0; i < a.slices.size(); ++i) {
    EXPECT_EQ(a.slices[i].start, b.slices[i].start);
    EXPECT_EQ(a.slices[i].end, b.slices[i].end);
  }
}

TEST(LoaderTest, RowLayoutAndTargets) {
  const std::string dir = MakeDataset(4);
  auto loader = MustCreate(Options(dir));
  const Tokenizer& tok = SmallTokenizer();
  Sample s;
  s.id = "x";
  s.slices = {Image("images/0.png"), Text("what color is the circle ?", true), Text("red")};
  auto batch = loader->MakeBatch({&s});
  ASSERT_TRUE(batch.ok()) << batch.status();
  const auto q = tok.Encode("what color is the circle ?"), a = tok.Encode("red");
  std::vector<int32_t> expect = {tok.bos_id()};
  expect.insert(expect.end(), kV, tok.image_id());
  expect.insert(expect.end(), q.begin(), q.end());
  expect.insert(expect.end(), a.begin(), a.end());
  expect.push_back(tok.eos_id());
  ASSERT_EQ(batch->B, 1);
  ASSERT_EQ(batch->T, static_cast<int>(expect.size()));
  EXPECT_EQ(batch->tokens, expect);
  EXPECT_EQ(batch->lens, std::vector<int32_t>{batch->T});
  // Only the answer and the eos are predicted: from the last question token on.
  const int answer_start = 1 + kV + static_cast<int>(q.size());
  for (int t = 0; t < batch->T; ++t) {
    const int want = (t >= answer_start - 1 && t + 1 < batch->T) ? expect[t + 1] : -1;
    EXPECT_EQ(batch->targets[t], want) << "position " << t;
  }
  ASSERT_EQ(batch->num_images, 1);
  EXPECT_EQ(batch->image_row, std::vector<int32_t>{0});
  EXPECT_EQ(batch->image_start, std::vector<int32_t>{1});
  ASSERT_EQ(batch->images.size(), 3u * kS * kS);
  for (float v : batch->images) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
  ASSERT_EQ(batch->slices.size(), 3u);
  EXPECT_TRUE(batch->slices[0].is_image);
  EXPECT_EQ(batch->slices[0].start, 1);
  EXPECT_EQ(batch->slices[0].end, 1 + kV);
  EXPECT_EQ(batch->slices[1].end, answer_start);
  EXPECT_EQ(batch->slices[2].start, answer_start);
  EXPECT_EQ(batch->slices[2].end, answer_start + static_cast<int>(a.size()));
  EXPECT_EQ(batch->slices[0].teacher, (std::vector<float>{0.0f, 1.0f}));
  EXPECT_EQ(batch->slices[2].teacher_split, 1);
  EXPECT_EQ(batch->truncated, 0);
  // A generation prompt has no eos.
  auto prompt = loader->MakeBatch({&s}, /*add_eos=*/false);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->T, batch->T - 1);
  EXPECT_NE(prompt->tokens.back(), tok.eos_id());
}

TEST(LoaderTest, PaddingIsMasked) {
  auto loader = MustCreate(Options(MakeDataset(4)));
  const Tokenizer& tok = SmallTokenizer();
  Sample a, b;
  a.id = "a";
  a.slices = {Text("blue")};
  b.id = "b";
  b.slices = {Image("images/1.png"), Text("a small blue square above a green triangle")};
  auto batch = loader->MakeBatch({&a, &b});
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->B, 2);
  EXPECT_EQ(batch->sample_ids, (std::vector<std::string>{"a", "b"}));
  const int len_a = 2 + static_cast<int>(tok.Encode("blue").size());
  EXPECT_EQ(batch->lens[0], len_a);
  EXPECT_EQ(batch->lens[1], batch->T);
  for (int t = len_a; t < batch->T; ++t) {
    EXPECT_EQ(batch->tokens[t], tok.pad_id());
    EXPECT_EQ(batch->targets[t], -1);
  }
  EXPECT_EQ(batch->targets[len_a - 2], tok.eos_id());
  EXPECT_EQ(batch->targets[len_a - 1], -1);  // eos predicts nothing
  EXPECT_EQ(batch->image_row, std::vector<int32_t>{1});
  EXPECT_EQ(batch->slices[1].row, 1);
  EXPECT_EQ(batch->slices[1].sample, 1);
  // Image positions are never targets and never predicted from.
  for (int t = 0; t < 1 + kV - 1; ++t) EXPECT_EQ(batch->targets[batch->T + t], -1) << t;
}

TEST(LoaderTest, TruncationIsCountedAndNeverSplitsAnImage) {
  const std::string dir = MakeDataset(4);
  const Tokenizer& tok = SmallTokenizer();
  const auto text = tok.Encode("a red circle");
  const int text_len = static_cast<int>(text.size());
  LoaderOptions o = Options(dir);
  o.seq_len = 1 + text_len + kV / 2;  // the cut falls inside the image
  auto loader = MustCreate(o);
  Sample s;
  s.id = "t";
  s.slices = {Text("a red circle"), Image("images/1.png"), Text("blue")};
  auto batch = loader->MakeBatch({&s});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->truncated, 1);
  EXPECT_EQ(batch->T, 1 + text_len) << "the row ends before the image";
  EXPECT_EQ(batch->num_images, 0);
  EXPECT_TRUE(batch->images.empty());
  for (int32_t id : batch->tokens) EXPECT_NE(id, tok.image_id());
  ASSERT_EQ(batch->slices.size(), 1u);
  EXPECT_FALSE(batch->slices[0].is_image);
  EXPECT_EQ(batch->targets.back(), -1) << "the cut-off next token is not a target";
  // A cut inside text keeps seq_len tokens.
  o.seq_len = 1 + kV + 1;
  auto loader2 = MustCreate(o);
  Sample t;
  t.id = "u";
  t.slices = {Image("images/1.png"), Text("a small blue square above a green triangle")};
  auto batch2 = loader2->MakeBatch({&t});
  ASSERT_TRUE(batch2.ok());
  EXPECT_EQ(batch2->T, o.seq_len);
  EXPECT_EQ(batch2->num_images, 1);
  ASSERT_EQ(batch2->slices.size(), 2u);
  EXPECT_EQ(batch2->slices[1].end, o.seq_len);
  // Truncations met by Next() are counted by the loader.
  LoaderOptions o3 = Options(dir);
  o3.seq_len = 1 + kV + 2;
  auto loader3 = MustCreate(o3);
  auto next = loader3->Next();
  ASSERT_TRUE(next.ok());
  EXPECT_GT(next->truncated, 0);
  EXPECT_EQ(loader3->truncated(), next->truncated);
  for (int b = 0; b < next->B; ++b) EXPECT_LE(next->lens[b], o3.seq_len);
}

TEST(LoaderTest, EpochCoversTheShardOnceAndGroupsByLength) {
  const int n = 30;
  auto loader = MustCreate(Options(MakeDataset(n)));
  EXPECT_EQ(loader->num_samples(), n);
  EXPECT_EQ(loader->batches_per_epoch(), n / 4);
  std::multiset<std::string> seen;
  std::vector<std::pair<int, int>> ranges;  // (min len, max len) per batch
  for (int64_t i = 0; i < loader->batches_per_epoch(); ++i) {
    auto batch = loader->Next();
    ASSERT_TRUE(batch.ok()) << batch.status();
    ASSERT_EQ(batch->B, 4);
    seen.insert(batch->sample_ids.begin(), batch->sample_ids.end());
    ranges.push_back({*std::min_element(batch->lens.begin(), batch->lens.end()),
                      *std::max_element(batch->lens.begin(), batch->lens.end())});
  }
  EXPECT_EQ(seen.size(), 28u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 28u) << "no repeats";
  // One length window covers the epoch: batches are consecutive runs of the
  // length-sorted order, so their length ranges do not interleave.
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) EXPECT_LE(ranges[i - 1].second, ranges[i].first);
  EXPECT_EQ(loader->position().epoch, 1);
  EXPECT_EQ(loader->position().index, 0);
}

TEST(LoaderTest, DeterministicRegardlessOfPrefetch) {
  const std::string dir = MakeDataset(21);
  LoaderOptions o = Options(dir);
  auto a = MustCreate(o);
  o.prefetch = 0;
  auto b = MustCreate(o);
  o.prefetch = 4;
  auto c = MustCreate(o);
  for (int i = 0; i < 12; ++i) {  // more than two epochs of 5 batches
    auto ba = a->Next(), bb = b->Next(), bc = c->Next();
    ASSERT_TRUE(ba.ok() && bb.ok() && bc.ok());
    ExpectSameBatch(*ba, *bb);
    ExpectSameBatch(*ba, *bc);
  }
  // Epochs are shuffled differently, and another seed gives another order.
  o.seed = 6;
  auto d = MustCreate(o);
  auto fresh = MustCreate(Options(dir));
  std::vector<std::string> e0, e1, other;
  for (int i = 0; i < 5; ++i) {
    for (const auto& id : NextIds(*fresh)) e0.push_back(id);
    for (const auto& id : NextIds(*d)) other.push_back(id);
  }
  for (int i = 0; i < 5; ++i) {
    for (const auto& id : NextIds(*fresh)) e1.push_back(id);
  }
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, other);
}

TEST(LoaderTest, SeekReproducesTheStream) {
  const std::string dir = MakeDataset(21);
  auto a = MustCreate(Options(dir));
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(a->Next().ok());
  const Position saved = a->position();
  EXPECT_EQ(saved.epoch, 1);
  EXPECT_EQ(saved.index, 2);
  std::vector<Batch> expected;
  for (int i = 0; i < 6; ++i) expected.push_back(*a->Next());
  // A fresh loader resumed at the saved position.
  auto b = MustCreate(Options(dir));
  b->Seek(saved);
  EXPECT_EQ(b->position().epoch, saved.epoch);
  EXPECT_EQ(b->position().index, saved.index);
  for (const Batch& e : expected) ExpectSameBatch(*b->Next(), e);
  // Seeking back on a loader whose prefetch queue is full.
  a->Seek(saved);
  for (const Batch& e : expected) ExpectSameBatch(*a->Next(), e);
  // An index past the epoch's end carries into the next epoch.
  a->Seek({0, 5 + 2});
  EXPECT_EQ(a->position().epoch, 1);
  EXPECT_EQ(a->position().index, 2);
  ExpectSameBatch(*a->Next(), expected[0]);
}

// The DP ranks' streams interleave to the one-process stream, batch for
// batch, across epoch boundaries (5 micro-batches per epoch: rounds straddle
// epochs for dp 2 and 3), with the same global positions at round starts.
TEST(LoaderTest, DataParallelRanksStrideTheGlobalStream) {
  const std::string dir = MakeDataset(21);
  LoaderOptions o = Options(dir);
  auto single = MustCreate(o);
  ASSERT_EQ(single->batches_per_epoch(), 5);
  std::vector<Batch> global;
  std::vector<Position> global_pos;  // position before global micro-batch j
  for (int j = 0; j < 24; ++j) {
    global_pos.push_back(single->position());
    auto b = single->Next();
    ASSERT_TRUE(b.ok()) << b.status();
    global.push_back(std::move(*b));
  }
  for (int dp : {2, 3}) {
    std::vector<std::unique_ptr<Loader>> ranks;
    for (int d = 0; d < dp; ++d) {
      o.dp_size = dp;
      o.dp_rank = d;
      o.prefetch = d % 2 == 0 ? 2 : 0;  // prefetch or not, same stream
      ranks.push_back(MustCreate(o));
      EXPECT_EQ(ranks.back()->num_samples(), 21);
      EXPECT_EQ(ranks.back()->batches_per_epoch(), 5);
    }
    for (int m = 0; m * dp + dp <= static_cast<int>(global.size()); ++m) {
      for (int d = 0; d < dp; ++d) {
        const Position p = ranks[d]->position();
        EXPECT_EQ(p.epoch, global_pos[m * dp].epoch) << "dp " << dp << " round " << m;
        EXPECT_EQ(p.index, global_pos[m * dp].index) << "dp " << dp << " round " << m;
        auto b = ranks[d]->Next();
        ASSERT_TRUE(b.ok()) << b.status();
        SCOPED_TRACE(absl::StrCat("dp ", dp, " rank ", d, " round ", m));
        ExpectSameBatch(*b, global[m * dp + d]);
      }
    }
    // Resume from a round start saved by any rank (or by the one-process run).
    for (int d = 0; d < dp; ++d) {
      o.dp_size = dp;
      o.dp_rank = d;
      auto resumed = MustCreate(o);
      resumed->Seek(global_pos[2 * dp]);
      for (int m = 2; m < 4; ++m) ExpectSameBatch(*resumed->Next(), global[m * dp + d]);
      // A position inside a round (another layout's checkpoint) rounds down.
      resumed->Seek(global_pos[2 * dp + 1]);
      EXPECT_EQ(resumed->position().epoch, global_pos[2 * dp].epoch);
      EXPECT_EQ(resumed->position().index, global_pos[2 * dp].index);
      ExpectSameBatch(*resumed->Next(), global[2 * dp + d]);
    }
  }
  o.dp_size = 2;
  o.dp_rank = 2;
  EXPECT_FALSE(Loader::Create(o, &SmallTokenizer()).ok());
}

// A rank builds only its own micro-batches: an image broken after its header
// fails the rank whose micro-batch holds it, never the other rank.
TEST(LoaderTest, DataParallelRankDecodesOnlyItsOwnMicroBatches) {
  const std::string dir = MakeDataset(16);
  LoaderOptions o = Options(dir);  // 4 micro-batches of 4 per epoch
  o.prefetch = 0;
  auto single = MustCreate(o);
  auto first = single->Next();
  ASSERT_TRUE(first.ok());
  const std::string victim = first->sample_ids[0];  // in global micro-batch 0 -> rank 0
  const std::string path = dir + "/images/" + victim.substr(1) + ".png";
  testing::WriteTextFile(path, testing::ReadFileBytes(path).substr(0, 60));  // header intact
  o.dp_size = 2;
  for (int d = 0; d < 2; ++d) {
    o.dp_rank = d;
    auto loader = MustCreate(o);
    for (int m = 0; m < 2; ++m) {  // one epoch: rank d gets global 2m + d
      auto b = loader->Next();
      if (d == 0 && m == 0) {
        ASSERT_FALSE(b.ok());
        EXPECT_NE(b.status().message().find(victim), std::string::npos) << b.status();
        loader->Seek({0, 2});  // a failed batch does not advance: skip its round
      } else {
        EXPECT_TRUE(b.ok()) << "rank " << d << " round " << m << ": " << b.status();
      }
    }
  }
}

TEST(LoaderTest, UnreadableImagesFailOrSkip) {
  const std::string dir = MakeDataset(9);
  testing::WriteTextFile(dir + "/images/4.png", "garbage, not a png");
  LoaderOptions o = Options(dir);
  auto failed = Loader::Create(o, &SmallTokenizer());
  ASSERT_FALSE(failed.ok());
  const std::string message(failed.status().message());
  EXPECT_NE(message.find("\"s4\""), std::string::npos) << message;
  EXPECT_NE(message.find("images/4.png"), std::string::npos) << message;
  o.on_bad_image = DataConfig::SKIP;
  auto skipped = MustCreate(o);
  EXPECT_EQ(skipped->num_samples(), 8);
  EXPECT_EQ(skipped->skipped_images(), 1);
  for (const Sample& s : skipped->samples()) EXPECT_NE(s.id, "s4");
}

TEST(LoaderTest, ImagesBrokenAfterTheHeaderFailOrSkipInNext) {
  const std::string dir = MakeDataset(8);
  const std::string bytes = testing::ReadFileBytes(dir + "/images/5.png");
  testing::WriteTextFile(dir + "/images/5.png", bytes.substr(0, 60));  // header intact
  LoaderOptions o = Options(dir);
  o.micro_batch_size = 8;
  auto fail = MustCreate(o);
  auto batch = fail->Next();
  ASSERT_FALSE(batch.ok());
  EXPECT_NE(batch.status().message().find("\"s5\""), std::string::npos) << batch.status();
  EXPECT_NE(batch.status().message().find("images/5.png"), std::string::npos);
  EXPECT_EQ(fail->position().index, 0) << "a failed batch does not advance";
  o.on_bad_image = DataConfig::SKIP;
  auto skip = MustCreate(o);
  auto kept = skip->Next();
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->B, 7);
  EXPECT_EQ(std::count(kept->sample_ids.begin(), kept->sample_ids.end(), "s5"), 0);
  EXPECT_EQ(skip->skipped_images(), 1);
}

TEST(LoaderTest, CreateErrors) {
  const std::string dir = MakeDataset(3);
  LoaderOptions o = Options(dir);
  auto too_few = Loader::Create(o, &SmallTokenizer());  // 3 samples, micro batch 4
  ASSERT_FALSE(too_few.ok());
  EXPECT_NE(too_few.status().message().find("micro_batch_size"), std::string::npos);
  o.micro_batch_size = 1;
  EXPECT_FALSE(Loader::Create(o, nullptr).ok());
  o.manifest = dir + "/missing.jsonl";
  auto missing = Loader::Create(o, &SmallTokenizer());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("missing.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace ut::data
