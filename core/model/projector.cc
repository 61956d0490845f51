#include "core/model/projector.h"

#include "ops/activation.h"
#include "ops/gemm.h"

namespace ut::model {

void Projector::Plan(Bump& bump, int rows) {
  rows_ = rows;
  const int64_t n = int64_t{rows} * d_.width, nl = n / tp_.size;
  h_ = bump.Take(nl);
  g_ = bump.Take(nl);
  out_ = bump.Take(n);
  dg_ = bump.Take(nl);
}

// inp [Nv,Wv] -> out [Nv,C]
void Projector::Forward(const float* P, const float* inp) {
  const int N = rows_, Wv = d_.vwidth, C = d_.width, Cl = C / tp_.size;
  inp_ = inp;
  cpu::linear_forward(h_, inp, P + o_.l1_w, P + o_.l1_b, N, Wv, Cl);
  cpu::gelu_forward(g_, h_, int64_t{N} * Cl);
  if (tp_.size == 1) {
    cpu::linear_forward(out_, g_, P + o_.l2_w, P + o_.l2_b, N, C, C);
    return;
  }
  // Row-parallel linear_2: partial sums, g (all-reduce), then the bias once.
  cpu::linear_forward(out_, g_, P + o_.l2_w, nullptr, N, Cl, C);
  ReduceFromTpRegion(tp_, out_, int64_t{N} * C, "projector linear_2");
  const float* b = P + o_.l2_b;
  for (int64_t r = 0; r < N; ++r) {
    for (int c = 0; c < C; ++c) out_[r * C + c] += b[c];
  }
}

// dout [Nv,C] -> dinp [Nv,Wv]
void Projector::Backward(const float* P, float* G, const float* dout, float* dinp) {
  const int N = rows_, Wv = d_.vwidth, C = d_.width, Cl = C / tp_.size;
  cpu::linear_backward(dg_, G + o_.l2_w, G + o_.l2_b, dout, g_, P + o_.l2_w, N, Cl, C);
  cpu::gelu_backward(dg_, h_, dg_, int64_t{N} * Cl);
  cpu::linear_backward(dinp, G + o_.l1_w, G + o_.l1_b, dg_, inp_, P + o_.l1_w, N, Wv, Cl);
  CopyToTpRegionBackward(tp_, dinp, int64_t{N} * Wv, "projector linear_1 backward");
}

}  // namespace ut::model
