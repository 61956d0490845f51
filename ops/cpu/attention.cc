// Flash-style scaled dot-product attention on the CPU (see ops/attention.h).
//
// Work is done on tiles of kBlockQ query rows x kBlockK keys with small
// register-blocked matrix products (SmallGemm below), so no T x T matrix exists.
// Every operand of those products is contiguous with a short row stride (K^T
// and V blocks are packed once per call, Q/dout/dq once per backward item):
// rows of a packed [B*T, (H+2Hkv)*D] projection are kilobytes apart, and
// walking 64 of them would thrash the L1 cache.
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
// dk, dv. Masked scores are -inf, so their probabilities are exactly 0. On a
// causal diagonal tile the products skip what the mask makes zero (Band below):
// they only drop exact-zero terms, so sums keep their values and order.
//
// Items are handed out dynamically, costliest first (causal items differ in
// cost); each item's result does not depend on which thread runs it.
#include "ops/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "glog/logging.h"
#include "ops/cpu/vec_math.h"

namespace ut::cpu {
namespace {

using internal::FastExp;

constexpr int kBlockQ = 64;  // query rows per tile
constexpr int kBlockK = 64;  // keys per tile (a multiple of 16)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Causal offset of a tile with no mask inside it (see Band).
constexpr int kNoMask = 1 << 29;

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

// What a causal tile lets a product skip. With off = i0 - j0 (query block
// start minus key block start), query row r of the tile sees keys jj <= r + off.
//   kCols:   C = scores [rows, keys]: row panel m computes only the columns
//            n < m + MR + off (rounded up to 8; the other columns are left as
//            they were and must be masked by the caller).
//   kKEnd:   A = P or dS [rows, keys], K runs over keys: sums k < m + MR + off.
//   kKBegin: C rows are keys, K runs over query rows: sums k >= m - off.
// The skipped A entries are exact zeros, so results equal the full product's.
enum class Band { kCols, kKEnd, kKBegin };

// C[M,N] (+)= A(M,K) @ B[K,N] over the part `band` leaves (off = kNoMask: all);
// each C element sums k in order (deterministic).
template <bool kAccumulate, Band band>
void SmallGemm(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k, const float* B,
               int64_t ldb, int M, int N, int K, int off) {
  auto panel = [&](auto rows, int m) {
    constexpr int MR = decltype(rows)::value;
    int n_end = N, k_begin = 0, k_end = K;
    if constexpr (band == Band::kCols) n_end = std::min(N, (m + MR + off + 7) / 8 * 8);
    if constexpr (band == Band::kKEnd) k_end = std::min(K, m + MR + off);
    if constexpr (band == Band::kKBegin) k_begin = std::max(0, m - off);
    if (n_end <= 0) return;
    if (kAccumulate && k_begin >= k_end) return;
    k_end = std::max(k_begin, k_end);
    RowPanel<MR, kAccumulate>(C + m * ldc, ldc, A + m * a_m + k_begin * a_k, a_m, a_k,
                              B + k_begin * ldb, ldb, n_end, k_end - k_begin);
  };
  int m = 0;
  for (; m + 6 <= M; m += 6) panel(std::integral_constant<int, 6>{}, m);
  for (; m + 4 <= M; m += 4) panel(std::integral_constant<int, 4>{}, m);
  for (; m < M; ++m) panel(std::integral_constant<int, 1>{}, m);
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

void CheckShape(const AttentionShape& s, const AttentionStrides& ld) {
  CHECK(s.B >= 0 && s.T >= 0 && s.H > 0 && s.Hkv > 0 && s.D > 0)
      << "attention: bad shape B=" << s.B << " T=" << s.T << " H=" << s.H << " Hkv=" << s.Hkv
      << " D=" << s.D;
  CHECK_EQ(s.H % s.Hkv, 0) << "attention: H must be a multiple of Hkv";
  CHECK(ld.q >= int64_t{s.H} * s.D && ld.out >= int64_t{s.H} * s.D &&
        ld.k >= int64_t{s.Hkv} * s.D && ld.v >= int64_t{s.Hkv} * s.D)
      << "attention: row strides shorter than a row";
}

AttentionStrides Dense(const AttentionShape& s) {
  return {int64_t{s.H} * s.D, int64_t{s.Hkv} * s.D, int64_t{s.Hkv} * s.D, int64_t{s.H} * s.D};
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

inline int NumBlocks(int T) { return (T + kBlockK - 1) / kBlockK; }

// dst [D] = src [D], inline (a libc call per short row costs more than the copy).
inline void CopyRow(float* dst, const float* src, int D) {
#pragma omp simd
  for (int d = 0; d < D; ++d) dst[d] = src[d];
}

// 8x8 transpose: rows src[0..7] (stride ls) -> dst rows (stride ld).
inline void Transpose8x8(float* dst, int64_t ld, const float* src, int64_t ls) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// src rows [nk, D] (row stride `stride`) -> dst [D, kBlockK] transposed,
// columns nk..kBlockK-1 zero.
void TransposeBlock(float* dst, const float* src, int64_t stride, int nk, int D) {
  const int nk8 = nk / 8 * 8, D8 = D / 8 * 8;
  for (int j = 0; j < nk8; j += 8) {
    for (int d = 0; d < D8; d += 8) {
      Transpose8x8(dst + d * kBlockK + j, kBlockK, src + j * stride + d, stride);
    }
  }
  for (int jj = 0; jj < nk; ++jj) {  // what the 8x8 blocks missed
    const float* row = src + jj * stride;
    for (int d = jj < nk8 ? D8 : 0; d < D; ++d) dst[d * kBlockK + jj] = row[d];
  }
  for (int d = 0; d < D; ++d) {
    for (int jj = nk; jj < kBlockK; ++jj) dst[d * kBlockK + jj] = 0.0f;
  }
}

// src rows [nk, D] (row stride `stride`) -> dst [kBlockK, D], rows nk.. zero.
void CopyBlock(float* dst, const float* src, int64_t stride, int nk, int D) {
  for (int jj = 0; jj < nk; ++jj) CopyRow(dst + jj * D, src + jj * stride, D);
  std::fill(dst + int64_t{nk} * D, dst + int64_t{kBlockK} * D, 0.0f);
}

// k, v [B,T,Hkv,D] (rows ld.k / ld.v apart) -> per (b, kv head), block-major:
// kT [B,Hkv,NB,D,kBlockK] (K^T of each key block) and vb [B,Hkv,NB,kBlockK,D];
// pad keys are zero.
void PackKeysValues(float* kT, float* vb, const float* k, const float* v, const AttentionShape& s,
                    const AttentionStrides& ld) {
  const int nb = NumBlocks(s.T);
  const int64_t block = int64_t{kBlockK} * s.D;
  const int64_t items = static_cast<int64_t>(s.B) * s.Hkv;
#pragma omp parallel for schedule(static) if (Parallel(s, items))
  for (int64_t item = 0; item < items; ++item) {
    const int b = static_cast<int>(item / s.Hkv);
    const int kvh = static_cast<int>(item % s.Hkv);
    for (int jb = 0; jb < nb; ++jb) {
      const int j0 = jb * kBlockK;
      const int nk = std::min(kBlockK, s.T - j0);
      const int64_t row0 = static_cast<int64_t>(b) * s.T + j0;
      const int64_t dst = (item * nb + jb) * block;
      TransposeBlock(kT + dst, k + row0 * ld.k + int64_t{kvh} * s.D, ld.k, nk, s.D);
      CopyBlock(vb + dst, v + row0 * ld.v + int64_t{kvh} * s.D, ld.v, nk, s.D);
    }
  }
}

// Grow-only per-thread scratch (OpenMP threads persist between calls).
float* Scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

// One (batch b, query head h, query block starting at i0) of the forward.
// q [B,T,H,D] -> out [B,T,H,D], lse [B,H,T]; kT_bh [NB,D,kBlockK] and
// vb_bh [NB,kBlockK,D] are the packed blocks of this head's kv head.
void ForwardItem(float* out, float* lse, const float* q, const float* kT_bh, const float* vb_bh,
                 int b, int h, int i0, int len, const AttentionShape& s,
                 const AttentionStrides& ld) {
  const int D = s.D;
  const int T = s.T;
  const float* q_blk = q + (static_cast<int64_t>(b) * T + i0) * ld.q + int64_t{h} * D;
  float* out_blk = out + (static_cast<int64_t>(b) * T + i0) * ld.out + int64_t{h} * D;
  float* lse_blk = lse + (static_cast<int64_t>(b) * s.H + h) * T + i0;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int rows = std::min(kBlockQ, T - i0);            // rows of this item
  const int nq = std::max(0, std::min(rows, len - i0));  // of which valid
  const int64_t block = int64_t{kBlockK} * D;

  thread_local std::vector<float> o_buf;
  float* o = Scratch(o_buf, static_cast<size_t>(kBlockQ) * D);  // [nq, D] unnormalised output
  alignas(64) float sc[kBlockQ * kBlockK];                       // scores, then probabilities
  float m[kBlockQ];        // running max
  float l[kBlockQ];        // running sum
  float row_max[kBlockQ];  // of the current block
  float row_sum[kBlockQ];
  float corr[kBlockQ];
  std::fill(o, o + static_cast<int64_t>(nq) * D, 0.0f);
  std::fill(m, m + nq, kNegInf);
  std::fill(l, l + nq, 0.0f);
  const int key_end = s.causal ? std::min(len, i0 + nq) : len;
  for (int j0 = 0; j0 < key_end && nq > 0; j0 += kBlockK) {
    const int nk = std::min(kBlockK, key_end - j0);
    const int off = s.causal ? i0 - j0 : kNoMask;
    const float* kT_blk = kT_bh + (j0 / kBlockK) * block;
    const float* v_blk = vb_bh + (j0 / kBlockK) * block;
    // sc [nq, kBlockK] = Q_blk @ K_blk^T (columns past each row's keys are masked below).
    SmallGemm<false, Band::kCols>(sc, kBlockK, q_blk, ld.q, 1, kT_blk, kBlockK, nq, kBlockK, D,
                                  off);
    // Online softmax in phases over all rows of the tile, so the per-row
    // dependency chains (max -> correction -> exp) of different rows overlap.
    // 1: mask and scale, row maxima.
    for (int r = 0; r < nq; ++r) {
      float* sr = sc + r * kBlockK;
      const int nv = ValidKeys(s.causal, i0 + r, j0, nk);  // <= 0: row sees no key here
#pragma omp simd
      for (int jj = 0; jj < kBlockK; ++jj) sr[jj] = jj < nv ? sr[jj] * scale : kNegInf;
      row_max[r] = MaxOfBlock(sr);
    }
    // 2: new running max and the factor rescaling the old state (0 on the
    // first block; 1 for a row without keys here, whose max stays).
#pragma omp simd
    for (int r = 0; r < nq; ++r) {
      const bool none = row_max[r] == kNegInf;
      const float m_new = none ? m[r] : std::max(m[r], row_max[r]);
      corr[r] = none ? 1.0f : FastExp(m[r] - m_new);
      m[r] = m_new;
    }
    // 3: probabilities (unnormalised) and their row sums.
    for (int r = 0; r < nq; ++r) {
      float* sr = sc + r * kBlockK;
      if (row_max[r] == kNegInf) {
        std::fill(sr, sr + kBlockK, 0.0f);
        row_sum[r] = 0.0f;
        continue;
      }
      const float m_r = m[r];
      float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
      for (int jj = 0; jj < kBlockK; ++jj) {
        sr[jj] = FastExp(sr[jj] - m_r);
        block_sum += sr[jj];
      }
      row_sum[r] = block_sum;
    }
    // 4: running sums and output accumulators rescaled.
#pragma omp simd
    for (int r = 0; r < nq; ++r) l[r] = l[r] * corr[r] + row_sum[r];
    for (int r = 0; r < nq; ++r) {
      float* o_row = o + static_cast<int64_t>(r) * D;
      const float c = corr[r];
#pragma omp simd
      for (int d = 0; d < D; ++d) o_row[d] *= c;
    }
    // o [nq, D] += P [nq, nk] @ V_blk [nk, D].
    SmallGemm<true, Band::kKEnd>(o, D, sc, kBlockK, 1, v_blk, D, nq, D, nk, off);
  }
  for (int r = 0; r < nq; ++r) {
    const float inv = 1.0f / l[r];
    const float* o_row = o + static_cast<int64_t>(r) * D;
    float* y = out_blk + r * ld.out;
#pragma omp simd
    for (int d = 0; d < D; ++d) y[d] = o_row[d] * inv;
    lse_blk[r] = m[r] + std::log(l[r]);
  }
  for (int r = nq; r < rows; ++r) {
    std::fill_n(out_blk + r * ld.out, D, 0.0f);
    lse_blk[r] = 0.0f;
  }
}

// One (batch b, kv head kvh) of the backward, all query heads of its group.
void BackwardItem(float* dq, float* dk, float* dv, const float* dout, const float* q,
                  const float* k, const float* v, const float* out, const float* lse, int b,
                  int kvh, int len, const AttentionShape& s, const AttentionStrides& ld) {
  const int D = s.D;
  const int T = s.T;
  const int group = s.H / s.Hkv;
  const int64_t row0 = static_cast<int64_t>(b) * T;  // first row of batch b
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t tile = int64_t{kBlockK} * D;
  const int64_t head = int64_t{T} * D;

  // Per-thread scratch: the group's q, dout, dq rows packed [group, T, D]
  // (rows < len used), delta [group, T], and key-block buffers.
  thread_local std::vector<float> buf;
  float* qp = Scratch(buf, 3 * group * head + group * T + 5 * tile);
  float* dop = qp + group * head;
  float* dqp = dop + group * head;
  float* delta = dqp + group * head;
  float* kb = delta + group * T;  // [kBlockK, D] K rows of the block
  float* kT = kb + tile;          // [D, kBlockK]
  float* vT = kT + tile;          // [D, kBlockK]
  float* dk_acc = vT + tile;      // [kBlockK, D]
  float* dv_acc = dk_acc + tile;  // [kBlockK, D]
  alignas(64) float p[kBlockQ * kBlockK];
  alignas(64) float ds[kBlockQ * kBlockK];  // dP, then dS

  for (int g = 0; g < group; ++g) {
    const int64_t col = int64_t{kvh * group + g} * D;
    for (int i = 0; i < len; ++i) {
      const float* qi = q + (row0 + i) * ld.q + col;
      const float* dyi = dout + (row0 + i) * ld.out + col;
      const float* yi = out + (row0 + i) * ld.out + col;
      CopyRow(qp + g * head + int64_t{i} * D, qi, D);
      CopyRow(dop + g * head + int64_t{i} * D, dyi, D);
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int d = 0; d < D; ++d) dot += dyi[d] * yi[d];
      delta[g * T + i] = dot;
    }
    std::fill(dqp + g * head, dqp + g * head + int64_t{len} * D, 0.0f);
  }

  const int64_t kcol = int64_t{kvh} * D;
  for (int j0 = 0; j0 < len; j0 += kBlockK) {
    const int nk = std::min(kBlockK, len - j0);
    const float* k_blk = k + (row0 + j0) * ld.k + kcol;
    const float* v_blk = v + (row0 + j0) * ld.v + kcol;
    CopyBlock(kb, k_blk, ld.k, nk, D);
    TransposeBlock(kT, k_blk, ld.k, nk, D);
    TransposeBlock(vT, v_blk, ld.v, nk, D);
    std::fill(dk_acc, dk_acc + tile, 0.0f);
    std::fill(dv_acc, dv_acc + tile, 0.0f);
    for (int g = 0; g < group; ++g) {
      const int h = kvh * group + g;
      const float* lse_bh = lse + (static_cast<int64_t>(b) * s.H + h) * T;
      const float* delta_g = delta + g * T;
      // Query blocks that see at least one key of this block.
      for (int i0 = s.causal ? (j0 / kBlockQ) * kBlockQ : 0; i0 < len; i0 += kBlockQ) {
        const int nq = std::min(kBlockQ, len - i0);
        const int off = s.causal ? i0 - j0 : kNoMask;
        const float* q_blk = qp + g * head + int64_t{i0} * D;
        const float* dy_blk = dop + g * head + int64_t{i0} * D;
        // p = Q K^T, ds = dout V^T (both [nq, kBlockK]).
        SmallGemm<false, Band::kCols>(p, kBlockK, q_blk, D, 1, kT, kBlockK, nq, kBlockK, D, off);
        SmallGemm<false, Band::kCols>(ds, kBlockK, dy_blk, D, 1, vT, kBlockK, nq, kBlockK, D,
                                      off);
        for (int r = 0; r < nq; ++r) {
          const int i = i0 + r;
          const int nv = ValidKeys(s.causal, i, j0, nk);
          const float row_lse = lse_bh[i];
          const float row_delta = delta_g[i];
          float* pr = p + r * kBlockK;
          float* dsr = ds + r * kBlockK;
#pragma omp simd
          for (int jj = 0; jj < kBlockK; ++jj) {
            const float pj = jj < nv ? FastExp(pr[jj] * scale - row_lse) : 0.0f;
            pr[jj] = pj;
            dsr[jj] = jj < nv ? pj * (dsr[jj] - row_delta) * scale : 0.0f;
          }
        }
        // dv [nk, D] += P^T dout_blk; dk [nk, D] += dS^T Q_blk; dq_blk += dS K_blk.
        SmallGemm<true, Band::kKBegin>(dv_acc, D, p, 1, kBlockK, dy_blk, D, nk, D, nq, off);
        SmallGemm<true, Band::kKBegin>(dk_acc, D, ds, 1, kBlockK, q_blk, D, nk, D, nq, off);
        SmallGemm<true, Band::kKEnd>(dqp + g * head + int64_t{i0} * D, D, ds, kBlockK, 1, kb, D,
                                     nq, D, nk, off);
      }
    }
    for (int jj = 0; jj < nk; ++jj) {
      CopyRow(dk + (row0 + j0 + jj) * ld.k + kcol, dk_acc + jj * D, D);
      CopyRow(dv + (row0 + j0 + jj) * ld.v + kcol, dv_acc + jj * D, D);
    }
  }
  for (int j = len; j < T; ++j) {
    std::fill_n(dk + (row0 + j) * ld.k + kcol, D, 0.0f);
    std::fill_n(dv + (row0 + j) * ld.v + kcol, D, 0.0f);
  }
  for (int g = 0; g < group; ++g) {
    const int64_t col = int64_t{kvh * group + g} * D;
    for (int i = 0; i < T; ++i) {
      float* dqi = dq + (row0 + i) * ld.q + col;
      if (i < len) {
        CopyRow(dqi, dqp + g * head + int64_t{i} * D, D);
      } else {
        std::fill_n(dqi, D, 0.0f);
      }
    }
  }
}

}  // namespace

// q [B,T,H,D], k [B,T,Hkv,D], v [B,T,Hkv,D] (rows ld apart) -> out [B,T,H,D], lse [B,H,T].
void attention_forward_strided(float* out, float* lse, const float* q, const float* k,
                               const float* v, const int32_t* lens, const AttentionShape& s,
                               const AttentionStrides& ld) {
  CheckShape(s, ld);
  const int q_blocks = (s.T + kBlockQ - 1) / kBlockQ;
  const int64_t heads = static_cast<int64_t>(s.B) * s.H;
  const int64_t items = heads * q_blocks;
  // Packed K^T and V blocks for the whole call; the buffer is kept per calling
  // thread and only grows.
  thread_local std::vector<float> packed;
  const int64_t per_kv_head = int64_t{NumBlocks(s.T)} * kBlockK * s.D;
  const int64_t kv_size = static_cast<int64_t>(s.B) * s.Hkv * per_kv_head;
  float* kT = Scratch(packed, 2 * kv_size);
  float* vb = kT + kv_size;
  PackKeysValues(kT, vb, k, v, s, ld);
  const int group = s.H / s.Hkv;
#pragma omp parallel for schedule(dynamic, 1) if (Parallel(s, items))
  for (int64_t item = 0; item < items; ++item) {
    // Last query blocks (the costliest when causal) first.
    const int qb = q_blocks - 1 - static_cast<int>(item / heads);
    const int b = static_cast<int>((item % heads) / s.H);
    const int h = static_cast<int>(item % s.H);
    const int64_t kv = static_cast<int64_t>(b) * s.Hkv + h / group;
    ForwardItem(out, lse, q, kT + kv * per_kv_head, vb + kv * per_kv_head, b, h, qb * kBlockQ,
                ValidLen(lens, b, s.T), s, ld);
  }
}

// dout [B,T,H,D] -> dq [B,T,H,D], dk/dv [B,T,Hkv,D] (written; rows ld apart).
void attention_backward_strided(float* dq, float* dk, float* dv, const float* dout,
                                const float* q, const float* k, const float* v, const float* out,
                                const float* lse, const int32_t* lens, const AttentionShape& s,
                                const AttentionStrides& ld) {
  CheckShape(s, ld);
  const int64_t items = static_cast<int64_t>(s.B) * s.Hkv;
#pragma omp parallel for schedule(dynamic, 1) if (Parallel(s, items))
  for (int64_t item = 0; item < items; ++item) {
    const int b = static_cast<int>(item / s.Hkv);
    const int kvh = static_cast<int>(item % s.Hkv);
    BackwardItem(dq, dk, dv, dout, q, k, v, out, lse, b, kvh, ValidLen(lens, b, s.T), s, ld);
  }
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* lens, const AttentionShape& s) {
  attention_forward_strided(out, lse, q, k, v, lens, s, Dense(s));
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* lens, const AttentionShape& s) {
  attention_backward_strided(dq, dk, dv, dout, q, k, v, out, lse, lens, s, Dense(s));
}

}  // namespace ut::cpu
