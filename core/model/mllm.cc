// MLLM: owns the parameter/gradient buffers and the activation arena, and
// glues vision tower -> projector -> decoder -> LM head -> cross-entropy.
#include "core/model/mllm.h"

#include <algorithm>
#include <cstring>

#include "core/model/arena.h"
#include "core/model/common.h"
#include "core/model/decoder.h"
#include "core/model/layout.h"
#include "core/model/projector.h"
#include "core/model/retrieval.h"
#include "core/model/vit.h"
#include "core/tensor/tensor.h"
#include "ops/cross_entropy.h"
#include "ops/gemm.h"

namespace ut {

using model::Dims;
using model::Layout;

struct MLLM::Impl {
  Impl(const unified_train::ModelConfig& c, const Dims& d)
      : config(c),
        dims(d),
        layout(model::BuildLayout(d)),
        vision(d, layout.vit),
        projector(d, layout.projector),
        decoder(d, layout.decoder),
        retrieval(d, layout.retrieval) {
    const size_t bytes = static_cast<size_t>(layout.total) * sizeof(float);
    params = static_cast<float*>(AlignedAlloc(bytes));
    grads = static_cast<float*>(AlignedAlloc(bytes));
    std::memset(params, 0, bytes);
    std::memset(grads, 0, bytes);
  }
  ~Impl() {
    AlignedFree(params);
    AlignedFree(grads);
  }

