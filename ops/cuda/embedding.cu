// Embedding lookup and patchify on the GPU.
//
// The embedding backward is deterministic without float atomics, in two passes:
//   1. bucket the rows by id (a counting sort): count ids per table row
//      (integer atomics: exact), exclusive scan -> offsets [V+1], then one warp
//      walks ids in order and drops each n into its row's bucket, so every
//      bucket lists its n in increasing order;
//   2. one block per table row adds its bucket's dout rows in that order.
// Every run (and the CPU, which adds rows in index order) sums the same way.
#include "ops/cuda/embedding.cuh"

#include <cassert>

#include "glog/logging.h"
#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

// ids [N], table [V,C] -> out [N,C]; ids < 0 give zero rows. grid N, block RowThreads(C).
__global__ void EmbeddingForwardKernel(float* out, const int32_t* ids, const float* table, int V,
                                       int C) {
  const int64_t n = blockIdx.x;
  const int32_t id = ids[n];
  assert(id < V && "embedding_forward: id >= vocabulary size");
  float* row = out + n * C;
  if (id < 0) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) row[c] = 0.0f;
    return;
  }
  const float* src = table + static_cast<int64_t>(id) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) row[c] = src[c];
}

// ids [N] -> counts [V] += number of rows with each id (ids < 0 skipped).
__global__ void CountIdsKernel(int32_t* counts, const int32_t* ids, int N, int V) {
  for (int64_t n = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; n < N;
       n += int64_t{gridDim.x} * blockDim.x) {
    const int32_t id = ids[n];
    assert(id < V && "embedding_backward: id >= vocabulary size");
    if (id >= 0) atomicAdd(&counts[id], 1);
  }
}

// counts [V] -> offsets [V+1], exclusive prefix sum. One block of 1024 threads;
// thread t scans a contiguous chunk, the chunk totals are scanned across warps.
__global__ void ExclusiveScanKernel(int32_t* offsets, const int32_t* counts, int V) {
  __shared__ int32_t warp_totals[32];
  const int chunk = (V + blockDim.x - 1) / blockDim.x;
  const int begin = min(V, static_cast<int>(threadIdx.x) * chunk);
  const int end = min(V, begin + chunk);
  int32_t local = 0;
  for (int v = begin; v < end; ++v) local += counts[v];
  // Inclusive scan of `local` within the warp, then across warp totals.
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  int32_t inclusive = local;
  for (int offset = 1; offset < kWarpSize; offset <<= 1) {
    const int32_t other = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == kWarpSize - 1) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int32_t total = lane < static_cast<int>(blockDim.x / kWarpSize) ? warp_totals[lane] : 0;
    for (int offset = 1; offset < kWarpSize; offset <<= 1) {
      const int32_t other = __shfl_up_sync(kFullMask, total, offset);
      if (lane >= offset) total += other;
    }
    warp_totals[lane] = total;  // inclusive over warps
  }
  __syncthreads();
  int32_t running = inclusive - local + (warp > 0 ? warp_totals[warp - 1] : 0);
  for (int v = begin; v < end; ++v) {
    offsets[v] = running;
    running += counts[v];
  }
  if (threadIdx.x == blockDim.x - 1) offsets[V] = warp_totals[blockDim.x / kWarpSize - 1];
}

// Stable bucket fill, one warp: for n in increasing order, rows[cursor[id]++] = n.
// Lanes holding the same id (__match_any_sync) take consecutive slots by lane
// order; the group's lowest lane reads and advances the cursor.
// ids [N], cursor [V] (starts as offsets) -> rows [number of ids >= 0].
__global__ void FillBucketsKernel(int32_t* rows, int32_t* cursor, const int32_t* ids, int N) {
  const int lane = threadIdx.x;
  for (int base = 0; base < N; base += kWarpSize) {
    const int n = base + lane;
    const int32_t id = n < N ? ids[n] : -1;
    const unsigned group = __match_any_sync(kFullMask, id);
    const int leader = __ffs(group) - 1;
    const int rank = __popc(group & ((1u << lane) - 1u));
    int32_t start = (id >= 0 && lane == leader) ? cursor[id] : 0;
    start = __shfl_sync(kFullMask, start, leader);
    if (id >= 0) {
      rows[start + rank] = n;
      if (lane == leader) cursor[id] = start + __popc(group);
    }
    __syncwarp();
  }
}

// dtable [V,C] += sum over the bucket of row v of dout [N,C], in bucket (= n) order.
// grid V, block RowThreads(C).
__global__ void EmbeddingGatherKernel(float* dtable, const float* dout, const int32_t* offsets,
                                      const int32_t* rows, int C) {
  const int64_t v = blockIdx.x;
  const int begin = offsets[v];
  const int end = offsets[v + 1];
  if (begin == end) return;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = dtable[v * C + c];
    for (int k = begin; k < end; ++k) acc += dout[static_cast<int64_t>(rows[k]) * C + c];
    dtable[v * C + c] = acc;
  }
}

