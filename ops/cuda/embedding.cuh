// Embedding lookup and patchify on the GPU, same contract as ops/embedding.h
// with DEVICE pointers (default stream).
//
// Ids >= V are a programmer error, as on the CPU (CHECK there): here a device
// assert fires and the next CUDA call fails with cudaErrorAssert.
#pragma once

#include <cstdint>

namespace ut::cuda {

// ids [N] in [0,V), table [V,C] -> out [N,C]. Ids < 0 give a zero row.
void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C);
// dtable [V,C] += scatter of dout [N,C] by ids (ids < 0 skipped). Deterministic:
// each table row is owned by one block, which adds its dout rows in index order
// (no float atomics; bit-identical to the CPU's summation order).
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V, int C);

// Patchify, the im2col of a stride-P conv (so patch embedding is one GEMM).
// images [B,3,H,W] (CHW) -> patches [B, (H/P)*(W/P), 3*P*P]; patch rows in
// raster order, each row ordered (channel, dy, dx) like a Conv2d weight
// [width,3,P,P] flattened. H and W must be multiples of P.
void patchify_forward(float* patches, const float* images, int B, int H, int W, int P);
// dimages [B,3,H,W] (written) from dpatches (the exact inverse scatter).
void patchify_backward(float* dimages, const float* dpatches, int B, int H, int W, int P);

}  // namespace ut::cuda
