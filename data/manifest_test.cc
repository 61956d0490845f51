#include <string>

#include "data/loader.h"
#include "data/manifest.h"
#include "data/test_util.h"
#include "gtest/gtest.h"

namespace ut::data {
namespace {

using testing::MakeTempDir;
using testing::WriteTextFile;

// Writes `text` as a manifest and returns ReadManifest's result.
absl::StatusOr<std::vector<Sample>> Read(const std::string& text, std::string* path) {
  *path = MakeTempDir("manifest") + "/m.jsonl";
  WriteTextFile(*path, text);
  return ReadManifest(*path);
}

void ExpectError(const std::string& text, const std::vector<std::string>& parts) {
  std::string path;
  auto result = Read(text, &path);
  ASSERT_FALSE(result.ok()) << "accepted: " << text;
  const std::string message(result.status().message());
  EXPECT_NE(message.find(path), std::string::npos) << message;
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "\"" << part << "\" not in: " << message;
  }
}

const char kGood[] = R"({"id": "s1", "task": "caption", "slices": [{"image": "images/a.png", "teacher": [0.6, 0.8, 1.0], "teacher_split": 2}, {"text": "a red circle"}]})";

TEST(ManifestTest, ReadsAllFields) {
  std::string path;
  const std::string text = std::string(kGood) + "\n\n" +
      R"({"id": "s2", "task": "vqa", "slices": [{"text": "what color ?", "prompt": true}, {"text": "red"}], "negatives": ["blue", "green"]})" + "\n";
  auto samples = Read(text, &path);
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 2u);
  const Sample& a = (*samples)[0];
  EXPECT_EQ(a.id, "s1");
  EXPECT_EQ(a.task, "caption");
  ASSERT_EQ(a.slices.size(), 2u);
  EXPECT_EQ(a.slices[0].kind, Slice::Kind::kImage);
  EXPECT_EQ(a.slices[0].image_path, "images/a.png");
  EXPECT_EQ(a.slices[0].teacher, (std::vector<float>{0.6f, 0.8f, 1.0f}));
  EXPECT_EQ(a.slices[0].teacher_split, 2);
  EXPECT_EQ(a.slices[1].kind, Slice::Kind::kText);
  EXPECT_EQ(a.slices[1].text, "a red circle");
  EXPECT_FALSE(a.slices[1].prompt);
  const Sample& b = (*samples)[1];
  EXPECT_TRUE(b.slices[0].prompt);
  EXPECT_EQ(b.negatives, (std::vector<std::string>{"blue", "green"}));
}

TEST(ManifestTest, WriteThenReadIsIdentity) {
  Sample s;
  s.id = "x_000001";
  s.task = "story";
  Slice image;
  image.kind = Slice::Kind::kImage;
  image.image_path = "images/x.png";
  image.teacher = {0.12346f, -0.5f, 1e-5f};
  image.teacher_split = 1;
  Slice text;
  text.text = "the \"red\" circle \\ moves";
  text.prompt = true;
  s.slices = {image, text};
  s.negatives = {"no"};
  const std::string line = SampleToJsonLine(s);
  EXPECT_EQ(line.find("\"id\""), 1u) << "id comes first: " << line;
  EXPECT_NE(line.find("0.12346,"), std::string::npos) << "floats print short: " << line;
  std::string path;
  auto back = Read(line + "\n", &path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(SampleToJsonLine((*back)[0]), line);
}

TEST(ManifestTest, BadJsonNamesTheLine) {
  ExpectError(std::string(kGood) + "\n{\"id\": \"s2\", \"task\": \n", {":2:", "not valid JSON"});
}

TEST(ManifestTest, MissingFieldsAreNamed) {
  ExpectError(R"({"task": "caption", "slices": [{"text": "a"}]})", {":1:", "\"id\""});
  ExpectError(R"({"id": "a", "slices": [{"text": "a"}]})", {":1:", "\"task\""});
  ExpectError(R"({"id": "a", "task": "caption"})", {":1:", "\"slices\""});
  ExpectError(std::string(kGood) + "\n" + R"({"id": "b", "task": "t", "slices": [{"prompt": true}]})",
              {":2:", "slices[0]", "exactly one of"});
}

TEST(ManifestTest, WrongTypesAndValuesAreNamed) {
  ExpectError(R"({"id": "a", "task": "t", "slices": [{"text": 3}]})", {"slices[0].text"});
  ExpectError(R"({"id": "a", "task": "t", "slices": [{"text": "x", "teacher": [1, "2"]}]})",
              {"slices[0].teacher[1]"});
  ExpectError(R"({"id": "a", "task": "t", "slices": [{"text": "x", "teacher": [1], "teacher_split": 2}]})",
              {"teacher_split"});
  ExpectError(R"({"id": "a", "task": "t", "slices": [{"text": "x", "promt": true}]})",
              {"slices[0].promt", "unknown field"});
  ExpectError(R"({"id": "a", "task": "t", "slices": [{"text": "x"}], "negatives": [1]})",
              {"negatives[0]"});
  ExpectError(R"([1, 2])", {"one JSON object per line"});
}

TEST(ManifestTest, DuplicateIdsAndEmptyFiles) {
  ExpectError(std::string(kGood) + "\n" + kGood + "\n", {":2:", "already used on line 1"});
  ExpectError("\n\n", {"no samples"});
  auto missing = ReadManifest("/nonexistent/dir/m.jsonl");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir/m.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace ut::data
