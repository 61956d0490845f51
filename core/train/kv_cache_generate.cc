// Greedy decoding with a key/value cache (kv_cache_generate.h).
#include "core/train/kv_cache_generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/model/common.h"
#include "glog/logging.h"
#include "ops/activation.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace ut::train {
namespace {

model::Dims DimsOf(const MLLM& model) {
  absl::StatusOr<model::Dims> d = model::MakeDims(model.config());
  CHECK(d.ok()) << "a created MLLM has a valid config: " << d.status();
  return *d;
}

}  // namespace

KvCacheGenerator::KvCacheGenerator(MLLM* model)
    : model_(model),
      d_(DimsOf(*model)),
      layout_(model::BuildLayout(d_)),
      vision_(d_, layout_.vit),
      projector_(d_, layout_.projector) {
  CHECK_EQ(layout_.total, model->num_params()) << "layout differs from the model's";
}

void KvCacheGenerator::Reserve(int rows, int positions) {
  const int64_t C = d_.width, F = d_.ffn;
  const int64_t HD = int64_t{d_.heads} * d_.head_dim, KD = int64_t{d_.kv_heads} * d_.head_dim;
  x_.resize(rows * C);
  ln_.resize(rows * C);
  q_.resize(rows * HD);
  kn_.resize(rows * KD);
  vn_.resize(rows * KD);
  att_.resize(rows * HD);
  gate_.resize(rows * F);
  up_.resize(rows * F);
  act_.resize(rows * F);
  rstd_.resize(rows);
  final_.resize(C);
  logits_.resize(d_.vocab);
  if (positions > capacity_) {
    capacity_ = positions;
    k_.assign(int64_t{d_.layers} * capacity_ * KD, 0.0f);
    v_.assign(int64_t{d_.layers} * capacity_ * KD, 0.0f);
  }
}

// q_ [n,H,D] (rows at positions t0..t0+n-1), cache layer l [T,Hkv,D] -> att_ [n,H,D].
// Row i sees positions 0..t0+i (causal); scale 1/sqrt(D).
void KvCacheGenerator::Attend(int l, int n, int t0) {
  const int H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim, group = H / Hkv;
  const int64_t KD = int64_t{Hkv} * D;
  const float* K = k_.data() + int64_t{l} * capacity_ * KD;
  const float* Vc = v_.data() + int64_t{l} * capacity_ * KD;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
#pragma omp parallel for schedule(static) if (n * H >= 64)
  for (int ih = 0; ih < n * H; ++ih) {
    const int i = ih / H, h = ih % H, kvh = h / group, t = t0 + i;
    const float* q = q_.data() + (int64_t{i} * H + h) * D;
    std::vector<float> p(t + 1);
    float m = -INFINITY;
    for (int j = 0; j <= t; ++j) {
      const float* k = K + j * KD + int64_t{kvh} * D;
      float s = 0;
      for (int d = 0; d < D; ++d) s += q[d] * k[d];
      p[j] = s * scale;
      m = std::max(m, p[j]);
    }
    float sum = 0;
    for (int j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] - m));
    float* out = att_.data() + (int64_t{i} * H + h) * D;
    std::fill(out, out + D, 0.0f);
    for (int j = 0; j <= t; ++j) {
      const float* v = Vc + j * KD + int64_t{kvh} * D;
      const float w = p[j] / sum;
      for (int d = 0; d < D; ++d) out[d] += w * v[d];
    }
  }
}

