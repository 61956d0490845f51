#include "core/model/vit.h"

#include "core/model/common.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/norm.h"

namespace ut::model {

void VisionTower::Plan(Bump& bump, int images) {
  images_ = images;
  const int64_t Nv = int64_t{images} * d_.patches, Wv = d_.vwidth, Fv = d_.vmlp;
  const int64_t Wa = int64_t{d_.vheads} * d_.vhead_dim;
  a_.patches = bump.Take(Nv * d_.patch_dim);
  a_.res.resize(d_.vlayers + 1);
  for (float*& r : a_.res) r = bump.Take(Nv * Wv);
  a_.layers.resize(d_.vlayers);
  for (LayerActs& l : a_.layers) {
    l.ln1 = bump.Take(Nv * Wv);
    l.mean1 = bump.Take(Nv);
    l.rstd1 = bump.Take(Nv);
    l.q = bump.Take(Nv * Wa);
    l.k = bump.Take(Nv * Wa);
    l.v = bump.Take(Nv * Wa);
    l.att = bump.Take(Nv * Wa);
    l.lse = bump.Take(Nv * d_.vheads);
    l.mid = bump.Take(Nv * Wv);
    l.ln2 = bump.Take(Nv * Wv);
    l.mean2 = bump.Take(Nv);
    l.rstd2 = bump.Take(Nv);
    l.h = bump.Take(Nv * Fv);
    l.g = bump.Take(Nv * Fv);
  }
  a_.post = bump.Take(Nv * Wv);
  a_.mean_post = bump.Take(Nv);
  a_.rstd_post = bump.Take(Nv);
  a_.partial = bump.Take(tp_.size > 1 ? Nv * Wv : 0);
  a_.dpost = bump.Take(Nv * Wv);
  a_.dres = bump.Take(Nv * Wv);
  a_.dln = bump.Take(Nv * Wv);
  a_.datt = bump.Take(Nv * Wa);
  a_.dq = bump.Take(Nv * Wa);
  a_.dk = bump.Take(Nv * Wa);
  a_.dv = bump.Take(Nv * Wa);
  a_.dh = bump.Take(Nv * Fv);
}

// images [NI,3,S,S] -> post [Nv,Wv]
void VisionTower::Forward(const float* P, const float* images) {
  const int NI = images_, NP = d_.patches, Nv = NI * NP, Wv = d_.vwidth, Fv = d_.vmlp;
  const int Wa = d_.vheads * d_.vhead_dim;
  const float eps = d_.ln_eps;
  const cpu::AttentionShape shape{NI, NP, d_.vheads, d_.vheads, d_.vhead_dim, false};

  // Patches [Nv,3PP], normalised: (x - pixel_mean) / pixel_std. Backward needs
  // nothing more: dWp reads these stored (normalised) patches, and no gradient
  // flows to the pixels.
  cpu::patchify_forward(a_.patches, images, NI, d_.image_size, d_.image_size, d_.patch);
  if (d_.pixel_mean != 0.0f || d_.pixel_std != 1.0f) {
    const float mean = d_.pixel_mean, stdev = d_.pixel_std;
    const int64_t n = int64_t{Nv} * d_.patch_dim;
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) a_.patches[i] = (a_.patches[i] - mean) / stdev;
  }
  // Embeddings: res[0] [Nv,Wv] = patches [Nv,3PP] @ Wp^T + bp + pos[p].
  cpu::linear_forward(a_.res[0], a_.patches, P + o_.patch_w, P + o_.patch_b, Nv, d_.patch_dim, Wv);
  const float* pos = P + o_.pos;
#pragma omp parallel for
  for (int r = 0; r < Nv; ++r) {
    float* x = a_.res[0] + int64_t{r} * Wv;
    const float* pe = pos + int64_t{r % NP} * Wv;
    for (int c = 0; c < Wv; ++c) x[c] += pe[c];
  }

