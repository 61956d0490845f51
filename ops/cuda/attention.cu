// Tiled attention on the GPU (flash-attention style, written for clarity over
// speed): 32 query rows x 32 keys per tile in shared memory, 128 threads.
//
// Forward, block = (batch b, query head h) x 32 query rows: for each tile of 32
// keys, scores S = scale * Q K^T go to shared memory (warp w computes rows
// w, w+4, ...; lane j is key j), then thread (lane i, warp w) updates row i's
// online softmax (running max m, sum l) and its output for head dims
// d = w, w+4, ... in registers. At the end out = acc / l, lse = m + log l.
//
// Backward, probabilities recomputed from lse, delta_i = dout_i . out_i:
//   p = exp(s - lse), dp = dout_i . v_j, ds = p (dp - delta_i) scale,
//   dv_j += p dout_i, dk_j += ds q_i, dq_i += ds k_j.
// Two kernels so that every output row has one owner (no atomics, fixed
// summation order): the KV kernel owns 32 keys of one kv head and loops over
// all query heads of its group and all query tiles; the Q kernel owns 32 query
// rows and loops over key tiles (ds is computed twice; simple over fast).
//
// Shared-memory rows that lane j reads as "row j" are padded to D+1 floats so
// the 32 lanes hit 32 different banks; rows read by a whole warp at once
// (broadcast) are not padded.
#include "ops/cuda/attention.cuh"

#include <cassert>

#include "glog/logging.h"
#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

constexpr int kTile = 32;  // query rows per block = keys per tile = lanes
constexpr int kWarps = 4;  // thread (lane, warp) owns head dims d = warp + kWarps * k
constexpr int kThreads = kTile * kWarps;
constexpr int kMaxHeadDim = 256;

struct Dims {
  int T, H, Hkv, D, group;  // group = H / Hkv
  bool causal;
  float scale;
};

__device__ __forceinline__ int ValidLen(const int32_t* lens, int b, int T) {
  if (lens == nullptr) return T;
  const int len = lens[b];
  assert(len >= 0 && len <= T && "attention: lens[b] outside [0, T]");
  return len;
}

// Is key kj visible to query row qi?
__device__ __forceinline__ bool Visible(int qi, int kj, int len, bool causal) {
  return qi < len && kj < len && (!causal || kj <= qi);
}

// Rows t0..t0+31 of one head of a [T, heads, D] slab (src = row 0 of that head,
// row_stride = heads * D) -> dst [32][dst_stride]; rows at or past T are zeros.
__device__ __forceinline__ void LoadTile(float* dst, int dst_stride, const float* src,
                                         int64_t row_stride, int t0, int T, int D) {
  for (int idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
    const int r = idx / D;
    const int d = idx % D;
    dst[r * dst_stride + d] = t0 + r < T ? src[(t0 + r) * row_stride + d] : 0.0f;
  }
}

__device__ __forceinline__ float Dot(const float* a, const float* b, int D) {
  float sum = 0.0f;
  for (int d = 0; d < D; ++d) sum += a[d] * b[d];
  return sum;
}

