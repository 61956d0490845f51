// Embedding lookup and patchify (im2col of a stride-P conv) on the CPU.
#include "ops/embedding.h"

#include <cstring>

#include "glog/logging.h"
#include "ops/cpu/vec_math.h"

namespace ut::cpu {

// ids [N], table [V,C] -> out [N,C]; ids < 0 give zero rows.
void embedding_forward(float* out, const int32_t* ids, const float* table, int N, int V, int C) {
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * C >= (1 << 15))
  for (int n = 0; n < N; ++n) {
    const int32_t id = ids[n];
    CHECK_LT(id, V) << "embedding_forward: id out of range at row " << n;
    float* row = out + static_cast<int64_t>(n) * C;
    if (id < 0) {
      std::memset(row, 0, sizeof(float) * C);
    } else {
      std::memcpy(row, table + static_cast<int64_t>(id) * C, sizeof(float) * C);
    }
  }
}

// dtable [V,C] += dout [N,C] scattered by ids. Parallel over column ranges,
// rows added in order: repeated ids never race and the sum order is fixed.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int N, int V,
                        int C) {
  for (int n = 0; n < N; ++n) {
    CHECK_LT(ids[n], V) << "embedding_backward: id out of range at row " << n;
  }
  internal::ParallelRanges(C, 16, N, [&](int64_t begin, int64_t end) {
    for (int n = 0; n < N; ++n) {
      const int32_t id = ids[n];
      if (id < 0) continue;
      float* dst = dtable + static_cast<int64_t>(id) * C;
      const float* src = dout + static_cast<int64_t>(n) * C;
#pragma omp simd
      for (int64_t c = begin; c < end; ++c) dst[c] += src[c];
    }
  });
}

// images [B,3,H,W] -> patches [B, (H/P)*(W/P), 3*P*P], each row (channel, dy, dx).
void patchify_forward(float* patches, const float* images, int B, int H, int W, int P) {
  CHECK(P > 0 && H % P == 0 && W % P == 0)
      << "patchify: image " << H << "x" << W << " not divisible by patch " << P;
  const int gh = H / P;
  const int gw = W / P;
  const int64_t row_len = 3 * P * P;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(B) * 3 * H * W >= (1 << 15))
  for (int64_t bp = 0; bp < static_cast<int64_t>(B) * gh * gw; ++bp) {
    const int64_t b = bp / (gh * gw);
    const int py = static_cast<int>(bp % (gh * gw)) / gw;
    const int px = static_cast<int>(bp % (gh * gw)) % gw;
    float* row = patches + bp * row_len;
    for (int ch = 0; ch < 3; ++ch) {
      for (int dy = 0; dy < P; ++dy) {
        const float* src = images + ((b * 3 + ch) * H + py * P + dy) * W + px * P;
        std::memcpy(row + (ch * P + dy) * P, src, sizeof(float) * P);
      }
    }
  }
}

// dpatches [B, (H/P)*(W/P), 3*P*P] -> dimages [B,3,H,W] (written): the inverse
// permutation of patchify_forward (every pixel is in exactly one patch).
void patchify_backward(float* dimages, const float* dpatches, int B, int H, int W, int P) {
  CHECK(P > 0 && H % P == 0 && W % P == 0)
      << "patchify: image " << H << "x" << W << " not divisible by patch " << P;
  const int gh = H / P;
  const int gw = W / P;
  const int64_t row_len = 3 * P * P;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(B) * 3 * H * W >= (1 << 15))
  for (int64_t bp = 0; bp < static_cast<int64_t>(B) * gh * gw; ++bp) {
    const int64_t b = bp / (gh * gw);
    const int py = static_cast<int>(bp % (gh * gw)) / gw;
    const int px = static_cast<int>(bp % (gh * gw)) % gw;
    const float* row = dpatches + bp * row_len;
    for (int ch = 0; ch < 3; ++ch) {
      for (int dy = 0; dy < P; ++dy) {
        float* dst = dimages + ((b * 3 + ch) * H + py * P + dy) * W + px * P;
        std::memcpy(dst, row + (ch * P + dy) * P, sizeof(float) * P);
      }
    }
  }
}

}  // namespace ut::cpu
