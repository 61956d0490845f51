// Flash-style scaled dot-product attention on the CPU (see ops/attention.h).
//
// Work is done on tiles of kBlockQ query rows x kBlockK keys with small
// register-blocked matrix products (SmallGemm below), so no T x T matrix exists.
//
// Forward, one work item per (batch, query head, query block): for each key
// block, S = Q K^T * scale; every row keeps an online-softmax state (running
// max m, running sum l), rescales its output accumulator when m grows, and adds
// P V; at the end out = O / l and lse = m + log l.
//
// Backward, one work item per (batch, kv head) covering every query head that
// shares it: the item owns dq of those heads and dk, dv of its kv head, so no
// two threads write the same memory (no atomics) and every sum has a fixed
// order (bit-identical results for any thread count). Per tile, with P
// recomputed from lse and delta_i = sum_d dout_i * out_i:
//   P = exp(S - lse), dP = dout V^T, dS = P * (dP - delta) * scale,
//   dV += P^T dout, dK += dS^T Q, dQ += dS K.
//
// Masks: key j is used by row i iff j < len and (!causal or j <= i). Rows
// i >= len give out = 0, lse = 0 and zero gradients; keys j >= len give zero
// dk, dv. Masked scores are -inf, so their probabilities are exactly 0.
#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "glog/logging.h"
#include "ops/cpu/vec_math.h"

