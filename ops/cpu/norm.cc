// LayerNorm and RMSNorm on the CPU. Row statistics and input gradients are
// OpenMP-parallel over rows; weight/bias gradients are column sums, parallel
// over column blocks with the rows added in order (deterministic for any
// thread count).
#include "ops/norm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ops/cpu/vec_math.h"

namespace ut::cpu {
namespace {

constexpr int64_t kColBlock = 256;  // columns per stack accumulator block

// Is the loop over N rows of C columns worth an OpenMP region?
bool Big(int N, int C) { return static_cast<int64_t>(N) * C >= (1 << 14); }

}  // namespace

// inp [N,C], weight/bias [C] -> out [N,C], mean [N], rstd [N].
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                       const float* weight, const float* bias, int N, int C, float eps) {
#pragma omp parallel for schedule(static) if (Big(N, C))
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    float* y = out + static_cast<int64_t>(n) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const float m = sum / C;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int c = 0; c < C; ++c) sq += (x[c] - m) * (x[c] - m);
    const float s = 1.0f / std::sqrt(sq / C + eps);
#pragma omp simd
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

// dout [N,C] -> dinp [N,C] (written or added), dweight [C] +=, dbias [C] +=.
// With xhat = (x - mean) * rstd and g = dout * weight:
//   dinp = rstd * (g - mean(g) - xhat * mean(g * xhat)).
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean,
                        const float* rstd, int N, int C, bool accumulate_dinp) {
  internal::ParallelRanges(C, 16, N, [&](int64_t begin, int64_t end) {
    float acc_w[kColBlock];
    float acc_b[kColBlock];
    for (int64_t c0 = begin; c0 < end; c0 += kColBlock) {
      const int64_t width = std::min(kColBlock, end - c0);
      std::fill(acc_w, acc_w + width, 0.0f);
      std::fill(acc_b, acc_b + width, 0.0f);
      for (int64_t n = 0; n < N; ++n) {
        const float* x = inp + n * C + c0;
        const float* dy = dout + n * C + c0;
        const float m = mean[n];
        const float s = rstd[n];
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) {
          acc_w[c] += dy[c] * (x[c] - m) * s;
          acc_b[c] += dy[c];
        }
      }
      for (int64_t c = 0; c < width; ++c) {
        dweight[c0 + c] += acc_w[c];
        dbias[c0 + c] += acc_b[c];
      }
    }
  });
#pragma omp parallel for schedule(static) if (Big(N, C))
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    const float* dy = dout + static_cast<int64_t>(n) * C;
    float* dx = dinp + static_cast<int64_t>(n) * C;
    const float m = mean[n];
    const float s = rstd[n];
    float sum_g = 0.0f;
    float sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int c = 0; c < C; ++c) {
      const float g = dy[c] * weight[c];
      sum_g += g;
      sum_gx += g * (x[c] - m) * s;
    }
    const float mean_g = sum_g / C;
    const float mean_gx = sum_gx / C;
    if (accumulate_dinp) {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        dx[c] += s * (dy[c] * weight[c] - mean_g - (x[c] - m) * s * mean_gx);
      }
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        dx[c] = s * (dy[c] * weight[c] - mean_g - (x[c] - m) * s * mean_gx);
      }
    }
  }
}

// inp [N,C], weight [C] -> out [N,C] = inp * rstd * weight, rstd [N].
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static) if (Big(N, C))
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    float* y = out + static_cast<int64_t>(n) * C;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int c = 0; c < C; ++c) sq += x[c] * x[c];
    const float s = 1.0f / std::sqrt(sq / C + eps);
#pragma omp simd
    for (int c = 0; c < C; ++c) y[c] = x[c] * s * weight[c];
    rstd[n] = s;
  }
}

// dout [N,C] -> dinp [N,C] (written or added), dweight [C] +=.
// With xhat = x * rstd and g = dout * weight: dinp = rstd * (g - xhat * mean(g * xhat)).
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C,
                      bool accumulate_dinp) {
  internal::ParallelRanges(C, 16, N, [&](int64_t begin, int64_t end) {
    float acc_w[kColBlock];
    for (int64_t c0 = begin; c0 < end; c0 += kColBlock) {
      const int64_t width = std::min(kColBlock, end - c0);
      std::fill(acc_w, acc_w + width, 0.0f);
      for (int64_t n = 0; n < N; ++n) {
        const float* x = inp + n * C + c0;
        const float* dy = dout + n * C + c0;
        const float s = rstd[n];
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) acc_w[c] += dy[c] * x[c] * s;
      }
      for (int64_t c = 0; c < width; ++c) dweight[c0 + c] += acc_w[c];
    }
  });
#pragma omp parallel for schedule(static) if (Big(N, C))
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<int64_t>(n) * C;
    const float* dy = dout + static_cast<int64_t>(n) * C;
    float* dx = dinp + static_cast<int64_t>(n) * C;
    const float s = rstd[n];
    float sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_gx)
    for (int c = 0; c < C; ++c) sum_gx += dy[c] * weight[c] * x[c];
    // mean(g * xhat) * rstd, folded: the x term below is x * s * s * mean(g*x).
    const float k = s * s * (sum_gx / C);
    if (accumulate_dinp) {
#pragma omp simd
      for (int c = 0; c < C; ++c) dx[c] += s * (dy[c] * weight[c] - x[c] * k);
    } else {
#pragma omp simd
      for (int c = 0; c < C; ++c) dx[c] = s * (dy[c] * weight[c] - x[c] * k);
    }
  }
}

}  // namespace ut::cpu
