// The tiny MLLM against an independent PyTorch float64 implementation
// (tests/golden/make_golden.py -> tiny_golden.safetensors): same initial
// parameters (rebuilt from the seed on both sides), same batch; loss, logits,
// every parameter gradient and 10 AdamW steps must agree.
//
// Agreement: |got - want| <= 1e-4 * max(|want|, scale), scale = the RMS of the
// reference tensor (so entries near zero are judged against the tensor's own
// size, not against themselves). One documented exception: the attention key
// bias, whose exact gradient is 0 (softmax is invariant to adding q.b_k to a
// whole row of scores), so both sides hold only rounding noise; its scale is
// the RMS of the same layer's k_proj.weight gradient, the size of the terms
// that cancel.
//
// The fixture predates the retrieval projector (the last parameters, only used
// by the discriminative loss): parameters named "retrieval_projector.*" that
// the fixture lacks are skipped, and only those; their gradient under L_g alone
// must be exactly 0. Every other parameter keeps its init (they come first).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/model/mllm.h"
#include "core/tensor/safetensors.h"
#include "gtest/gtest.h"
#include "ops/optim.h"

namespace ut {
namespace {

constexpr char kFixture[] = "tests/golden/tiny_golden.safetensors";
constexpr double kRel = 1e-4;
constexpr char kRegenerate[] =
    " (if the model or tiny config changed on purpose, regenerate the fixture with "
    "`python3 tests/golden/make_golden.py`)";

struct Golden {
  SafetensorsFile file;
  Config config;
  data::Batch batch;
  std::unique_ptr<MLLM> model;
  uint64_t seed = 0;

  const Tensor& Get(const std::string& name) const {
    auto it = file.tensors.find(name);
    CHECK(it != file.tensors.end()) << kFixture << " has no tensor " << name << kRegenerate;
    return it->second;
  }
  bool Has(const std::string& name) const { return file.tensors.count(name) > 0; }
  // Added after the fixture was made (see the top of this file).
  bool NotInFixture(const ParamInfo& p) const {
    return p.name.starts_with("retrieval_projector.") && !Has("init_head/" + p.name);
  }
};

Golden* g = nullptr;

template <typename T>
std::vector<T> ToVector(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

double Rms(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double{x[i]} * x[i];
  return n > 0 ? std::sqrt(s / n) : 0.0;
}

// Largest |got-want| / (kRel * max(|want|, scale)) over n entries (<= 1 passes),
// with the index where it happens.
struct Worst {
  double ratio = 0;
  int64_t index = -1;
  double got = 0, want = 0;
};
Worst Compare(const float* got, const float* want, int64_t n, double scale) {
  Worst w;
  for (int64_t i = 0; i < n; ++i) {
    const double tol = kRel * std::max(std::fabs(double{want[i]}), scale);
    const double r = std::fabs(double{got[i]} - want[i]) / tol;
    if (!(r <= w.ratio)) w = {r, i, got[i], want[i]};  // NaN always lands here
  }
  return w;
}

class GoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g = new Golden;
    auto file = ReadSafetensors(kFixture);
    ASSERT_TRUE(file.ok()) << file.status();
    g->file = std::move(*file);
    auto config = ParseConfigText(g->file.metadata["config"], std::string(kFixture) + ":config");
    ASSERT_TRUE(config.ok()) << config.status();
    g->config = *config;
    g->seed = std::stoull(g->file.metadata["seed"]);
    auto model = MLLM::Create(g->config.model());
    ASSERT_TRUE(model.ok()) << model.status();
    g->model = std::move(*model);
    g->model->InitParams(g->seed);

    data::Batch& b = g->batch;
    const Tensor& tokens = g->Get("batch.tokens");
    b.B = static_cast<int>(tokens.dim(0));
    b.T = static_cast<int>(tokens.dim(1));
    b.tokens = ToVector<int32_t>(tokens);
    b.targets = ToVector<int32_t>(g->Get("batch.targets"));
    b.lens = ToVector<int32_t>(g->Get("batch.lens"));
    const Tensor& images = g->Get("batch.images");
    b.num_images = static_cast<int>(images.dim(0));
    b.image_size = static_cast<int>(images.dim(2));
    b.images = ToVector<float>(images);
    b.image_row = ToVector<int32_t>(g->Get("batch.image_row"));
    b.image_start = ToVector<int32_t>(g->Get("batch.image_start"));
  }
  static void TearDownTestSuite() {
    delete g;
    g = nullptr;
  }
};

TEST_F(GoldenTest, InitialParametersMatchBitForBit) {
  for (const ParamInfo& p : g->model->params()) {
    if (g->NotInFixture(p)) continue;
    const Tensor& head = g->Get("init_head/" + p.name);
    const int64_t n = std::min<int64_t>(head.numel(), p.numel);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(g->model->param_data()[p.offset + i], head.data<float>()[i])
          << p.name << "[" << i << "]: the init recipe (MLLM::InitParams) and the Python Rng "
          << "disagree" << kRegenerate;
    }
  }
}

