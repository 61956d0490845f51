#include "core/base/config.h"

#include "gtest/gtest.h"

namespace ut {
namespace {

TEST(Config, ShippedConfigsLoadAndValidate) {
  for (const char* path : {"configs/tiny.textproto", "configs/small.textproto"}) {
    auto c = LoadConfigFile(path);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c);
  }
}

TEST(Config, UnknownFieldNamesFileLineAndField) {
  auto c = ParseConfigText("train {\n  stepz: 3\n}\n", "x.textproto");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find("x.textproto:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stepz"), std::string::npos) << msg;
}

TEST(Config, OverrideSetsNestedFieldsAndEnums) {
  Config c;
  ASSERT_TRUE(ApplyOverride(&c, "model.llm.width=128").ok());
  ASSERT_TRUE(ApplyOverride(&c, "data.on_bad_image=SKIP").ok());
  ASSERT_TRUE(ApplyOverride(&c, "train.out_dir=/tmp/x").ok());
  EXPECT_EQ(c.model().llm().width(), 128);
  EXPECT_EQ(c.data().on_bad_image(), unified_train::DataConfig::SKIP);
  EXPECT_EQ(c.train().out_dir(), "/tmp/x");
  EXPECT_FALSE(ApplyOverride(&c, "model.llm.widht=1").ok());
  EXPECT_FALSE(ApplyOverride(&c, "model.llm.width=abc").ok());
  EXPECT_FALSE(ApplyOverride(&c, "nonsense").ok());
}

TEST(Config, ValidationNamesTheField) {
  Config c;
  c.mutable_model()->mutable_llm()->set_kv_heads(3);
  absl::Status s = ValidateConfig(c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("model.llm.kv_heads"), std::string::npos) << s;
}

}  // namespace
}  // namespace ut