  for (int l = 0; l < d_.vlayers; ++l) {
    const VitLayerOffsets& o = o_.layers[l];
    LayerActs& A = a_.layers[l];
    // Attention sub-block: mid = res + out_proj(MHA(LN1(res))).
    cpu::layernorm_forward(A.ln1, A.mean1, A.rstd1, a_.res[l], P + o.ln1_w, P + o.ln1_b, Nv, Wv,
                           eps);
    // f (identity) | column-parallel q/k/v | local heads | row-parallel out_proj | g
    cpu::linear_forward(A.q, A.ln1, P + o.q_w, P + o.q_b, Nv, Wv, Wa);
    cpu::linear_forward(A.k, A.ln1, P + o.k_w, P + o.k_b, Nv, Wv, Wa);
    cpu::linear_forward(A.v, A.ln1, P + o.v_w, P + o.v_b, Nv, Wv, Wa);
    cpu::attention_forward(A.att, A.lse, A.q, A.k, A.v, nullptr, shape);
    RowParallelResidualForward(tp_, A.mid, a_.res[l], A.att, P + o.o_w, P + o.o_b, a_.partial, Nv,
                               Wa, Wv, "vit out_proj");
    // MLP sub-block: res[l+1] = mid + fc2(gelu(fc1(LN2(mid)))).
    cpu::layernorm_forward(A.ln2, A.mean2, A.rstd2, A.mid, P + o.ln2_w, P + o.ln2_b, Nv, Wv, eps);
    cpu::linear_forward(A.h, A.ln2, P + o.fc1_w, P + o.fc1_b, Nv, Wv, Fv);
    cpu::gelu_forward(A.g, A.h, int64_t{Nv} * Fv);
    RowParallelResidualForward(tp_, a_.res[l + 1], A.mid, A.g, P + o.fc2_w, P + o.fc2_b,
                               a_.partial, Nv, Fv, Wv, "vit fc2");
  }
  cpu::layernorm_forward(a_.post, a_.mean_post, a_.rstd_post, a_.res[d_.vlayers], P + o_.post_w,
                         P + o_.post_b, Nv, Wv, eps);
}

// dout [Nv,Wv] -> grads (+=)
void VisionTower::Backward(const float* P, float* G, const float* dout) {
  const int NI = images_, NP = d_.patches, Nv = NI * NP, Wv = d_.vwidth, Fv = d_.vmlp;
  const int Wa = d_.vheads * d_.vhead_dim;
  const cpu::AttentionShape shape{NI, NP, d_.vheads, d_.vheads, d_.vhead_dim, false};

  cpu::layernorm_backward(a_.dres, G + o_.post_w, G + o_.post_b, dout, a_.res[d_.vlayers],
                          P + o_.post_w, a_.mean_post, a_.rstd_post, Nv, Wv);
  for (int l = d_.vlayers - 1; l >= 0; --l) {
    const VitLayerOffsets& o = o_.layers[l];
    const LayerActs& A = a_.layers[l];
    // MLP sub-block; dres is the gradient of res[l+1] and becomes that of mid.
    cpu::linear_backward(a_.dh, G + o.fc2_w, G + o.fc2_b, a_.dres, A.g, P + o.fc2_w, Nv, Fv, Wv);
    cpu::gelu_backward(a_.dh, A.h, a_.dh, int64_t{Nv} * Fv);
    cpu::linear_backward(a_.dln, G + o.fc1_w, G + o.fc1_b, a_.dh, A.ln2, P + o.fc1_w, Nv, Wv, Fv);
    CopyToTpRegionBackward(tp_, a_.dln, int64_t{Nv} * Wv, "vit fc1 backward");
    cpu::layernorm_backward(a_.dres, G + o.ln2_w, G + o.ln2_b, a_.dln, A.mid, P + o.ln2_w, A.mean2,
                            A.rstd2, Nv, Wv, /*accumulate_dinp=*/true);
    // Attention sub-block; dres becomes the gradient of res[l].
    cpu::linear_backward(a_.datt, G + o.o_w, G + o.o_b, a_.dres, A.att, P + o.o_w, Nv, Wa, Wv);
    cpu::attention_backward(a_.dq, a_.dk, a_.dv, a_.datt, A.q, A.k, A.v, A.att, A.lse, nullptr,
                            shape);
    cpu::linear_backward(a_.dln, G + o.q_w, G + o.q_b, a_.dq, A.ln1, P + o.q_w, Nv, Wv, Wa);
    cpu::linear_backward(a_.dln, G + o.k_w, G + o.k_b, a_.dk, A.ln1, P + o.k_w, Nv, Wv, Wa, true);
    cpu::linear_backward(a_.dln, G + o.v_w, G + o.v_b, a_.dv, A.ln1, P + o.v_w, Nv, Wv, Wa, true);
    CopyToTpRegionBackward(tp_, a_.dln, int64_t{Nv} * Wv, "vit q/k/v backward");
    cpu::layernorm_backward(a_.dres, G + o.ln1_w, G + o.ln1_b, a_.dln, a_.res[l], P + o.ln1_w,
                            A.mean1, A.rstd1, Nv, Wv, /*accumulate_dinp=*/true);
  }
  // Embeddings: dpos [NP,Wv] += sum over images; patch weight/bias via the GEMM.
  float* dpos = G + o_.pos;
#pragma omp parallel for
  for (int p = 0; p < NP; ++p) {
    for (int i = 0; i < NI; ++i) {
      const float* g = a_.dres + (int64_t{i} * NP + p) * Wv;
      for (int c = 0; c < Wv; ++c) dpos[int64_t{p} * Wv + c] += g[c];
    }
  }
  cpu::linear_backward(nullptr, G + o_.patch_w, G + o_.patch_b, a_.dres, a_.patches, P + o_.patch_w,
                       Nv, d_.patch_dim, Wv);
}

}  // namespace ut::model
