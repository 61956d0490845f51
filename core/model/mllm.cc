// MLLM: owns the parameter/gradient buffers and, per pipeline chunk and slot,
// the activation arena; glues vision tower -> projector -> decoder -> LM head
// -> cross-entropy. A whole model is one chunk with pre and post, slot 0.
#include "core/model/mllm.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/model/arena.h"
#include "core/model/common.h"
#include "core/model/decoder.h"
#include "core/model/layout.h"
#include "core/model/projector.h"
#include "core/model/retrieval.h"
#include "core/model/tp.h"
#include "core/model/vit.h"
#include "core/tensor/tensor.h"
#include "ops/cross_entropy.h"
#include "ops/gemm.h"
#include "parallel/comm/communicator.h"

namespace ut {

using model::Dims;
using model::Layout;

namespace {

// One chunk's activations for one micro-batch (one slot). d: this TP rank's
// dims (LocalDims). Only the parts the chunk holds get memory.
struct ChunkState {
  ChunkState(const Dims& d, const Layout& layout, const model::Tp& tp,
             const ModelShard::Chunk& c)
      : chunk(c),
        dims(d),
        vision(d, layout.vit, tp),
        projector(d, layout.projector, tp),
        decoder(d, layout.decoder, tp, c.begin, c.end, c.pre, c.post),
        retrieval(d, layout.retrieval) {}

  // Lays out every activation for (B rows, T tokens, NI images). Vision and
  // projector arrays come first, so their addresses depend only on NI: Generate
  // encodes the images once and then re-plans for growing T.
  void Plan(int b, int t, int ni) {
    const int64_t N = int64_t{b} * t, C = dims.width;
    const int images = chunk.pre ? ni : 0;
    auto plan = [&](float* base) {
      model::Bump bump(base);
      vision.Plan(bump, images);
      projector.Plan(bump, images * dims.patches);
      decoder.Plan(bump, b, t);
      logits = bump.Take(chunk.post ? N * dims.vocab : 0);
      dlogits = bump.Take(chunk.post ? N * dims.vocab : 0);
      hook = bump.Take(chunk.post ? N * C : 0);
      dvis = bump.Take(int64_t{images} * dims.patches * C);
      return bump.used();
    };
    arena.Reserve(plan(nullptr));
    plan(arena.data());
    B = b;
    T = t;
    NI = images;
  }

  ModelShard::Chunk chunk;
  Dims dims;
  model::Arena arena;
  model::VisionTower vision;
  model::Projector projector;
  model::Decoder decoder;
  model::RetrievalHead retrieval;

  // State of the last ChunkForward in this slot.
  int B = 0, T = 0, NI = 0;
  std::vector<int32_t> ids, pos, lens, image_row, image_start;
  float* logits = nullptr;   // [B,T,Vl] (post)
  float* dlogits = nullptr;  // [B,T,Vl] (softmax - onehot) / count (post)
  float* hook = nullptr;     // [B,T,C] extra gradient of final hidden (post)
  float* dvis = nullptr;     // [NI*NP,C] gradient of the visual tokens (pre)
  bool hook_active = false;
  bool backward_ready = false;
};

}  // namespace

struct MLLM::Impl {
  Impl(const unified_train::ModelConfig& c, const Dims& global, const Dims& local_dims,
       const ModelShard& s, const model::Tp& t)
      : config(c),
        dims(global),
        local(local_dims),
        shard(s),
        tp(t),
        layout(model::BuildLayout(global, s)) {
    const size_t bytes = static_cast<size_t>(layout.total) * sizeof(float);
    params = static_cast<float*>(AlignedAlloc(bytes));
    grads = static_cast<float*>(AlignedAlloc(bytes));
    std::memset(params, 0, bytes);
    std::memset(grads, 0, bytes);
    for (size_t k = 0; k < shard.chunks.size(); ++k) {
      if (shard.chunks[k].post) post = static_cast<int>(k);
    }
    states.resize(shard.chunks.size());
    SetNumSlots(1);
  }
  ~Impl() {
    AlignedFree(params);
    AlignedFree(grads);
  }

