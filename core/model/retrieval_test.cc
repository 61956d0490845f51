// The retrieval head through MLLM: EmbedSlices against an independent double
// computation from final_hidden() (text: last token, image: mean of its visual
// tokens, 2-layer GELU-tanh MLP, L2 norm), the training-time path against
// EmbedSlices, and a central-difference check of RetrievalBackward through the
// whole small model with a probe loss L = sum(w * r) (not scale-invariant, so
// the normalisation's backward is exercised too).
#include <cmath>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "core/model/mllm.h"
#include "core/model/test_util.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace ut {
namespace {

using model::testing::MakeBatch;
using model::testing::SmallConfig;

// SmallConfig has 4 visual tokens per image.
//   row 0: bos | image [1,5) | text [5,8) | text [8,12)
//   row 1: text [0,3) | image [3,7) | text [7,9) | pad
data::Batch SlicedBatch(const unified_train::ModelConfig& c) {
  data::Batch b = MakeBatch(9, 12, {12, 9}, {{0, 1}, {1, 3}}, 4, c.vision().image_size(),
                            c.llm().vocab_size());
  b.sample_ids = {"a", "b"};
  auto add = [&](int row, int start, int end, bool image) {
    data::SliceSpan s;
    s.row = row;
    s.start = start;
    s.end = end;
    s.is_image = image;
    s.sample = row;
    b.slices.push_back(s);
  };
  add(0, 1, 5, true);
  add(0, 5, 8, false);
  add(0, 8, 12, false);
  add(1, 0, 3, false);
  add(1, 3, 7, true);
  add(1, 7, 9, false);
  return b;
}

std::unique_ptr<MLLM> SmallModel(int R) {
  auto c = SmallConfig();
  c.set_retrieval_dim(R);
  auto m = MLLM::Create(c);
  CHECK(m.ok()) << m.status();
  (*m)->InitParams(31);
  return std::move(*m);
}

double GeluTanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

TEST(Retrieval, EmbedSlicesMatchesAnIndependentComputation) {
  const int R = 6;
  auto m = SmallModel(R);
  const data::Batch b = SlicedBatch(m->config());
  std::vector<float> r;
  m->EmbedSlices(b, &r);
  ASSERT_EQ(r.size(), b.slices.size() * R);
  EXPECT_EQ(m->retrieval_dim(), R);

  m->Forward(b);  // final_hidden() of the same batch
  const int C = m->config().llm().width(), T = b.T;
  const float* fin = m->final_hidden();
  auto param = [&](const std::string& name) {
    const ParamInfo* p = m->FindParam(name);
    CHECK(p != nullptr) << name;
    return m->param_data() + p->offset;
  };
  const float* w1 = param("retrieval_projector.linear_1.weight");
  const float* b1 = param("retrieval_projector.linear_1.bias");
  const float* w2 = param("retrieval_projector.linear_2.weight");
  const float* b2 = param("retrieval_projector.linear_2.bias");
  for (size_t s = 0; s < b.slices.size(); ++s) {
    SCOPED_TRACE(s);
    const data::SliceSpan& sp = b.slices[s];
    std::vector<double> e(C, 0.0);
    const int first = sp.is_image ? sp.start : sp.end - 1;
    for (int t = first; t < sp.end; ++t) {
      for (int c = 0; c < C; ++c) e[c] += fin[(sp.row * T + t) * C + c] / double(sp.end - first);
    }
    std::vector<double> g(R), z(R);
    for (int o = 0; o < R; ++o) {
      double h = b1[o];
      for (int c = 0; c < C; ++c) h += double{w1[o * C + c]} * e[c];
      g[o] = GeluTanh(h);
    }
    double n2 = 0;
    for (int o = 0; o < R; ++o) {
      z[o] = b2[o];
      for (int c = 0; c < R; ++c) z[o] += double{w2[o * R + c]} * g[c];
      n2 += z[o] * z[o];
    }
    double got2 = 0;
    for (int o = 0; o < R; ++o) {
      EXPECT_NEAR(r[s * R + o], z[o] / std::sqrt(n2), 1e-5) << o;
      got2 += double{r[s * R + o]} * r[s * R + o];
    }
    EXPECT_NEAR(got2, 1.0, 1e-5);  // L2-normalised
  }
  // The training-time path gives the same r for the same batch.
  std::vector<float> r2(r.size());
  m->RetrievalForward(b.slices, r2.data());
  EXPECT_EQ(r, r2);
}

TEST(Retrieval, ATextSliceSeesOnlyTokensUpToItsEnd) {
  auto m = SmallModel(4);
  data::Batch b = SlicedBatch(m->config());
  std::vector<float> before, after;
  m->EmbedSlices(b, &before);
  b.tokens[0 * b.T + 9] = (b.tokens[0 * b.T + 9] + 1) % 30 + 2;  // inside slice 2 only
  m->EmbedSlices(b, &after);
  for (int s = 0; s < 6; ++s) {
    bool same = true;
    for (int o = 0; o < 4; ++o) same &= before[s * 4 + o] == after[s * 4 + o];
    EXPECT_EQ(same, s != 2) << "slice " << s;  // causal: earlier slices and row 1 unchanged
  }
}

TEST(Retrieval, BackwardMatchesCentralDifferencesThroughTheModel) {
  const int R = 5;
  auto m = SmallModel(R);
  const data::Batch b = SlicedBatch(m->config());
  const int S = static_cast<int>(b.slices.size());
  Rng rng(8);
  std::vector<float> w(S * R);
  for (auto& x : w) x = static_cast<float>(rng.Normal());
  std::vector<float> r(S * R);
  auto probe = [&] {
    m->Forward(b);
    m->RetrievalForward(b.slices, r.data());
    double l = 0;
    for (int i = 0; i < S * R; ++i) l += double{w[i]} * r[i];
    return l;
  };
  m->ZeroGrad();
  probe();
  m->RetrievalBackward(w.data());
  m->Backward(0.0f);  // the LM loss contributes nothing
  const std::vector<float> grad(m->grad_data(), m->grad_data() + m->num_params());
  float* params = m->param_data();
  int checked = 0;
  for (const ParamInfo& p : m->params()) {
    // Every kind of layer: vision, projector, decoder, final norm, retrieval.
    if (!(p.name.find("patch_embedding.weight") != std::string::npos ||
          p.name.find("encoder.layers.0.mlp.fc1.weight") != std::string::npos ||
          p.name.find("multi_modal_projector.linear_2.weight") != std::string::npos ||
          p.name.find("layers.1.self_attn.v_proj") != std::string::npos ||
          p.name.find("layers.0.mlp.down_proj") != std::string::npos ||
          p.name == "language_model.model.norm.weight" ||
          p.name.starts_with("retrieval_projector."))) {
      continue;
    }
    SCOPED_TRACE(p.name);
    int64_t largest = 0;
    for (int64_t i = 1; i < p.numel; ++i) {
      if (std::fabs(grad[p.offset + i]) > std::fabs(grad[p.offset + largest])) largest = i;
    }
    for (int64_t i : {largest, static_cast<int64_t>(rng.Below(p.numel))}) {
      float* x = params + p.offset + i;
      const float saved = *x;
      auto at = [&](float h) {
        *x = saved + h;
        const double l = probe();
        *x = saved;
        return l;
      };
      const float h = 1e-2f;
      const double d1 = (at(h) - at(-h)) / (2 * h), d2 = (at(h / 2) - at(-h / 2)) / h;
      const double numeric = (4 * d2 - d1) / 3;
      const double an = grad[p.offset + i];
      EXPECT_NEAR(an, numeric, 3e-3 * std::fabs(numeric) + 3e-5) << "entry " << i;
      if (i == largest) {
        EXPECT_GT(std::fabs(an), 1e-3);
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 10);
}

}  // namespace
}  // namespace ut