// q [B,T,H,D], k/v [B,T,Hkv,D] -> out [B,T,H,D], lse [B,H,T].
// grid (B*H, ceil(T/32)), block 128, dynamic smem ForwardSmem(D).
template <int kMaxD>
__global__ void __launch_bounds__(kThreads)
    AttentionForwardKernel(float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* lens, Dims s) {
  constexpr int kPer = kMaxD / kWarps;
  extern __shared__ float smem[];
  const int D = s.D;
  float* q_s = smem;                   // [32][D]    broadcast reads
  float* k_s = q_s + kTile * D;        // [32][D+1]  lane j reads row j
  float* v_s = k_s + kTile * (D + 1);  // [32][D]    broadcast reads
  float* s_s = v_s + kTile * D;        // [32][33]   scores; lane i reads row i
  const int b = blockIdx.x / s.H;
  const int h = blockIdx.x % s.H;
  const int kvh = h / s.group;
  const int i0 = blockIdx.y * kTile;
  const int len = ValidLen(lens, b, s.T);
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int64_t q_row = static_cast<int64_t>(s.H) * D;
  const int64_t kv_row = static_cast<int64_t>(s.Hkv) * D;
  const float* q_bh = q + static_cast<int64_t>(b) * s.T * q_row + h * D;
  const float* k_bh = k + static_cast<int64_t>(b) * s.T * kv_row + kvh * D;
  const float* v_bh = v + static_cast<int64_t>(b) * s.T * kv_row + kvh * D;

  LoadTile(q_s, D, q_bh, q_row, i0, s.T, D);
  float m = -INFINITY;  // running max of row i0 + lane
  float l = 0.0f;       // running sum of exp(s - m)
  float acc[kPer] = {};
  const int key_end = i0 >= len ? 0 : (s.causal ? min(len, i0 + kTile) : len);
  for (int j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // q_s is loaded; the previous tile's k_s/v_s/s_s are no longer read
    LoadTile(k_s, D + 1, k_bh, kv_row, j0, s.T, D);
    LoadTile(v_s, D, v_bh, kv_row, j0, s.T, D);
    __syncthreads();
    for (int i = warp; i < kTile; i += kWarps) {
      s_s[i * (kTile + 1) + lane] = Visible(i0 + i, j0 + lane, len, s.causal)
                                        ? Dot(q_s + i * D, k_s + lane * (D + 1), D) * s.scale
                                        : -INFINITY;
    }
    __syncthreads();
    const float* s_row = s_s + lane * (kTile + 1);
    float tile_max = -INFINITY;
    for (int j = 0; j < kTile; ++j) tile_max = fmaxf(tile_max, s_row[j]);
    const float m_new = fmaxf(m, tile_max);
    if (m_new == -INFINITY) continue;  // no visible key yet (the barrier count stays uniform)
    const float correction = expf(m - m_new);  // 0 on the first visible tile
    float tile_sum = 0.0f;
#pragma unroll
    for (int c = 0; c < kPer; ++c) acc[c] *= correction;
    for (int j = 0; j < kTile; ++j) {
      const float p = expf(s_row[j] - m_new);  // masked: exp(-inf) = 0
      tile_sum += p;
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int d = warp + kWarps * c;
        if (d < D) acc[c] += p * v_s[j * D + d];
      }
    }
    l = l * correction + tile_sum;
    m = m_new;
  }
  const int qi = i0 + lane;
  if (qi >= s.T) return;
  const bool valid = qi < len;
  const float inv = valid ? 1.0f / l : 0.0f;
  float* o = out + (static_cast<int64_t>(b) * s.T + qi) * q_row + h * D;
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int d = warp + kWarps * c;
    if (d < D) o[d] = valid ? acc[c] * inv : 0.0f;
  }
  if (warp == 0) lse[(static_cast<int64_t>(b) * s.H + h) * s.T + qi] = valid ? m + logf(l) : 0.0f;
}

// dout, out [B,T,H,D] -> delta [B,H,T] = dout . out per row (0 for rows >= len).
// One warp per (b, t, h) row; grid ceil(B*T*H / 4), block 128.
__global__ void AttentionDeltaKernel(float* delta, const float* dout, const float* out,
                                     const int32_t* lens, int64_t rows, Dims s) {
  const int64_t row = blockIdx.x * int64_t{kWarps} + threadIdx.x / kWarpSize;  // (b*T + t)*H + h
  if (row >= rows) return;
  const int lane = threadIdx.x % kWarpSize;
  const int h = static_cast<int>(row % s.H);
  const int t = static_cast<int>((row / s.H) % s.T);
  const int b = static_cast<int>(row / (static_cast<int64_t>(s.H) * s.T));
  const float* dy = dout + row * s.D;
  const float* y = out + row * s.D;
  float sum = 0.0f;
  for (int d = lane; d < s.D; d += kWarpSize) sum += dy[d] * y[d];
  sum = WarpSum(sum);
  if (lane == 0) {
    delta[(static_cast<int64_t>(b) * s.H + h) * s.T + t] = t < ValidLen(lens, b, s.T) ? sum : 0.0f;
  }
}

