// Fused softmax + cross-entropy on the GPU: one block per row computes the row
// max and sum of exp (block reductions), its loss in double, and (optionally)
// the logit gradient in the same pass; a one-block kernel then adds the row
// losses in a fixed order (deterministic) for the host.
#include "ops/cuda/cross_entropy.cuh"

#include <cassert>

#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

__device__ __forceinline__ bool Counted(int32_t target, int ignore_index) {
  return target >= 0 && target != ignore_index;
}

// logits [N,V], targets [N] -> row_loss [N] (0 for skipped rows), dlogits [N,V] or nullptr
// (may alias logits). grid N, block RowThreads(V).
__global__ void CrossEntropyRowKernel(double* row_loss, float* dlogits, const float* logits,
                                      const int32_t* targets, int V, int ignore_index,
                                      float grad_scale) {
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  const float* x = logits + row * V;
  float* dx = dlogits == nullptr ? nullptr : dlogits + row * V;
  if (!Counted(target, ignore_index)) {
    if (threadIdx.x == 0) row_loss[row] = 0.0;
    if (dx != nullptr) {
      for (int c = threadIdx.x; c < V; c += blockDim.x) dx[c] = 0.0f;
    }
    return;
  }
  assert(target < V && "softmax_cross_entropy: target >= vocabulary size");
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < V; c += blockDim.x) mx = fmaxf(mx, x[c]);
  mx = BlockMax(mx);
  float sum = 0.0f;
  for (int c = threadIdx.x; c < V; c += blockDim.x) sum += expf(x[c] - mx);
  sum = BlockSum(sum);
  const float x_target = x[target];
  __syncthreads();  // every thread holds x_target before dx (may alias x) is written
  if (threadIdx.x == 0) row_loss[row] = log(static_cast<double>(sum)) + mx - x_target;
  if (dx != nullptr) {
    const float scale = grad_scale / sum;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float p = expf(x[c] - mx) * scale;
      dx[c] = c == target ? p - grad_scale : p;
    }
  }
}

// row_loss [N], targets [N] -> result[0] = sum of row losses, result[1] = number of
// counted rows. One block of 1024 threads: thread t adds rows t, t + 1024, ...,
// then a block tree; the order is fixed, so the loss is reproducible.
__global__ void SumRowsKernel(double* result, const double* row_loss, const int32_t* targets, int N,
                              int ignore_index) {
  double total = 0.0;
  double counted = 0.0;
  for (int n = threadIdx.x; n < N; n += blockDim.x) {
    total += row_loss[n];
    counted += Counted(targets[n], ignore_index) ? 1.0 : 0.0;
  }
  total = BlockSum(total);
  counted = BlockSum(counted);  // exact: integers below 2^53
  if (threadIdx.x == 0) {
    result[0] = total;
    result[1] = counted;
  }
}

}  // namespace

double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int N,
                             int V, int ignore_index, float grad_scale, int64_t* count) {
  if (N == 0) {
    if (count != nullptr) *count = 0;
    return 0.0;
  }
  auto* row_loss = static_cast<double*>(ScratchAlloc(sizeof(double) * N, "cross-entropy rows"));
  auto* result = static_cast<double*>(ScratchAlloc(sizeof(double) * 2, "cross-entropy sum"));
  CrossEntropyRowKernel<<<N, RowThreads(V)>>>(row_loss, dlogits, logits, targets, V, ignore_index,
                                              grad_scale);
  CUDA_CHECK_LAUNCH();
  SumRowsKernel<<<1, 1024>>>(result, row_loss, targets, N, ignore_index);
  CUDA_CHECK_LAUNCH();
  double host[2];
  CUDA_CHECK(cudaMemcpy(host, result, sizeof(host), cudaMemcpyDeviceToHost));
  ScratchFree(result);
  ScratchFree(row_loss);
  if (count != nullptr) *count = static_cast<int64_t>(host[1]);
  return host[0];
}

}  // namespace ut::cuda