TEST_F(GoldenTest, LossLogitsAndEveryGradient) {
  MLLM& m = *g->model;
  const data::Batch& b = g->batch;
  m.ZeroGrad();
  int64_t count = 0;
  const float loss = m.Forward(b, &count);
  const float want_loss = g->Get("loss").data<float>()[0];
  EXPECT_NEAR(loss, want_loss, kRel * std::fabs(want_loss)) << "loss (" << count << " targets)";

  // Logits at valid positions (padding rows are meaningless on both sides).
  const int V = m.config().llm().vocab_size();
  const Tensor& want_logits = g->Get("logits");
  ASSERT_EQ(want_logits.numel(), int64_t{b.B} * b.T * V);
  std::vector<float> got_valid, want_valid;
  for (int r = 0; r < b.B; ++r) {
    const int64_t begin = int64_t{r} * b.T * V, end = begin + int64_t{b.lens[r]} * V;
    got_valid.insert(got_valid.end(), m.logits() + begin, m.logits() + end);
    want_valid.insert(want_valid.end(), want_logits.data<float>() + begin,
                      want_logits.data<float>() + end);
  }
  const Worst wl = Compare(got_valid.data(), want_valid.data(), want_valid.size(),
                           Rms(want_valid.data(), want_valid.size()));
  EXPECT_LE(wl.ratio, 1.0) << "logits: worst flat index " << wl.index << " got " << wl.got
                           << " want " << wl.want;

  m.Backward(1.0f);
  int full = 0, sampled = 0;
  Worst worst_all;
  std::string worst_name;
  for (const ParamInfo& p : m.params()) {
    SCOPED_TRACE(p.name);
    const float* grad = m.grad_data() + p.offset;
    if (g->NotInFixture(p)) {
      for (int64_t i = 0; i < p.numel; ++i) ASSERT_EQ(grad[i], 0.0f) << "L_g reaches " << i;
      continue;
    }
    // Scale: the reference tensor's RMS, from its stored sum of squares.
    const float* stats = g->Get("grad_stats/" + p.name).data<float>();
    double scale = std::sqrt(stats[1] / p.numel);
    if (p.name.ends_with("self_attn.k_proj.bias")) {
      const std::string w = p.name.substr(0, p.name.size() - 4) + "weight";
      const float* wstats = g->Get("grad_stats/" + w).data<float>();
      scale = std::sqrt(wstats[1] / m.FindParam(w)->numel);
    }
    Worst w;
    if (g->Has("grad/" + p.name)) {
      const Tensor& want = g->Get("grad/" + p.name);
      ASSERT_EQ(want.shape(), p.shape) << kRegenerate;
      w = Compare(grad, want.data<float>(), p.numel, scale);
      ++full;
    } else {
      const Tensor& index = g->Get("grad_index/" + p.name);
      const Tensor& want = g->Get("grad_sample/" + p.name);
      std::vector<float> got(index.numel());
      for (int64_t i = 0; i < index.numel(); ++i) {
        const int32_t k = index.data<int32_t>()[i];
        ASSERT_TRUE(k >= 0 && k < p.numel) << kRegenerate;
        got[i] = grad[k];
      }
      w = Compare(got.data(), want.data<float>(), index.numel(), scale);
      if (w.index >= 0) w.index = index.data<int32_t>()[w.index];
      ++sampled;
    }
    EXPECT_LE(w.ratio, 1.0) << "worst entry " << w.index << " got " << w.got << " want " << w.want
                            << " (scale " << scale << ")";
    if (!(w.ratio <= worst_all.ratio)) {
      worst_all = w;
      worst_name = p.name;
    }
    // Whole-tensor sum and sum of squares.
    double sum = 0, sumsq = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      sum += grad[i];
      sumsq += double{grad[i]} * grad[i];
    }
    const double norm = std::sqrt(stats[1]);
    EXPECT_NEAR(
        sum, stats[0],
        kRel * std::max<double>(std::fabs(stats[0]), std::max(norm, scale * std::sqrt(p.numel))))
        << "gradient sum";
    EXPECT_NEAR(sumsq, stats[1], kRel * std::max<double>(stats[1], scale * scale * p.numel))
        << "gradient sum of squares";
  }
  EXPECT_GT(full, 0);
  EXPECT_GT(sampled, 0);
  // One line for the log: how much of the tolerance the worst entries use.
  std::printf("golden: loss %.7f vs %.7f; logits use %.3f of the tolerance; gradients %.3f (%s)\n",
              loss, want_loss, wl.ratio, worst_all.ratio, worst_name.c_str());
}

TEST_F(GoldenTest, TenAdamWStepsFollowTorch) {
  MLLM& m = *g->model;
  m.InitParams(g->seed);
  const auto& o = g->config.optim();
  const int64_t n = m.num_params();
  std::vector<float> m1(n, 0.0f), m2(n, 0.0f);
  const Tensor& want = g->Get("adamw_losses");
  for (int64_t step = 1; step <= want.numel(); ++step) {
    m.ZeroGrad();
    const float loss = m.Forward(g->batch);
    const float w = want.data<float>()[step - 1];
    EXPECT_NEAR(loss, w, kRel * std::fabs(w)) << "loss before AdamW step " << step;
    m.Backward(1.0f);
    const double norm = std::sqrt(cpu::sum_squares(m.grad_data(), n));
    const float clip = cpu::clip_scale(norm, o.grad_clip());
    for (const ParamInfo& p : m.params()) {
      const cpu::AdamWParams hp{
          o.lr(), o.beta1(), o.beta2(), o.eps(), p.decay ? o.weight_decay() : 0.0f, step};
      cpu::adamw_update(m.param_data() + p.offset, m.grad_data() + p.offset, m1.data() + p.offset,
                        m2.data() + p.offset, p.numel, hp, clip);
    }
  }
  const float final_loss = m.Forward(g->batch);
  const float w = g->Get("adamw_final_loss").data<float>()[0];
  EXPECT_NEAR(final_loss, w, kRel * std::fabs(w)) << "loss after the last AdamW step";
  EXPECT_LT(final_loss, want.data<float>()[0]) << "training on one batch lowers its loss";
}

}  // namespace
}  // namespace ut
