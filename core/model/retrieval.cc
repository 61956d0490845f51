#include "core/model/retrieval.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "glog/logging.h"
#include "ops/activation.h"
#include "ops/gemm.h"

namespace ut::model {
namespace {

constexpr float kNormEps = 1e-12f;

}  // namespace

void RetrievalHead::Forward(const float* params, const float* final, int B, int T,
                            const std::vector<data::SliceSpan>& spans, float* r) {
  const int C = d_.width, R = d_.retrieval;
  S_ = static_cast<int>(spans.size());
  T_ = T;
  spans_.clear();
  for (const data::SliceSpan& s : spans) {
    CHECK(s.row >= 0 && s.row < B && s.start >= 0 && s.start < s.end && s.end <= T)
        << "slice span row " << s.row << " [" << s.start << "," << s.end
        << ") is outside the batch [" << B << "," << T << "] or empty";
    spans_.push_back({s.row, s.start, s.end, s.is_image});
  }
  if (S_ == 0) return;
  e_.assign(static_cast<size_t>(S_) * C, 0.0f);
  h_.resize(static_cast<size_t>(S_) * R);
  g_.resize(h_.size());
  z_.resize(h_.size());
  r_.resize(h_.size());
  norm_.resize(S_);

  // e [S,C]: last token (text) or mean over the visual tokens (image).
  for (int s = 0; s < S_; ++s) {
    const Span& sp = spans_[s];
    float* e = e_.data() + static_cast<int64_t>(s) * C;
    const float* row = final + static_cast<int64_t>(sp.row) * T * C;
    if (!sp.is_image) {
      std::memcpy(e, row + static_cast<int64_t>(sp.end - 1) * C, sizeof(float) * C);
      continue;
    }
    for (int t = sp.start; t < sp.end; ++t) {
      const float* x = row + static_cast<int64_t>(t) * C;
      for (int c = 0; c < C; ++c) e[c] += x[c];
    }
    const float inv = 1.0f / static_cast<float>(sp.end - sp.start);
    for (int c = 0; c < C; ++c) e[c] *= inv;
  }
  // Two-layer GELU MLP, then L2 normalisation.
  cpu::linear_forward(h_.data(), e_.data(), params + o_.l1_w, params + o_.l1_b, S_, C, R);
  cpu::gelu_forward(g_.data(), h_.data(), static_cast<int64_t>(S_) * R);
  cpu::linear_forward(z_.data(), g_.data(), params + o_.l2_w, params + o_.l2_b, S_, R, R);
  for (int s = 0; s < S_; ++s) {
    const float* z = z_.data() + static_cast<int64_t>(s) * R;
    double sq = 0;
    for (int c = 0; c < R; ++c) sq += double{z[c]} * z[c];
    const float n = std::max(static_cast<float>(std::sqrt(sq)), kNormEps);
    norm_[s] = n;
    float* out = r_.data() + static_cast<int64_t>(s) * R;
    for (int c = 0; c < R; ++c) out[c] = z[c] / n;
  }
  std::memcpy(r, r_.data(), sizeof(float) * r_.size());
}

void RetrievalHead::Backward(const float* params, float* grads, const float* dr, float* dfinal) {
  if (S_ == 0) return;
  const int C = d_.width, R = d_.retrieval;
  dz_.resize(static_cast<size_t>(S_) * R);
  dg_.resize(dz_.size());
  de_.resize(static_cast<size_t>(S_) * C);
  // r = z/n: dz = (dr - r <r,dr>) / n (n clamped: dz = dr / eps).
  for (int s = 0; s < S_; ++s) {
    const float* rs = r_.data() + static_cast<int64_t>(s) * R;
    const float* d = dr + static_cast<int64_t>(s) * R;
    float* dz = dz_.data() + static_cast<int64_t>(s) * R;
    const float n = norm_[s];
    double dot = 0;
    if (n > kNormEps) {
      for (int c = 0; c < R; ++c) dot += double{rs[c]} * d[c];
    }
    for (int c = 0; c < R; ++c) dz[c] = (d[c] - rs[c] * static_cast<float>(dot)) / n;
  }
  cpu::linear_backward(dg_.data(), grads + o_.l2_w, grads + o_.l2_b, dz_.data(), g_.data(),
                       params + o_.l2_w, S_, R, R);
  cpu::gelu_backward(dg_.data(), h_.data(), dg_.data(), static_cast<int64_t>(S_) * R);
  cpu::linear_backward(de_.data(), grads + o_.l1_w, grads + o_.l1_b, dg_.data(), e_.data(),
                       params + o_.l1_w, S_, C, R);
  // Scatter de [S,C] back to the slices' positions of dfinal [B,T,C].
  for (int s = 0; s < S_; ++s) {
    const Span& sp = spans_[s];
    const float* de = de_.data() + static_cast<int64_t>(s) * C;
    float* row = dfinal + static_cast<int64_t>(sp.row) * T_ * C;
    if (!sp.is_image) {
      float* x = row + static_cast<int64_t>(sp.end - 1) * C;
      for (int c = 0; c < C; ++c) x[c] += de[c];
      continue;
    }
    const float inv = 1.0f / static_cast<float>(sp.end - sp.start);
    for (int t = sp.start; t < sp.end; ++t) {
      float* x = row + static_cast<int64_t>(t) * C;
      for (int c = 0; c < C; ++c) x[c] += de[c] * inv;
    }
  }
}

}  // namespace ut::model
