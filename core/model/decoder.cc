#include "core/model/decoder.h"

#include <cstring>

#include "core/model/common.h"
#include "glog/logging.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace ut::model {

Decoder::Decoder(const Dims& dims, const DecoderOffsets& offsets, const Tp& tp, int begin,
                 int end, bool embed, bool final_norm)
    : d_(dims),
      o_(offsets),
      tp_(tp),
      begin_(begin),
      end_(end < 0 ? dims.layers : end),
      embed_(embed),
      final_norm_(final_norm) {
  CHECK(0 <= begin_ && begin_ < end_ && end_ <= d_.layers)
      << "decoder chunk [" << begin_ << "," << end_ << ") of " << d_.layers << " layers";
  const int64_t C = d_.width, HD = int64_t{d_.heads} * d_.head_dim;
  const int64_t KD = int64_t{d_.kv_heads} * d_.head_dim;
  for (int l = begin_; l < end_; ++l) {
    const DecoderLayerOffsets& o = o_.layers[l];
    CHECK(o.k_w == o.q_w + HD * C && o.v_w == o.k_w + KD * C)
        << "decoder: q/k/v weights must be adjacent in the parameter buffer";
    CHECK(o.up_w == o.gate_w + int64_t{d_.ffn} * C)
        << "decoder: gate/up weights must be adjacent in the parameter buffer";
  }
}

void Decoder::Plan(Bump& bump, int B, int T) {
  B_ = B;
  T_ = T;
  const int L = end_ - begin_;
  const int64_t N = int64_t{B} * T, C = d_.width, F = d_.ffn;
  const int64_t HD = int64_t{d_.heads} * d_.head_dim;
  const int64_t QKV = int64_t{d_.heads + 2 * d_.kv_heads} * d_.head_dim;
  a_.res.resize(L + 1);
  for (float*& r : a_.res) r = bump.Take(N * C);
  a_.layers.resize(L);
  for (LayerActs& l : a_.layers) {
    l.ln1 = bump.Take(N * C);
    l.rstd1 = bump.Take(N);
    l.qkv = bump.Take(N * QKV);
    l.att = bump.Take(N * HD);
    l.lse = bump.Take(N * d_.heads);
    l.mid = bump.Take(N * C);
    l.ln2 = bump.Take(N * C);
    l.rstd2 = bump.Take(N);
    l.gu = bump.Take(N * 2 * F);
    l.act = bump.Take(N * F);
  }
  a_.final = bump.Take(final_norm_ ? N * C : 0);
  a_.rstd_final = bump.Take(final_norm_ ? N : 0);
  a_.dfinal = bump.Take(N * C);
  a_.dres = bump.Take(N * C);
  a_.dln = bump.Take(N * C);
  a_.datt = bump.Take(N * HD);
  a_.dqkv = bump.Take(N * QKV);
  a_.dact = bump.Take(N * F);
  a_.dgu = bump.Take(N * 2 * F);
  a_.partial = bump.Take(tp_.size > 1 ? N * C : 0);
}

// ids [N] -> res[0] [N,C]
void Decoder::Embed(const float* P, const int32_t* ids) {
  CHECK(embed_) << "Decoder::Embed on a chunk without the embedding";
  const int N = B_ * T_;
  if (tp_.size == 1) {
    cpu::embedding_forward(a_.res[0], ids, P + o_.embed, N, d_.vocab, d_.width);
    return;
  }
  // Vocab-parallel: rows [vocab_start, vocab_start + V) live here.
  local_ids_.resize(N);
  for (int n = 0; n < N; ++n) {
    const int32_t id = ids[n] - d_.vocab_start;
    local_ids_[n] = ids[n] >= 0 && id >= 0 && id < d_.vocab ? id : -1;
  }
  cpu::embedding_forward(a_.res[0], local_ids_.data(), P + o_.embed, N, d_.vocab, d_.width);
  ReduceFromTpRegion(tp_, a_.res[0], int64_t{N} * d_.width, "embed_tokens");
}

