#include "data/tokenizer.h"

#include "core/base/config.h"
#include "data/test_util.h"
#include "gtest/gtest.h"

namespace ut::data {
namespace {

using testing::MakeTempDir;
using testing::ReadFileBytes;
using testing::SmallTokenizer;

TEST(TokenizerTest, SpecialIdsAreDocumented) {
  const Tokenizer& tok = SmallTokenizer();
  EXPECT_EQ(tok.vocab_size(), 96);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.image_id(), 3);
  EXPECT_EQ(tok.pad_id(), 4);
}

TEST(TokenizerTest, RoundTrip) {
  const Tokenizer& tok = SmallTokenizer();
  for (const std::string text : {"a red circle left of a small blue square", "what color is the "
                                 "triangle ?", "a green square above a yellow circle"}) {
    const std::vector<int32_t> ids = tok.Encode(text);
    ASSERT_FALSE(ids.empty());
    for (int32_t id : ids) {
      EXPECT_GT(id, 4) << "a special id inside ordinary text: " << text;
      EXPECT_LT(id, tok.vocab_size());
    }
    EXPECT_EQ(tok.Decode(ids), text);
  }
  // Frequent words stay whole (BPE; a unigram model fragments them).
  EXPECT_EQ(tok.Encode("a red circle left of a small blue square").size(), 9u);
}

TEST(TokenizerTest, DecodeSkipsSpecialIds) {
  const Tokenizer& tok = SmallTokenizer();
  std::vector<int32_t> ids = {tok.bos_id(), tok.image_id(), tok.image_id()};
  const std::vector<int32_t> text = tok.Encode("a red circle");
  ids.insert(ids.end(), text.begin(), text.end());
  ids.push_back(tok.eos_id());
  ids.push_back(tok.pad_id());
  EXPECT_EQ(tok.Decode(ids), "a red circle");
}

TEST(TokenizerTest, TrainingIsDeterministic) {
  std::vector<std::string> corpus;
  for (int i = 0; i < 200; ++i) {
    corpus.push_back(std::string(i % 3 ? "the blue " : "a purple ") +
                     (i % 5 ? "triangle moves left" : "square turns green"));
  }
  const std::string a = MakeTempDir("tok_a") + "/m", b = MakeTempDir("tok_b") + "/m";
  ASSERT_TRUE(Tokenizer::Train(corpus, a, 64, 3).ok());
  ASSERT_TRUE(Tokenizer::Train(corpus, b, 64, 3).ok());
  const std::string model_a = ReadFileBytes(a + ".model");
  ASSERT_FALSE(model_a.empty());
  EXPECT_EQ(model_a, ReadFileBytes(b + ".model"));
  EXPECT_EQ(ReadFileBytes(a + ".vocab"), ReadFileBytes(b + ".vocab"));
  // A corpus too small for the vocabulary still gives exactly vocab_size ids.
  auto tok = Tokenizer::Load(a + ".model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 64);
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("the blue square moves left")),
            "the blue square moves left");
}

TEST(TokenizerTest, LoadErrorsNameTheFile) {
  const std::string dir = MakeTempDir("tok_bad");
  auto missing = Tokenizer::Load(dir + "/nope.model");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.model"), std::string::npos);
  testing::WriteTextFile(dir + "/garbage.model", "this is not a protobuf");
  auto garbage = Tokenizer::Load(dir + "/garbage.model");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("garbage.model"), std::string::npos);
}

// The shim keeps sentencepiece's bundled protobuf away from the system
// libprotobuf used by the config: both must work in one process.
TEST(TokenizerTest, CoexistsWithConfigProtobuf) {
  auto config = ut::ParseConfigText("data { seq_len: 77 tokenizer_vocab: 96 }", "inline");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->data().seq_len(), 77);
  const Tokenizer& tok = SmallTokenizer();
  EXPECT_EQ(tok.vocab_size(), config->data().tokenizer_vocab());
  EXPECT_EQ(ut::ConfigToText(*config).find("seq_len: 77") != std::string::npos, true);
}

}  // namespace
}  // namespace ut::data
