// Trainer and evaluation on a tiny synthetic data set and a tiny model:
// resume determinism (bit-identical), checkpoint contents, evaluation.
#include "core/train/trainer.h"

#include <omp.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/train/evaluate.h"
#include "data/synthetic.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace ut::train {
namespace {

namespace fs = std::filesystem;

std::string TmpDir() { return std::getenv("TEST_TMPDIR"); }
std::string DataDir() { return TmpDir() + "/data"; }

Config TinyConfig(const std::string& out_dir) {
  auto config = ParseConfigText(R"(
    model {
      vision { image_size: 16 patch_size: 4 width: 16 layers: 1 heads: 2 mlp: 32 }
      llm { width: 32 layers: 1 heads: 2 kv_heads: 1 ffn: 64 vocab_size: 128 }
    }
    data { seq_len: 64 micro_batch_size: 2 prefetch: 1 }
    optim { lr: 1e-2 min_lr: 1e-3 warmup_steps: 2 }
    train { steps: 6 grad_accum: 2 log_every: 1 ckpt_every: 2 keep_checkpoints: 2 }
  )", "tiny");
  CHECK(config.ok()) << config.status();
  config->mutable_data()->set_data_dir(DataDir());
  config->mutable_train()->set_out_dir(out_dir);
  CHECK(ValidateConfig(*config).ok());
  return *config;
}

// Everything one training process owns.
struct Session {
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<MLLM> model;
  std::unique_ptr<data::Loader> loader;
  std::unique_ptr<Trainer> trainer;
};

Session MakeSession(const Config& config, const std::string& split = "train") {
  Session s;
  auto tok = data::Tokenizer::Load(DataDir() + "/tokenizer.model");
  CHECK(tok.ok()) << tok.status();
  s.tokenizer = std::move(*tok);
  auto model = MLLM::Create(config.model());
  CHECK(model.ok()) << model.status();
  s.model = std::move(*model);
  data::LoaderOptions o;
  o.manifest = DataDir() + "/" + split + ".jsonl";
  o.seq_len = config.data().seq_len();
  o.micro_batch_size = config.data().micro_batch_size();
  o.image_size = config.model().vision().image_size();
  o.visual_tokens = s.model->num_visual_tokens();
  o.seed = config.data().seed();
  o.prefetch = config.data().prefetch();
  auto loader = data::Loader::Create(o, s.tokenizer.get());
  CHECK(loader.ok()) << loader.status();
  s.loader = std::move(*loader);
  s.trainer = std::make_unique<Trainer>(config, s.model.get(), s.loader.get());
  s.trainer->set_print_progress(false);
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    omp_set_num_threads(2);
    if (fs::exists(DataDir() + "/train.jsonl")) return;
    data::SyntheticOptions o;
    o.out_dir = DataDir();
    o.image_size = 16;
    o.num_train = 24;
    o.num_val = 12;
    o.num_test = 4;
    o.vocab_size = 128;
    // Image-first captions, the data these tests' expectations (the loss
    // falls over 6 steps at lr 1e-2) were set on.
    o.text_first_captions = 0.0;
    ASSERT_TRUE(data::GenerateSynthetic(o).ok());
  }
};

// With objective.alpha > 0 the objective is L_g + alpha * L_d (the synthetic
// data carries teacher features).
Config WithLd(Config c, float alpha, unified_train::ObjectiveConfig::Mode mode,
              unified_train::ObjectiveConfig::Pool pool) {
  c.mutable_objective()->set_alpha(alpha);
  c.mutable_objective()->set_mode(mode);
  c.mutable_objective()->set_pool(pool);
  return c;
}

