// AdamW and sum of squares on the GPU. The AdamW scalars (decay, bias
// corrections) are computed on the host in double and rounded to float once,
// exactly as ops/cpu/optim.cc does, so both devices use the same constants.
#include "ops/cuda/optim.cuh"

#include <cmath>

#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

struct AdamWConstants {
  float lr, eps, b1, b2, one_minus_b1, one_minus_b2, bc1, bc2, decay, grad_scale;
};

// params, grads, m, v [n]: one fused update per element (grid-stride).
__global__ void AdamWKernel(float* params, const float* grads, float* m, float* v, int64_t n,
                            AdamWConstants k) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = grads[i] * k.grad_scale;
    float p = params[i] * k.decay;
    const float mi = k.b1 * m[i] + k.one_minus_b1 * g;
    const float vi = k.b2 * v[i] + k.one_minus_b2 * (g * g);
    p -= k.lr * (mi / k.bc1) / (sqrtf(vi / k.bc2) + k.eps);
    params[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

constexpr int kSumBlocks = 512;  // fixed, so the summation order never changes
constexpr int kSumThreads = 256;

// x [n] -> partial [kSumBlocks]: block b sums x[i]^2 (double) for i = b*256 + t + k*512*256.
__global__ void SumSquaresPartialKernel(double* partial, const float* x, int64_t n) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    acc += static_cast<double>(x[i]) * x[i];
  }
  acc = BlockSum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// partial [kSumBlocks] -> partial[0] = their sum. One block of kSumThreads.
__global__ void SumPartialsKernel(double* partial) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < kSumBlocks; i += blockDim.x) acc += partial[i];
  acc = BlockSum(acc);
  __syncthreads();  // every thread has read partial[] before thread 0 overwrites it
  if (threadIdx.x == 0) partial[0] = acc;
}

}  // namespace

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n,
                  const AdamWParams& hp, float grad_scale) {
  if (n == 0) return;
  const double t = static_cast<double>(hp.step);
  AdamWConstants k;
  k.lr = hp.lr;
  k.eps = hp.eps;
  k.b1 = hp.beta1;
  k.b2 = hp.beta2;
  k.one_minus_b1 = static_cast<float>(1.0 - hp.beta1);
  k.one_minus_b2 = static_cast<float>(1.0 - hp.beta2);
  k.bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta1), t));
  k.bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta2), t));
  k.decay = static_cast<float>(1.0 - static_cast<double>(hp.lr) * hp.weight_decay);
  k.grad_scale = grad_scale;
  AdamWKernel<<<ElementwiseBlocks(n), 256>>>(params, grads, m, v, n, k);
  CUDA_CHECK_LAUNCH();
}

double sum_squares(const float* x, int64_t n) {
  if (n == 0) return 0.0;
  auto* partial = static_cast<double*>(ScratchAlloc(sizeof(double) * kSumBlocks, "sum_squares"));
  SumSquaresPartialKernel<<<kSumBlocks, kSumThreads>>>(partial, x, n);
  CUDA_CHECK_LAUNCH();
  SumPartialsKernel<<<1, kSumThreads>>>(partial);
  CUDA_CHECK_LAUNCH();
  double result = 0.0;
  CUDA_CHECK(cudaMemcpy(&result, partial, sizeof(double), cudaMemcpyDeviceToHost));
  ScratchFree(partial);
  return result;
}

float clip_scale(double norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  const double scale = static_cast<double>(max_norm) / (norm + 1e-6);
  return scale < 1.0 ? static_cast<float>(scale) : 1.0f;
}

}  // namespace ut::cuda