// res[0] [N,C] -> output [N,C]
void Decoder::Forward(const float* P, const int32_t* pos, const int32_t* lens) {
  const int N = B_ * T_, C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const int QKV = (H + 2 * Hkv) * D;
  const cpu::AttentionShape shape{B_, T_, H, Hkv, D, true};
  const cpu::AttentionStrides ld{QKV, QKV, QKV, H * D};
  for (int i = 0; i < end_ - begin_; ++i) {
    const DecoderLayerOffsets& o = o_.layers[begin_ + i];
    LayerActs& A = a_.layers[i];
    // Attention sub-block: mid = res + o_proj(attn(rope(q), rope(k), v)).
    // f | column-parallel [Wq; Wk; Wv] | local heads | row-parallel o_proj | g
    cpu::rmsnorm_forward(A.ln1, A.rstd1, a_.res[i], P + o.ln1_w, N, C, d_.rms_eps);
    cpu::linear_forward(A.qkv, A.ln1, P + o.q_w, nullptr, N, C, QKV);  // [Wq; Wk; Wv]
    cpu::rope_forward_strided(A.qkv, A.qkv, QKV, pos, N, H + Hkv, D, d_.rope_theta);  // q and k
    cpu::attention_forward_strided(A.att, A.lse, A.qkv, A.qkv + H * D, A.qkv + (H + Hkv) * D,
                                   lens, shape, ld);
    RowParallelResidualForward(tp_, A.mid, a_.res[i], A.att, P + o.o_w, nullptr, a_.partial, N,
                               H * D, C, "o_proj");
    // MLP sub-block: res[i+1] = mid + down(silu(gate(x)) * up(x)), x = RMSNorm(mid).
    // f | column-parallel [Wgate; Wup] | row-parallel down_proj | g
    cpu::rmsnorm_forward(A.ln2, A.rstd2, A.mid, P + o.ln2_w, N, C, d_.rms_eps);
    cpu::linear_forward(A.gu, A.ln2, P + o.gate_w, nullptr, N, C, 2 * F);  // [Wgate; Wup]
    cpu::swiglu_forward_packed(A.act, A.gu, N, F);
    RowParallelResidualForward(tp_, a_.res[i + 1], A.mid, A.act, P + o.down_w, nullptr,
                               a_.partial, N, F, C, "down_proj");
  }
  if (final_norm_) {
    cpu::rmsnorm_forward(a_.final, a_.rstd_final, a_.res[end_ - begin_], P + o_.norm_w, N, C,
                         d_.rms_eps);
  }
}

// dfinal [N,C] -> grads (+=), dres [N,C] (gradient of res[0])
void Decoder::Backward(const float* P, float* G, const int32_t* ids, const int32_t* pos,
                       const int32_t* lens, const GradReady& ready) {
  const int N = B_ * T_, C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const int QKV = (H + 2 * Hkv) * D;
  const cpu::AttentionShape shape{B_, T_, H, Hkv, D, true};
  const cpu::AttentionStrides ld{QKV, QKV, QKV, H * D};
  if (final_norm_) {
    cpu::rmsnorm_backward(a_.dres, G + o_.norm_w, a_.dfinal, a_.res[end_ - begin_],
                          P + o_.norm_w, a_.rstd_final, N, C);
    if (ready) ready(o_.norm_w, o_.norm_w + C);
  } else {
    std::memcpy(a_.dres, a_.dfinal, sizeof(float) * N * C);
  }
  for (int i = end_ - begin_ - 1; i >= 0; --i) {
    const DecoderLayerOffsets& o = o_.layers[begin_ + i];
    const LayerActs& A = a_.layers[i];
    // MLP sub-block; dres is the gradient of res[i+1] and becomes that of mid.
    cpu::linear_backward(a_.dact, G + o.down_w, nullptr, a_.dres, A.act, P + o.down_w, N, F, C);
    cpu::swiglu_backward_packed(a_.dgu, a_.dact, A.gu, N, F);
    cpu::linear_backward(a_.dln, G + o.gate_w, nullptr, a_.dgu, A.ln2, P + o.gate_w, N, C, 2 * F);
    CopyToTpRegionBackward(tp_, a_.dln, int64_t{N} * C, "gate/up backward");
    cpu::rmsnorm_backward(a_.dres, G + o.ln2_w, a_.dln, A.mid, P + o.ln2_w, A.rstd2, N, C,
                          /*accumulate_dinp=*/true);
    // Attention sub-block; dres becomes the gradient of res[i].
    cpu::linear_backward(a_.datt, G + o.o_w, nullptr, a_.dres, A.att, P + o.o_w, N, H * D, C);
    float* dqkv = a_.dqkv;
    cpu::attention_backward_strided(dqkv, dqkv + H * D, dqkv + (H + Hkv) * D, a_.datt, A.qkv,
                                    A.qkv + H * D, A.qkv + (H + Hkv) * D, A.att, A.lse, lens,
                                    shape, ld);
    cpu::rope_backward_strided(dqkv, dqkv, QKV, pos, N, H + Hkv, D, d_.rope_theta);
    cpu::linear_backward(a_.dln, G + o.q_w, nullptr, dqkv, A.ln1, P + o.q_w, N, C, QKV);
    CopyToTpRegionBackward(tp_, a_.dln, int64_t{N} * C, "q/k/v backward");
    cpu::rmsnorm_backward(a_.dres, G + o.ln1_w, a_.dln, a_.res[i], P + o.ln1_w, A.rstd1, N, C,
                          /*accumulate_dinp=*/true);
    // The block's parameters are contiguous: ln1 ... down_proj.
    if (ready) ready(o.ln1_w, o.down_w + int64_t{C} * F);
  }
  if (!embed_) return;
  const int32_t* emb_ids = tp_.size == 1 ? ids : local_ids_.data();
  cpu::embedding_backward(G + o_.embed, a_.dres, emb_ids, N, d_.vocab, C);
  if (ready) ready(o_.embed, o_.embed + int64_t{d_.vocab} * C);
}

}  // namespace ut::model
