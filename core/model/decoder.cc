#include "core/model/decoder.h"

#include "core/model/common.h"
#include "glog/logging.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace ut::model {

Decoder::Decoder(const Dims& dims, const DecoderOffsets& offsets) : d_(dims), o_(offsets) {
  const int64_t C = d_.width, HD = int64_t{d_.heads} * d_.head_dim;
  const int64_t KD = int64_t{d_.kv_heads} * d_.head_dim;
  for (const DecoderLayerOffsets& o : o_.layers) {
    CHECK(o.k_w == o.q_w + HD * C && o.v_w == o.k_w + KD * C)
        << "decoder: q/k/v weights must be adjacent in the parameter buffer";
    CHECK(o.up_w == o.gate_w + int64_t{d_.ffn} * C)
        << "decoder: gate/up weights must be adjacent in the parameter buffer";
  }
}

void Decoder::Plan(Bump& bump, int B, int T) {
  B_ = B;
  T_ = T;
  const int64_t N = int64_t{B} * T, C = d_.width, F = d_.ffn;
  const int64_t HD = int64_t{d_.heads} * d_.head_dim;
  const int64_t QKV = int64_t{d_.heads + 2 * d_.kv_heads} * d_.head_dim;
  a_.res.resize(d_.layers + 1);
  for (float*& r : a_.res) r = bump.Take(N * C);
  a_.layers.resize(d_.layers);
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
  a_.final = bump.Take(N * C);
  a_.rstd_final = bump.Take(N);
  a_.dfinal = bump.Take(N * C);
  a_.dres = bump.Take(N * C);
  a_.dln = bump.Take(N * C);
  a_.datt = bump.Take(N * HD);
  a_.dqkv = bump.Take(N * QKV);
  a_.dact = bump.Take(N * F);
  a_.dgu = bump.Take(N * 2 * F);
}

// ids [N] -> res[0] [N,C]
void Decoder::Embed(const float* P, const int32_t* ids) {
  cpu::embedding_forward(a_.res[0], ids, P + o_.embed, B_ * T_, d_.vocab, d_.width);
}

// res[0] [N,C] -> final [N,C]
void Decoder::Forward(const float* P, const int32_t* pos, const int32_t* lens) {
  const int N = B_ * T_, C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const int QKV = (H + 2 * Hkv) * D;
  const cpu::AttentionShape shape{B_, T_, H, Hkv, D, true};
  const cpu::AttentionStrides ld{QKV, QKV, QKV, H * D};
  for (int l = 0; l < d_.layers; ++l) {
    const DecoderLayerOffsets& o = o_.layers[l];
    LayerActs& A = a_.layers[l];
    // Attention sub-block: mid = res + o_proj(attn(rope(q), rope(k), v)).
    cpu::rmsnorm_forward(A.ln1, A.rstd1, a_.res[l], P + o.ln1_w, N, C, d_.rms_eps);
    cpu::linear_forward(A.qkv, A.ln1, P + o.q_w, nullptr, N, C, QKV);  // [Wq; Wk; Wv]
    cpu::rope_forward_strided(A.qkv, A.qkv, QKV, pos, N, H + Hkv, D, d_.rope_theta);  // q and k
    cpu::attention_forward_strided(A.att, A.lse, A.qkv, A.qkv + H * D, A.qkv + (H + Hkv) * D,
                                   lens, shape, ld);
    linear_residual_forward(A.mid, a_.res[l], A.att, P + o.o_w, nullptr, N, H * D, C);
    // MLP sub-block: res[l+1] = mid + down(silu(gate(x)) * up(x)), x = RMSNorm(mid).
    cpu::rmsnorm_forward(A.ln2, A.rstd2, A.mid, P + o.ln2_w, N, C, d_.rms_eps);
    cpu::linear_forward(A.gu, A.ln2, P + o.gate_w, nullptr, N, C, 2 * F);  // [Wgate; Wup]
    cpu::swiglu_forward_packed(A.act, A.gu, N, F);
    linear_residual_forward(a_.res[l + 1], A.mid, A.act, P + o.down_w, nullptr, N, F, C);
  }
  cpu::rmsnorm_forward(a_.final, a_.rstd_final, a_.res[d_.layers], P + o_.norm_w, N, C, d_.rms_eps);
}

// dfinal [N,C] -> grads (+=), dres [N,C] (gradient of res[0])
void Decoder::Backward(const float* P, float* G, const int32_t* ids, const int32_t* pos,
                       const int32_t* lens) {
  const int N = B_ * T_, C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const int QKV = (H + 2 * Hkv) * D;
  const cpu::AttentionShape shape{B_, T_, H, Hkv, D, true};
  const cpu::AttentionStrides ld{QKV, QKV, QKV, H * D};
  cpu::rmsnorm_backward(a_.dres, G + o_.norm_w, a_.dfinal, a_.res[d_.layers], P + o_.norm_w,
                        a_.rstd_final, N, C);
  for (int l = d_.layers - 1; l >= 0; --l) {
    const DecoderLayerOffsets& o = o_.layers[l];
    const LayerActs& A = a_.layers[l];
    // MLP sub-block; dres is the gradient of res[l+1] and becomes that of mid.
    cpu::linear_backward(a_.dact, G + o.down_w, nullptr, a_.dres, A.act, P + o.down_w, N, F, C);
    cpu::swiglu_backward_packed(a_.dgu, a_.dact, A.gu, N, F);
    cpu::linear_backward(a_.dln, G + o.gate_w, nullptr, a_.dgu, A.ln2, P + o.gate_w, N, C, 2 * F);
    cpu::rmsnorm_backward(a_.dres, G + o.ln2_w, a_.dln, A.mid, P + o.ln2_w, A.rstd2, N, C,
                          /*accumulate_dinp=*/true);
    // Attention sub-block; dres becomes the gradient of res[l].
    cpu::linear_backward(a_.datt, G + o.o_w, nullptr, a_.dres, A.att, P + o.o_w, N, H * D, C);
    float* dqkv = a_.dqkv;
    cpu::attention_backward_strided(dqkv, dqkv + H * D, dqkv + (H + Hkv) * D, a_.datt, A.qkv,
                                    A.qkv + H * D, A.qkv + (H + Hkv) * D, A.att, A.lse, lens,
                                    shape, ld);
    cpu::rope_backward_strided(dqkv, dqkv, QKV, pos, N, H + Hkv, D, d_.rope_theta);
    cpu::linear_backward(a_.dln, G + o.q_w, nullptr, dqkv, A.ln1, P + o.q_w, N, C, QKV);
    cpu::rmsnorm_backward(a_.dres, G + o.ln1_w, a_.dln, a_.res[l], P + o.ln1_w, A.rstd1, N, C,
                          /*accumulate_dinp=*/true);
  }
  cpu::embedding_backward(G + o_.embed, a_.dres, ids, N, d_.vocab, C);
}

}  // namespace ut::model
