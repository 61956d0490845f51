#include "core/train/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/base/rng.h"
#include "core/tensor/safetensors.h"
#include "gtest/gtest.h"

namespace ut::train {
namespace {

namespace fs = std::filesystem;

// A stand-in for a model: a few parameters in one buffer, plus m and v.
struct Fake {
  std::vector<ParamInfo> params;
  std::vector<float> w, m, v;
  ModelBuffers buffers() {
    return {&params, static_cast<int64_t>(w.size()), w.data(), m.data(), v.data()};
  }
};

Fake MakeFake(uint64_t seed, int64_t rows = 3) {
  Fake f;
  f.params = {{"language_model.model.layers.0.mlp.up_proj.weight", {rows, 4}, 0, rows * 4, true},
              {"language_model.model.norm.weight", {4}, rows * 4, 4, false},
              {"multi_modal_projector.linear_1.bias", {2}, rows * 4 + 4, 2, false}};
  const int64_t total = rows * 4 + 6;
  Rng rng(seed);
  for (int64_t i = 0; i < total; ++i) {
    f.w.push_back(rng.Normal());
    f.m.push_back(rng.Normal());
    f.v.push_back(rng.Uniform());
  }
  return f;
}

TrainState MakeState(int64_t step) {
  TrainState s;
  s.step = step;
  s.data_epoch = 2;
  s.data_index = 17;
  s.rng_state = {1, 2, 0xfedcba9876543210ull, 4};
  s.tokens_seen = 123456789012ll;
  s.param_count = 18;
  s.config_text = "train {\n  steps: 3\n}\n";
  return s;
}

std::string NewOutDir(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  fs::remove_all(dir);
  return dir;
}

TEST(Checkpoint, RoundTripIsExact) {
  const std::string out = NewOutDir("rt");
  Fake a = MakeFake(1);
  auto dir = SaveCheckpoint(out, a.buffers(), MakeState(100), 2);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, out + "/checkpoints/step_000100");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json", "COMPLETE"}) {
    EXPECT_TRUE(fs::exists(*dir + "/" + f)) << f;
  }
  EXPECT_FALSE(fs::exists(*dir + ".tmp"));

  Fake b = MakeFake(2);
  TrainState s;
  ASSERT_TRUE(LoadCheckpoint(*dir, b.buffers(), &s).ok());
  EXPECT_EQ(a.w, b.w);  // bit-exact
  EXPECT_EQ(a.m, b.m);
  EXPECT_EQ(a.v, b.v);
  const TrainState e = MakeState(100);
  EXPECT_EQ(s.step, e.step);
  EXPECT_EQ(s.data_epoch, e.data_epoch);
  EXPECT_EQ(s.data_index, e.data_index);
  EXPECT_EQ(s.rng_state, e.rng_state);
  EXPECT_EQ(s.tokens_seen, e.tokens_seen);
  EXPECT_EQ(s.param_count, e.param_count);
  EXPECT_EQ(s.config_text, e.config_text);
}

TEST(Checkpoint, FilesUseHuggingFaceNamesAndOptimizerSuffixes) {
  const std::string out = NewOutDir("names");
  Fake a = MakeFake(3);
  auto dir = SaveCheckpoint(out, a.buffers(), MakeState(5), 0);
  ASSERT_TRUE(dir.ok());
  auto model = ReadSafetensors(*dir + "/model.safetensors");
  ASSERT_TRUE(model.ok());
  ASSERT_EQ(model->tensors.size(), 3u);
  const Tensor& up = model->tensors.at("language_model.model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(up.shape(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(up.dtype(), DType::kF32);
  EXPECT_EQ(up.f32()[5], a.w[5]);
  auto optim = ReadSafetensors(*dir + "/optimizer.safetensors");
  ASSERT_TRUE(optim.ok());
  ASSERT_EQ(optim->tensors.size(), 6u);
  EXPECT_EQ(optim->tensors.at("language_model.model.norm.weight.exp_avg").f32()[1], a.m[13]);
  EXPECT_EQ(optim->tensors.at("multi_modal_projector.linear_1.bias.exp_avg_sq").f32()[0], a.v[16]);
}

TEST(Checkpoint, KeepsTheNewestAndSkipsIncompleteOnes) {
  const std::string out = NewOutDir("keep");
  Fake a = MakeFake(4);
  for (int step : {10, 20, 30, 40}) ASSERT_TRUE(SaveCheckpoint(out, a.buffers(), MakeState(step), 2).ok());
  auto all = ListCheckpoints(out);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], out + "/checkpoints/step_000030");
  EXPECT_EQ(all[1], out + "/checkpoints/step_000040");
  // A crash before COMPLETE: the directory is ignored, the previous one is used.
  fs::remove(out + "/checkpoints/step_000040/COMPLETE");
  fs::create_directories(out + "/checkpoints/step_000050.tmp");
  auto latest = LatestCheckpoint(out);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, out + "/checkpoints/step_000030");
  // Saving 40 again replaces the incomplete directory and clears the .tmp leftover.
  ASSERT_TRUE(SaveCheckpoint(out, a.buffers(), MakeState(40), 2).ok());
  EXPECT_EQ(*LatestCheckpoint(out), out + "/checkpoints/step_000040");
  EXPECT_FALSE(fs::exists(out + "/checkpoints/step_000050.tmp"));
}

