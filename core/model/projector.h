// The multimodal projector: visual features [Nv,Wv] -> LLM width [Nv,C] via
// linear_1 (Wv->C) + GELU-tanh + linear_2 (C->C), both with biases.
// Tensor parallel (tp.h): linear_1 column-parallel, linear_2 row-parallel, so
// the hidden width is Cl = C / tp_size on each rank.
#pragma once

#include "core/model/arena.h"
#include "core/model/layout.h"
#include "core/model/tp.h"

namespace ut::model {

class Projector {
 public:
  Projector(const Dims& dims, const ProjectorOffsets& offsets, const Tp& tp = {})
      : d_(dims), o_(offsets), tp_(tp) {}

  void Plan(Bump& bump, int rows);

  // inp [Nv,Wv] -> output() [Nv,C]. inp must stay alive until Backward.
  void Forward(const float* params, const float* inp);
  const float* output() const { return out_; }

  // dout [Nv,C] (read only) -> dinp [Nv,Wv] (written), parameter grads (+=).
  void Backward(const float* params, float* grads, const float* dout, float* dinp);

 private:
  Dims d_;
  ProjectorOffsets o_;
  Tp tp_;
  int rows_ = 0;
  const float* inp_ = nullptr;
  float* h_ = nullptr;    // [Nv,Cl] linear_1 output (pre-GELU)
  float* g_ = nullptr;    // [Nv,Cl] GELU output
  float* out_ = nullptr;  // [Nv,C]
  float* dg_ = nullptr;   // [Nv,Cl] backward scratch
};

}  // namespace ut::model
