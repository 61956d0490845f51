// Tensor parallelism under mpirun (tp_test.sh, 2 ranks): the vocab-parallel
// cross-entropy against the single-rank one, and a TP = 2 model (vision tower,
// projector, decoder, LM head; images in the batch; a final-hidden hook and
// the retrieval head) against the whole model in every rank: loss, retrieval
// embeddings and every parameter gradient slice by slice. Also TP combined with
// pipeline chunks and two micro-batches in flight.
#include <cmath>
#include <memory>
#include <vector>

#include "core/base/rng.h"
#include "core/model/layout.h"
#include "core/model/mllm.h"
#include "core/model/shard_test_util.h"
#include "core/model/test_util.h"
#include "core/model/tp.h"
#include "gtest/gtest.h"
#include "ops/cross_entropy.h"
#include "parallel/comm/mpi_test_main.h"

namespace ut {
namespace {

using model::testing::ChainBackward;
using model::testing::ChainForward;
using model::testing::CopyParamsFrom;
using model::testing::ExpectGradsMatch;
using model::testing::MakeBatch;
using model::testing::Piece;
using model::testing::SmallConfig;
using comm::testing::World;

TEST(TpTest, VocabParallelCrossEntropyMatchesSingleRank) {
  const int T = World().size(), r = World().rank();
  const int N = 9, V = 8 * T, Vl = V / T;
  Rng rng(4);  // same values on every rank
  std::vector<float> logits(N * V);
  for (float& x : logits) x = static_cast<float>(rng.Normal() * 3);
  std::vector<int32_t> targets(N);
  for (int n = 0; n < N; ++n) targets[n] = n % 4 == 3 ? -1 : static_cast<int>(rng.Below(V));
  const float scale = 0.25f;
  std::vector<float> want(N * V);
  int64_t want_count = 0;
  const double want_sum = cpu::softmax_cross_entropy(want.data(), logits.data(), targets.data(),
                                                     N, V, -1, scale, &want_count);
  // This rank's vocab columns [r*Vl, (r+1)*Vl).
  std::vector<float> local(N * Vl), dlocal(N * Vl, -1.0f);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < Vl; ++c) local[n * Vl + c] = logits[n * V + r * Vl + c];
  }
  const model::Tp tp{&World(), r, T};
  int64_t count = 0;
  const double sum = model::VocabParallelCrossEntropy(tp, dlocal.data(), local.data(),
                                                      targets.data(), N, Vl, r * Vl, scale, &count);
  EXPECT_EQ(count, want_count);
  EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum);
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < Vl; ++c) {
      const float w = want[n * V + r * Vl + c];
      EXPECT_NEAR(dlocal[n * Vl + c], w, 1e-5 * std::fabs(w) + 1e-8) << n << "," << c;
    }
  }
}

class TpModelTest : public ::testing::Test {
 protected:
  // The small test model with a milder init than its 0.2 (which is for finite
  // differences): at 0.2 float rounding alone reaches ~1e-5 of a tensor's
  // largest gradient, at 0.05 ~1e-6.
  static unified_train::ModelConfig Config() {
    auto c = SmallConfig();
    c.set_init_std(0.05f);
    return c;
  }
  std::unique_ptr<MLLM> Whole(const unified_train::ModelConfig& c) {
    auto m = MLLM::Create(c);
    EXPECT_TRUE(m.ok()) << m.status();
    (*m)->InitParams(3);
    (*m)->ZeroGrad();
    return std::move(*m);
  }
  std::unique_ptr<MLLM> Shard(const unified_train::ModelConfig& c,
                              const std::vector<ModelShard::Chunk>& chunks) {
    ModelShard s;
    s.tp_rank = World().rank();
    s.tp_size = World().size();
    s.chunks = chunks;
    auto m = MLLM::Create(c, s, &World());
    EXPECT_TRUE(m.ok()) << m.status();
    (*m)->InitParams(3);
    (*m)->ZeroGrad();
    return std::move(*m);
  }
  static data::Batch Batch(const MLLM& m, uint64_t seed, int T, const std::vector<int>& lens,
                           const std::vector<model::testing::ImagePlacement>& images) {
    return MakeBatch(seed, T, lens, images, m.num_visual_tokens(),
                     m.config().vision().image_size(), m.config().llm().vocab_size());
  }
  static std::vector<float> Hook(const data::Batch& b, int C, uint64_t seed) {
    Rng rng(seed);
    std::vector<float> h(int64_t{b.B} * b.T * C);
    for (float& x : h) x = static_cast<float>(rng.Normal() * 0.1);
    return h;
  }
};