// x_ [n,C] at positions [t0, t0+n) -> cache rows [t0, t0+n) of every layer,
// final_ [C] = final RMSNorm of the last row. Same ops as model::Decoder::Forward.
void KvCacheGenerator::Step(int n, int t0) {
  const float* P = model_->param_data();
  const int C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const int64_t KD = int64_t{Hkv} * D;
  CHECK_LE(t0 + n, capacity_);
  pos_.resize(n);
  for (int i = 0; i < n; ++i) pos_[i] = t0 + i;
  float* x = x_.data();
  for (int l = 0; l < d_.layers; ++l) {
    const model::DecoderLayerOffsets& o = layout_.decoder.layers[l];
    // Attention: x += o_proj(attn(rope(q), cache + rope(k), cache + v)).
    cpu::rmsnorm_forward(ln_.data(), rstd_.data(), x, P + o.ln1_w, n, C, d_.rms_eps);
    cpu::linear_forward(q_.data(), ln_.data(), P + o.q_w, nullptr, n, C, H * D);
    cpu::linear_forward(kn_.data(), ln_.data(), P + o.k_w, nullptr, n, C, Hkv * D);
    cpu::linear_forward(vn_.data(), ln_.data(), P + o.v_w, nullptr, n, C, Hkv * D);
    cpu::rope_forward(q_.data(), q_.data(), pos_.data(), n, H, D, d_.rope_theta);
    cpu::rope_forward(kn_.data(), kn_.data(), pos_.data(), n, Hkv, D, d_.rope_theta);
    const int64_t at = (int64_t{l} * capacity_ + t0) * KD;
    std::memcpy(k_.data() + at, kn_.data(), sizeof(float) * n * KD);
    std::memcpy(v_.data() + at, vn_.data(), sizeof(float) * n * KD);
    Attend(l, n, t0);
    model::linear_residual_forward(x, x, att_.data(), P + o.o_w, nullptr, n, H * D, C);
    // MLP: x += down(silu(gate(y)) * up(y)), y = RMSNorm(x).
    cpu::rmsnorm_forward(ln_.data(), rstd_.data(), x, P + o.ln2_w, n, C, d_.rms_eps);
    cpu::linear_forward(gate_.data(), ln_.data(), P + o.gate_w, nullptr, n, C, F);
    cpu::linear_forward(up_.data(), ln_.data(), P + o.up_w, nullptr, n, C, F);
    cpu::swiglu_forward(act_.data(), gate_.data(), up_.data(), int64_t{n} * F);
    model::linear_residual_forward(x, x, act_.data(), P + o.down_w, nullptr, n, F, C);
  }
  cpu::rmsnorm_forward(final_.data(), rstd_.data(), x + int64_t{n - 1} * C,
                       P + layout_.decoder.norm_w, 1, C, d_.rms_eps);
}

std::vector<int32_t> KvCacheGenerator::Generate(
    const data::Batch& prompt, int max_new, int eos_id,
    const std::function<bool(const std::vector<int32_t>&)>& keep_going) {
  CHECK_EQ(prompt.B, 1) << "Generate takes a one-row prompt";
  CHECK_EQ(prompt.lens.size(), 1u);
  const int len = prompt.lens[0];
  CHECK(len > 0 && len <= prompt.T) << "Generate needs a non-empty prompt";
  history_.clear();
  std::vector<int32_t> out;
  if (max_new <= 0) return out;
  const float* P = model_->param_data();
  const int C = d_.width, V = d_.vocab, NP = d_.patches, NI = prompt.num_images;
  Reserve(len, len + max_new);

  // Visual tokens of the prompt's images: [NI*NP, C].
  if (NI > 0) {
    CHECK_EQ(prompt.image_size, d_.image_size) << "prompt image size differs from the model's";
    CHECK_EQ(prompt.images.size(), static_cast<size_t>(NI) * 3 * d_.image_size * d_.image_size);
    auto plan = [&](float* base) {
      model::Bump bump(base);
      vision_.Plan(bump, NI);
      projector_.Plan(bump, NI * NP);
      return bump.used();
    };
    vision_arena_.Reserve(plan(nullptr));
    plan(vision_arena_.data());
    vision_.Forward(P, prompt.images.data());
    projector_.Forward(P, vision_.output());
  }

  // Prompt rows: token embeddings, visual rows written over the image positions.
  ids_.assign(prompt.tokens.begin(), prompt.tokens.begin() + len);
  for (int i = 0; i < NI; ++i) {
    CHECK_EQ(prompt.image_row[i], 0);
    const int s = prompt.image_start[i];
    CHECK(s >= 0 && s + NP <= len) << "image " << i << " does not fit the prompt";
    std::fill(ids_.begin() + s, ids_.begin() + s + NP, -1);
  }
  for (int32_t id : ids_) CHECK_LT(id, V) << "token id out of range";
  cpu::embedding_forward(x_.data(), ids_.data(), P + layout_.decoder.embed, len, V, C);
  for (int i = 0; i < NI; ++i) {
    std::memcpy(x_.data() + int64_t{prompt.image_start[i]} * C,
                projector_.output() + int64_t{i} * NP * C, sizeof(float) * NP * C);
  }

  int rows = len, t0 = 0;
  for (int step = 0; step < max_new; ++step) {
    Step(rows, t0);
    // LM head on the last row: [1,C] @ W^T -> [1,V].
    cpu::linear_forward(logits_.data(), final_.data(), P + layout_.decoder.lm_head, nullptr, 1, C,
                        V);
    if (record_logits_) history_.push_back(logits_);
    const int next =
        static_cast<int>(std::max_element(logits_.begin(), logits_.end()) - logits_.begin());
    out.push_back(next);
    if (next == eos_id || step + 1 == max_new) break;
    if (keep_going && !keep_going(out)) break;
    t0 += rows;
    rows = 1;
    cpu::embedding_forward(x_.data(), &next, P + layout_.decoder.embed, 1, V, C);
  }
  return out;
}

}  // namespace ut::train