namespace ut::cpu {
namespace {

using internal::FastExp;

constexpr int kBlockQ = 64;  // query rows per tile
constexpr int kBlockK = 64;  // keys per tile (a multiple of 16)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---- Small matrix products on tiles -------------------------------------

using F8 = float __attribute__((vector_size(32)));  // one AVX2 register

inline F8 Load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store8(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }

inline F8 Splat(float x) { return F8{x, x, x, x, x, x, x, x}; }

// C[MR, 8*NV] (+)= A(MR, K) @ B[K, 8*NV], the accumulators in registers.
// A(m, k) = A[m * a_m + k * a_k]; B rows are ldb apart, C rows ldc apart.
template <int MR, int NV, bool kAccumulate>
inline void Tile(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k,
                 const float* B, int64_t ldb, int K) {
  F8 acc[MR][NV];
  const float* a_ptr[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    a_ptr[r] = A + r * a_m;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = kAccumulate ? Load8(C + r * ldc + 8 * v) : F8{};
  }
  for (int k = 0; k < K; ++k) {
    F8 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = Load8(B + 8 * v);
    B += ldb;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const F8 a = Splat(*a_ptr[r]);
      a_ptr[r] += a_k;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) Store8(C + r * ldc + 8 * v, acc[r][v]);
  }
}

// Rows [m0, m0+MR) of C[., N] (+)= A @ B: vector tiles of 16 and 8 columns,
// then a scalar tail for N % 8.
template <int MR, bool kAccumulate>
inline void RowPanel(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k,
                     const float* B, int64_t ldb, int N, int K) {
  int n = 0;
  for (; n + 16 <= N; n += 16) Tile<MR, 2, kAccumulate>(C + n, ldc, A, a_m, a_k, B + n, ldb, K);
  for (; n + 8 <= N; n += 8) Tile<MR, 1, kAccumulate>(C + n, ldc, A, a_m, a_k, B + n, ldb, K);
  for (; n < N; ++n) {
    for (int r = 0; r < MR; ++r) {
      float acc = kAccumulate ? C[r * ldc + n] : 0.0f;
      for (int k = 0; k < K; ++k) acc += A[r * a_m + k * a_k] * B[k * ldb + n];
      C[r * ldc + n] = acc;
    }
  }
}

// C[M,N] (+)= A(M,K) @ B[K,N]; each C element sums k in order (deterministic).
template <bool kAccumulate>
void SmallGemm(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k, const float* B,
               int64_t ldb, int M, int N, int K) {
  int m = 0;
  for (; m + 6 <= M; m += 6) {
    RowPanel<6, kAccumulate>(C + m * ldc, ldc, A + m * a_m, a_m, a_k, B, ldb, N, K);
  }
  for (; m + 4 <= M; m += 4) {
    RowPanel<4, kAccumulate>(C + m * ldc, ldc, A + m * a_m, a_m, a_k, B, ldb, N, K);
  }
  for (; m < M; ++m) {
    RowPanel<1, kAccumulate>(C + m * ldc, ldc, A + m * a_m, a_m, a_k, B, ldb, N, K);
  }
}

// max over x [kBlockK], vectorised (GCC leaves a float max reduction scalar).
inline float MaxOfBlock(const float* x) {
  F8 m = Load8(x);
#pragma GCC unroll 8
  for (int v = 1; v < kBlockK / 8; ++v) {
    const F8 y = Load8(x + 8 * v);
    m = m > y ? m : y;
  }
  float r = m[0];
  for (int i = 1; i < 8; ++i) r = r > m[i] ? r : m[i];
  return r;
}

// ---- Helpers --------------------------------------------------------------

int ValidLen(const int32_t* lens, int b, int T) {
  if (lens == nullptr) return T;
  CHECK(lens[b] >= 0 && lens[b] <= T)
      << "attention: lens[" << b << "] = " << lens[b] << " outside [0, " << T << "]";
  return lens[b];
}

void CheckShape(const AttentionShape& s) {
  CHECK(s.B >= 0 && s.T >= 0 && s.H > 0 && s.Hkv > 0 && s.D > 0)
      << "attention: bad shape B=" << s.B << " T=" << s.T << " H=" << s.H << " Hkv=" << s.Hkv
      << " D=" << s.D;
  CHECK_EQ(s.H % s.Hkv, 0) << "attention: H must be a multiple of Hkv";
}

// src rows [nk, D] (row stride `stride`) -> dst [D, kBlockK] transposed,
// columns nk..kBlockK-1 zero.
void TransposeBlock(float* dst, const float* src, int64_t stride, int nk, int D) {
  for (int jj = 0; jj < nk; ++jj) {
    const float* row = src + jj * stride;
    for (int d = 0; d < D; ++d) dst[d * kBlockK + jj] = row[d];
  }
  for (int d = 0; d < D; ++d) {
    for (int jj = nk; jj < kBlockK; ++jj) dst[d * kBlockK + jj] = 0.0f;
  }
}

// Worth an OpenMP region? Below ~2^20 multiply-adds (~0.3 ms) the start-up and
// barrier cost more than they save.
inline bool Parallel(const AttentionShape& s, int64_t items) {
  return items > 1 && static_cast<int64_t>(s.B) * s.H * s.T * s.T * s.D >= (int64_t{1} << 20);
}

// Number of keys of the block [j0, j0 + nk) that query row i may use (<= 0: none).
inline int ValidKeys(bool causal, int i, int j0, int nk) {
  return causal ? std::min(nk, i - j0 + 1) : nk;
}

// Per-thread scratch for the forward.
struct ForwardScratch {
  explicit ForwardScratch(int D) : o(static_cast<size_t>(kBlockQ) * D) {}
  std::vector<float> o;                    // [kBlockQ, D] unnormalised output
  alignas(64) float s[kBlockQ * kBlockK];  // scores, then probabilities
  float m[kBlockQ];
  float l[kBlockQ];
};

// Rows of K padded to whole key blocks: kT is [B, Hkv, D, PaddedT(T)].
inline int PaddedT(int T) { return (T + kBlockK - 1) / kBlockK * kBlockK; }

// k [B,T,Hkv,D] -> kT [B,Hkv,D,PaddedT] (pad columns zero), so every query
// block of every head reads K^T without transposing it again.
void TransposeKeys(float* kT, const float* k, const AttentionShape& s) {
  const int Tp = PaddedT(s.T);
  const int64_t items = static_cast<int64_t>(s.B) * s.Hkv;
#pragma omp parallel for schedule(static) if (Parallel(s, items))
  for (int64_t item = 0; item < items; ++item) {
    const int b = static_cast<int>(item / s.Hkv);
    const int kvh = static_cast<int>(item % s.Hkv);
    float* dst = kT + item * s.D * Tp;
    const int64_t stride = static_cast<int64_t>(s.Hkv) * s.D;
    const float* src = k + static_cast<int64_t>(b) * s.T * stride + kvh * s.D;
    for (int j = 0; j < s.T; ++j) {
      for (int d = 0; d < s.D; ++d) dst[static_cast<int64_t>(d) * Tp + j] = src[j * stride + d];
    }
    for (int d = 0; d < s.D; ++d) std::fill(dst + d * Tp + s.T, dst + (d + 1) * Tp, 0.0f);
  }
}

// One (batch b, query head h, query block starting at i0) of the forward.
// q [B,T,H,D], k/v [B,T,Hkv,D] -> out [B,T,H,D], lse [B,H,T].
// kT [B,Hkv,D,PaddedT] is K transposed (TransposeKeys).
void ForwardItem(float* out, float* lse, const float* q, const float* kT, const float* v, int b,
                 int h, int i0, int len, const AttentionShape& s, ForwardScratch& ws) {
  const int D = s.D;
  const int T = s.T;
  const int kvh = h / (s.H / s.Hkv);
  const int64_t q_stride = static_cast<int64_t>(s.H) * D;
  const int64_t kv_stride = static_cast<int64_t>(s.Hkv) * D;
  const float* q_blk = q + (static_cast<int64_t>(b) * T + i0) * q_stride + h * D;
  const int Tp = PaddedT(T);
  const float* kT_bh = kT + (static_cast<int64_t>(b) * s.Hkv + kvh) * D * Tp;
  const float* v_bh = v + static_cast<int64_t>(b) * T * kv_stride + kvh * D;
  float* out_blk = out + (static_cast<int64_t>(b) * T + i0) * q_stride + h * D;
  float* lse_blk = lse + (static_cast<int64_t>(b) * s.H + h) * T + i0;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int rows = std::min(kBlockQ, T - i0);        // rows of this item
  const int nq = std::max(0, std::min(rows, len - i0));  // of which valid

  std::fill(ws.o.begin(), ws.o.begin() + static_cast<int64_t>(nq) * D, 0.0f);
  std::fill(ws.m, ws.m + nq, kNegInf);
  std::fill(ws.l, ws.l + nq, 0.0f);
  const int key_end = s.causal ? std::min(len, i0 + nq) : len;
  for (int j0 = 0; j0 < key_end && nq > 0; j0 += kBlockK) {
    const int nk = std::min(kBlockK, key_end - j0);
    // s [nq, kBlockK] = Q_blk @ K_blk^T (columns past nk are masked below).
    SmallGemm<false>(ws.s, kBlockK, q_blk, q_stride, 1, kT_bh + j0, Tp, nq, kBlockK, D);
    for (int r = 0; r < nq; ++r) {
      float* sr = ws.s + r * kBlockK;
      const int nv = ValidKeys(s.causal, i0 + r, j0, nk);
      if (nv <= 0) {  // no key of this block is visible to row r
        std::fill(sr, sr + kBlockK, 0.0f);
        continue;
      }
#pragma omp simd
      for (int jj = 0; jj < kBlockK; ++jj) sr[jj] = jj < nv ? sr[jj] * scale : kNegInf;
      const float block_max = MaxOfBlock(sr);
      const float m_new = std::max(ws.m[r], block_max);
      const float correction = FastExp(ws.m[r] - m_new);  // 0 on the first block
      float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
      for (int jj = 0; jj < kBlockK; ++jj) {
        sr[jj] = FastExp(sr[jj] - m_new);
        block_sum += sr[jj];
      }
      ws.m[r] = m_new;
      ws.l[r] = ws.l[r] * correction + block_sum;
      float* o_row = ws.o.data() + static_cast<int64_t>(r) * D;
#pragma omp simd
      for (int d = 0; d < D; ++d) o_row[d] *= correction;
    }
    // o [nq, D] += P [nq, nk] @ V_blk [nk, D].
    SmallGemm<true>(ws.o.data(), D, ws.s, kBlockK, 1, v_bh + j0 * kv_stride, kv_stride, nq, D,
                    nk);
  }
  for (int r = 0; r < nq; ++r) {
    const float inv = 1.0f / ws.l[r];
    const float* o_row = ws.o.data() + static_cast<int64_t>(r) * D;
    float* y = out_blk + r * q_stride;
#pragma omp simd
    for (int d = 0; d < D; ++d) y[d] = o_row[d] * inv;
    lse_blk[r] = ws.m[r] + std::log(ws.l[r]);
  }
  for (int r = nq; r < rows; ++r) {
    std::memset(out_blk + r * q_stride, 0, sizeof(float) * D);
    lse_blk[r] = 0.0f;
  }
}

// Per-thread scratch for the backward.
struct BackwardScratch {
  BackwardScratch(int D, int group, int T)
      : kT(static_cast<size_t>(D) * kBlockK),
        vT(kT.size()),
        dk(static_cast<size_t>(kBlockK) * D),
        dv(dk.size()),
        delta(static_cast<size_t>(group) * T) {}
  std::vector<float> kT, vT;  // [D, kBlockK]
  std::vector<float> dk, dv;  // [kBlockK, D] for the current key block
  std::vector<float> delta;   // [group, T]: dout_i . out_i
  alignas(64) float p[kBlockQ * kBlockK];
  alignas(64) float ds[kBlockQ * kBlockK];  // dP, then dS
};

// One (batch b, kv head kvh) of the backward, all query heads of its group.
void BackwardItem(float* dq, float* dk, float* dv, const float* dout, const float* q,
                  const float* k, const float* v, const float* out, const float* lse, int b,
                  int kvh, int len, const AttentionShape& s, BackwardScratch& ws) {
  const int D = s.D;
  const int T = s.T;
  const int group = s.H / s.Hkv;
  const int64_t q_stride = static_cast<int64_t>(s.H) * D;
  const int64_t kv_stride = static_cast<int64_t>(s.Hkv) * D;
  const int64_t kv_off = static_cast<int64_t>(b) * T * kv_stride + kvh * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  // Zero the dq rows of the group and the padded dk/dv rows; delta for valid rows.
  for (int g = 0; g < group; ++g) {
    const int64_t q_off = static_cast<int64_t>(b) * T * q_stride + (kvh * group + g) * D;
    for (int i = 0; i < T; ++i) {
      std::memset(dq + q_off + i * q_stride, 0, sizeof(float) * D);
      if (i >= len) continue;
      const float* dy = dout + q_off + i * q_stride;
      const float* y = out + q_off + i * q_stride;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int d = 0; d < D; ++d) dot += dy[d] * y[d];
      ws.delta[g * T + i] = dot;
    }
  }
  for (int j = len; j < T; ++j) {
    std::memset(dk + kv_off + j * kv_stride, 0, sizeof(float) * D);
    std::memset(dv + kv_off + j * kv_stride, 0, sizeof(float) * D);
  }

