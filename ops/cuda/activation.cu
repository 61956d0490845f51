// GELU (tanh), SwiGLU and row softmax on the GPU. Pointwise kernels are
// grid-stride loops; softmax gives one block to a row (block max, block sum).
// Formulas follow ops/cpu/activation.cc (sigmoid form of the tanh GELU: no
// cancellation for large negative x).
#include "ops/cuda/activation.cuh"

#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

// gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = k (x + c x^3); returns sigmoid(2u).
__device__ __forceinline__ float GeluSigmoid(float x) {
  const float u = kGeluK * (x + kGeluC * x * x * x);
  return 1.0f / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

#define GRID_STRIDE_LOOP(i, n)                                              \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); \
       i += int64_t{gridDim.x} * blockDim.x)

// inp [n] -> out [n] = x * sigmoid(2u).
__global__ void GeluForwardKernel(float* out, const float* inp, int64_t n) {
  GRID_STRIDE_LOOP(i, n) out[i] = inp[i] * GeluSigmoid(inp[i]);
}

// dout [n] -> dinp [n] = dout * (s + x s (1 - s) 2k (1 + 3c x^2)), s = sigmoid(2u).
__global__ void GeluBackwardKernel(float* dinp, const float* inp, const float* dout, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float x = inp[i];
    const float s = GeluSigmoid(x);
    const float du = 2.0f * kGeluK * (1.0f + 3.0f * kGeluC * x * x);
    dinp[i] = dout[i] * (s + x * s * (1.0f - s) * du);
  }
}

// gate, up [n] -> out [n] = gate * sigmoid(gate) * up.
__global__ void SwigluForwardKernel(float* out, const float* gate, const float* up, int64_t n) {
  GRID_STRIDE_LOOP(i, n) out[i] = gate[i] * Sigmoid(gate[i]) * up[i];
}

// dout [n] -> dgate [n] = dout * up * (s + g s (1 - s)), dup [n] = dout * g * s, s = sigmoid(g).
__global__ void SwigluBackwardKernel(float* dgate, float* dup, const float* dout, const float* gate,
                                     const float* up, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float g = gate[i];
    const float s = Sigmoid(g);
    const float d = dout[i];
    const float u = up[i];
    dgate[i] = d * u * (s + g * s * (1.0f - s));
    dup[i] = d * g * s;
  }
}

// inp [N,C] -> out [N,C] = exp(x - max) / sum (may alias). grid N, block RowThreads(C).
__global__ void SoftmaxForwardKernel(float* out, const float* inp, int C) {
  const int64_t row = blockIdx.x;
  const float* x = inp + row * C;
  float* y = out + row * C;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < C; c += blockDim.x) mx = fmaxf(mx, x[c]);
  mx = BlockMax(mx);
  float sum = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) sum += expf(x[c] - mx);
  const float inv = 1.0f / BlockSum(sum);
  // Each element is read and written by the same thread: aliasing is safe.
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = expf(x[c] - mx) * inv;
}

// dout, out [N,C] -> dinp [N,C] = out * (dout - sum(dout * out)) (may alias dout).
// grid N, block RowThreads(C).
__global__ void SoftmaxBackwardKernel(float* dinp, const float* dout, const float* out, int C) {
  const int64_t row = blockIdx.x;
  const float* dy = dout + row * C;
  const float* y = out + row * C;
  float* dx = dinp + row * C;
  float dot = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dy[c] * y[c];
  dot = BlockSum(dot);  // all reads of dy happen before any write below (it syncs)
  for (int c = threadIdx.x; c < C; c += blockDim.x) dx[c] = y[c] * (dy[c] - dot);
}

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) {
  if (n == 0) return;
  GeluForwardKernel<<<ElementwiseBlocks(n), 256>>>(out, inp, n);
  CUDA_CHECK_LAUNCH();
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  if (n == 0) return;
  GeluBackwardKernel<<<ElementwiseBlocks(n), 256>>>(dinp, inp, dout, n);
  CUDA_CHECK_LAUNCH();
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  if (n == 0) return;
  SwigluForwardKernel<<<ElementwiseBlocks(n), 256>>>(out, gate, up, n);
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n) {
  if (n == 0) return;
  SwigluBackwardKernel<<<ElementwiseBlocks(n), 256>>>(dgate, dup, dout, gate, up, n);
  CUDA_CHECK_LAUNCH();
}

void softmax_forward(float* out, const float* inp, int N, int C) {
  if (N == 0 || C == 0) return;
  SoftmaxForwardKernel<<<N, RowThreads(C)>>>(out, inp, C);
  CUDA_CHECK_LAUNCH();
}

void softmax_backward(float* dinp, const float* dout, const float* out, int N, int C) {
  if (N == 0 || C == 0) return;
  SoftmaxBackwardKernel<<<N, RowThreads(C)>>>(dinp, dout, out, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ut::cuda