  // Lays out every activation for (B rows, T tokens, NI images). Vision and
  // projector arrays come first, so their addresses depend only on NI: Generate
  // encodes the images once and then re-plans for growing T.
  void Plan(int B, int T, int NI) {
    auto plan = [&](float* base) {
      model::Bump bump(base);
      vision.Plan(bump, NI);
      projector.Plan(bump, NI * dims.patches);
      decoder.Plan(bump, B, T);
      logits = bump.Take(int64_t{B} * T * dims.vocab);
      dlogits = bump.Take(int64_t{B} * T * dims.vocab);
      hook = bump.Take(int64_t{B} * T * dims.width);
      dvis = bump.Take(int64_t{NI} * dims.patches * dims.width);
      return bump.used();
    };
    arena.Reserve(plan(nullptr));
    plan(arena.data());
    B_ = B;
    T_ = T;
    NI_ = NI;
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
  void MakeIds(const data::Batch& b) {
    const int N = b.B * b.T;
    ids.resize(N);
    pos.resize(N);
    lens.assign(b.lens.begin(), b.lens.end());
    for (int r = 0; r < b.B; ++r) {
      for (int t = 0; t < b.T; ++t) {
        const int n = r * b.T + t;
        pos[n] = t;
        ids[n] = t < b.lens[r] ? b.tokens[n] : -1;
        if (ids[n] >= 0) {
          CHECK_LT(ids[n], dims.vocab) << "token id out of range at row " << r << " pos " << t;
        }
      }
    }
    for (int i = 0; i < b.num_images; ++i) {
      const int n0 = b.image_row[i] * b.T + b.image_start[i];
      std::fill(ids.begin() + n0, ids.begin() + n0 + dims.patches, -1);
    }
  }

  // Vision tower + projector over the batch's images (NI_ of them).
  void EncodeImages(const float* images) {
    if (NI_ == 0) return;
    vision.Forward(params, images);
    projector.Forward(params, vision.output());
  }

  // Everything up to the final hidden states for a micro-batch.
  void RunHidden(const data::Batch& batch) {
    CheckBatch(batch);
    Plan(batch.B, batch.T, batch.num_images);
    MakeIds(batch);
    image_row = batch.image_row;
    image_start = batch.image_start;
    EncodeImages(batch.images.data());
    RunDecoder();
  }

  // Embeds ids, writes the visual tokens over their rows, runs the blocks.
  void RunDecoder() {
    decoder.Embed(params, ids.data());
    const int64_t C = dims.width, NP = dims.patches;
    for (int i = 0; i < NI_; ++i) {
      float* dst = decoder.input() + (int64_t{image_row[i]} * T_ + image_start[i]) * C;
      std::memcpy(dst, projector.output() + i * NP * C, sizeof(float) * NP * C);
    }
    decoder.Forward(params, pos.data(), lens.data());
  }

  unified_train::ModelConfig config;
  Dims dims;
  Layout layout;
  model::VisionTower vision;
  model::Projector projector;
  model::Decoder decoder;
  model::RetrievalHead retrieval;
  float* params = nullptr;  // [num_params]
  float* grads = nullptr;   // [num_params]
  model::Arena arena;

  // State of the last Forward.
  int B_ = 0, T_ = 0, NI_ = 0;
  std::vector<int32_t> ids, pos, lens, image_row, image_start;
  float* logits = nullptr;   // [B,T,V]
  float* dlogits = nullptr;  // [B,T,V] (softmax - onehot) / count
  float* hook = nullptr;     // [B,T,C] extra gradient of final hidden
  float* dvis = nullptr;     // [NI*NP,C] gradient of the visual tokens
  bool hook_active = false;
  bool backward_ready = false;
};

MLLM::MLLM() = default;
MLLM::~MLLM() = default;

absl::StatusOr<std::unique_ptr<MLLM>> MLLM::Create(const unified_train::ModelConfig& config) {
  ASSIGN_OR_RETURN(Dims dims, model::MakeDims(config));
  std::unique_ptr<MLLM> m(new MLLM());
  m->impl_ = std::make_unique<Impl>(config, dims);
  return m;
}

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
  model::InitParams(impl_->params, impl_->layout.params, impl_->config.init_std(), seed);
}

void MLLM::ZeroGrad() { std::memset(impl_->grads, 0, sizeof(float) * impl_->layout.total); }

float MLLM::Forward(const data::Batch& batch, int64_t* count) {
  Impl& m = *impl_;
  m.RunHidden(batch);

  // LM head: logits [N,V] = final [N,C] @ W^T; loss and dlogits in one pass.
  const int N = batch.B * batch.T, C = m.dims.width, V = m.dims.vocab;
  cpu::linear_forward(m.logits, m.decoder.final(), m.params + m.layout.decoder.lm_head, nullptr, N,
                      C, V);
  int64_t counted = 0;
  for (int32_t t : batch.targets) counted += t >= 0;
  const float grad_scale = counted > 0 ? 1.0f / static_cast<float>(counted) : 0.0f;
  int64_t ce_count = 0;
  const double sum = cpu::softmax_cross_entropy(m.dlogits, m.logits, batch.targets.data(), N, V, -1,
                                                grad_scale, &ce_count);
  CHECK_EQ(ce_count, counted);
  if (count != nullptr) *count = counted;
  m.hook_active = false;
  m.backward_ready = true;
  return counted > 0 ? static_cast<float>(sum / counted) : 0.0f;
}

void MLLM::Backward(float loss_scale) {
  Impl& m = *impl_;
  CHECK(m.backward_ready) << "MLLM::Backward needs exactly one Forward before it";
  m.backward_ready = false;
  const int N = m.B_ * m.T_, C = m.dims.width, V = m.dims.vocab;
  const int64_t NP = m.dims.patches;
  if (loss_scale != 1.0f) {
    float* d = m.dlogits;
#pragma omp parallel for
    for (int64_t i = 0; i < int64_t{N} * V; ++i) d[i] *= loss_scale;
  }
  // LM head: dfinal [N,C] = dlogits @ W, dW += dlogits^T final.
  const int64_t head = m.layout.decoder.lm_head;
  cpu::linear_backward(m.decoder.final_grad(), m.grads + head, nullptr, m.dlogits,
                       m.decoder.final(), m.params + head, N, C, V);
  if (m.hook_active) {
    model::add_inplace(m.decoder.final_grad(), m.hook, int64_t{N} * C);
    m.hook_active = false;
  }
  m.decoder.Backward(m.params, m.grads, m.ids.data(), m.pos.data(), m.lens.data());
  if (m.NI_ == 0) return;
  // Visual-token rows of the decoder input gradient -> projector -> vision tower.
  float* dvis = m.dvis;
  for (int i = 0; i < m.NI_; ++i) {
    const float* src =
        m.decoder.input_grad() + (int64_t{m.image_row[i]} * m.T_ + m.image_start[i]) * C;
    std::memcpy(dvis + i * NP * C, src, sizeof(float) * NP * C);
  }
  m.projector.Backward(m.params, m.grads, dvis, m.vision.output_grad());
  m.vision.Backward(m.params, m.grads, m.vision.output_grad());
}

const float* MLLM::logits() const { return impl_->logits; }
const float* MLLM::final_hidden() const { return impl_->decoder.final(); }

float* MLLM::mutable_final_hidden_grad() {
  Impl& m = *impl_;
  if (!m.backward_ready) return nullptr;
  if (!m.hook_active) {
    std::memset(m.hook, 0, sizeof(float) * m.B_ * m.T_ * m.dims.width);
    m.hook_active = true;
  }
  return m.hook;
}

std::vector<int32_t> MLLM::Generate(const data::Batch& prompt, int max_new, int eos_id) {
  Impl& m = *impl_;
  CHECK_EQ(prompt.B, 1) << "Generate takes a one-row prompt";
  m.CheckBatch(prompt);
  const int len = prompt.lens[0];
  CHECK_GT(len, 0) << "Generate needs a non-empty prompt";
  std::vector<int32_t> out;
  if (max_new <= 0) return out;
  const int C = m.dims.width, V = m.dims.vocab;

  // Reserve for the longest sequence first so later re-plans never move the
  // already encoded visual tokens.
  m.Plan(1, len + max_new, prompt.num_images);
  m.image_row = prompt.image_row;
  m.image_start = prompt.image_start;
  m.EncodeImages(prompt.images.data());

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
    m.Plan(1, T, prompt.num_images);
    m.MakeIds(seq);
    m.RunDecoder();
    // Only the last position's logits are needed: [1,C] @ W^T -> [1,V].
    cpu::linear_forward(m.logits, m.decoder.final() + int64_t{T - 1} * C,
                        m.params + m.layout.decoder.lm_head, nullptr, 1, C, V);
    const int next = static_cast<int>(std::max_element(m.logits, m.logits + V) - m.logits);
    out.push_back(next);
    if (next == eos_id) break;
    seq.tokens.push_back(next);
  }
  m.backward_ready = false;
  m.hook_active = false;
  return out;
}