  void SetNumSlots(int n) {
    CHECK_GE(n, 1) << "MLLM::SetNumSlots needs at least one slot";
    for (size_t k = 0; k < states.size(); ++k) {
      states[k].resize(n);
      for (auto& s : states[k]) {
        if (s == nullptr) s = std::make_unique<ChunkState>(local, layout, tp, shard.chunks[k]);
      }
    }
    num_slots = n;
    selected = std::min(selected, n - 1);
  }

  ChunkState& state(int c, int slot) const {
    CHECK(c >= 0 && c < static_cast<int>(states.size()))
        << "chunk " << c << " of a shard with " << states.size() << " chunks";
    CHECK(slot >= 0 && slot < num_slots) << "slot " << slot << " of " << num_slots
                                         << " (call SetNumSlots first)";
    return *states[c][slot];
  }
  ChunkState& selected_state() const {
    CHECK_GE(post, 0) << "this shard has no post chunk (final norm, LM head, retrieval)";
    return state(post, selected);
  }
  // One chunk holding the whole model (Generate, EmbedSlices, the fast init).
  bool single_chunk() const { return shard.chunks.size() == 1 && shard.chunks[0].pre && post == 0; }

  void Ready(int64_t begin, int64_t end) const {
    if (ready) ready(begin, end);
  }

  // Programmer errors in a batch (the loader builds them) stop with a message.
  void CheckBatch(const data::Batch& b) const {
    CHECK_GT(b.B, 0) << "batch has no rows";
    CHECK_GT(b.T, 0) << "batch has no tokens";
    const size_t N = static_cast<size_t>(b.B) * b.T;
    CHECK_EQ(b.tokens.size(), N) << "batch.tokens must hold B*T ids";
    CHECK_EQ(b.targets.size(), N) << "batch.targets must hold B*T ids";
    CHECK_EQ(b.lens.size(), static_cast<size_t>(b.B)) << "batch.lens must hold B lengths";
    for (int r = 0; r < b.B; ++r) {
      CHECK(b.lens[r] >= 0 && b.lens[r] <= b.T) << "batch.lens[" << r << "] = " << b.lens[r];
    }
    CHECK_EQ(b.image_row.size(), static_cast<size_t>(b.num_images));
    CHECK_EQ(b.image_start.size(), static_cast<size_t>(b.num_images));
    if (b.num_images > 0) {
      CHECK_EQ(b.image_size, dims.image_size) << "batch image size differs from the model's";
      CHECK_EQ(b.images.size(),
               static_cast<size_t>(b.num_images) * 3 * dims.image_size * dims.image_size);
    }
    for (int i = 0; i < b.num_images; ++i) {
      const int r = b.image_row[i], s = b.image_start[i];
      CHECK(r >= 0 && r < b.B) << "image " << i << " row " << r << " out of range";
      CHECK(s >= 0 && s + dims.patches <= b.lens[r])
          << "image " << i << " tokens [" << s << "," << s + dims.patches
          << ") exceed the row's length " << b.lens[r];
    }
    for (size_t n = 0; n < N; ++n) {
      CHECK_LT(b.targets[n], dims.vocab) << "target id out of range at flat position " << n;
    }
  }

  // ids [B*T]: the token id at valid text positions, -1 at image positions and
  // padding (zero embedding rows, no embedding gradient). pos [B*T] = t.
  void MakeIds(ChunkState& s, const data::Batch& b) const {
    const int N = b.B * b.T;
    s.ids.resize(N);
    s.pos.resize(N);
    s.lens.assign(b.lens.begin(), b.lens.end());
    for (int r = 0; r < b.B; ++r) {
      for (int t = 0; t < b.T; ++t) {
        const int n = r * b.T + t;
        s.pos[n] = t;
        s.ids[n] = t < b.lens[r] ? b.tokens[n] : -1;
        if (s.ids[n] >= 0) {
          CHECK_LT(s.ids[n], dims.vocab) << "token id out of range at row " << r << " pos " << t;
        }
      }
    }
    for (int i = 0; i < b.num_images; ++i) {
      const int n0 = b.image_row[i] * b.T + b.image_start[i];
      std::fill(s.ids.begin() + n0, s.ids.begin() + n0 + dims.patches, -1);
    }
  }