TEST_F(TpModelTest, ForwardBackwardMatchesTheWholeModel) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied embeddings" : "untied");
    auto c = Config();
    c.mutable_llm()->set_tie_embeddings(tied);
    auto full = Whole(c);
    auto tp = Shard(c, {ModelShard::Chunk{}});
    // InitParams on a shard is the slice of the whole model's init.
    for (const ParamInfo& p : tp->params()) {
      std::vector<float> want(p.numel);
      model::ExtractSlice(p, full->param_data() + full->FindParam(p.name)->offset, want.data());
      for (int64_t i = 0; i < p.numel; ++i) {
        ASSERT_EQ(tp->param_data()[p.offset + i], want[i]) << p.name << "[" << i << "]";
      }
    }
    const data::Batch b = Batch(*full, 5, 12, {12, 9}, {{0, 1}, {1, 3}});
    const std::vector<float> hook = Hook(b, c.llm().width(), 7);
    const std::vector<data::SliceSpan> slices = {{0, 0, 1, false}, {0, 1, 5, true},
                                                 {1, 3, 7, true}, {1, 7, 9, false}};
    const int R = full->retrieval_dim();
    std::vector<float> dr(slices.size() * R);
    Rng rng(11);
    for (float& x : dr) x = static_cast<float>(rng.Normal());

    std::vector<float> r_full(dr.size()), r_tp(dr.size());
    int64_t count_full = 0, count_tp = 0;
    const float loss_full = full->Forward(b, &count_full);
    std::copy(hook.begin(), hook.end(), full->mutable_final_hidden_grad());
    full->RetrievalForward(slices, r_full.data());
    full->RetrievalBackward(dr.data());
    full->Backward(0.5f);
    const float loss_tp = tp->Forward(b, &count_tp);
    std::copy(hook.begin(), hook.end(), tp->mutable_final_hidden_grad());
    tp->RetrievalForward(slices, r_tp.data());
    tp->RetrievalBackward(dr.data());
    tp->Backward(0.5f);

    EXPECT_EQ(count_tp, count_full);
    EXPECT_NEAR(loss_tp, loss_full, 1e-5 * loss_full);
    for (size_t i = 0; i < r_full.size(); ++i) {
      EXPECT_NEAR(r_tp[i], r_full[i], 1e-5 * std::fabs(r_full[i]) + 1e-6) << i;
    }
    ExpectGradsMatch(*full, *tp, 1e-5, "TP=2 whole model");

    // Evaluation embeddings (no backward) agree too.
    data::Batch eb = b;
    eb.slices = slices;
    std::vector<float> e_full, e_tp;
    full->EmbedSlices(eb, &e_full);
    tp->EmbedSlices(eb, &e_tp);
    ASSERT_EQ(e_tp.size(), e_full.size());
    for (size_t i = 0; i < e_full.size(); ++i) {
      EXPECT_NEAR(e_tp[i], e_full[i], 1e-5 * std::fabs(e_full[i]) + 1e-6) << i;
    }
  }
}

// TP = 2 and the decoder cut into two chunks (two MLLM objects per rank),
// two micro-batches in flight.
TEST_F(TpModelTest, TensorParallelChunksMatchTheWholeModel) {
  auto c = Config();
  c.mutable_llm()->set_layers(3);
  auto full = Whole(c);
  auto a = Shard(c, {{0, 1, true, false}});
  auto z = Shard(c, {{1, 3, false, true}});
  for (MLLM* m : {a.get(), z.get()}) {
    CopyParamsFrom(*full, m);
    m->SetNumSlots(2);
  }
  const data::Batch mb[2] = {Batch(*full, 5, 12, {12, 9}, {{0, 1}, {1, 3}}),
                             Batch(*full, 6, 10, {10, 8, 6}, {{1, 2}})};
  float loss[2];
  std::vector<float> hook[2];
  for (int j = 0; j < 2; ++j) {
    hook[j] = Hook(mb[j], c.llm().width(), 20 + j);
    loss[j] = full->Forward(mb[j]);
    std::copy(hook[j].begin(), hook[j].end(), full->mutable_final_hidden_grad());
    full->Backward(0.5f);
  }
  const std::vector<Piece> chain = {{a.get(), 0}, {z.get(), 0}};
  EXPECT_NEAR(ChainForward(chain, 0, mb[0], hook[0]), loss[0], 1e-5 * loss[0]);
  EXPECT_NEAR(ChainForward(chain, 1, mb[1], hook[1]), loss[1], 1e-5 * loss[1]);
  ChainBackward(chain, 0, 0.5f);
  ChainBackward(chain, 1, 0.5f);
  ExpectGradsMatch(*full, *a, 1e-5, "TP=2 chunk 0");
  ExpectGradsMatch(*full, *z, 1e-5, "TP=2 chunk 1");
}

}  // namespace
}  // namespace ut
