#include "core/model/decoder.h"

#include "core/model/common.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace ut::model {

void Decoder::Plan(Bump& bump, int B, int T) {
  B_ = B;
  T_ = T;
  const int64_t N = int64_t{B} * T, C = d_.width, F = d_.ffn;
  const int64_t HD = int64_t{d_.heads} * d_.head_dim, KD = int64_t{d_.kv_heads} * d_.head_dim;
  a_.res.resize(d_.layers + 1);
  for (float*& r : a_.res) r = bump.Take(N * C);
  a_.layers.resize(d_.layers);
  for (LayerActs& l : a_.layers) {
    l.ln1 = bump.Take(N * C);
    l.rstd1 = bump.Take(N);
    l.q = bump.Take(N * HD);
    l.k = bump.Take(N * KD);
    l.v = bump.Take(N * KD);
    l.att = bump.Take(N * HD);
    l.lse = bump.Take(N * d_.heads);
    l.mid = bump.Take(N * C);
    l.ln2 = bump.Take(N * C);
    l.rstd2 = bump.Take(N);
    l.gate = bump.Take(N * F);
    l.up = bump.Take(N * F);
    l.act = bump.Take(N * F);
  }
  a_.final = bump.Take(N * C);
  a_.rstd_final = bump.Take(N);
  a_.dfinal = bump.Take(N * C);
  a_.dres = bump.Take(N * C);
  a_.dln = bump.Take(N * C);
  a_.datt = bump.Take(N * HD);
  a_.dq = bump.Take(N * HD);
  a_.dk = bump.Take(N * KD);
  a_.dv = bump.Take(N * KD);
  a_.dact = bump.Take(N * F);
  a_.dgate = bump.Take(N * F);
  a_.dup = bump.Take(N * F);
}

// ids [N] -> res[0] [N,C]
void Decoder::Embed(const float* P, const int32_t* ids) {
  cpu::embedding_forward(a_.res[0], ids, P + o_.embed, B_ * T_, d_.vocab, d_.width);
}

// res[0] [N,C] -> final [N,C]
void Decoder::Forward(const float* P, const int32_t* pos, const int32_t* lens) {
  const int N = B_ * T_, C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const cpu::AttentionShape shape{B_, T_, H, Hkv, D, true};
  for (int l = 0; l < d_.layers; ++l) {
    const DecoderLayerOffsets& o = o_.layers[l];
    LayerActs& A = a_.layers[l];
    // Attention sub-block: mid = res + o_proj(attn(rope(q), rope(k), v)).
    cpu::rmsnorm_forward(A.ln1, A.rstd1, a_.res[l], P + o.ln1_w, N, C, d_.rms_eps);
    cpu::linear_forward(A.q, A.ln1, P + o.q_w, nullptr, N, C, H * D);
    cpu::linear_forward(A.k, A.ln1, P + o.k_w, nullptr, N, C, Hkv * D);
    cpu::linear_forward(A.v, A.ln1, P + o.v_w, nullptr, N, C, Hkv * D);
    cpu::rope_forward(A.q, A.q, pos, N, H, D, d_.rope_theta);
    cpu::rope_forward(A.k, A.k, pos, N, Hkv, D, d_.rope_theta);
    cpu::attention_forward(A.att, A.lse, A.q, A.k, A.v, lens, shape);
    linear_residual_forward(A.mid, a_.res[l], A.att, P + o.o_w, nullptr, N, H * D, C);
    // MLP sub-block: res[l+1] = mid + down(silu(gate(x)) * up(x)), x = RMSNorm(mid).
    cpu::rmsnorm_forward(A.ln2, A.rstd2, A.mid, P + o.ln2_w, N, C, d_.rms_eps);
    cpu::linear_forward(A.gate, A.ln2, P + o.gate_w, nullptr, N, C, F);
    cpu::linear_forward(A.up, A.ln2, P + o.up_w, nullptr, N, C, F);
    cpu::swiglu_forward(A.act, A.gate, A.up, int64_t{N} * F);
    linear_residual_forward(a_.res[l + 1], A.mid, A.act, P + o.down_w, nullptr, N, F, C);
  }
  cpu::rmsnorm_forward(a_.final, a_.rstd_final, a_.res[d_.layers], P + o_.norm_w, N, C, d_.rms_eps);
}

// dfinal [N,C] -> grads (+=), dres [N,C] (gradient of res[0])
void Decoder::Backward(const float* P, float* G, const int32_t* ids, const int32_t* pos,
                       const int32_t* lens) {
  const int N = B_ * T_, C = d_.width, F = d_.ffn, H = d_.heads, Hkv = d_.kv_heads, D = d_.head_dim;
  const cpu::AttentionShape shape{B_, T_, H, Hkv, D, true};
  cpu::rmsnorm_backward(a_.dres, G + o_.norm_w, a_.dfinal, a_.res[d_.layers], P + o_.norm_w,
                        a_.rstd_final, N, C);
  for (int l = d_.layers - 1; l >= 0; --l) {
    const DecoderLayerOffsets& o = o_.layers[l];
    const LayerActs& A = a_.layers[l];
    // MLP sub-block; dres is the gradient of res[l+1] and becomes that of mid.
    cpu::linear_backward(a_.dact, G + o.down_w, nullptr, a_.dres, A.act, P + o.down_w, N, F, C);
    cpu::swiglu_backward(a_.dgate, a_.dup, a_.dact, A.gate, A.up, int64_t{N} * F);
    cpu::linear_backward(a_.dln, G + o.gate_w, nullptr, a_.dgate, A.ln2, P + o.gate_w, N, C, F);
    cpu::linear_backward(a_.dln, G + o.up_w, nullptr, a_.dup, A.ln2, P + o.up_w, N, C, F, true);
    cpu::rmsnorm_backward(a_.dres, G + o.ln2_w, a_.dln, A.mid, P + o.ln2_w, A.rstd2, N, C,
                          /*accumulate_dinp=*/true);
    // Attention sub-block; dres becomes the gradient of res[l].
    cpu::linear_backward(a_.datt, G + o.o_w, nullptr, a_.dres, A.att, P + o.o_w, N, H * D, C);
    cpu::attention_backward(a_.dq, a_.dk, a_.dv, a_.datt, A.q, A.k, A.v, A.att, A.lse, lens, shape);
    cpu::rope_backward(a_.dq, a_.dq, pos, N, H, D, d_.rope_theta);
    cpu::rope_backward(a_.dk, a_.dk, pos, N, Hkv, D, d_.rope_theta);
    cpu::linear_backward(a_.dln, G + o.q_w, nullptr, a_.dq, A.ln1, P + o.q_w, N, C, H * D);
    cpu::linear_backward(a_.dln, G + o.k_w, nullptr, a_.dk, A.ln1, P + o.k_w, N, C, Hkv * D, true);
    cpu::linear_backward(a_.dln, G + o.v_w, nullptr, a_.dv, A.ln1, P + o.v_w, N, C, Hkv * D, true);
    cpu::rmsnorm_backward(a_.dres, G + o.ln1_w, a_.dln, a_.res[l], P + o.ln1_w, A.rstd1, N, C,
                          /*accumulate_dinp=*/true);
  }
  cpu::embedding_backward(G + o_.embed, a_.dres, ids, N, d_.vocab, C);
}

}  // namespace ut::model