  // Vision tower + projector over the batch's images (s.NI of them).
  void EncodeImages(ChunkState& s, const float* images) const {
    if (s.NI == 0) return;
    s.vision.Forward(params, images);
    s.projector.Forward(params, s.vision.output());
  }

  // A pre chunk embeds ids and writes the visual tokens over their rows; any
  // other chunk starts from `in` [B,T,C]. Then the chunk's blocks.
  void RunDecoder(ChunkState& s, const float* in) const {
    const int64_t C = dims.width, NP = dims.patches;
    if (s.chunk.pre) {
      s.decoder.Embed(params, s.ids.data());
      for (int i = 0; i < s.NI; ++i) {
        float* dst = s.decoder.input() + (int64_t{s.image_row[i]} * s.T + s.image_start[i]) * C;
        std::memcpy(dst, s.projector.output() + i * NP * C, sizeof(float) * NP * C);
      }
    } else {
      std::memcpy(s.decoder.input(), in, sizeof(float) * s.B * s.T * C);
    }
    s.decoder.Forward(params, s.pos.data(), s.lens.data());
  }

  // Everything of chunk s up to its output for a micro-batch.
  void RunHidden(ChunkState& s, const data::Batch& batch, const float* in) const {
    CheckBatch(batch);
    s.Plan(batch.B, batch.T, batch.num_images);
    MakeIds(s, batch);
    s.image_row = batch.image_row;
    s.image_start = batch.image_start;
    if (s.chunk.pre) EncodeImages(s, batch.images.data());
    RunDecoder(s, in);
  }

  // LM head (vocab-parallel under TP) and mean CE; dlogits for the backward.
  float Head(ChunkState& s, const data::Batch& batch, int64_t* count) const {
    const int N = batch.B * batch.T, C = dims.width, Vl = local.vocab;
    // logits [N,Vl] = final [N,C] @ W^T (W: this rank's vocab rows [Vl,C]).
    cpu::linear_forward(s.logits, s.decoder.final(), params + layout.decoder.lm_head, nullptr, N,
                        C, Vl);
    int64_t counted = 0;
    for (int32_t t : batch.targets) counted += t >= 0;
    const float grad_scale = counted > 0 ? 1.0f / static_cast<float>(counted) : 0.0f;
    int64_t ce_count = 0;
    const double sum =
        tp.size == 1
            ? cpu::softmax_cross_entropy(s.dlogits, s.logits, batch.targets.data(), N, Vl, -1,
                                         grad_scale, &ce_count)
            : model::VocabParallelCrossEntropy(tp, s.dlogits, s.logits, batch.targets.data(), N,
                                               Vl, local.vocab_start, grad_scale, &ce_count);
    CHECK_EQ(ce_count, counted);
    if (count != nullptr) *count = counted;
    return counted > 0 ? static_cast<float>(sum / counted) : 0.0f;
  }

  unified_train::ModelConfig config;
  Dims dims;   // the whole model's
  Dims local;  // this TP rank's share (LocalDims)
  ModelShard shard;
  model::Tp tp;
  Layout layout;  // local parameters only
  float* params = nullptr;  // [num_params]
  float* grads = nullptr;   // [num_params]
  std::vector<std::vector<std::unique_ptr<ChunkState>>> states;  // [chunk][slot]
  int num_slots = 0;
  int post = -1;      // index of the post chunk in shard.chunks, -1 if none
  int selected = 0;   // slot that final_hidden() etc. refer to
  std::function<void(int64_t, int64_t)> ready;
};

MLLM::MLLM() = default;
MLLM::~MLLM() = default;

absl::StatusOr<std::unique_ptr<MLLM>> MLLM::Create(const unified_train::ModelConfig& config) {
  return Create(config, ModelShard{}, nullptr);
}

absl::StatusOr<std::unique_ptr<MLLM>> MLLM::Create(const unified_train::ModelConfig& config,
                                                   const ModelShard& shard,
                                                   comm::Communicator* tp_comm) {
  ASSIGN_OR_RETURN(Dims dims, model::MakeDims(config));
  ASSIGN_OR_RETURN(ModelShard resolved, model::ResolveShard(dims, shard));
  ASSIGN_OR_RETURN(Dims local, model::LocalDims(dims, resolved.tp_rank, resolved.tp_size));
  model::Tp tp;
  if (resolved.tp_size > 1) {
    if (tp_comm == nullptr || tp_comm->size() != resolved.tp_size ||
        tp_comm->rank() != resolved.tp_rank) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model shard tp_rank ", resolved.tp_rank, " of tp_size ", resolved.tp_size,
          " needs the TP group's communicator with that rank and size; got ",
          tp_comm == nullptr ? std::string("none")
                             : absl::StrCat("rank ", tp_comm->rank(), " of ", tp_comm->size(),
                                            " (", tp_comm->name(), ")")));
    }
    tp = model::Tp{tp_comm, resolved.tp_rank, resolved.tp_size};
  }
  std::unique_ptr<MLLM> m(new MLLM());
  m->impl_ = std::make_unique<Impl>(config, dims, local, resolved, tp);
  return m;
}