void MLLM::EmbedSlices(const data::Batch& batch, std::vector<float>* r) {
  Impl& m = *impl_;
  r->assign(batch.slices.size() * static_cast<size_t>(m.dims.retrieval), 0.0f);
  m.backward_ready = false;
  m.hook_active = false;
  if (batch.slices.empty()) return;
  m.RunHidden(batch);
  m.retrieval.Forward(m.params, m.decoder.final(), m.B_, m.T_, batch.slices, r->data());
}

void MLLM::RetrievalForward(const std::vector<data::SliceSpan>& slices, float* r) {
  Impl& m = *impl_;
  CHECK(m.backward_ready) << "MLLM::RetrievalForward needs a Forward whose Backward is pending";
  m.retrieval.Forward(m.params, m.decoder.final(), m.B_, m.T_, slices, r);
}

void MLLM::RetrievalBackward(const float* dr) {
  Impl& m = *impl_;
  CHECK(m.backward_ready) << "MLLM::RetrievalBackward must come before the Backward";
  m.retrieval.Backward(m.params, m.grads, dr, mutable_final_hidden_grad());
}

const unified_train::ModelConfig& MLLM::config() const { return impl_->config; }
int MLLM::num_visual_tokens() const { return impl_->dims.patches; }
int MLLM::retrieval_dim() const { return impl_->dims.retrieval; }

}  // namespace ut
