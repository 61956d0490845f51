// MLLM structure and behaviour: the parameter list of mllm.h for tiny, config
// validation, init recipe, accumulation, padding invariance, the final-hidden
// gradient hook, image-token replacement and greedy generation.
#include "core/model/mllm.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/base/rng.h"
#include "core/model/test_util.h"
#include "gtest/gtest.h"

namespace ut {
namespace {

using model::testing::ImagePlacement;
using model::testing::MakeBatch;
using model::testing::SmallConfig;

std::unique_ptr<MLLM> MakeModel(const unified_train::ModelConfig& c, uint64_t seed = 1) {
  auto m = MLLM::Create(c);
  CHECK(m.ok()) << m.status();
  (*m)->InitParams(seed);
  return std::move(*m);
}

data::Batch SmallBatch(const MLLM& m, uint64_t seed = 5) {
  const auto& c = m.config();
  // Row 0: bos, image, text; row 1: text, image, text, then 3 padding tokens.
  return MakeBatch(seed, 12, {12, 9}, {{0, 1}, {1, 3}}, m.num_visual_tokens(),
                   c.vision().image_size(), c.llm().vocab_size());
}

TEST(MLLMTest, TinyParameterListMatchesHeader) {
  auto config = LoadConfigFile("configs/tiny.textproto");
  ASSERT_TRUE(config.ok()) << config.status();
  auto m = MLLM::Create(config->model());
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& mc = config->model();
  const int64_t P = mc.vision().patch_size(), Wv = mc.vision().width(), Fv = mc.vision().mlp();
  const int64_t NP = (mc.vision().image_size() / P) * (mc.vision().image_size() / P);
  const int64_t C = mc.llm().width(), F = mc.llm().ffn(), V = mc.llm().vocab_size();
  const int64_t D = C / mc.llm().heads(), HD = mc.llm().heads() * D;
  const int64_t KD = mc.llm().kv_heads() * D;

  // The list of mllm.h, written out independently of layout.cc.
  struct Expect {
    std::string name;
    std::vector<int64_t> shape;
    bool decay;
  };
  std::vector<Expect> want;
  const std::string vm = "vision_tower.vision_model.";
  want.push_back({vm + "embeddings.patch_embedding.weight", {Wv, 3, P, P}, true});
  want.push_back({vm + "embeddings.patch_embedding.bias", {Wv}, false});
  want.push_back({vm + "embeddings.position_embedding.weight", {NP, Wv}, true});
  for (int i = 0; i < mc.vision().layers(); ++i) {
    const std::string p = vm + "encoder.layers." + std::to_string(i) + ".";
    want.push_back({p + "layer_norm1.weight", {Wv}, false});
    want.push_back({p + "layer_norm1.bias", {Wv}, false});
    for (const char* proj : {"q", "k", "v", "out"}) {
      want.push_back({p + "self_attn." + proj + "_proj.weight", {Wv, Wv}, true});
      want.push_back({p + "self_attn." + proj + "_proj.bias", {Wv}, false});
    }
    want.push_back({p + "layer_norm2.weight", {Wv}, false});
    want.push_back({p + "layer_norm2.bias", {Wv}, false});
    want.push_back({p + "mlp.fc1.weight", {Fv, Wv}, true});
    want.push_back({p + "mlp.fc1.bias", {Fv}, false});
    want.push_back({p + "mlp.fc2.weight", {Wv, Fv}, true});
    want.push_back({p + "mlp.fc2.bias", {Wv}, false});
  }
  want.push_back({vm + "post_layernorm.weight", {Wv}, false});
  want.push_back({vm + "post_layernorm.bias", {Wv}, false});
  want.push_back({"multi_modal_projector.linear_1.weight", {C, Wv}, true});
  want.push_back({"multi_modal_projector.linear_1.bias", {C}, false});
  want.push_back({"multi_modal_projector.linear_2.weight", {C, C}, true});
  want.push_back({"multi_modal_projector.linear_2.bias", {C}, false});
  want.push_back({"language_model.model.embed_tokens.weight", {V, C}, true});
  for (int i = 0; i < mc.llm().layers(); ++i) {
    const std::string p = "language_model.model.layers." + std::to_string(i) + ".";
    want.push_back({p + "input_layernorm.weight", {C}, false});
    want.push_back({p + "self_attn.q_proj.weight", {HD, C}, true});
    want.push_back({p + "self_attn.k_proj.weight", {KD, C}, true});
    want.push_back({p + "self_attn.v_proj.weight", {KD, C}, true});
    want.push_back({p + "self_attn.o_proj.weight", {C, HD}, true});
    want.push_back({p + "post_attention_layernorm.weight", {C}, false});
    want.push_back({p + "mlp.gate_proj.weight", {F, C}, true});
    want.push_back({p + "mlp.up_proj.weight", {F, C}, true});
    want.push_back({p + "mlp.down_proj.weight", {C, F}, true});
  }
  want.push_back({"language_model.model.norm.weight", {C}, false});
  want.push_back({"language_model.lm_head.weight", {V, C}, true});
  const int64_t R = mc.retrieval_dim();
  want.push_back({"retrieval_projector.linear_1.weight", {R, C}, true});
  want.push_back({"retrieval_projector.linear_1.bias", {R}, false});
  want.push_back({"retrieval_projector.linear_2.weight", {R, R}, true});
  want.push_back({"retrieval_projector.linear_2.bias", {R}, false});

  const auto& got = (*m)->params();
  ASSERT_EQ(got.size(), want.size());
  int64_t offset = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(got[i].name, want[i].name);
    EXPECT_EQ(got[i].shape, want[i].shape);
    EXPECT_EQ(got[i].decay, want[i].decay);
    EXPECT_EQ(got[i].offset, offset);
    int64_t numel = 1;
    for (int64_t s : want[i].shape) numel *= s;
    EXPECT_EQ(got[i].numel, numel);
    offset += numel;
    EXPECT_EQ((*m)->FindParam(want[i].name), &got[i]);
  }
  EXPECT_EQ((*m)->num_params(), offset);
  EXPECT_EQ((*m)->FindParam("nope"), nullptr);
  EXPECT_EQ((*m)->num_visual_tokens(), NP);
  // Tiny is ~3.6M parameters (DESIGN/README say so).
  EXPECT_GT(offset, 3'500'000);
  EXPECT_LT(offset, 3'800'000);
}

TEST(MLLMTest, TiedEmbeddingsDropLmHead) {
  auto c = SmallConfig();
  auto untied = MLLM::Create(c);
  c.mutable_llm()->set_tie_embeddings(true);
  auto tied = MLLM::Create(c);
  ASSERT_TRUE(untied.ok() && tied.ok());
  EXPECT_EQ((*tied)->FindParam("language_model.lm_head.weight"), nullptr);
  EXPECT_EQ((*untied)->num_params() - (*tied)->num_params(),
            int64_t{c.llm().vocab_size()} * c.llm().width());
}

TEST(MLLMTest, CreateRejectsBadConfigNamingTheField) {
  struct Case {
    void (*edit)(unified_train::ModelConfig*);
    const char* field;
  };
  const Case cases[] = {
      {[](unified_train::ModelConfig* c) { c->mutable_vision()->set_patch_size(3); },
       "model.vision.image_size"},
      {[](unified_train::ModelConfig* c) { c->mutable_vision()->set_heads(3); },
       "model.vision.width"},
      {[](unified_train::ModelConfig* c) { c->mutable_llm()->set_kv_heads(3); }, "model.llm.heads"},
      {[](unified_train::ModelConfig* c) { c->mutable_llm()->set_vocab_size(0); },
       "model.llm.vocab_size"},
      {[](unified_train::ModelConfig* c) { c->mutable_llm()->set_heads(16); },
       "model.llm.width / model.llm.heads"},
  };
  for (const Case& k : cases) {
    auto c = SmallConfig();
    k.edit(&c);
    auto m = MLLM::Create(c);
    ASSERT_FALSE(m.ok()) << k.field;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(m.status().message()).find(k.field), std::string::npos) << m.status();
  }
}