// p and ds for query rows w, w+4, ... (of the q_s/do_s tile at i0) against the
// 32 keys of k_s/v_s (lane j = key j0 + j). Written to p_s/ds_s [32][ld].
__device__ __forceinline__ void ProbsAndScoreGrads(float* p_s, float* ds_s, int ld,
                                                   const float* q_s, const float* do_s,
                                                   const float* k_s, const float* v_s,
                                                   const float* lse_s, const float* delta_s, int i0,
                                                   int j0, int len, const Dims& s) {
  const int lane = threadIdx.x % kWarpSize;
  for (int i = threadIdx.x / kWarpSize; i < kTile; i += kWarps) {
    float p = 0.0f;
    float ds = 0.0f;
    if (Visible(i0 + i, j0 + lane, len, s.causal)) {
      const float score = Dot(q_s + i * s.D, k_s + lane * (s.D + 1), s.D) * s.scale;
      p = expf(score - lse_s[i]);
      const float dp = Dot(do_s + i * s.D, v_s + lane * (s.D + 1), s.D);
      ds = p * (dp - delta_s[i]) * s.scale;
    }
    if (p_s != nullptr) p_s[i * ld + lane] = p;
    ds_s[i * ld + lane] = ds;
  }
}

// lse [B,H,T], delta [B,H,T] rows t0..t0+31 of (b, h) -> lse_s, delta_s [32].
__device__ __forceinline__ void LoadRowStats(float* lse_s, float* delta_s, const float* lse,
                                             const float* delta, int64_t bh, int t0, int T) {
  if (threadIdx.x < kTile) {
    const int t = t0 + threadIdx.x;
    lse_s[threadIdx.x] = t < T ? lse[bh * T + t] : 0.0f;
    delta_s[threadIdx.x] = t < T ? delta[bh * T + t] : 0.0f;
  }
}

// -> dk, dv [B,T,Hkv,D] for keys j0..j0+31 of kv head kvh, summed over the
// group's query heads and all query tiles. grid (B*Hkv, ceil(T/32)), block 128,
// dynamic smem KvSmem(D). Thread (lane j, warp w) owns key j, dims w + 4c.
template <int kMaxD>
__global__ void __launch_bounds__(kThreads)
    AttentionBackwardKvKernel(float* dk, float* dv, const float* dout, const float* q,
                              const float* k, const float* v, const float* lse, const float* delta,
                              const int32_t* lens, Dims s) {
  constexpr int kPer = kMaxD / kWarps;
  extern __shared__ float smem[];
  const int D = s.D;
  float* k_s = smem;                    // [32][D+1]
  float* v_s = k_s + kTile * (D + 1);   // [32][D+1]
  float* q_s = v_s + kTile * (D + 1);   // [32][D]
  float* do_s = q_s + kTile * D;        // [32][D]
  float* p_s = do_s + kTile * D;        // [32][32]  lane j reads column j
  float* ds_s = p_s + kTile * kTile;    // [32][32]
  float* lse_s = ds_s + kTile * kTile;  // [32]
  float* delta_s = lse_s + kTile;       // [32]
  const int b = blockIdx.x / s.Hkv;
  const int kvh = blockIdx.x % s.Hkv;
  const int j0 = blockIdx.y * kTile;
  const int len = ValidLen(lens, b, s.T);
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int64_t q_row = static_cast<int64_t>(s.H) * D;
  const int64_t kv_row = static_cast<int64_t>(s.Hkv) * D;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kv_row + kvh * D;

  LoadTile(k_s, D + 1, k + kv_off, kv_row, j0, s.T, D);
  LoadTile(v_s, D + 1, v + kv_off, kv_row, j0, s.T, D);
  float dk_acc[kPer] = {};
  float dv_acc[kPer] = {};
  if (j0 < len) {
    for (int g = 0; g < s.group; ++g) {
      const int h = kvh * s.group + g;
      const int64_t q_off = static_cast<int64_t>(b) * s.T * q_row + h * D;
      const int64_t bh = static_cast<int64_t>(b) * s.H + h;
      for (int i0 = s.causal ? j0 : 0; i0 < len; i0 += kTile) {
        __syncthreads();  // k_s/v_s loaded; the previous tile is no longer read
        LoadTile(q_s, D, q + q_off, q_row, i0, s.T, D);
        LoadTile(do_s, D, dout + q_off, q_row, i0, s.T, D);
        LoadRowStats(lse_s, delta_s, lse, delta, bh, i0, s.T);
        __syncthreads();
        ProbsAndScoreGrads(p_s, ds_s, kTile, q_s, do_s, k_s, v_s, lse_s, delta_s, i0, j0, len, s);
        __syncthreads();
        for (int i = 0; i < kTile; ++i) {
          const float p = p_s[i * kTile + lane];
          const float ds = ds_s[i * kTile + lane];
#pragma unroll
          for (int c = 0; c < kPer; ++c) {
            const int d = warp + kWarps * c;
            if (d < D) {
              dv_acc[c] += p * do_s[i * D + d];
              dk_acc[c] += ds * q_s[i * D + d];
            }
          }
        }
      }
    }
  }
  const int kj = j0 + lane;
  if (kj >= s.T) return;
  float* dk_row = dk + kv_off + kj * kv_row;
  float* dv_row = dv + kv_off + kj * kv_row;
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int d = warp + kWarps * c;
    if (d < D) {
      dk_row[d] = dk_acc[c];
      dv_row[d] = dv_acc[c];
    }
  }
}

