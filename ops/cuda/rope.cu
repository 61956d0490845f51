// Rotary position embedding on the GPU (Hugging Face rotate_half).
//   x = [x1, x2] (halves of D), inv_freq[i] = 1 / theta^(2i/D), angle = pos * inv_freq[i],
//   out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin; the backward rotates by -angle.
// inv_freq is computed on the host with the CPU's float expression and passed
// by value, so the float angles are bit-identical to ops/cpu/rope.cc (a 1-ulp
// difference in inv_freq would shift the angle at position 4096 by ~1e-4).
#include "ops/cuda/rope.cuh"

#include <cmath>

#include "glog/logging.h"
#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

constexpr int kMaxHalf = 512;  // D <= 1024

struct InvFreq {
  float v[kMaxHalf];  // 2 KiB kernel parameter (limit 4 KiB)
};

// x [N,H,D] -> out [N,H,D] rotated by sign * angle; one thread per (n, h, i < D/2),
// reading both halves before writing (out may alias x).
__global__ void RopeKernel(float* out, const float* x, const int32_t* pos, int64_t total, int H,
                           int D, InvFreq inv_freq, float sign) {
  const int half = D / 2;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int i = static_cast<int>(t % half);
    const int64_t nh = t / half;  // n * H + h
    const int64_t n = nh / H;
    const float angle = static_cast<float>(pos[n]) * inv_freq.v[i];
    const float c = cosf(angle);
    const float s = sign * sinf(angle);
    const int64_t base = nh * D;
    const float a = x[base + i];
    const float b = x[base + half + i];
    out[base + i] = a * c - b * s;
    out[base + half + i] = b * c + a * s;
  }
}

void Rotate(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta,
            float sign) {
  CHECK(D % 2 == 0 && D / 2 <= kMaxHalf) << "rope: head dim " << D << " must be even, <= 1024";
  InvFreq inv_freq;
  for (int i = 0; i < D / 2; ++i) {
    inv_freq.v[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(D));
  }
  const int64_t total = int64_t{N} * H * (D / 2);
  if (total == 0) return;
  RopeKernel<<<ElementwiseBlocks(total), 256>>>(out, x, pos, total, H, D, inv_freq, sign);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward(float* out, const float* x, const int32_t* pos, int N, int H, int D,
                  float theta) {
  Rotate(out, x, pos, N, H, D, theta, 1.0f);
}

void rope_backward(float* dx, const float* dout, const int32_t* pos, int N, int H, int D,
                   float theta) {
  Rotate(dx, dout, pos, N, H, D, theta, -1.0f);
}

}  // namespace ut::cuda