TEST(MLLMTest, InitFollowsTheDocumentedRecipe) {
  auto c = SmallConfig();
  auto m = MakeModel(c, 77);
  Rng rng(77);
  for (const ParamInfo& p : m->params()) {
    const float* x = m->param_data() + p.offset;
    for (int64_t i = 0; i < p.numel; ++i) {
      float want;
      if (p.decay) {
        want = static_cast<float>(rng.Normal() * static_cast<double>(c.init_std()));
      } else {
        want = p.name.ends_with(".bias") ? 0.0f : 1.0f;
      }
      ASSERT_EQ(x[i], want) << p.name << "[" << i << "]";
    }
  }
  auto other = MakeModel(c, 78);
  EXPECT_NE(other->param_data()[0], m->param_data()[0]);
}

TEST(MLLMTest, GradientsAccumulateAndScale) {
  auto m = MakeModel(SmallConfig());
  const data::Batch b = SmallBatch(*m);
  const int64_t n = m->num_params();
  m->ZeroGrad();
  m->Forward(b);
  m->Backward(1.0f);
  std::vector<float> once(m->grad_data(), m->grad_data() + n);
  m->Forward(b);
  m->Backward(1.0f);
  std::vector<float> twice(m->grad_data(), m->grad_data() + n);
  m->ZeroGrad();
  m->Forward(b);
  m->Backward(0.5f);  // a power of two: scaling is exact in float
  double norm = 0;
  for (int64_t i = 0; i < n; ++i) norm += double{once[i]} * once[i];
  ASSERT_GT(norm, 0);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(twice[i], 2 * once[i], 1e-6 * std::fabs(once[i]) + 1e-9) << i;
    ASSERT_NEAR(m->grad_data()[i], 0.5f * once[i], 1e-6 * std::fabs(once[i]) + 1e-9) << i;
  }
}

