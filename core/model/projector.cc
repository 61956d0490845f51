#include "core/model/projector.h"

#include "ops/activation.h"
#include "ops/gemm.h"

namespace ut::model {

void Projector::Plan(Bump& bump, int rows) {
  rows_ = rows;
  const int64_t n = int64_t{rows} * d_.width;
  h_ = bump.Take(n);
  g_ = bump.Take(n);
  out_ = bump.Take(n);
  dg_ = bump.Take(n);
}

// inp [Nv,Wv] -> out [Nv,C]
void Projector::Forward(const float* P, const float* inp) {
  const int N = rows_, Wv = d_.vwidth, C = d_.width;
  inp_ = inp;
  cpu::linear_forward(h_, inp, P + o_.l1_w, P + o_.l1_b, N, Wv, C);
  cpu::gelu_forward(g_, h_, int64_t{N} * C);
  cpu::linear_forward(out_, g_, P + o_.l2_w, P + o_.l2_b, N, C, C);
}

// dout [Nv,C] -> dinp [Nv,Wv]
void Projector::Backward(const float* P, float* G, const float* dout, float* dinp) {
  const int N = rows_, Wv = d_.vwidth, C = d_.width;
  cpu::linear_backward(dg_, G + o_.l2_w, G + o_.l2_b, dout, g_, P + o_.l2_w, N, C, C);
  cpu::gelu_backward(dg_, h_, dg_, int64_t{N} * C);
  cpu::linear_backward(dinp, G + o_.l1_w, G + o_.l1_b, dg_, inp_, P + o_.l1_w, N, Wv, C);
}

}  // namespace ut::model