// images [B,3,H,W] -> patches [B, gh*gw, 3*P*P]; one thread per patch element.
__global__ void PatchifyForwardKernel(float* patches, const float* images, int64_t total, int H,
                                      int W, int P) {
  const int gw = W / P;
  const int patch_len = 3 * P * P;
  const int64_t patches_per_image = int64_t{H / P} * gw;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t patch = i / patch_len;  // b * gh*gw + py * gw + px
    const int j = static_cast<int>(i % patch_len);
    const int64_t b = patch / patches_per_image;
    const int p = static_cast<int>(patch % patches_per_image);
    const int ch = j / (P * P), dy = (j / P) % P, dx = j % P;
    const int y = (p / gw) * P + dy, x = (p % gw) * P + dx;
    patches[i] = images[((b * 3 + ch) * H + y) * W + x];
  }
}

// dpatches [B, gh*gw, 3*P*P] -> dimages [B,3,H,W]; one thread per pixel (a gather:
// every pixel is in exactly one patch).
__global__ void PatchifyBackwardKernel(float* dimages, const float* dpatches, int64_t total, int H,
                                       int W, int P) {
  const int gw = W / P;
  const int patch_len = 3 * P * P;
  const int64_t patches_per_image = int64_t{H / P} * gw;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int x = static_cast<int>(i % W);
    const int y = static_cast<int>((i / W) % H);
    const int ch = static_cast<int>((i / (int64_t{W} * H)) % 3);
    const int64_t b = i / (int64_t{W} * H * 3);
    const int64_t patch = b * patches_per_image + (y / P) * gw + x / P;
    dimages[i] = dpatches[patch * patch_len + (ch * P + y % P) * P + x % P];
  }
}

void CheckPatchShape(int H, int W, int P) {
  CHECK(P > 0 && H % P == 0 && W % P == 0)
      << "patchify: image " << H << "x" << W << " not divisible by patch " << P;
}

}  // namespace

void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C) {
  if (N == 0 || C == 0) return;
  EmbeddingForwardKernel<<<N, RowThreads(C)>>>(out, ids, table, V, C);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V, int C) {
  if (N == 0 || V == 0 || C == 0) return;
  auto* counts = static_cast<int32_t*>(ScratchAlloc(sizeof(int32_t) * V, "embedding counts"));
  auto* offsets =
      static_cast<int32_t*>(ScratchAlloc(sizeof(int32_t) * (V + 1), "embedding offsets"));
  auto* cursor = static_cast<int32_t*>(ScratchAlloc(sizeof(int32_t) * V, "embedding cursor"));
  auto* rows = static_cast<int32_t*>(ScratchAlloc(sizeof(int32_t) * N, "embedding buckets"));
  CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int32_t) * V, 0));
  CountIdsKernel<<<ElementwiseBlocks(N), 256>>>(counts, ids, N, V);
  CUDA_CHECK_LAUNCH();
  ExclusiveScanKernel<<<1, 1024>>>(offsets, counts, V);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(cursor, offsets, sizeof(int32_t) * V, cudaMemcpyDeviceToDevice, 0));
  FillBucketsKernel<<<1, kWarpSize>>>(rows, cursor, ids, N);
  CUDA_CHECK_LAUNCH();
  EmbeddingGatherKernel<<<V, RowThreads(C)>>>(dtable, dout, offsets, rows, C);
  CUDA_CHECK_LAUNCH();
  ScratchFree(rows);
  ScratchFree(cursor);
  ScratchFree(offsets);
  ScratchFree(counts);
}

void patchify_forward(float* patches, const float* images, int B, int H, int W, int P) {
  CheckPatchShape(H, W, P);
  const int64_t total = int64_t{B} * 3 * H * W;  // same count as the patch elements
  if (total == 0) return;
  PatchifyForwardKernel<<<ElementwiseBlocks(total), 256>>>(patches, images, total, H, W, P);
  CUDA_CHECK_LAUNCH();
}

void patchify_backward(float* dimages, const float* dpatches, int B, int H, int W, int P) {
  CheckPatchShape(H, W, P);
  const int64_t total = int64_t{B} * 3 * H * W;
  if (total == 0) return;
  PatchifyBackwardKernel<<<ElementwiseBlocks(total), 256>>>(dimages, dpatches, total, H, W, P);
  CUDA_CHECK_LAUNCH();
}

}  // namespace ut::cuda
