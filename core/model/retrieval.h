// The retrieval head (DESIGN.md section 1): one embedding per slice from the
// decoder's final hidden states, then the retrieval projector.
//
//   e [S,C]  slice embedding: a text slice takes its last token's final hidden
//            state, an image slice the mean over its visual tokens
//   h [S,R]  = e @ W1^T + b1          (retrieval_projector.linear_1)
//   g [S,R]  = gelu_tanh(h)
//   z [S,R]  = g @ W2^T + b2          (retrieval_projector.linear_2)
//   r [S,R]  = z / max(|z|, 1e-12)    (L2-normalised rows)
#pragma once

#include <vector>

#include "core/model/layout.h"
#include "data/batch.h"

namespace ut::model {

class RetrievalHead {
 public:
  RetrievalHead(const Dims& dims, const RetrievalOffsets& offsets) : d_(dims), o_(offsets) {}

  // final [B,T,C] (after the final norm), spans (row < B, 0 <= start < end <= T)
  // -> r [S,R] (written). Keeps what Backward needs (small: S rows).
  void Forward(const float* params, const float* final, int B, int T,
               const std::vector<data::SliceSpan>& spans, float* r);

  // dr [S,R] -> dfinal [B,T,C] (+=, only at the slices' positions),
  // projector parameter gradients (+=). For the last Forward.
  void Backward(const float* params, float* grads, const float* dr, float* dfinal);

  int slices() const { return S_; }

 private:
  struct Span {
    int row, start, end;
    bool is_image;
  };

  Dims d_;
  RetrievalOffsets o_;
  int S_ = 0, T_ = 0;
  std::vector<Span> spans_;
  std::vector<float> e_, h_, g_, z_, r_;  // [S,C], [S,R] x 4
  std::vector<float> norm_;               // [S] max(|z|, 1e-12)
  std::vector<float> dz_, dg_, de_;       // backward scratch
};

}  // namespace ut::model
