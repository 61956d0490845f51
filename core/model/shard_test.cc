// Model shards in one process: the layer partition (balance, edge cases,
// errors), ShardFor's interleaving, the TP parameter layout and its init
// slices, and pipeline chunks chained by hand (several MLLM objects, two
// micro-batches in flight) against the whole model, plus the grad-ready
// callback's coverage.
#include "core/model/shard.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/base/logging.h"
#include "core/base/rng.h"
#include "core/model/layout.h"
#include "core/model/mllm.h"
#include "core/model/shard_test_util.h"
#include "core/model/test_util.h"
#include "gtest/gtest.h"
#include "parallel/comm/communicator.h"

namespace ut {
namespace {

using model::testing::ChainBackward;
using model::testing::ChainForward;
using model::testing::CopyParamsFrom;
using model::testing::ExpectGradsMatch;
using model::testing::MakeBatch;
using model::testing::Piece;
using model::testing::SmallConfig;

model::Dims DimsOf(const unified_train::ModelConfig& c) {
  auto d = model::MakeDims(c);
  CHECK(d.ok()) << d.status();
  return *d;
}

// Chunk costs of a partition, by the same estimate.
std::vector<double> ChunkCosts(const model::Dims& d, const std::vector<ModelShard::Chunk>& cs) {
  const LayerCosts lc = EstimateCosts(d);
  std::vector<double> out;
  for (const auto& c : cs) {
    double s = (c.end - c.begin) * lc.layer;
    if (c.pre) s += lc.pre;
    if (c.post) s += lc.post;
    out.push_back(s);
  }
  return out;
}

// All ways to cut L layers into K non-empty contiguous chunks.
void Compositions(int L, int K, std::vector<int>* cur, std::vector<std::vector<int>>* out) {
  if (K == 1) {
    cur->push_back(L);
    out->push_back(*cur);
    cur->pop_back();
    return;
  }
  for (int n = 1; n <= L - K + 1; ++n) {
    cur->push_back(n);
    Compositions(L - n, K - 1, cur, out);
    cur->pop_back();
  }
}

TEST(PartitionLayersTest, ChunksAreContiguousAndOptimal) {
  for (int vocab : {32, 4096}) {
    for (int L : {4, 7, 9}) {
      for (int K : {1, 2, 3, 4}) {
        auto c = SmallConfig();
        c.mutable_llm()->set_layers(L);
        c.mutable_llm()->set_vocab_size(vocab);
        const model::Dims d = DimsOf(c);
        auto chunks = PartitionLayers(d, K, 1);
        ASSERT_TRUE(chunks.ok()) << chunks.status();
        ASSERT_EQ(static_cast<int>(chunks->size()), K);
        int at = 0;
        for (int k = 0; k < K; ++k) {
          const auto& ch = (*chunks)[k];
          EXPECT_EQ(ch.begin, at);
          EXPECT_GT(ch.end, ch.begin);
          EXPECT_EQ(ch.pre, k == 0);
          EXPECT_EQ(ch.post, k == K - 1);
          at = ch.end;
        }
        EXPECT_EQ(at, L);
        // Brute force: no split has a smaller maximum chunk cost.
        const std::vector<double> got = ChunkCosts(d, *chunks);
        const double got_max = *std::max_element(got.begin(), got.end());
        std::vector<int> cur;
        std::vector<std::vector<int>> all;
        Compositions(L, K, &cur, &all);
        double best = 1e300;
        for (const auto& sizes : all) {
          std::vector<ModelShard::Chunk> cs;
          int b = 0;
          for (size_t k = 0; k < sizes.size(); ++k) {
            cs.push_back({b, b + sizes[k], b == 0, b + sizes[k] == L});
            b += sizes[k];
          }
          const auto costs = ChunkCosts(d, cs);
          best = std::min(best, *std::max_element(costs.begin(), costs.end()));
        }
        EXPECT_LE(got_max, best * (1 + 1e-9)) << "vocab " << vocab << " L " << L << " K " << K;
      }
    }
  }
}

TEST(PartitionLayersTest, HeavyHeadGetsFewerLayers) {
  auto c = SmallConfig();
  c.mutable_llm()->set_layers(8);
  c.mutable_llm()->set_vocab_size(1 << 14);  // LM head ~ several layers
  auto chunks = PartitionLayers(c, 2, 1);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  const auto& last = (*chunks)[1];
  EXPECT_LT(last.end - last.begin, 4);
  // Equal layers, negligible ends: an even split.
  auto e = SmallConfig();
  e.mutable_llm()->set_layers(8);
  e.mutable_llm()->set_vocab_size(4);
  e.mutable_vision()->set_layers(1);
  auto even = PartitionLayers(e, 4, 1);
  ASSERT_TRUE(even.ok());
  for (const auto& ch : *even) EXPECT_EQ(ch.end - ch.begin, 2);
}

TEST(PartitionLayersTest, ErrorsNameTheFields) {
  auto c = SmallConfig();  // 2 layers
  auto too_many = PartitionLayers(c, 2, 2);
  ASSERT_FALSE(too_many.ok());
  const std::string msg(too_many.status().message());
  EXPECT_NE(msg.find("parallel.pp (2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("parallel.virtual_stages (2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.llm.layers is 2"), std::string::npos) << msg;
  EXPECT_TRUE(PartitionLayers(c, 2, 1).ok());
  EXPECT_TRUE(PartitionLayers(c, 1, 2).ok());
  EXPECT_FALSE(PartitionLayers(c, 0, 1).ok());
  c.mutable_llm()->set_tie_embeddings(true);
  auto tied = PartitionLayers(c, 2, 1);
  ASSERT_FALSE(tied.ok());
  EXPECT_NE(std::string(tied.status().message()).find("tie_embeddings"), std::string::npos);
  EXPECT_TRUE(PartitionLayers(c, 1, 2).ok());  // one stage holds both ends
}

TEST(PartitionLayersTest, ShardForInterleavesChunksOverStages) {
  std::vector<ModelShard::Chunk> chunks;
  for (int k = 0; k < 6; ++k) chunks.push_back({k, k + 1, k == 0, k == 5});
  const ModelShard s1 = ShardFor(chunks, 1, 3, 1, 2);
  EXPECT_EQ(s1.tp_rank, 1);
  EXPECT_EQ(s1.tp_size, 2);
  ASSERT_EQ(s1.chunks.size(), 2u);
  EXPECT_EQ(s1.chunks[0].begin, 1);
  EXPECT_EQ(s1.chunks[1].begin, 4);
  const ModelShard s0 = ShardFor(chunks, 0, 3, 0, 1);
  EXPECT_TRUE(s0.chunks[0].pre);
  EXPECT_EQ(s0.chunks[1].begin, 3);
}

TEST(ShardTest, CreateRejectsBadShards) {
  auto c = SmallConfig();
  ModelShard gap;
  gap.chunks = {{0, 1, true, false}, {1, 2, false, false}};  // post flag missing
  auto m = MLLM::Create(c, gap, nullptr);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(std::string(m.status().message()).find("chunk 1"), std::string::npos) << m.status();
  ModelShard tp3;
  tp3.tp_size = 3;
  auto bad = MLLM::Create(c, tp3, nullptr);  // 4 heads, 2 kv heads
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("parallel.tp (3)"), std::string::npos)
      << bad.status();
  ModelShard tp2;
  tp2.tp_size = 2;
  auto no_comm = MLLM::Create(c, tp2, nullptr);
  ASSERT_FALSE(no_comm.ok());
  EXPECT_NE(std::string(no_comm.status().message()).find("communicator"), std::string::npos);
  c.mutable_llm()->set_tie_embeddings(true);
  ModelShard first;
  first.chunks = {{0, 1, true, false}};
  EXPECT_FALSE(MLLM::Create(c, first, nullptr).ok());
}

// A communicator that must never be used (layout and init do not communicate).
class NoComm : public comm::Communicator {
 public:
  NoComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  absl::Status Barrier() override { return Fail(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int, int, const std::string&) override {
    return Fail();
  }

 protected:
  absl::Status AllReduceRaw(void*, size_t, comm::ElemType, comm::ReduceOp) override {
    return Fail();
  }
  absl::Status AllGatherRaw(const void*, size_t, void*, size_t, comm::ElemType) override {
    return Fail();
  }
  absl::Status AllGatherVRaw(const void*, size_t, void*, size_t, std::span<const int64_t>,
                             comm::ElemType) override {
    return Fail();
  }
  absl::Status ReduceScatterRaw(const void*, size_t, void*, size_t, comm::ElemType,
                                comm::ReduceOp) override {
    return Fail();
  }
  absl::Status BroadcastRaw(void*, size_t, comm::ElemType, int) override { return Fail(); }
  absl::Status SendRaw(const void*, size_t, comm::ElemType, int, int) override { return Fail(); }
  absl::Status RecvRaw(void*, size_t, comm::ElemType, int, int) override { return Fail(); }
  absl::StatusOr<std::unique_ptr<comm::Request>> IAllReduceRaw(void*, size_t, comm::ElemType,
                                                               comm::ReduceOp) override {
    return Fail();
  }
  absl::StatusOr<std::unique_ptr<comm::Request>> ISendRaw(const void*, size_t, comm::ElemType,
                                                          int, int) override {
    return Fail();
  }
  absl::StatusOr<std::unique_ptr<comm::Request>> IRecvRaw(void*, size_t, comm::ElemType, int,
                                                          int) override {
    return Fail();
  }

 private:
  absl::Status Fail() {
    ADD_FAILURE() << "NoComm used";
    return absl::InternalError("NoComm");
  }
  int rank_, size_;
  std::string name_ = "nocomm";
};

TEST(ShardTest, TpLayoutSplitsByTheRuleAndInitGivesSlices) {
  auto c = SmallConfig();
  auto full = MLLM::Create(c);
  ASSERT_TRUE(full.ok());
  (*full)->InitParams(42);
  const int T = 2;
  std::vector<float> rebuilt((*full)->num_params(), -7.0f);
  std::map<std::string, int> seen;
  for (int r = 0; r < T; ++r) {
    NoComm comm(r, T);
    ModelShard s;
    s.tp_rank = r;
    s.tp_size = T;
    auto m = MLLM::Create(c, s, &comm);
    ASSERT_TRUE(m.ok()) << m.status();
    (*m)->InitParams(42);
    EXPECT_EQ((*m)->params().size(), (*full)->params().size());
    int64_t offset = 0;
    for (const ParamInfo& p : (*m)->params()) {
      SCOPED_TRACE(p.name);
      const ParamInfo* g = (*full)->FindParam(p.name);
      ASSERT_NE(g, nullptr);
      EXPECT_EQ(p.offset, offset);
      offset += p.numel;
      EXPECT_EQ(p.global_shape, g->shape);
      const bool rows = p.name.ends_with("q_proj.weight") || p.name.ends_with("k_proj.bias") ||
                        p.name.ends_with("gate_proj.weight") || p.name.ends_with("fc1.bias") ||
                        p.name.ends_with("embed_tokens.weight") ||
                        p.name.ends_with("lm_head.weight") ||
                        p.name == "multi_modal_projector.linear_1.weight";
      const bool cols = p.name.ends_with("o_proj.weight") || p.name.ends_with("fc2.weight") ||
                        p.name.ends_with("down_proj.weight") ||
                        p.name == "multi_modal_projector.linear_2.weight";
      const bool whole = p.name.ends_with("norm.weight") || p.name.ends_with("fc2.bias") ||
                         p.name.ends_with("out_proj.bias") ||
                         p.name.starts_with("retrieval_projector.") ||
                         p.name == "multi_modal_projector.linear_2.bias" ||
                         p.name.ends_with("position_embedding.weight");
      if (rows) {
        EXPECT_EQ(p.shard_dim, 0);
      }
      if (cols) {
        EXPECT_EQ(p.shard_dim, 1);
      }
      if (whole) {
        EXPECT_EQ(p.shard_dim, -1);
      }
      if (p.shard_dim >= 0) {
        EXPECT_EQ(p.shape[p.shard_dim] * T, g->shape[p.shard_dim]);
        EXPECT_EQ(p.shard_start, r * p.shape[p.shard_dim]);
        EXPECT_EQ(p.numel * T, g->numel);
      } else {
        EXPECT_EQ(p.shape, g->shape);
      }
      // The init is the slice of the whole model's init; together the ranks
      // rebuild every tensor.
      model::InsertSlice(p, (*m)->param_data() + p.offset, rebuilt.data() + g->offset);
      ++seen[p.name];
    }
    EXPECT_EQ((*m)->num_params(), offset);
  }
  for (int64_t i = 0; i < (*full)->num_params(); ++i) {
    ASSERT_EQ(rebuilt[i], (*full)->param_data()[i]) << i;
  }
  EXPECT_EQ(seen.size(), (*full)->params().size());
}

class ChunkChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = SmallConfig();
    config_.mutable_llm()->set_layers(4);
    auto f = MLLM::Create(config_);
    ASSERT_TRUE(f.ok());
    full_ = std::move(*f);
    full_->InitParams(9);
    const int NP = full_->num_visual_tokens(), S = config_.vision().image_size();
    const int V = config_.llm().vocab_size();
    mb_[0] = MakeBatch(5, 12, {12, 9}, {{0, 1}, {1, 3}}, NP, S, V);
    mb_[1] = MakeBatch(6, 10, {10, 7, 10}, {{2, 2}}, NP, S, V);  // another shape
    Rng rng(8);
    for (int j = 0; j < 2; ++j) {
      hook_[j].resize(int64_t{mb_[j].B} * mb_[j].T * config_.llm().width());
      for (float& x : hook_[j]) x = static_cast<float>(rng.Normal() * 0.1);
    }
    // Reference: the whole model, micro-batch 0 then 1, grads accumulated.
    full_->ZeroGrad();
    for (int j = 0; j < 2; ++j) {
      loss_[j] = full_->Forward(mb_[j]);
      float* h = full_->mutable_final_hidden_grad();
      std::copy(hook_[j].begin(), hook_[j].end(), h);
      full_->Backward(0.5f);
    }
  }

  std::unique_ptr<MLLM> Part(const std::vector<ModelShard::Chunk>& chunks) {
    ModelShard s;
    s.chunks = chunks;
    auto m = MLLM::Create(config_, s, nullptr);
    CHECK(m.ok()) << m.status();
    CopyParamsFrom(*full_, m->get());
    (*m)->ZeroGrad();
    (*m)->SetNumSlots(2);
    return std::move(*m);
  }

  // Forward mb0, forward mb1, backward mb0, backward mb1.
  // Chunks run the same ops on the same values as the whole model: results
  // are bitwise equal.
  void RunTwoInFlight(const std::vector<Piece>& chain) {
    EXPECT_EQ(ChainForward(chain, 0, mb_[0], hook_[0]), loss_[0]);
    EXPECT_EQ(ChainForward(chain, 1, mb_[1], hook_[1]), loss_[1]);
    ChainBackward(chain, 0, 0.5f);
    ChainBackward(chain, 1, 0.5f);
  }

  unified_train::ModelConfig config_;
  std::unique_ptr<MLLM> full_;
  data::Batch mb_[2];
  std::vector<float> hook_[2];
  float loss_[2];
};

TEST_F(ChunkChainTest, TwoChunksMatchTheWholeModel) {
  auto a = Part({{0, 2, true, false}});
  auto b = Part({{2, 4, false, true}});
  EXPECT_EQ(b->FindParam("vision_tower.vision_model.post_layernorm.weight"), nullptr);
  EXPECT_EQ(a->FindParam("language_model.lm_head.weight"), nullptr);
  EXPECT_EQ(a->num_params() + b->num_params(), full_->num_params());
  RunTwoInFlight({{a.get(), 0}, {b.get(), 0}});
  ExpectGradsMatch(*full_, *a, 0.0, "chunk 0 of 2");
  ExpectGradsMatch(*full_, *b, 0.0, "chunk 1 of 2");
}

TEST_F(ChunkChainTest, ThreeChunksMatchTheWholeModel) {
  auto a = Part({{0, 1, true, false}});
  auto b = Part({{1, 3, false, false}});
  auto c = Part({{3, 4, false, true}});
  RunTwoInFlight({{a.get(), 0}, {b.get(), 0}, {c.get(), 0}});
  ExpectGradsMatch(*full_, *a, 0.0, "chunk 0 of 3");
  ExpectGradsMatch(*full_, *b, 0.0, "chunk 1 of 3");
  ExpectGradsMatch(*full_, *c, 0.0, "chunk 2 of 3");
}

// pp = 2, virtual_stages = 2: stage 0 holds chunks 0 and 2, stage 1 chunks 1 and 3.
TEST_F(ChunkChainTest, InterleavedChunksMatchTheWholeModel) {
  auto chunks = PartitionLayers(config_, 2, 2);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  ModelShard s0 = ShardFor(*chunks, 0, 2, 0, 1), s1 = ShardFor(*chunks, 1, 2, 0, 1);
  auto a = Part(s0.chunks);
  auto b = Part(s1.chunks);
  ASSERT_EQ(a->shard().chunks.size(), 2u);
  RunTwoInFlight({{a.get(), 0}, {b.get(), 0}, {a.get(), 1}, {b.get(), 1}});
  ExpectGradsMatch(*full_, *a, 0.0, "stage 0");
  ExpectGradsMatch(*full_, *b, 0.0, "stage 1");
  // Forward/Backward refuse a shard whose chunks do not chain: checked by
  // CHECK, so not exercised here.
}

// pp = 1, virtual_stages = 2 with tied embeddings: one object holds both
// chunks (embed_tokens doubles as lm_head); Forward/Backward chain them.
TEST(ShardTest, TwoChunksInOneObjectWithTiedEmbeddings) {
  auto c = SmallConfig();
  c.mutable_llm()->set_layers(4);
  c.mutable_llm()->set_tie_embeddings(true);
  auto full = MLLM::Create(c);
  ASSERT_TRUE(full.ok());
  (*full)->InitParams(4);
  auto chunks = PartitionLayers(c, 1, 2);
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  auto two = MLLM::Create(c, ShardFor(*chunks, 0, 1, 0, 1), nullptr);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ((*two)->shard().chunks.size(), 2u);
  (*two)->InitParams(4);
  const data::Batch b = MakeBatch(5, 12, {12, 9}, {{0, 1}, {1, 3}}, (*full)->num_visual_tokens(),
                                  c.vision().image_size(), c.llm().vocab_size());
  (*full)->ZeroGrad();
  (*two)->ZeroGrad();
  EXPECT_EQ((*two)->Forward(b), (*full)->Forward(b));
  (*full)->Backward(1.0f);
  (*two)->Backward(1.0f);
  ExpectGradsMatch(**full, **two, 0.0, "tied, two chunks");
}

// Each parameter is reported exactly once per backward, and only once its
// gradient is final (the value seen in the callback is the value at the end).
TEST_F(ChunkChainTest, GradReadyCoversEveryParameterOnceWhenFinal) {
  for (bool split : {false, true}) {
    SCOPED_TRACE(split ? "two chunks" : "one chunk");
    std::vector<std::unique_ptr<MLLM>> models;
    std::vector<Piece> chain;
    if (split) {
      models.push_back(Part({{0, 2, true, false}}));
      models.push_back(Part({{2, 4, false, true}}));
      chain = {{models[0].get(), 0}, {models[1].get(), 0}};
    } else {
      models.push_back(Part({{0, -1, true, true}}));
      chain = {{models[0].get(), 0}};
    }
    struct Record {
      std::vector<int> covered;
      std::vector<float> seen;
    };
    std::vector<Record> rec(models.size());
    for (size_t k = 0; k < models.size(); ++k) {
      MLLM* m = models[k].get();
      rec[k].covered.assign(m->num_params(), 0);
      rec[k].seen.assign(m->num_params(), 0.0f);
      Record* r = &rec[k];
      m->SetGradReadyCallback([m, r](int64_t begin, int64_t end) {
        ASSERT_TRUE(0 <= begin && begin <= end && end <= m->num_params()) << begin << " " << end;
        for (int64_t i = begin; i < end; ++i) {
          ++r->covered[i];
          r->seen[i] = m->grad_data()[i];
        }
      });
    }
    ChainForward(chain, 0, mb_[0], hook_[0]);
    // The retrieval head gets its gradient before the backward.
    MLLM* post = chain.back().m;
    const std::vector<data::SliceSpan> slices = {{0, 0, 1, false}, {1, 3, 7, true}};
    std::vector<float> r(slices.size() * post->retrieval_dim()), dr(r.size(), 0.3f);
    post->RetrievalForward(slices, r.data());
    post->RetrievalBackward(dr.data());
    ChainBackward(chain, 0, 1.0f);
    for (size_t k = 0; k < models.size(); ++k) {
      MLLM* m = models[k].get();
      int64_t nonzero = 0;
      for (int64_t i = 0; i < m->num_params(); ++i) {
        ASSERT_EQ(rec[k].covered[i], 1) << "model " << k << " float " << i;
        ASSERT_EQ(rec[k].seen[i], m->grad_data()[i]) << "model " << k << " float " << i;
        nonzero += m->grad_data()[i] != 0.0f;
      }
      EXPECT_GT(nonzero, m->num_params() / 2);
      m->SetGradReadyCallback({});
    }
  }
}

}  // namespace
}  // namespace ut
