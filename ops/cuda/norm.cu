// LayerNorm and RMSNorm on the GPU. One block per row: the row statistics are
// block reductions (warp shuffles, then one value per warp in shared memory).
// Parameter gradients are column sums over rows (ColumnSum: fixed order, no
// atomics, so runs are bit-identical).
#include "ops/cuda/norm.cuh"

#include <cstdint>

#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

// inp [N,C] -> out [N,C] = (x - mean) * rstd * weight + bias; mean [N], rstd [N].
// grid N, block RowThreads(C). Variance is two-pass: mean((x - mean)^2).
__global__ void LayerNormForwardKernel(float* out, float* mean, float* rstd, const float* inp,
                                       const float* weight, const float* bias, int C, float eps) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  float* y = out + row * C;
  float sum = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sum += x[c];
  const float m = BlockSum(sum) / C;
  float sq = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sq += (x[c] - m) * (x[c] - m);
  const float s = 1.0f / sqrtf(BlockSum(sq) / C + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = (x[c] - m) * s * weight[c] + bias[c];
  if (threadIdx.x == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// dout [N,C] -> dinp [N,C] = rstd * (g - mean(g) - xhat * mean(g * xhat)),
// g = dout * weight, xhat = (x - mean) * rstd. grid N, block RowThreads(C).
__global__ void LayerNormBackwardKernel(float* dinp, const float* dout, const float* inp,
                                        const float* weight, const float* mean, const float* rstd,
                                        int C, bool accumulate) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* dy = dout + row * C;
  float* dx = dinp + row * C;
  const float m = mean[row];
  const float s = rstd[row];
  float sum_g = 0.0f;
  float sum_gx = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = dy[c] * weight[c];
    sum_g += g;
    sum_gx += g * (x[c] - m) * s;
  }
  const float mean_g = BlockSum(sum_g) / C;
  const float mean_gx = BlockSum(sum_gx) / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = s * (dy[c] * weight[c] - mean_g - (x[c] - m) * s * mean_gx);
    dx[c] = accumulate ? dx[c] + v : v;
  }
}

// dweight [C] += sum_n dout * xhat, dbias [C] += sum_n dout.
// grid ColumnSumGrid(C), block ColumnSumBlock().
__global__ void LayerNormParamGradKernel(float* dweight, float* dbias, const float* dout,
                                         const float* inp, const float* mean, const float* rstd,
                                         int N, int C) {
  ColumnSum(dweight, N, C, [=](int n, int c) {
    const int64_t i = static_cast<int64_t>(n) * C + c;
    return dout[i] * (inp[i] - mean[n]) * rstd[n];
  });
  __syncthreads();  // ColumnSum's shared partials are reused below
  ColumnSum(dbias, N, C, [=](int n, int c) { return dout[static_cast<int64_t>(n) * C + c]; });
}

// inp [N,C] -> out [N,C] = x * rstd * weight, rstd [N] = 1/sqrt(mean(x^2) + eps).
// grid N, block RowThreads(C).
__global__ void RmsNormForwardKernel(float* out, float* rstd, const float* inp, const float* weight,
                                     int C, float eps) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  float* y = out + row * C;
  float sq = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sq += x[c] * x[c];
  const float s = 1.0f / sqrtf(BlockSum(sq) / C + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = x[c] * s * weight[c];
  if (threadIdx.x == 0) rstd[row] = s;
}

// dout [N,C] -> dinp [N,C] = rstd * (g - xhat * mean(g * xhat)), g = dout * weight,
// xhat = x * rstd; folded as rstd * (g - x * rstd^2 * mean(g * x)).
// grid N, block RowThreads(C).
__global__ void RmsNormBackwardKernel(float* dinp, const float* dout, const float* inp,
                                      const float* weight, const float* rstd, int C,
                                      bool accumulate) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* dy = dout + row * C;
  float* dx = dinp + row * C;
  const float s = rstd[row];
  float sum_gx = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sum_gx += dy[c] * weight[c] * x[c];
  const float k = s * s * (BlockSum(sum_gx) / C);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = s * (dy[c] * weight[c] - x[c] * k);
    dx[c] = accumulate ? dx[c] + v : v;
  }
}

// dweight [C] += sum_n dout * x * rstd. grid ColumnSumGrid(C), block ColumnSumBlock().
__global__ void RmsNormParamGradKernel(float* dweight, const float* dout, const float* inp,
                                       const float* rstd, int N, int C) {
  ColumnSum(dweight, N, C, [=](int n, int c) {
    const int64_t i = static_cast<int64_t>(n) * C + c;
    return dout[i] * inp[i] * rstd[n];
  });
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps) {
  if (N == 0) return;
  LayerNormForwardKernel<<<N, RowThreads(C)>>>(out, mean, rstd, inp, weight, bias, C, eps);
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int N, int C, bool accumulate_dinp) {
  if (N == 0 || C == 0) return;
  LayerNormParamGradKernel<<<ColumnSumGrid(C), ColumnSumBlock()>>>(dweight, dbias, dout, inp, mean,
                                                                   rstd, N, C);
  CUDA_CHECK_LAUNCH();
  LayerNormBackwardKernel<<<N, RowThreads(C)>>>(dinp, dout, inp, weight, mean, rstd, C,
                                                accumulate_dinp);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps) {
  if (N == 0) return;
  RmsNormForwardKernel<<<N, RowThreads(C)>>>(out, rstd, inp, weight, C, eps);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C, bool accumulate_dinp) {
  if (N == 0 || C == 0) return;
  RmsNormParamGradKernel<<<ColumnSumGrid(C), ColumnSumBlock()>>>(dweight, dout, inp, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  RmsNormBackwardKernel<<<N, RowThreads(C)>>>(dinp, dout, inp, weight, rstd, C, accumulate_dinp);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ut::cuda