// Trains 6 steps straight, and 3 + (new process, resume) 3; everything must
// agree bit for bit.
void ExpectBitIdenticalResume(
    const std::string& tag, float alpha, unified_train::ObjectiveConfig::Mode mode,
    unified_train::ObjectiveConfig::Pool pool = unified_train::ObjectiveConfig::MICRO_BATCH) {
  // 6 steps straight.
  const Config straight_cfg = WithLd(TinyConfig(TmpDir() + "/straight" + tag), alpha, mode, pool);
  Session straight = MakeSession(straight_cfg);
  ASSERT_TRUE(straight.trainer->Run().ok());
  ASSERT_EQ(straight.trainer->losses().size(), 6u);

  // 3 steps, stop (a checkpoint of step 3 is written), a new process resumes to 6.
  const Config cfg = WithLd(TinyConfig(TmpDir() + "/interrupted" + tag), alpha, mode, pool);
  std::vector<float> losses;
  {
    Session first = MakeSession(cfg);
    ASSERT_TRUE(first.trainer->Run(/*stop_at=*/3).ok());
    EXPECT_EQ(first.trainer->step(), 3);
    losses = first.trainer->losses();
  }
  Session second = MakeSession(cfg);
  ASSERT_TRUE(second.trainer->Preflight().ok());  // as the launcher does before resuming
  auto latest = LatestCheckpoint(cfg.train().out_dir());
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(fs::path(*latest).filename(), "step_000003");
  ASSERT_TRUE(second.trainer->Resume(*latest).ok());
  ASSERT_TRUE(second.trainer->Preflight().ok());
  ASSERT_TRUE(second.trainer->Run().ok());
  losses.insert(losses.end(), second.trainer->losses().begin(), second.trainer->losses().end());

  EXPECT_EQ(losses, straight.trainer->losses());  // exact float equality
  const int64_t n = straight.model->num_params();
  ASSERT_EQ(n, second.model->num_params());
  EXPECT_EQ(std::memcmp(straight.model->param_data(), second.model->param_data(), n * 4), 0);
  EXPECT_EQ(second.trainer->optimizer().step(), 6);
  EXPECT_EQ(second.loader->position().index, straight.loader->position().index);
  EXPECT_EQ(second.loader->position().epoch, straight.loader->position().epoch);
  // The final checkpoints are byte-identical too (state.json aside: same config but another
  // out_dir in the config text).
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_EQ(ReadAll(TmpDir() + "/straight" + tag + "/checkpoints/step_000006/" + f),
              ReadAll(TmpDir() + "/interrupted" + tag + "/checkpoints/step_000006/" + f))
        << f;
  }
  // The loss went down from the first to the last step (lr 1e-2 on 24 samples).
  EXPECT_LT(losses.back(), losses.front());
  // metrics.jsonl reads as one run: steps 1..6 once each.
  std::istringstream lines(ReadAll(TmpDir() + "/interrupted" + tag + "/metrics.jsonl"));
  std::string line;
  int expected_step = 1;
  while (std::getline(lines, line)) {
    EXPECT_NE(line.find("{\"step\":" + std::to_string(expected_step) + ","), std::string::npos)
        << line;
    // Both losses are logged; L_d only when it is on.
    EXPECT_NE(line.find("\"loss_g\":"), std::string::npos) << line;
    EXPECT_EQ(line.find("\"loss_d\":") != std::string::npos, alpha > 0) << line;
    ++expected_step;
  }
  EXPECT_EQ(expected_step, 7);
  // L_d reaches the retrieval projector exactly when it is on.
  const ParamInfo* rp = second.model->FindParam("retrieval_projector.linear_2.bias");
  ASSERT_NE(rp, nullptr);
  bool moved = false;
  for (int64_t i = 0; i < rp->numel; ++i) moved |= second.model->param_data()[rp->offset + i] != 0;
  EXPECT_EQ(moved, alpha > 0);
}

TEST_F(TrainerTest, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  ExpectBitIdenticalResume("", 0.0f, unified_train::ObjectiveConfig::SEQUENCE);
}

TEST_F(TrainerTest, ResumeIsBitIdenticalWithTheDiscriminativeLoss) {
  ExpectBitIdenticalResume("_ld_sequence", 0.5f, unified_train::ObjectiveConfig::SEQUENCE);
  ExpectBitIdenticalResume("_ld_paper", 0.5f, unified_train::ObjectiveConfig::PAPER);
}

