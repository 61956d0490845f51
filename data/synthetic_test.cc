#include "data/synthetic.h"

#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "data/image.h"
#include "data/loader.h"
#include "data/scene.h"
#include "data/test_util.h"
#include "data/tokenizer.h"
#include "gtest/gtest.h"

namespace ut::data {
namespace {

using testing::MakeTempDir;
using testing::ReadFileBytes;

// Every regular file under dir (recursively), relative path -> bytes.
void ReadTree(const std::string& dir, const std::string& rel,
              std::map<std::string, std::string>* files) {
  DIR* d = opendir((dir + "/" + rel).c_str());
  ASSERT_NE(d, nullptr) << dir << "/" << rel;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = rel.empty() ? name : rel + "/" + name;
    if (e->d_type == DT_DIR) {
      ReadTree(dir, path, files);
    } else {
      (*files)[path] = ReadFileBytes(dir + "/" + path);
    }
  }
  closedir(d);
}

SyntheticOptions SmallOptions(const std::string& dir) {
  SyntheticOptions o;
  o.out_dir = dir;
  o.image_size = 24;
  o.num_train = 60;
  o.num_val = 6;
  o.num_test = 20;
  o.seed = 11;
  o.vocab_size = 128;
  return o;
}

TEST(SceneTest, CaptionAndRenderFollowTheScene) {
  scene::Scene s;
  scene::Object red_circle;  // large, centre cell
  red_circle.color = 0;
  red_circle.shape = 0;
  red_circle.cell = 4;
  scene::Object blue_square;  // small, right of it
  blue_square.color = 2;
  blue_square.shape = 1;
  blue_square.small = true;
  blue_square.cell = 5;
  scene::Object green_triangle;  // below-left
  green_triangle.color = 1;
  green_triangle.shape = 2;
  green_triangle.cell = 6;
  s.objects = {red_circle, blue_square, green_triangle};
  EXPECT_EQ(scene::Caption(s),
            "a red circle left of a small blue square above a green triangle");
  const std::vector<uint8_t> rgb = scene::Render(s, 30);  // cells of 10 px
  auto at = [&](int x, int y) {
    const uint8_t* p = &rgb[(y * 30 + x) * 3];
    return std::vector<int>{p[0], p[1], p[2]};
  };
  EXPECT_EQ(at(15, 15), (std::vector<int>{230, 40, 40}));   // red circle centre
  EXPECT_EQ(at(25, 15), (std::vector<int>{40, 90, 240}));   // blue square centre
  EXPECT_EQ(at(5, 26), (std::vector<int>{40, 190, 60}));    // green triangle, lower half
  EXPECT_EQ(at(5, 5), (std::vector<int>{24, 24, 24}));      // empty cell: background
  EXPECT_EQ(at(11, 11), (std::vector<int>{24, 24, 24}));    // outside the circle's disc
}

TEST(SceneTest, EmbedIsNormalisedAndSemantic) {
  const scene::Bag a = {{"obj:red_circle"}, {"color:red", 0.5f}};
  const scene::Bag b = {{"obj:blue_square"}, {"color:blue", 0.5f}};
  const auto ea = scene::Embed(a, "cross", 7, 32), ea2 = scene::Embed(a, "cross", 7, 32);
  const auto eb = scene::Embed(b, "cross", 7, 32), ta = scene::Embed(a, "text", 7, 32);
  EXPECT_EQ(ea, ea2);
  double norm = 0, same_space = 0, other_space = 0;
  for (int i = 0; i < 32; ++i) {
    norm += ea[i] * ea[i];
    same_space += ea[i] * eb[i];
    other_space += ea[i] * ta[i];
  }
  EXPECT_NEAR(norm, 1.0, 1e-6);
  EXPECT_LT(std::fabs(same_space), 0.7) << "different scenes should not coincide";
  EXPECT_LT(std::fabs(other_space), 0.7) << "spaces are independent projections";
}

TEST(SyntheticTest, SameOptionsGiveIdenticalFiles) {
  const std::string a = MakeTempDir("syn_a"), b = MakeTempDir("syn_b");
  ASSERT_TRUE(GenerateSynthetic(SmallOptions(a)).ok());
  ASSERT_TRUE(GenerateSynthetic(SmallOptions(b)).ok());
  std::map<std::string, std::string> fa, fb;
  ReadTree(a, "", &fa);
  ReadTree(b, "", &fb);
  for (const char* name : {"train.jsonl", "val.jsonl", "test.jsonl", "tokenizer.model",
                           "tokenizer.vocab"}) {
    EXPECT_EQ(fa.count(name), 1u) << name;
  }
  EXPECT_GT(fa.size(), 86u) << "one image or more per sample";
  ASSERT_EQ(fa.size(), fb.size());
  for (const auto& [name, bytes] : fa) {
    ASSERT_EQ(fb.count(name), 1u) << name;
    EXPECT_TRUE(fb[name] == bytes) << name << " differs between two runs";
  }
  // A different seed gives a different data set.
  SyntheticOptions other = SmallOptions(MakeTempDir("syn_c"));
  other.seed = 12;
  ASSERT_TRUE(GenerateSynthetic(other).ok());
  EXPECT_NE(ReadFileBytes(other.out_dir + "/train.jsonl"), fa["train.jsonl"]);
}

double Dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

TEST(SyntheticTest, ContentFollowsTheFormat) {
  const SyntheticOptions options = SmallOptions(MakeTempDir("syn_content"));
  ASSERT_TRUE(GenerateSynthetic(options).ok());
  auto tok = Tokenizer::Load(options.out_dir + "/tokenizer.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), options.vocab_size);
  std::map<std::string, int> tasks;
  int with_negatives = 0;
  for (const char* split : {"train", "val", "test"}) {
    auto samples = ReadManifest(options.out_dir + "/" + split + ".jsonl");
    ASSERT_TRUE(samples.ok()) << samples.status();
    for (const Sample& s : *samples) {
      ++tasks[s.task];
      EXPECT_EQ(s.id.rfind(split, 0), 0u) << s.id;
      for (const Slice& slice : s.slices) {
        ASSERT_EQ(slice.teacher.size(), 64u);
        ASSERT_EQ(slice.teacher_split, 32);
        EXPECT_NEAR(Dot(slice.teacher.data(), slice.teacher.data(), 32), 1.0, 1e-3);
        EXPECT_NEAR(Dot(slice.teacher.data() + 32, slice.teacher.data() + 32, 32), 1.0, 1e-3);
        if (slice.kind == Slice::Kind::kImage) {
          auto image = LoadImageCHW(options.out_dir + "/" + slice.image_path, options.image_size);
          ASSERT_TRUE(image.ok()) << image.status();
        } else {
          // Every word is known to the tokenizer.
          for (int32_t id : (*tok)->Encode(slice.text)) EXPECT_NE(id, 0) << slice.text;
          EXPECT_EQ((*tok)->Decode((*tok)->Encode(slice.text)), slice.text);
        }
      }
      if (s.task == "caption") {
        ASSERT_EQ(s.slices.size(), 2u);
        // [image, caption], or [caption, image] for text-first train samples.
        const int cap = s.slices[0].kind == Slice::Kind::kText ? 0 : 1;
        if (std::string(split) != "train") EXPECT_EQ(cap, 1) << s.id;
        ASSERT_EQ(s.slices[1 - cap].kind, Slice::Kind::kImage) << s.id;
        EXPECT_EQ(s.slices[cap].text.rfind("a ", 0), 0u) << s.slices[cap].text;
        // Image and caption share the cross-modal part (up to small noise);
        // their uni-modal parts live in different spaces.
        const float* img = s.slices[1 - cap].teacher.data();
        const float* txt = s.slices[cap].teacher.data();
        EXPECT_GT(Dot(img + 32, txt + 32, 32), 0.98) << s.id;
        EXPECT_LT(Dot(img, txt, 32), 0.9) << s.id;
        if (std::string(split) == "test") {
          ++with_negatives;
          EXPECT_FALSE(s.negatives.empty()) << s.id;
          for (const std::string& n : s.negatives) EXPECT_NE(n, s.slices[cap].text);
        } else {
          EXPECT_TRUE(s.negatives.empty()) << s.id;
        }
      } else if (s.task == "vqa") {
        ASSERT_EQ(s.slices.size(), 3u);
        EXPECT_TRUE(s.slices[1].prompt);
        EXPECT_NE(s.slices[1].text.find('?'), std::string::npos);
        EXPECT_FALSE(s.slices[2].prompt);
      } else {
        ASSERT_EQ(s.task, "story");
        ASSERT_TRUE(s.slices.size() == 4u || s.slices.size() == 6u) << s.slices.size();
        for (size_t k = 0; k < s.slices.size(); ++k) {
          EXPECT_EQ(s.slices[k].kind == Slice::Kind::kImage, k % 2 == 0);
        }
      }
    }
  }
  EXPECT_GT(tasks["caption"], 0);
  EXPECT_GT(tasks["vqa"], 0);
  EXPECT_GT(tasks["story"], 0);
  EXPECT_GT(with_negatives, 0);
}

// Text-first captions: a share of the train caption samples comes as
// [caption, image], everything else is byte for byte the image-first set.
TEST(SyntheticTest, TextFirstCaptionsOnlyReorderTrainCaptions) {
  SyntheticOptions image_first = SmallOptions(MakeTempDir("syn_if"));
  image_first.text_first_captions = 0.0;
  SyntheticOptions half = SmallOptions(MakeTempDir("syn_tf"));
  half.text_first_captions = 0.5;
  half.text_first_prompt = true;
  ASSERT_TRUE(GenerateSynthetic(image_first).ok());
  ASSERT_TRUE(GenerateSynthetic(half).ok());
  std::map<std::string, std::string> fa, fb;
  ReadTree(image_first.out_dir, "", &fa);
  ReadTree(half.out_dir, "", &fb);
  ASSERT_EQ(fa.size(), fb.size());
  for (const auto& [name, bytes] : fa) {
    if (name == "train.jsonl") continue;
    EXPECT_TRUE(fb[name] == bytes) << name << " changed with text_first_captions";
  }
  auto a = ReadManifest(image_first.out_dir + "/train.jsonl");
  auto b = ReadManifest(half.out_dir + "/train.jsonl");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  int captions = 0, text_first = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    const Sample& x = (*a)[i];
    const Sample& y = (*b)[i];
    ASSERT_EQ(x.id, y.id);
    ASSERT_EQ(x.task, y.task);
    ASSERT_EQ(x.slices.size(), y.slices.size());
    const bool swapped = x.task == "caption" && y.slices[0].kind == Slice::Kind::kText;
    captions += x.task == "caption";
    text_first += swapped;
    for (size_t k = 0; k < x.slices.size(); ++k) {
      // Same slices (text, image, teacher), in the same or the swapped
      // order; the prompt flag changes only on a text-first caption.
      const Slice& from = x.slices[swapped ? x.slices.size() - 1 - k : k];
      const Slice& to = y.slices[k];
      EXPECT_EQ(from.kind, to.kind) << y.id;
      EXPECT_EQ(from.text, to.text) << y.id;
      EXPECT_EQ(from.image_path, to.image_path) << y.id;
      if (!(swapped && k == 0)) EXPECT_EQ(from.prompt, to.prompt) << y.id;
      EXPECT_EQ(from.teacher, to.teacher) << y.id;
    }
    if (swapped) {
      EXPECT_EQ(y.slices[0].text.rfind("a ", 0), 0u) << "caption first: " << y.slices[0].text;
      EXPECT_TRUE(y.slices[0].prompt) << "text_first_prompt: the caption is context only";
      EXPECT_FALSE(x.slices[1].prompt) << "an image-first caption is a target";
      EXPECT_EQ(y.slices[1].kind, Slice::Kind::kImage);
    }
  }
  // 60 train samples, ~40% captions, half of those text-first: both orders
  // occur, and the count is binomial(captions, 0.5).
  ASSERT_GT(captions, 10);
  EXPECT_GT(text_first, 0);
  EXPECT_LT(text_first, captions);
  EXPECT_NEAR(text_first, captions / 2.0, 3.0 * std::sqrt(captions / 4.0));
  // Share 1, captions as targets: every train caption is text-first and
  // not a prompt; val and test never text-first.
  SyntheticOptions all = SmallOptions(MakeTempDir("syn_tf_all"));
  all.text_first_captions = 1.0;
  all.text_first_prompt = false;
  ASSERT_TRUE(GenerateSynthetic(all).ok());
  for (const char* split : {"train", "val", "test"}) {
    auto samples = ReadManifest(all.out_dir + "/" + split + ".jsonl");
    ASSERT_TRUE(samples.ok());
    for (const Sample& s : *samples) {
      if (s.task != "caption") continue;
      const bool caption_first = s.slices[0].kind == Slice::Kind::kText;
      EXPECT_EQ(caption_first, std::string(split) == "train") << s.id;
      for (const Slice& slice : s.slices) EXPECT_FALSE(slice.prompt) << s.id;
    }
  }
}

TEST(SyntheticTest, BadOptionsAreErrors) {
  SyntheticOptions o;
  EXPECT_FALSE(GenerateSynthetic(o).ok());  // no out_dir
  o.out_dir = MakeTempDir("syn_bad");
  o.num_train = 0;
  EXPECT_FALSE(GenerateSynthetic(o).ok());
  o.num_train = 4;
  o.text_first_captions = 1.5;
  EXPECT_FALSE(GenerateSynthetic(o).ok());
  o.text_first_captions = -0.1;
  EXPECT_FALSE(GenerateSynthetic(o).ok());
}

}  // namespace
}  // namespace ut::data