TEST(Checkpoint, NoCheckpointIsNotFound) {
  auto latest = LatestCheckpoint(NewOutDir("none"));
  ASSERT_FALSE(latest.ok());
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(latest.status().message().find("none/checkpoints"), std::string::npos);
}

// Saves a checkpoint, lets `damage` break it, and expects LoadCheckpoint to
// fail with `file` and `what` in the message and the target buffers untouched.
void ExpectLoadFails(const std::string& name, const std::function<void(const std::string&)>& damage,
                     const std::string& file, const std::string& what, int64_t rows = 3) {
  const std::string out = NewOutDir(name);
  Fake a = MakeFake(5);
  auto dir = SaveCheckpoint(out, a.buffers(), MakeState(7), 2);
  ASSERT_TRUE(dir.ok());
  damage(*dir);
  Fake b = MakeFake(6, rows);
  const Fake before = b;
  TrainState s;
  s.step = -42;
  absl::Status st = LoadCheckpoint(*dir, b.buffers(), &s);
  ASSERT_FALSE(st.ok()) << name;
  const std::string msg(st.message());
  EXPECT_NE(msg.find(*dir + "/" + file), std::string::npos) << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
  EXPECT_EQ(b.w, before.w);
  EXPECT_EQ(b.m, before.m);
  EXPECT_EQ(b.v, before.v);
  EXPECT_EQ(s.step, -42);
}

void Truncate(const std::string& path, int64_t drop) {
  fs::resize_file(path, fs::file_size(path) - drop);
}

TEST(Checkpoint, CorruptOrMismatchedCheckpointsAreRejected) {
  ExpectLoadFails("trunc_model", [](const std::string& d) { Truncate(d + "/model.safetensors", 4); },
                  "model.safetensors", "out of range");
  ExpectLoadFails("trunc_optim",
                  [](const std::string& d) { Truncate(d + "/optimizer.safetensors", 100); },
                  "optimizer.safetensors", "truncated or corrupt");
  ExpectLoadFails("trunc_state", [](const std::string& d) { Truncate(d + "/state.json", 20); },
                  "state.json", "not valid JSON");
  ExpectLoadFails("garbage_model",
                  [](const std::string& d) {
                    std::ofstream(d + "/model.safetensors", std::ios::trunc) << "garbage!garbage!";
                  },
                  "model.safetensors", "bad header length");
  ExpectLoadFails("no_complete", [](const std::string& d) { fs::remove(d + "/COMPLETE"); },
                  "COMPLETE", "missing");
  ExpectLoadFails("state_field",
                  [](const std::string& d) {
                    std::ofstream(d + "/state.json", std::ios::trunc)
                        << R"({"format":"unified_train checkpoint v1","step":1})";
                  },
                  "state.json", "missing or mistyped field");
  // A different model: param_count and shapes do not match.
  ExpectLoadFails("other_model", [](const std::string&) {}, "state.json", "param_count", 5);
}

TEST(Checkpoint, ShapeMismatchNamesTheTensor) {
  // Same parameter count, different shapes: [3,4] saved, [4,3] expected.
  const std::string out = NewOutDir("shape");
  Fake a = MakeFake(7);
  auto dir = SaveCheckpoint(out, a.buffers(), MakeState(1), 2);
  ASSERT_TRUE(dir.ok());
  Fake b = MakeFake(8);
  b.params[0].shape = {4, 3};
  TrainState s;
  absl::Status st = LoadCheckpoint(*dir, b.buffers(), &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("model.safetensors"), std::string::npos) << st;
  EXPECT_NE(st.message().find("up_proj.weight' has shape [3, 4]"), std::string::npos) << st;
}

}  // namespace
}  // namespace ut::train