TEST(MLLMTest, PaddingDoesNotChangeLossOrGradients) {
  auto m = MakeModel(SmallConfig());
  const data::Batch b = SmallBatch(*m);
  const int64_t n = m->num_params();
  m->ZeroGrad();
  int64_t count = 0;
  const float loss = m->Forward(b, &count);
  m->Backward(1.0f);
  std::vector<float> grads(m->grad_data(), m->grad_data() + n);
  EXPECT_GT(count, 0);
  EXPECT_TRUE(std::isfinite(loss));

  // Same rows padded to T = 17 with different padding ids.
  data::Batch wide = b;
  wide.T = 17;
  wide.tokens.assign(wide.B * wide.T, 7);
  wide.targets.assign(wide.B * wide.T, -1);
  for (int r = 0; r < b.B; ++r) {
    for (int t = 0; t < b.T; ++t) {
      wide.tokens[r * wide.T + t] = t < b.lens[r] ? b.tokens[r * b.T + t] : 5;
      wide.targets[r * wide.T + t] = b.targets[r * b.T + t];
    }
  }
  m->ZeroGrad();
  int64_t wide_count = 0;
  const float wide_loss = m->Forward(wide, &wide_count);
  m->Backward(1.0f);
  EXPECT_EQ(wide_count, count);
  EXPECT_NEAR(wide_loss, loss, 1e-6 * std::fabs(loss));
  // Only summation order may differ (GEMMs over more rows): 1e-5 relative,
  // with 1e-6 of the gradients' RMS as the floor for entries that cancel.
  double sumsq = 0;
  for (float x : grads) sumsq += double{x} * x;
  const double floor = 1e-6 * std::sqrt(sumsq / n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(m->grad_data()[i], grads[i], 1e-5 * std::fabs(grads[i]) + floor) << i;
  }
  // The logits of valid positions agree too.
  const int V = m->config().llm().vocab_size();
  m->Forward(b);
  std::vector<float> logits(m->logits(), m->logits() + b.B * b.T * V);
  m->Forward(wide);
  for (int r = 0; r < b.B; ++r) {
    for (int t = 0; t < b.lens[r]; ++t) {
      for (int v = 0; v < V; ++v) {
        ASSERT_NEAR(m->logits()[(r * wide.T + t) * V + v], logits[(r * b.T + t) * V + v], 1e-5);
      }
    }
  }
}

TEST(MLLMTest, ImageTokensAreReplacedByVisualFeatures) {
  auto m = MakeModel(SmallConfig());
  data::Batch b = SmallBatch(*m);
  const float loss = m->Forward(b);
  // The placeholder id under the image positions does not matter...
  const int image_token = b.tokens[b.image_row[0] * b.T + b.image_start[0]];
  data::Batch other = b;
  for (int i = 0; i < b.num_images; ++i) {
    for (int p = 0; p < m->num_visual_tokens(); ++p) {
      other.tokens[b.image_row[i] * b.T + b.image_start[i] + p] = 9;
    }
  }
  EXPECT_EQ(m->Forward(other), loss);
  // ...and its embedding row gets no gradient, while the pixels do matter.
  m->ZeroGrad();
  m->Forward(b);
  m->Backward(1.0f);
  const ParamInfo* emb = m->FindParam("language_model.model.embed_tokens.weight");
  const int C = m->config().llm().width();
  for (int c = 0; c < C; ++c) {
    EXPECT_EQ(m->grad_data()[emb->offset + int64_t{image_token} * C + c], 0.0f);
  }
  other = b;
  for (float& x : other.images) x = 1.0f - x;
  EXPECT_GT(std::fabs(m->Forward(other) - loss), 1e-6);
}