// -> dq [B,T,H,D] for query rows i0..i0+31 of head h, summed over key tiles.
// grid (B*H, ceil(T/32)), block 128, dynamic smem QSmem(D). Thread (lane i,
// warp w) owns row i, dims w + 4c.
template <int kMaxD>
__global__ void __launch_bounds__(kThreads)
    AttentionBackwardQKernel(float* dq, const float* dout, const float* q, const float* k,
                             const float* v, const float* lse, const float* delta,
                             const int32_t* lens, Dims s) {
  constexpr int kPer = kMaxD / kWarps;
  extern __shared__ float smem[];
  const int D = s.D;
  float* q_s = smem;                    // [32][D]
  float* do_s = q_s + kTile * D;        // [32][D]
  float* k_s = do_s + kTile * D;        // [32][D+1]
  float* v_s = k_s + kTile * (D + 1);   // [32][D+1]
  float* ds_s = v_s + kTile * (D + 1);  // [32][33]  lane i reads row i
  float* lse_s = ds_s + kTile * (kTile + 1);
  float* delta_s = lse_s + kTile;
  const int b = blockIdx.x / s.H;
  const int h = blockIdx.x % s.H;
  const int kvh = h / s.group;
  const int i0 = blockIdx.y * kTile;
  const int len = ValidLen(lens, b, s.T);
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int64_t q_row = static_cast<int64_t>(s.H) * D;
  const int64_t kv_row = static_cast<int64_t>(s.Hkv) * D;
  const int64_t q_off = static_cast<int64_t>(b) * s.T * q_row + h * D;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kv_row + kvh * D;

  LoadTile(q_s, D, q + q_off, q_row, i0, s.T, D);
  LoadTile(do_s, D, dout + q_off, q_row, i0, s.T, D);
  LoadRowStats(lse_s, delta_s, lse, delta, static_cast<int64_t>(b) * s.H + h, i0, s.T);
  float dq_acc[kPer] = {};
  const int key_end = i0 >= len ? 0 : (s.causal ? min(len, i0 + kTile) : len);
  for (int j0 = 0; j0 < key_end; j0 += kTile) {
    __syncthreads();  // q_s/do_s loaded; the previous key tile is no longer read
    LoadTile(k_s, D + 1, k + kv_off, kv_row, j0, s.T, D);
    LoadTile(v_s, D + 1, v + kv_off, kv_row, j0, s.T, D);
    __syncthreads();
    ProbsAndScoreGrads(nullptr, ds_s, kTile + 1, q_s, do_s, k_s, v_s, lse_s, delta_s, i0, j0, len,
                       s);
    __syncthreads();
    for (int j = 0; j < kTile; ++j) {
      const float ds = ds_s[lane * (kTile + 1) + j];
#pragma unroll
      for (int c = 0; c < kPer; ++c) {
        const int d = warp + kWarps * c;
        if (d < D) dq_acc[c] += ds * k_s[j * (D + 1) + d];
      }
    }
  }
  const int qi = i0 + lane;
  if (qi >= s.T) return;
  float* dq_row = dq + q_off + qi * q_row;
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int d = warp + kWarps * c;
    if (d < D) dq_row[d] = dq_acc[c];
  }
}

