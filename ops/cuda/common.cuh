// Device helpers shared by the ops/cuda .cu files (nvcc only; not for g++):
// launch sizing, warp/block reductions, and a deterministic column-sum.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/device.h"

namespace ut::cuda {

inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads for a kernel that gives one block to a row of C elements: a multiple
// of 32 between 32 and 256.
inline int RowThreads(int64_t C) {
  const int64_t t = CeilDiv(C, kWarpSize) * kWarpSize;
  return static_cast<int>(t < kWarpSize ? kWarpSize : (t > 256 ? 256 : t));
}

// Blocks for a grid-stride elementwise kernel over n items with 256 threads.
inline unsigned ElementwiseBlocks(int64_t n) {
  const int64_t blocks = CeilDiv(n, 256);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

// Sum / max over the 32 lanes; every lane gets the result (xor butterfly, so
// the order of additions is fixed: deterministic).
__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ double WarpSum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Sum / max over a 1-D block (blockDim.x a multiple of 32, <= 1024); every
// thread gets the result. All threads of the block must call it (it syncs).
template <typename T, typename Op>
__device__ __forceinline__ T BlockReduce(T v, T identity, Op warp_reduce) {
  __shared__ T partial[kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_reduce(v);
  __syncthreads();  // an earlier call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / kWarpSize) ? partial[lane] : identity;
  return warp_reduce(v);
}
__device__ __forceinline__ float BlockSum(float v) {
  return BlockReduce(v, 0.0f, [](float x) { return WarpSum(x); });
}
__device__ __forceinline__ double BlockSum(double v) {
  return BlockReduce(v, 0.0, [](double x) { return WarpSum(x); });
}
__device__ __forceinline__ float BlockMax(float v) {
  return BlockReduce(v, -INFINITY, [](float x) { return WarpMax(x); });
}

// Deterministic column sums without atomics: out[c] += sum_n value(n, c) for
// n < N, c < C. Launch with grid.x = ceil(C / 32), block (32, kColumnRows).
// Thread (tx, ty) sums rows ty, ty + kColumnRows, ... of column
// blockIdx.x*32 + tx (coalesced across tx); the kColumnRows partials are then
// added in a fixed order. Same result on every run.
inline constexpr int kColumnRows = 8;
template <typename ValueFn>
__device__ __forceinline__ void ColumnSum(float* out, int N, int C, ValueFn value) {
  __shared__ float partial[kColumnRows][kWarpSize + 1];
  const int c = blockIdx.x * kWarpSize + threadIdx.x;
  float acc = 0.0f;
  if (c < C) {
    for (int n = threadIdx.y; n < N; n += kColumnRows) acc += value(n, c);
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sum = 0.0f;
    for (int r = 0; r < kColumnRows; ++r) sum += partial[r][threadIdx.x];
    out[c] += sum;
  }
}
inline dim3 ColumnSumGrid(int C) { return dim3(static_cast<unsigned>(CeilDiv(C, kWarpSize))); }
inline dim3 ColumnSumBlock() { return dim3(kWarpSize, kColumnRows); }

}  // namespace ut::cuda
