// The vision tower: patchify, pixel normalisation ((x - pixel_mean) /
// pixel_std, model.vision), GEMM patch embedding, learned position
// embedding, pre-LN blocks (LayerNorm, bidirectional MHA with biases, GELU-tanh
// MLP), post LayerNorm. No class token. Shapes use NI images, NP patches per
// image, Nv = NI*NP rows, Wv width, Fv MLP width, Hv heads of Dv.
// Tensor parallel (tp.h; dims from LocalDims): q/k/v and fc1 are
// column-parallel, out_proj and fc2 row-parallel; Hv and Fv are then this
// rank's share and Wa = Hv*Dv (== Wv without TP) is the local attention width.
#pragma once

#include <vector>

#include "core/model/arena.h"
#include "core/model/layout.h"
#include "core/model/tp.h"

namespace ut::model {

class VisionTower {
 public:
  VisionTower(const Dims& dims, const VitOffsets& offsets, const Tp& tp = {})
      : d_(dims), o_(offsets), tp_(tp) {}

  // Carves activations for `images` images out of the arena (bump order
  // depends only on `images`).
  void Plan(Bump& bump, int images);

  // images [NI,3,S,S] -> output() [Nv,Wv] (after post_layernorm).
  void Forward(const float* params, const float* images);
  const float* output() const { return a_.post; }
  // Scratch [Nv,Wv] for the caller to write the gradient of output() into.
  float* output_grad() { return a_.dpost; }

  // dout [Nv,Wv] (gradient of output(); read only) -> parameter grads (+=).
  void Backward(const float* params, float* grads, const float* dout);

 private:
  struct LayerActs {
    float* ln1;    // [Nv,Wv] layer_norm1 output
    float* mean1;  // [Nv]
    float* rstd1;  // [Nv]
    float* q;      // [Nv,Wa] = [NI,NP,Hv,Dv]
    float* k;      // [Nv,Wa]
    float* v;      // [Nv,Wa]
    float* att;    // [Nv,Wa] attention output before out_proj
    float* lse;    // [NI,Hv,NP]
    float* mid;    // [Nv,Wv] residual after attention
    float* ln2;    // [Nv,Wv]
    float* mean2;  // [Nv]
    float* rstd2;  // [Nv]
    float* h;      // [Nv,Fv] fc1 output (pre-GELU)
    float* g;      // [Nv,Fv] GELU output
  };
  struct Acts {
    float* patches;           // [Nv,3PP]
    std::vector<float*> res;  // vlayers+1 of [Nv,Wv]; res[l] is the input of layer l
    std::vector<LayerActs> layers;
    float* post;       // [Nv,Wv]
    float* mean_post;  // [Nv]
    float* rstd_post;  // [Nv]
    float* partial;    // [Nv,Wv] row-parallel partial sums (TP only)
    // Backward scratch.
    float* dpost;  // [Nv,Wv] gradient of post (filled by the caller)
    float* dres;   // [Nv,Wv] gradient of the residual stream
    float* dln;    // [Nv,Wv]
    float* datt;   // [Nv,Wa]
    float* dq;     // [Nv,Wa]
    float* dk;     // [Nv,Wa]
    float* dv;     // [Nv,Wa]
    float* dh;     // [Nv,Fv]
  };

  Dims d_;
  VitOffsets o_;
  Tp tp_;
  int images_ = 0;
  Acts a_{};
};

}  // namespace ut::model
