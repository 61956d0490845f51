// The multimodal projector: visual features [Nv,Wv] -> LLM width [Nv,C] via
// linear_1 (Wv->C) + GELU-tanh + linear_2 (C->C), both with biases.
#pragma once

#include "core/model/arena.h"
#include "core/model/layout.h"

namespace ut::model {

class Projector {
 public:
  Projector(const Dims& dims, const ProjectorOffsets& offsets) : d_(dims), o_(offsets) {}

  void Plan(Bump& bump, int rows);

  // inp [Nv,Wv] -> output() [Nv,C]. inp must stay alive until Backward.
  void Forward(const float* params, const float* inp);
  const float* output() const { return out_; }

  // dout [Nv,C] (read only) -> dinp [Nv,Wv] (written), parameter grads (+=).
  void Backward(const float* params, float* grads, const float* dout, float* dinp);

 private:
  Dims d_;
  ProjectorOffsets o_;
  int rows_ = 0;
  const float* inp_ = nullptr;
  float* h_ = nullptr;    // [Nv,C] linear_1 output (pre-GELU)
  float* g_ = nullptr;    // [Nv,C] GELU output
  float* out_ = nullptr;  // [Nv,C]
  float* dg_ = nullptr;   // [Nv,C] backward scratch
};

}  // namespace ut::model