// GLOBAL_BATCH: one L_d pool over the step's 2 micro-batches (the gradient cache).
TEST_F(TrainerTest, ResumeIsBitIdenticalWithAGlobalBatchPool) {
  ExpectBitIdenticalResume("_ld_global", 0.5f, unified_train::ObjectiveConfig::SEQUENCE,
                           unified_train::ObjectiveConfig::GLOBAL_BATCH);
}

// MICRO_BATCH pools of ld_round = 2 are the same pools as GLOBAL_BATCH here
// (grad_accum 2); ld_round must divide grad_accum.
TEST_F(TrainerTest, LdRoundPoolsConsecutiveMicroBatches) {
  using unified_train::ObjectiveConfig;
  const Config round_cfg = WithLd(TinyConfig(TmpDir() + "/round2"), 0.5f,
                                  ObjectiveConfig::SEQUENCE, ObjectiveConfig::MICRO_BATCH);
  Session round = MakeSession(round_cfg);
  round.trainer->set_ld_round(2);
  ASSERT_TRUE(round.trainer->Run(/*stop_at=*/2).ok());
  const Config global_cfg = WithLd(TinyConfig(TmpDir() + "/global2"), 0.5f,
                                   ObjectiveConfig::SEQUENCE, ObjectiveConfig::GLOBAL_BATCH);
  Session global = MakeSession(global_cfg);
  ASSERT_TRUE(global.trainer->Run(/*stop_at=*/2).ok());
  EXPECT_EQ(round.trainer->losses(), global.trainer->losses());
  EXPECT_EQ(std::memcmp(round.model->param_data(), global.model->param_data(),
                        round.model->num_params() * 4), 0);
  // ...and differ from pools of one micro-batch.
  Session single = MakeSession(WithLd(TinyConfig(TmpDir() + "/round1"), 0.5f,
                                      ObjectiveConfig::SEQUENCE, ObjectiveConfig::MICRO_BATCH));
  ASSERT_TRUE(single.trainer->Run(/*stop_at=*/2).ok());
  EXPECT_NE(single.trainer->losses(), round.trainer->losses());

  Session bad = MakeSession(WithLd(TinyConfig(TmpDir() + "/round3"), 0.5f,
                                   ObjectiveConfig::SEQUENCE, ObjectiveConfig::MICRO_BATCH));
  bad.trainer->set_ld_round(3);
  const absl::Status st = bad.trainer->Run();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("train.grad_accum = 2"), std::string::npos) << st;
}

TEST_F(TrainerTest, CheckpointsEveryCkptEveryStepsAndKeepsTheNewest) {
  const Config cfg = TinyConfig(TmpDir() + "/keep");
  Session s = MakeSession(cfg);
  ASSERT_TRUE(s.trainer->Run().ok());
  auto all = ListCheckpoints(cfg.train().out_dir());
  ASSERT_EQ(all.size(), 2u);  // 2, 4, 6 written; keep_checkpoints = 2
  EXPECT_EQ(fs::path(all[0]).filename(), "step_000004");
  EXPECT_EQ(fs::path(all[1]).filename(), "step_000006");
  // The checkpoint holds exactly the trained weights.
  TrainState state;
  std::vector<float> w(s.model->num_params()), m(w.size()), v(w.size());
  ASSERT_TRUE(LoadCheckpoint(all[1], {&s.model->params(), (int64_t)w.size(), w.data(), m.data(),
                                      v.data()}, &state).ok());
  EXPECT_EQ(state.step, 6);
  EXPECT_EQ(state.param_count, s.model->num_params());
  EXPECT_EQ(std::memcmp(w.data(), s.model->param_data(), w.size() * 4), 0);
  EXPECT_EQ(state.data_index, s.loader->position().index);
}