// With loss_scale 0 only the hook's gradient flows: d/dp <u, final_hidden(p)>.
TEST(MLLMTest, FinalHiddenGradHookAddsItsGradient) {
  auto m = MakeModel(SmallConfig());
  const data::Batch b = SmallBatch(*m);
  const int64_t NC = int64_t{b.B} * b.T * m->config().llm().width();
  Rng rng(3);
  std::vector<float> u(NC);
  for (float& x : u) x = static_cast<float>(rng.Normal());
  auto objective = [&]() {
    m->Forward(b);
    double s = 0;
    for (int64_t i = 0; i < NC; ++i) s += double{u[i]} * m->final_hidden()[i];
    return s;
  };
  EXPECT_EQ(m->mutable_final_hidden_grad(), nullptr);  // no Forward yet
  m->ZeroGrad();
  m->Forward(b);
  float* hook = m->mutable_final_hidden_grad();
  ASSERT_NE(hook, nullptr);
  std::copy(u.begin(), u.end(), hook);
  m->Backward(0.0f);
  // Check a few parameters of different kinds against central differences.
  for (const char* name :
       {"language_model.model.layers.1.mlp.down_proj.weight",
        "language_model.model.layers.0.self_attn.q_proj.weight", "language_model.model.norm.weight",
        "multi_modal_projector.linear_1.weight"}) {
    const ParamInfo* p = m->FindParam(name);
    ASSERT_NE(p, nullptr) << name;
    for (int64_t i : {int64_t{0}, p->numel / 2}) {
      float* x = m->param_data() + p->offset + i;
      const float saved = *x, h = 1e-2f;
      *x = saved + h;
      const double up = objective();
      *x = saved - h;
      const double down = objective();
      *x = saved;
      const double fd = (up - down) / (2.0 * h);
      const double an = m->grad_data()[p->offset + i];
      EXPECT_NEAR(an, fd, 2e-2 * std::fabs(fd) + 2e-3) << name << "[" << i << "]";
    }
  }
  // The hook is cleared by Backward: the next Backward has no hook gradient.
  m->ZeroGrad();
  m->Forward(b);
  m->Backward(0.0f);
  for (int64_t i = 0; i < m->num_params(); ++i) ASSERT_EQ(m->grad_data()[i], 0.0f) << i;
}

TEST(MLLMTest, ActivationsAreReusedForRepeatedShapes) {
  auto m = MakeModel(SmallConfig());
  const data::Batch b = SmallBatch(*m);
  const float first = m->Forward(b);
  const float* logits = m->logits();
  EXPECT_EQ(m->Forward(b), first);  // deterministic
  EXPECT_EQ(m->logits(), logits);   // same storage, nothing reallocated
}

TEST(MLLMTest, GenerateIsGreedyOverTheForward) {
  auto m = MakeModel(SmallConfig());
  const int V = m->config().llm().vocab_size();
  data::Batch prompt =
      MakeBatch(11, 8, {8}, {{0, 1}}, m->num_visual_tokens(), m->config().vision().image_size(), V);
  std::vector<int32_t> out = m->Generate(prompt, 4, /*eos_id=*/-1);
  ASSERT_EQ(out.size(), 4u);
  // Each generated token is the argmax of a full Forward over prompt + prefix.
  data::Batch seq = prompt;
  for (int32_t tok : out) {
    m->Forward(seq);
    const float* last = m->logits() + int64_t{seq.T - 1} * V;
    EXPECT_EQ(tok, std::max_element(last, last + V) - last);
    seq.tokens.push_back(tok);
    seq.targets.push_back(-1);
    seq.T += 1;
    seq.lens[0] += 1;
  }
  // Stops at eos (inclusive).
  std::vector<int32_t> stopped = m->Generate(prompt, 4, /*eos_id=*/out[0]);
  EXPECT_EQ(stopped, std::vector<int32_t>{out[0]});
}

}  // namespace
}  // namespace ut