  for (int j0 = 0; j0 < len; j0 += kBlockK) {
    const int nk = std::min(kBlockK, len - j0);
    const float* k_blk = k + kv_off + j0 * kv_stride;
    const float* v_blk = v + kv_off + j0 * kv_stride;
    TransposeBlock(ws.kT.data(), k_blk, kv_stride, nk, D);
    TransposeBlock(ws.vT.data(), v_blk, kv_stride, nk, D);
    std::fill(ws.dk.begin(), ws.dk.end(), 0.0f);
    std::fill(ws.dv.begin(), ws.dv.end(), 0.0f);
    for (int g = 0; g < group; ++g) {
      const int h = kvh * group + g;
      const int64_t q_off = static_cast<int64_t>(b) * T * q_stride + h * D;
      const float* lse_bh = lse + (static_cast<int64_t>(b) * s.H + h) * T;
      const float* delta = ws.delta.data() + g * T;
      // Query blocks that see at least one key of this block.
      for (int i0 = s.causal ? (j0 / kBlockQ) * kBlockQ : 0; i0 < len; i0 += kBlockQ) {
        const int nq = std::min(kBlockQ, len - i0);
        const float* q_blk = q + q_off + i0 * q_stride;
        const float* dy_blk = dout + q_off + i0 * q_stride;
        // p = Q K^T, ds = dout V^T (both [nq, kBlockK]).
        SmallGemm<false>(ws.p, kBlockK, q_blk, q_stride, 1, ws.kT.data(), kBlockK, nq, kBlockK,
                         D);
        SmallGemm<false>(ws.ds, kBlockK, dy_blk, q_stride, 1, ws.vT.data(), kBlockK, nq, kBlockK,
                         D);
        for (int r = 0; r < nq; ++r) {
          const int i = i0 + r;
          const int nv = ValidKeys(s.causal, i, j0, nk);
          const float row_lse = lse_bh[i];
          const float row_delta = delta[i];
          float* pr = ws.p + r * kBlockK;
          float* dsr = ws.ds + r * kBlockK;
#pragma omp simd
          for (int jj = 0; jj < kBlockK; ++jj) {
            const float pj = jj < nv ? FastExp(pr[jj] * scale - row_lse) : 0.0f;
            pr[jj] = pj;
            dsr[jj] = pj * (dsr[jj] - row_delta) * scale;
          }
        }
        // dv [nk, D] += P^T dout_blk; dk [nk, D] += dS^T Q_blk; dq_blk += dS K_blk.
        SmallGemm<true>(ws.dv.data(), D, ws.p, 1, kBlockK, dy_blk, q_stride, nk, D, nq);
        SmallGemm<true>(ws.dk.data(), D, ws.ds, 1, kBlockK, q_blk, q_stride, nk, D, nq);
        SmallGemm<true>(dq + q_off + i0 * q_stride, q_stride, ws.ds, kBlockK, 1, k_blk, kv_stride,
                        nq, D, nk);
      }
    }
    for (int jj = 0; jj < nk; ++jj) {
      std::memcpy(dk + kv_off + (j0 + jj) * kv_stride, ws.dk.data() + jj * D, sizeof(float) * D);
      std::memcpy(dv + kv_off + (j0 + jj) * kv_stride, ws.dv.data() + jj * D, sizeof(float) * D);
    }
  }
}

}  // namespace