TEST_F(TrainerTest, StopRequestFinishesTheStepAndCheckpoints) {
  const Config cfg = TinyConfig(TmpDir() + "/stop");
  Session s = MakeSession(cfg);
  RequestStop();  // what the SIGINT/SIGTERM handler does
  absl::Status st = s.trainer->Run();
  ClearStopRequest();
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(s.trainer->stopped_by_request());
  EXPECT_EQ(s.trainer->step(), 1);
  auto latest = LatestCheckpoint(cfg.train().out_dir());
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(fs::path(*latest).filename(), "step_000001");
}

TEST_F(TrainerTest, ResumeFromACorruptCheckpointChangesNothing) {
  const Config cfg = TinyConfig(TmpDir() + "/corrupt");
  {
    Session s = MakeSession(cfg);
    ASSERT_TRUE(s.trainer->Run(/*stop_at=*/2).ok());
  }
  const std::string dir = cfg.train().out_dir() + "/checkpoints/step_000002";
  fs::resize_file(dir + "/optimizer.safetensors", fs::file_size(dir + "/optimizer.safetensors") - 3);
  Session s = MakeSession(cfg);
  std::vector<float> before(s.model->param_data(), s.model->param_data() + s.model->num_params());
  absl::Status st = s.trainer->Resume(dir);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(dir + "/optimizer.safetensors"), std::string::npos) << st;
  EXPECT_EQ(s.trainer->step(), 0);
  EXPECT_EQ(std::memcmp(before.data(), s.model->param_data(), before.size() * 4), 0);
}

TEST_F(TrainerTest, EvaluateCoversTheRequestedSamplesDeterministically) {
  const Config cfg = TinyConfig(TmpDir() + "/eval");
  Session s = MakeSession(cfg, "val");
  EvalOptions o;
  o.max_samples = 3;
  o.max_new_tokens = 4;
  auto r1 = Evaluate(s.model.get(), s.loader.get(), *s.tokenizer, "val", o);
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto r2 = Evaluate(s.model.get(), s.loader.get(), *s.tokenizer, "val", o);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r1->loss_samples, 3);
  EXPECT_GT(r1->loss_tokens, 0);
  // An untrained model is near uniform over the 128-token vocabulary.
  EXPECT_NEAR(r1->loss, std::log(128.0), 0.5);
  EXPECT_EQ(r1->loss, r2->loss);
  EXPECT_GT(r1->caption_total, 0);
  EXPECT_LE(r1->caption_total, 3);
  EXPECT_GT(r1->vqa_total, 0);
  EXPECT_LE(r1->vqa_total, 3);
  EXPECT_EQ(r1->caption_correct, r2->caption_correct);
  const std::string table = FormatEvalTable({*r1});
  EXPECT_NE(table.find("loss (mean CE)"), std::string::npos) << table;
  EXPECT_NE(table.find("caption exact-match"), std::string::npos);
  EXPECT_NE(table.find("VQA accuracy"), std::string::npos);
}

TEST(Evaluate, SplitPromptCutsBeforeTheLastAnswerSlice) {
  data::Sample vqa;
  vqa.task = "vqa";
  vqa.slices.resize(3);
  vqa.slices[0].kind = data::Slice::Kind::kImage;
  vqa.slices[0].image_path = "img/0.png";
  vqa.slices[1].text = "what color is the circle ?";
  vqa.slices[1].prompt = true;
  vqa.slices[2].text = "red";
  data::Sample prompt;
  std::string reference;
  ASSERT_TRUE(SplitPrompt(vqa, &prompt, &reference));
  EXPECT_EQ(reference, "red");
  ASSERT_EQ(prompt.slices.size(), 2u);
  EXPECT_EQ(prompt.slices[1].text, "what color is the circle ?");
  data::Sample image_only;
  image_only.slices.resize(1);
  image_only.slices[0].kind = data::Slice::Kind::kImage;
  EXPECT_FALSE(SplitPrompt(image_only, &prompt, &reference));
}

TEST(Evaluate, NormalizeText) {
  EXPECT_EQ(NormalizeText("  a  red\tcircle \n"), "a red circle");
  EXPECT_EQ(NormalizeText(""), "");
}

}  // namespace
}  // namespace ut::train
