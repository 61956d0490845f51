// Rotary position embedding (Hugging Face LLaMA rotate_half) on the CPU.
// cos/sin are computed in float the way Hugging Face does (inv_freq =
// 1 / theta^(2i/D) in float, angle = float(pos) * inv_freq), once per
// (row, frequency) and shared by all heads.
#include "ops/rope.h"

#include <cmath>

#include "glog/logging.h"

namespace ut::cpu {
namespace {

constexpr int kMaxHalf = 512;  // D <= 1024

// x [N,H,D] -> out [N,H,D] rotated by +angle (sign = 1) or -angle (sign = -1):
//   out1 = x1 cos - sign x2 sin, out2 = x2 cos + sign x1 sin.
void Rotate(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta,
            float sign) {
  CHECK(D % 2 == 0 && D / 2 <= kMaxHalf) << "rope: head dim " << D << " must be even, <= 1024";
  const int half = D / 2;
  float inv_freq[kMaxHalf];
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(D));
  }
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * H * D >= (1 << 15))
  for (int n = 0; n < N; ++n) {
    float cos_a[kMaxHalf];
    float sin_a[kMaxHalf];
    const float p = static_cast<float>(pos[n]);
    for (int i = 0; i < half; ++i) {
      const float angle = p * inv_freq[i];
      cos_a[i] = std::cos(angle);
      sin_a[i] = sign * std::sin(angle);
    }
    for (int h = 0; h < H; ++h) {
      const int64_t base = (static_cast<int64_t>(n) * H + h) * D;
      const float* x1 = x + base;
      const float* x2 = x + base + half;
      float* o1 = out + base;
      float* o2 = out + base + half;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float a = x1[i];  // read both halves before writing (out may alias x)
        const float b = x2[i];
        o1[i] = a * cos_a[i] - b * sin_a[i];
        o2[i] = b * cos_a[i] + a * sin_a[i];
      }
    }
  }
}

}  // namespace

// x [N,H,D], pos [N] -> out [N,H,D] = x * cos + rotate_half(x) * sin.
void rope_forward(float* out, const float* x, const int32_t* pos, int N, int H, int D,
                  float theta) {
  Rotate(out, x, pos, N, H, D, theta, 1.0f);
}

// dout [N,H,D] -> dx [N,H,D]: the transpose of a rotation is the rotation by -angle.
void rope_backward(float* dx, const float* dout, const int32_t* pos, int N, int H, int D,
                   float theta) {
  Rotate(dx, dout, pos, N, H, D, theta, -1.0f);
}

}  // namespace ut::cpu