const ModelShard& MLLM::shard() const { return impl_->shard; }
const std::vector<ParamInfo>& MLLM::params() const { return impl_->layout.params; }

const ParamInfo* MLLM::FindParam(const std::string& name) const {
  for (const ParamInfo& p : impl_->layout.params) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

int64_t MLLM::num_params() const { return impl_->layout.total; }
float* MLLM::param_data() { return impl_->params; }
float* MLLM::grad_data() { return impl_->grads; }

void MLLM::InitParams(uint64_t seed) {
  Impl& m = *impl_;
  if (m.single_chunk() && m.tp.size == 1) {
    model::InitParams(m.params, m.layout.params, m.config.init_std(), seed);
    return;
  }
  // A shard: the slices of the whole model's init.
  const Layout full = model::BuildLayout(m.dims);
  std::vector<float> global(static_cast<size_t>(full.total));
  model::InitParams(global.data(), full.params, m.config.init_std(), seed);
  size_t g = 0;
  for (const ParamInfo& p : m.layout.params) {  // both lists are in global order
    while (full.params[g].name != p.name) ++g;
    model::ExtractSlice(p, global.data() + full.params[g].offset, m.params + p.offset);
  }
}

void MLLM::ZeroGrad() { std::memset(impl_->grads, 0, sizeof(float) * impl_->layout.total); }

void MLLM::SetNumSlots(int n) { impl_->SetNumSlots(n); }
int MLLM::num_slots() const { return impl_->num_slots; }
void MLLM::SelectSlot(int slot) {
  impl_->state(std::max(impl_->post, 0), slot);  // checks the range
  impl_->selected = slot;
}
void MLLM::SetGradReadyCallback(std::function<void(int64_t, int64_t)> ready) {
  impl_->ready = std::move(ready);
}

float MLLM::ChunkForward(int c, int slot, const data::Batch& batch, const float* in,
                         int64_t* count) {
  Impl& m = *impl_;
  ChunkState& s = m.state(c, slot);
  CHECK_EQ(in == nullptr, s.chunk.pre)
      << "ChunkForward: chunk " << c << " takes " << (s.chunk.pre ? "no input" : "an input [B,T,C]");
  m.RunHidden(s, batch, in);
  s.hook_active = false;
  s.backward_ready = true;
  if (!s.chunk.post) {
    if (count != nullptr) *count = 0;
    return 0.0f;
  }
  m.selected = slot;
  return m.Head(s, batch, count);
}

const float* MLLM::chunk_output(int c, int slot) const {
  const ChunkState& s = impl_->state(c, slot);
  CHECK(!s.chunk.post) << "chunk_output: chunk " << c << " is the post chunk (it has a loss)";
  return s.decoder.output();
}

const float* MLLM::chunk_input_grad(int c, int slot) const {
  const ChunkState& s = impl_->state(c, slot);
  CHECK(!s.chunk.pre) << "chunk_input_grad: chunk " << c << " is the pre chunk (no input)";
  return s.decoder.input_grad();
}

void MLLM::ChunkBackward(int c, int slot, const float* dout, float loss_scale) {
  Impl& m = *impl_;
  ChunkState& s = m.state(c, slot);
  CHECK(s.backward_ready) << "MLLM::ChunkBackward(" << c << ", " << slot
                          << ") needs exactly one ChunkForward on that chunk and slot before it";
  s.backward_ready = false;
  const int N = s.B * s.T, C = m.dims.width, Vl = m.local.vocab;
  const int64_t NP = m.dims.patches;
  if (s.chunk.post) {
    CHECK(dout == nullptr) << "ChunkBackward: the post chunk starts from its loss (dout nullptr)";
    const model::RetrievalOffsets& ro = m.layout.retrieval;  // done in RetrievalBackward
    m.Ready(ro.l1_w, ro.l2_b + m.dims.retrieval);
    if (loss_scale != 1.0f) {
      float* d = s.dlogits;
#pragma omp parallel for
      for (int64_t i = 0; i < int64_t{N} * Vl; ++i) d[i] *= loss_scale;
    }
    // LM head: dfinal [N,C] = dlogits @ W (f: summed over TP), dW += dlogits^T final.
    const int64_t head = m.layout.decoder.lm_head;
    cpu::linear_backward(s.decoder.final_grad(), m.grads + head, nullptr, s.dlogits,
                         s.decoder.final(), m.params + head, N, C, Vl);
    model::CopyToTpRegionBackward(m.tp, s.decoder.final_grad(), int64_t{N} * C,
                                  "lm_head backward");
    if (!m.dims.tied) m.Ready(head, head + int64_t{Vl} * C);
    if (s.hook_active) {
      model::add_inplace(s.decoder.final_grad(), s.hook, int64_t{N} * C);
      s.hook_active = false;
    }
  } else {
    CHECK(dout != nullptr) << "ChunkBackward: chunk " << c << " needs dout [B,T,C]";
    std::memcpy(s.decoder.final_grad(), dout, sizeof(float) * N * C);
  }
  s.decoder.Backward(m.params, m.grads, s.ids.data(), s.pos.data(), s.lens.data(), m.ready);
  if (!s.chunk.pre) return;
  if (s.NI > 0) {
    // Visual-token rows of the decoder input gradient -> projector -> vision tower.
    float* dvis = s.dvis;
    for (int i = 0; i < s.NI; ++i) {
      const float* src =
          s.decoder.input_grad() + (int64_t{s.image_row[i]} * s.T + s.image_start[i]) * C;
      std::memcpy(dvis + i * NP * C, src, sizeof(float) * NP * C);
    }
    s.projector.Backward(m.params, m.grads, dvis, s.vision.output_grad());
    s.vision.Backward(m.params, m.grads, s.vision.output_grad());
  }
  const model::ProjectorOffsets& po = m.layout.projector;
  m.Ready(po.l1_w, po.l2_b + C);
  m.Ready(m.layout.vit.patch_w, m.layout.vit.post_b + m.dims.vwidth);
}

float MLLM::Forward(const data::Batch& batch, int64_t* count) {
  Impl& m = *impl_;
  const auto& chunks = m.shard.chunks;
  const int K = static_cast<int>(chunks.size());
  for (int k = 0; k + 1 < K; ++k) {
    CHECK_EQ(chunks[k].end, chunks[k + 1].begin)
        << "MLLM::Forward needs chunks that chain; use ChunkForward on a pipeline shard";
  }
  CHECK(chunks.front().pre && chunks.back().post)
      << "MLLM::Forward needs the pre and post chunks; use ChunkForward on a pipeline shard";
  float loss = 0;
  for (int k = 0; k < K; ++k) {
    loss = ChunkForward(k, 0, batch, k == 0 ? nullptr : chunk_output(k - 1, 0),
                        k == K - 1 ? count : nullptr);
  }
  return loss;
}

void MLLM::Backward(float loss_scale) {
  Impl& m = *impl_;
  CHECK(m.state(m.post, 0).backward_ready) << "MLLM::Backward needs exactly one Forward before it";
  const int K = static_cast<int>(m.shard.chunks.size());
  for (int k = K - 1; k >= 0; --k) {
    ChunkBackward(k, 0, k == K - 1 ? nullptr : chunk_input_grad(k + 1, 0), loss_scale);
  }
}

const float* MLLM::logits() const { return impl_->selected_state().logits; }
const float* MLLM::final_hidden() const { return impl_->selected_state().decoder.final(); }

float* MLLM::mutable_final_hidden_grad() {
  Impl& m = *impl_;
  if (m.post < 0) return nullptr;
  ChunkState& s = m.selected_state();
  if (!s.backward_ready) return nullptr;
  if (!s.hook_active) {
    std::memset(s.hook, 0, sizeof(float) * s.B * s.T * m.dims.width);
    s.hook_active = true;
  }
  return s.hook;
}

std::vector<int32_t> MLLM::Generate(const data::Batch& prompt, int max_new, int eos_id) {
  Impl& m = *impl_;
  CHECK(m.single_chunk() && m.tp.size == 1) << "MLLM::Generate needs the whole model";
  ChunkState& s = m.state(0, 0);
  m.selected = 0;
  CHECK_EQ(prompt.B, 1) << "Generate takes a one-row prompt";
  m.CheckBatch(prompt);
  const int len = prompt.lens[0];
  CHECK_GT(len, 0) << "Generate needs a non-empty prompt";
  std::vector<int32_t> out;
  if (max_new <= 0) return out;
  const int C = m.dims.width, V = m.dims.vocab;

  // Reserve for the longest sequence first so later re-plans never move the
  // already encoded visual tokens.
  s.Plan(1, len + max_new, prompt.num_images);
  s.image_row = prompt.image_row;
  s.image_start = prompt.image_start;
  m.EncodeImages(s, prompt.images.data());

  data::Batch seq;  // the growing row (text tokens and images as in the prompt)
  seq.B = 1;
  seq.num_images = prompt.num_images;
  seq.image_row = prompt.image_row;
  seq.image_start = prompt.image_start;
  seq.tokens.assign(prompt.tokens.begin(), prompt.tokens.begin() + len);
  for (int step = 0; step < max_new; ++step) {
    const int T = static_cast<int>(seq.tokens.size());
    seq.T = T;
    seq.lens = {T};
    s.Plan(1, T, prompt.num_images);
    m.MakeIds(s, seq);
    m.RunDecoder(s, nullptr);
    // Only the last position's logits are needed: [1,C] @ W^T -> [1,V].
    cpu::linear_forward(s.logits, s.decoder.final() + int64_t{T - 1} * C,
                        m.params + m.layout.decoder.lm_head, nullptr, 1, C, V);
    const int next = static_cast<int>(std::max_element(s.logits, s.logits + V) - s.logits);
    out.push_back(next);
    if (next == eos_id) break;
    seq.tokens.push_back(next);
  }
  s.backward_ready = false;
  s.hook_active = false;
  return out;
}

void MLLM::EmbedSlices(const data::Batch& batch, std::vector<float>* r) {
  Impl& m = *impl_;
  CHECK(m.single_chunk()) << "MLLM::EmbedSlices needs one chunk with pre and post";
  ChunkState& s = m.state(0, 0);
  m.selected = 0;
  r->assign(batch.slices.size() * static_cast<size_t>(m.dims.retrieval), 0.0f);
  s.backward_ready = false;
  s.hook_active = false;
  if (batch.slices.empty()) return;
  m.RunHidden(s, batch, nullptr);
  s.retrieval.Forward(m.params, s.decoder.final(), s.B, s.T, batch.slices, r->data());
}

void MLLM::RetrievalForward(const std::vector<data::SliceSpan>& slices, float* r) {
  Impl& m = *impl_;
  ChunkState& s = m.selected_state();
  CHECK(s.backward_ready) << "MLLM::RetrievalForward needs a Forward whose Backward is pending";
  s.retrieval.Forward(m.params, s.decoder.final(), s.B, s.T, slices, r);
}

void MLLM::RetrievalBackward(const float* dr) {
  Impl& m = *impl_;
  ChunkState& s = m.selected_state();
  CHECK(s.backward_ready) << "MLLM::RetrievalBackward must come before the Backward";
  s.retrieval.Backward(m.params, m.grads, dr, mutable_final_hidden_grad());
}

const unified_train::ModelConfig& MLLM::config() const { return impl_->config; }
int MLLM::num_visual_tokens() const { return impl_->dims.patches; }
int MLLM::retrieval_dim() const { return impl_->dims.retrieval; }

}  // namespace ut