size_t ForwardSmem(int D) {
  return sizeof(float) * (kTile * D + kTile * (D + 1) + kTile * D + kTile * (kTile + 1));
}
size_t KvSmem(int D) {
  return sizeof(float) * (2 * kTile * (D + 1) + 2 * kTile * D + 2 * kTile * kTile + 2 * kTile);
}
size_t QSmem(int D) {
  return sizeof(float) * (2 * kTile * D + 2 * kTile * (D + 1) + kTile * (kTile + 1) + 2 * kTile);
}

// Launches `kernel` with `smem` bytes of dynamic shared memory (above 48 KiB
// needs an explicit opt-in per kernel).
template <typename Kernel, typename... Args>
void Launch(Kernel kernel, dim3 grid, size_t smem, Args... args) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  kernel<<<grid, kThreads, smem>>>(args...);
  CUDA_CHECK_LAUNCH();
}

Dims MakeDims(const AttentionShape& s) {
  CHECK(s.B >= 0 && s.T >= 0 && s.H > 0 && s.Hkv > 0 && s.D > 0)
      << "attention: bad shape B=" << s.B << " T=" << s.T << " H=" << s.H << " Hkv=" << s.Hkv
      << " D=" << s.D;
  CHECK_EQ(s.H % s.Hkv, 0) << "attention: H must be a multiple of Hkv";
  CHECK_LE(s.D, kMaxHeadDim) << "attention (CUDA): head dim above " << kMaxHeadDim
                             << " is not supported by this kernel";
  return Dims{s.T, s.H, s.Hkv, s.D, s.H / s.Hkv, s.causal, 1.0f / sqrtf(static_cast<float>(s.D))};
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* lens, const AttentionShape& s) {
  const Dims dims = MakeDims(s);
  if (s.B == 0 || s.T == 0) return;
  const dim3 grid(s.B * s.H, CeilDiv(s.T, kTile));
  const size_t smem = ForwardSmem(s.D);
  if (s.D <= 64) {
    Launch(AttentionForwardKernel<64>, grid, smem, out, lse, q, k, v, lens, dims);
  } else if (s.D <= 128) {
    Launch(AttentionForwardKernel<128>, grid, smem, out, lse, q, k, v, lens, dims);
  } else {
    Launch(AttentionForwardKernel<256>, grid, smem, out, lse, q, k, v, lens, dims);
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* lens, const AttentionShape& s) {
  const Dims dims = MakeDims(s);
  if (s.B == 0 || s.T == 0) return;
  const int64_t rows = int64_t{s.B} * s.T * s.H;
  auto* delta = static_cast<float*>(ScratchAlloc(sizeof(float) * rows, "attention delta"));
  AttentionDeltaKernel<<<CeilDiv(rows, kWarps), kThreads>>>(delta, dout, out, lens, rows, dims);
  CUDA_CHECK_LAUNCH();
  const dim3 kv_grid(s.B * s.Hkv, CeilDiv(s.T, kTile));
  const dim3 q_grid(s.B * s.H, CeilDiv(s.T, kTile));
  if (s.D <= 64) {
    Launch(AttentionBackwardKvKernel<64>, kv_grid, KvSmem(s.D), dk, dv, dout, q, k, v, lse,
           static_cast<const float*>(delta), lens, dims);
    Launch(AttentionBackwardQKernel<64>, q_grid, QSmem(s.D), dq, dout, q, k, v, lse,
           static_cast<const float*>(delta), lens, dims);
  } else if (s.D <= 128) {
    Launch(AttentionBackwardKvKernel<128>, kv_grid, KvSmem(s.D), dk, dv, dout, q, k, v, lse,
           static_cast<const float*>(delta), lens, dims);
    Launch(AttentionBackwardQKernel<128>, q_grid, QSmem(s.D), dq, dout, q, k, v, lse,
           static_cast<const float*>(delta), lens, dims);
  } else {
    Launch(AttentionBackwardKvKernel<256>, kv_grid, KvSmem(s.D), dk, dv, dout, q, k, v, lse,
           static_cast<const float*>(delta), lens, dims);
    Launch(AttentionBackwardQKernel<256>, q_grid, QSmem(s.D), dq, dout, q, k, v, lse,
           static_cast<const float*>(delta), lens, dims);
  }
  ScratchFree(delta);
}

}  // namespace ut::cuda
