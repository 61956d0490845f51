// GELU (tanh), SwiGLU and row softmax on the CPU. Pointwise loops are
// OpenMP-parallel and vectorised with internal::FastExp.
#include "ops/activation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/vec_math.h"

namespace ut::cpu {
namespace {

using internal::FastExp;

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;
constexpr int64_t kMinParallel = 1 << 14;  // elements below which we stay serial

// gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = k (x + c x^3).
// The sigmoid form has no cancellation for large negative x.
inline float GeluSigmoid(float x) {
  const float u = kGeluK * (x + kGeluC * x * x * x);
  return 1.0f / (1.0f + FastExp(-2.0f * u));
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + FastExp(-x)); }

}  // namespace

// inp [n] -> out [n].
void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) out[i] = inp[i] * GeluSigmoid(inp[i]);
}

// dinp [n] = dout * gelu'(inp), where with s = sigmoid(2u):
//   gelu'(x) = s + x * s * (1 - s) * 2k (1 + 3c x^2).
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float s = GeluSigmoid(x);
    const float du = 2.0f * kGeluK * (1.0f + 3.0f * kGeluC * x * x);
    dinp[i] = dout[i] * (s + x * s * (1.0f - s) * du);
  }
}

// gate, up [n] -> out [n] = gate * sigmoid(gate) * up.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * Sigmoid(gate[i]) * up[i];
}

// dout [n] -> dgate [n] = dout * up * silu'(gate), dup [n] = dout * silu(gate),
// silu'(g) = s + g s (1 - s), s = sigmoid(g).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kMinParallel)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float s = Sigmoid(g);
    const float d = dout[i];
    const float u = up[i];
    dgate[i] = d * u * (s + g * s * (1.0f - s));
    dup[i] = d * g * s;
  }
}

// gu [N,2F] = [gate | up] per row -> out [N,F] = gate * sigmoid(gate) * up.
void swiglu_forward_packed(float* out, const float* gu, int N, int F) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * F >= kMinParallel)
  for (int n = 0; n < N; ++n) {
    const float* gate = gu + int64_t{n} * 2 * F;
    const float* up = gate + F;
    float* y = out + int64_t{n} * F;
#pragma omp simd
    for (int i = 0; i < F; ++i) y[i] = gate[i] * Sigmoid(gate[i]) * up[i];
  }
}

// dout [N,F] -> dgu [N,2F] = [dout * up * silu'(gate) | dout * silu(gate)] per row.
void swiglu_backward_packed(float* dgu, const float* dout, const float* gu, int N, int F) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * F >= kMinParallel)
  for (int n = 0; n < N; ++n) {
    const float* gate = gu + int64_t{n} * 2 * F;
    const float* up = gate + F;
    const float* dy = dout + int64_t{n} * F;
    float* dgate = dgu + int64_t{n} * 2 * F;
    float* dup = dgate + F;
#pragma omp simd
    for (int i = 0; i < F; ++i) {
      const float g = gate[i];
      const float s = Sigmoid(g);
      const float d = dy[i];
      dgate[i] = d * up[i] * (s + g * s * (1.0f - s));
      dup[i] = d * g * s;
    }
  }
}

// inp [N,C] -> out [N,C] (may alias): exp(x - max) / sum.
void softmax_forward(float* out, const float* inp, int N, int C) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= kMinParallel)
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    float* y = out + static_cast<int64_t>(n) * C;
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (int c = 0; c < C; ++c) mx = std::max(mx, x[c]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) {
      y[c] = FastExp(x[c] - mx);
      sum += y[c];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int c = 0; c < C; ++c) y[c] *= inv;
  }
}

// dinp [N,C] = out * (dout - sum(dout * out)) (may alias dout).
void softmax_backward(float* dinp, const float* dout, const float* out, int N, int C) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= kMinParallel)
  for (int n = 0; n < N; ++n) {
    const float* dy = dout + static_cast<int64_t>(n) * C;
    const float* y = out + static_cast<int64_t>(n) * C;
    float* dx = dinp + static_cast<int64_t>(n) * C;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int c = 0; c < C; ++c) dot += dy[c] * y[c];
#pragma omp simd
    for (int c = 0; c < C; ++c) dx[c] = y[c] * (dy[c] - dot);
  }
}

}  // namespace ut::cpu