// q [B,T,H,D], k [B,T,Hkv,D], v [B,T,Hkv,D] -> out [B,T,H,D], lse [B,H,T].
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* lens, const AttentionShape& s) {
  CheckShape(s);
  const int q_blocks = (s.T + kBlockQ - 1) / kBlockQ;
  const int64_t items = static_cast<int64_t>(s.B) * s.H * q_blocks;
  // K^T for the whole call; the buffer is kept per calling thread and only grows.
  thread_local std::vector<float> kT;
  const size_t kT_size = static_cast<size_t>(s.B) * s.Hkv * s.D * PaddedT(s.T);
  if (kT.size() < kT_size) kT.resize(kT_size);
  TransposeKeys(kT.data(), k, s);
  const float* kT_data = kT.data();  // inside the region `kT` would name each thread's own copy
#pragma omp parallel if (Parallel(s, items))
  {
    ForwardScratch ws(s.D);
    // Interleaved static schedule: causal items differ in cost, neighbours balance.
#pragma omp for schedule(static, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int qb = static_cast<int>(item % q_blocks);
      const int h = static_cast<int>((item / q_blocks) % s.H);
      const int b = static_cast<int>(item / (static_cast<int64_t>(q_blocks) * s.H));
      ForwardItem(out, lse, q, kT_data, v, b, h, qb * kBlockQ, ValidLen(lens, b, s.T), s, ws);
    }
  }
}

// dout [B,T,H,D] -> dq [B,T,H,D], dk/dv [B,T,Hkv,D] (written).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* lens, const AttentionShape& s) {
  CheckShape(s);
  const int64_t items = static_cast<int64_t>(s.B) * s.Hkv;
#pragma omp parallel if (Parallel(s, items))
  {
    BackwardScratch ws(s.D, s.H / s.Hkv, s.T);
#pragma omp for schedule(static, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int b = static_cast<int>(item / s.Hkv);
      const int kvh = static_cast<int>(item % s.Hkv);
      BackwardItem(dq, dk, dv, dout, q, k, v, out, lse, b, kvh, ValidLen(lens, b, s.T), s, ws);
    }
  }
}

}  // namespace ut::cpu
