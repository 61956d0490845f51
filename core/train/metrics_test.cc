#include "core/train/metrics.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ut::train {
namespace {

TEST(Metrics, ProgressLineFormat) {
  StepMetrics m;
  m.step = 40;
  m.total_steps = 300;
  m.loss = 3.12341f;
  m.lr = 1.2e-3f;
  m.grad_norm = 0.8123;
  m.tokens_per_s = 5234.4;
  m.eta_s = 72;
  EXPECT_EQ(ProgressLine(m),
            "step 40/300 | loss 3.1234 | lr 1.20e-03 | grad-norm 0.812 | 5234 tok/s | ETA 1m12s");
}

TEST(Metrics, ProgressLineShowsBothLossesWhenLdIsOn) {
  StepMetrics m;
  m.step = 40;
  m.total_steps = 300;
  m.loss = 2.31f;
  m.has_ld = true;
  m.loss_g = 2.10f;
  m.loss_d = 0.42f;
  m.lr = 1.2e-3f;
  m.grad_norm = 0.8123;
  m.tokens_per_s = 5234.4;
  m.eta_s = 72;
  EXPECT_EQ(ProgressLine(m),
            "step 40/300 | loss 2.3100 (L_g 2.1000, L_d 0.4200) | lr 1.20e-03 | grad-norm 0.812 | "
            "5234 tok/s | ETA 1m12s");
  auto j = nlohmann::json::parse(MetricsJson(m));
  EXPECT_EQ(j["loss_g"].get<float>(), 2.10f);
  EXPECT_EQ(j["loss_d"].get<float>(), 0.42f);
}

TEST(Metrics, FormatDuration) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(59.4), "59s");
  EXPECT_EQ(FormatDuration(60), "1m00s");
  EXPECT_EQ(FormatDuration(3599), "59m59s");
  EXPECT_EQ(FormatDuration(7380), "2h03m");
}

TEST(Metrics, JsonRoundTripsTheValues) {
  StepMetrics m;
  m.step = 7;
  m.loss = 2.718281f;
  m.lr = 3e-4f;
  m.grad_norm = 1.5;
  m.tokens = 1234;
  auto j = nlohmann::json::parse(MetricsJson(m));
  EXPECT_EQ(j["step"].get<int64_t>(), 7);
  EXPECT_EQ(j["loss"].get<float>(), 2.718281f);
  EXPECT_EQ(j["lr"].get<float>(), 3e-4f);
  EXPECT_EQ(j["grad_norm"].get<double>(), 1.5);
  EXPECT_EQ(j["tokens"].get<int64_t>(), 1234);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(MetricsLog, ResumeDropsStepsAfterTheCheckpoint) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/metrics.jsonl";
  {
    MetricsLog log;
    ASSERT_TRUE(log.Open(path, -1).ok());
    for (int s = 1; s <= 5; ++s) {
      StepMetrics m;
      m.step = s;
      ASSERT_TRUE(log.Append(m).ok());
    }
  }
  {
    MetricsLog log;  // resumed from step 3: steps 4 and 5 were after the checkpoint
    ASSERT_TRUE(log.Open(path, 3).ok());
    StepMetrics m;
    m.step = 4;
    ASSERT_TRUE(log.Append(m).ok());
  }
  std::istringstream lines(ReadAll(path));
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(lines, line)) steps.push_back(nlohmann::json::parse(line)["step"]);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  {
    MetricsLog log;  // a fresh run truncates
    ASSERT_TRUE(log.Open(path, -1).ok());
  }
  EXPECT_EQ(ReadAll(path), "");
}

}  // namespace
}  // namespace ut::train
