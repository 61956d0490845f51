// Soft-DTW forward/backward along anti-diagonals. See ops/sdtw.h for the math.
//
// Layout. The matrix is swept in horizontal strips of up to 128 rows; the last
// row of R (and, going back, what the strip's first row sends upwards in E) is
// handed from strip to strip. In a strip, diagonal t = r + j holds the band
// cells r in [lo(t), hi(t)]. A strip's costs are first re-laid diagonal-major
// ("skewed": S[t][r] = cost(r, t - r), 8 x 8 blocks transposed in registers),
// so that the sweep reads each diagonal's costs, and the backward writes each
// diagonal's E, as one contiguous run; E is skewed back to rows at the end.
// Rolling buffers of R are indexed by r, so the three neighbours of (r,j) are
// R_{t-2}[r-1] (diagonal), R_{t-1}[r-1] (up) and R_{t-1}[r] (left): unit
// stride, SIMD loops. Entries just outside [lo, hi] are sentinels (R = +inf or
// the row above, E = 0). The per-cell softmin weights are packed diagonal
// after diagonal with one zero pad on each side ([lo - 1, hi + 1]), exactly
// the range the backward reads.
// Each diagonal: pass 1 in double (minimum and gaps), pass 2 in float (exp,
// log, weights; 8-16 lanes), pass 3 in double (R). Pairs without a band
// first try the same layout in the ratio domain (ops/cpu/sdtw_ratio.cc, one
// pass per diagonal); the backward is the same for both. The constants and
// buffers both files use are in ops/cpu/sdtw_strip.h.
#include "ops/sdtw.h"

#include <omp.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "glog/logging.h"
#include "ops/cpu/sdtw_internal.h"
#include "ops/cpu/sdtw_lanes.h"
#include "ops/cpu/sdtw_strip.h"

namespace ut::cpu {

SdtwWorkspace::SdtwWorkspace() : buffers_(std::make_unique<Buffers>()) {}
SdtwWorkspace::~SdtwWorkspace() = default;
SdtwWorkspace::SdtwWorkspace(SdtwWorkspace&&) noexcept = default;
SdtwWorkspace& SdtwWorkspace::operator=(SdtwWorkspace&&) noexcept = default;

void SdtwWorkspace::Trim(int64_t max_floats) {
  buffers_->tile.Trim(max_floats);
  buffers_->skew.Trim(max_floats);
  buffers_->w_diag.Trim(max_floats);
  buffers_->w_up.Trim(max_floats);
  buffers_->w_left.Trim(max_floats);
}

SdtwWorkspace& ThreadWorkspace() {
  static thread_local SdtwWorkspace workspace;
  return workspace;
}

namespace {

using namespace strip;  // NOLINT: the layout shared with ops/cpu/sdtw_ratio.cc

// ---- Skewed (diagonal-major) layout of a strip ------------------------------
//
// The forward copies a strip's costs [rows, m] into `tile` [round8(rows),
// kTileLeft + m + kTileRight] (rows with pads on both sides) and re-lays them
// diagonal-major into `skew`,
// S[t * kSkewPitch + r] = cost(r, j = t - r) for local rows r in [1, rows]:
// diagonal t is then the contiguous run S[t][lo(t) .. hi(t)]. The backward
// writes E into the same slots and finally skews it back into `tile`, from
// which it is copied out. Slots 0 and rows + 1 hold the backward's sentinels.
// Example, a strip of 3 rows and m = 4 (cells named by (r,j)):
//   rows                     skew (diagonals)
//   (1,1)(1,2)(1,3)(1,4)     t=2: (1,1)
//   (2,1)(2,2)(2,3)(2,4)     t=3: (1,2)(2,1)
//   (3,1)(3,2)(3,3)(3,4)     t=4: (1,3)(2,2)(3,1)   ... t=7: (3,4)
// Both directions go in 8 x 8 blocks: rows r0+1..r0+8 by diagonals T..T+7.
// Row l of a block is read (or written) at column T - r0 - 2 - l, 8 floats,
// which is a plain 8 x 8 transpose between row stride (row pitch - 1) and
// diagonal stride kSkewPitch. Blocks reach 7 columns left of the matrix and up
// to 13 right of it: those land in the pads, and their skew slots are outside
// [lo, hi], never read as cells.
// dst[k * dst_stride + l] = scale * src[l * src_stride + k] for k, l in [0, 8).
[[gnu::always_inline]] inline void Transpose8x8(const float* src, int64_t src_stride, float* dst,
                                                int64_t dst_stride, float scale = 1.f) {
#if defined(__AVX2__)
  __m256 r[8];
  for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(src + l * src_stride);
  internal::Transpose8(r);
  const __m256 s = _mm256_set1_ps(scale);
  for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + k * dst_stride, _mm256_mul_ps(s, r[k]));
#else
  for (int k = 0; k < 8; ++k) {
    for (int l = 0; l < 8; ++l) dst[k * dst_stride + l] = scale * src[l * src_stride + k];
  }
#endif
}

// Pointer to tile(r, column c) (0-based r, column c may be -kTileLeft .. m + kTileRight - 1).
inline float* TileAt(float* tile, int64_t pitch, int r, int c) {
  return tile + r * pitch + kTileLeft + c;
}

// skew -> tile (rows), every 8 x 8 block of the strip.
void UnskewToTile(const float* skew, float* tile, int rows, int m) {
  const int64_t pitch = TilePitch(m);
  for (int r0 = 0; r0 < rows; r0 += 8) {
    for (int t = r0 + 2; t <= r0 + 8 + m; t += 8) {
      Transpose8x8(skew + int64_t{t} * kSkewPitch + r0 + 1, kSkewPitch,
                   TileAt(tile, pitch, r0, t - r0 - 2), pitch - 1);
    }
  }
}

// skew -> E [rows, m] times scale, without a band (every cell of the strip is
// a band cell): blocks that reach only columns [0, m) of whole rows are
// transposed straight into E (row pitch m, so row stride m - 1); the first and
// last blocks of a row block, and a short last row block, go cell by cell.
void UnskewToRows(const float* skew, float scale, int rows, int m, float* E) {
  for (int r0 = 0; r0 < rows; r0 += 8) {
    for (int t = r0 + 2; t <= r0 + 8 + m; t += 8) {
      const int c = t - r0 - 2;  // row l of the block: columns c - l .. c - l + 7
      const float* diagwise = skew + int64_t{t} * kSkewPitch + r0 + 1;
      if (r0 + 8 <= rows && c >= 7 && c + 7 < m) {
        Transpose8x8(diagwise, kSkewPitch, E + int64_t{r0} * m + c, m - 1, scale);
        continue;
      }
      for (int l = 0; l < 8 && r0 + l < rows; ++l) {
        for (int k = 0; k < 8; ++k) {
          const int j = c - l + k;
          if (j >= 0 && j < m) E[int64_t{r0 + l} * m + j] = scale * diagwise[k * kSkewPitch + l];
        }
      }
    }
  }
}

}  // namespace

std::vector<strip::Strip> strip::MakeStrips(int n, int m, int band) {
  const int width = band < 0 ? -1 : band + std::abs(n - m);
  std::vector<Strip> strips;
  for (int i0 = 1; i0 <= n; i0 += kStripRows) {
    strips.push_back({i0, std::min(kStripRows, n - i0 + 1), m, width});
  }
  return strips;
}

// cost: the strip's rows [rows, m] -> ws->skew (diagonal-major, see above):
// copied by rows into the padded tile first (a plain stream, which costs
// arriving from L3 or memory follow better than 8 strided rows), then
// transposed block by block.
void strip::SkewCosts(const float* cost, int rows, int m, Buffers* ws) {
  const int64_t pitch = TilePitch(m);
  float* tile = ws->tile.data();
  float* skew = ws->skew.data();
  const int padded_rows = (rows + 7) / 8 * 8;
  for (int r = 0; r < padded_rows; ++r) {
    float* row = TileAt(tile, pitch, r, 0);
    if (r < rows) {
      std::memcpy(row, cost + int64_t{r} * m, 4 * m);
    } else {
      std::fill_n(row, m, 0.f);
    }
    std::fill_n(row - kTileLeft, kTileLeft, 0.f);
    std::fill_n(row + m, kTileRight, 0.f);
  }
  for (int r0 = 0; r0 < rows; r0 += 8) {
    for (int t = r0 + 2; t <= r0 + 8 + m; t += 8) {
      Transpose8x8(TileAt(tile, pitch, r0, t - r0 - 2), pitch - 1,
                   skew + int64_t{t} * kSkewPitch + r0 + 1, kSkewPitch);
    }
  }
}

namespace {

// One strip of the forward, in units of gamma: the sweep computes R / gamma
// from costs c / gamma with a softmin of temperature 1 (the same recursion
// divided by gamma; it saves the scaling of every gap). cost: the strip's rows
// [rows, m]. top [m+1]: R / gamma of the row above (global row i0 - 1);
// bottom [m+1] gets R / gamma of the strip's last row (+inf outside the band).
// With kStoreWeights the softmin weights go to ws->w_* from slot `w_off` on.
template <bool kStoreWeights>
UT_SDTW_CLONES void ForwardStrip(const float* cost, const Strip& st, double gamma, const double* top,
                  double* bottom, int64_t w_off, Buffers* ws) {
  const int rows = st.rows, m = st.m;
  const int stride = rows + 2 + kLanes;
  ws->r.assign(3 * stride, kInf);
  ws->r[0] = top[0];           // diagonal 0, slot 0: R(i0 - 1, 0)
  ws->r[stride] = top[1];      // diagonal 1, slot 0: R(i0 - 1, 1)
  SkewCosts(cost, rows, m, ws);
  const float* skew = ws->skew.data();
  float* gap_diag = ws->gap_diag.data();
  float* gap_up = ws->gap_up.data();
  float* gap_left = ws->gap_left.data();
  float* log_sum = ws->log_sum.data();
  double* base = ws->base.data();
  float *w_diag = nullptr, *w_up = nullptr, *w_left = nullptr;
  const double inv_gamma = 1.0 / gamma;
  std::fill(bottom, bottom + m + 1, kInf);
  for (int t = 2; t <= rows + m; ++t) {
    const int lo = st.lo(t), hi = st.hi(t), end = PaddedEnd(lo, hi);
    const double* r_pp = ws->r.data() + ((t - 2) % 3) * stride;
    const double* r_p = ws->r.data() + ((t - 1) % 3) * stride;
    double* r_c = ws->r.data() + (t % 3) * stride;
    const float* cd = skew + int64_t{t} * kSkewPitch;  // cost of (r, t - r) at cd[r]
    if (kStoreWeights) {
      w_diag = ws->w_diag.data() + w_off - (lo - 1);
      w_up = ws->w_up.data() + w_off - (lo - 1);
      w_left = ws->w_left.data() + w_off - (lo - 1);
    }
    // Pass 1 (double lanes): the minimum of the three neighbours, the gap of
    // each to it (the minimum's is exactly 0, an unreachable neighbour's
    // +inf), and c(i,j) / gamma + min. When no neighbour is reachable
    // (min = +inf) the gaps are NaN and c + min is +inf: pass 2 then finds no
    // zero gap and gives e = 0 and weights 0, and R stays +inf.
#pragma omp simd
    for (int i = lo; i < end; ++i) {
      const double a = r_pp[i - 1], b = r_p[i - 1], l = r_p[i];
      const double mn = std::min(std::min(a, b), l);
      gap_diag[i] = static_cast<float>(a - mn);
      gap_up[i] = static_cast<float>(b - mn);
      gap_left[i] = static_cast<float>(l - mn);
      base[i] = cd[i] * inv_gamma + mn;
    }
    // Pass 2 (float lanes): log(1 + e1 + e2) and the weights
    // (internal::SoftminOfGaps).
#pragma omp simd
    for (int i = lo; i < end; ++i) {
      const internal::Softmin sm =
          internal::SoftminOfGaps<kStoreWeights>(gap_diag[i], gap_up[i], gap_left[i]);
      log_sum[i] = sm.log_sum;
      if (kStoreWeights) {
        w_diag[i] = sm.w_diag;
        w_up[i] = sm.w_up;
        w_left[i] = sm.w_left;
      }
    }
    // Pass 3 (double): R / gamma = c / gamma + softmin (+inf stays +inf).
#pragma omp simd
    for (int i = lo; i < end; ++i) r_c[i] = base[i] - log_sum[i];
    // Sentinels: slot 0 is the row above (R(i0 - 1, t)), others are outside the band.
    r_c[lo - 1] = lo == 1 ? (t <= m ? top[t] : kInf) : kInf;
    r_c[hi + 1] = kInf;
    if (hi == rows && lo <= rows) bottom[t - rows] = r_c[rows];
    if (kStoreWeights) {
      w_diag[lo - 1] = w_up[lo - 1] = w_left[lo - 1] = 0.f;
      w_diag[hi + 1] = w_up[hi + 1] = w_left[hi + 1] = 0.f;
      w_off += hi - lo + 3;
    }
  }
  if (kStoreWeights) {  // the two all-padding diagonals after the last one
    const int64_t pad = st.slots(rows + m + 1) + st.slots(rows + m + 2);
    std::fill_n(ws->w_diag.data() + w_off, pad, 0.f);
    std::fill_n(ws->w_up.data() + w_off, pad, 0.f);
    std::fill_n(ws->w_left.data() + w_off, pad, 0.f);
  }
}


// One strip of the backward, after the forward stored the weights from slot
// w_off. E: the strip's rows [rows, m] (scale * dR[n,m]/dc, written).
// below [m+2]: what the row under the strip sends to the strip's last row,
// below[j] = E(i1+1, j) w_up(i1+1, j) + E(i1+1, j+1) w_diag(i1+1, j+1);
// above [m+2] gets the same for the row above the strip.
// E is built diagonal by diagonal in ws->skew (the costs there are no longer
// needed), then skewed back to rows.
// The backward walks the weight store downwards, diagonal by diagonal, which
// the hardware prefetchers follow badly: it fetches the weights this many
// diagonals ahead itself.
constexpr int kPrefetchDiagonals = 8;

template <bool kDiagFromSum>
UT_SDTW_CLONES void BackwardStrip(float* E, float scale, const Strip& st, const float* below,
                                  float* above, int64_t w_off, Buffers* ws) {
  const int rows = st.rows, m = st.m;
  ws->top_e.assign(m + 2, 0.f);
  ws->top_w_up.assign(m + 2, 0.f);
  ws->top_w_diag.assign(m + 2, 0.f);
  ws->diag_off.resize(rows + m + 3);
  for (int t = 2; t <= rows + m + 2; ++t) {
    ws->diag_off[t] = w_off - (st.lo(t) - 1);  // base: weights of (t, r) at base + r
    w_off += st.slots(t);
  }
  float* skew = ws->skew.data();
  // Diagonals rows + m + 1 and + 2 (after the last cell) send nothing.
  std::fill_n(skew + int64_t{rows + m + 1} * kSkewPitch, 2 * kSkewPitch, 0.f);
  for (int t = rows + m; t >= 2; --t) {
    const int lo = st.lo(t), hi = st.hi(t), end = PaddedEnd(lo, hi);
    float* e_c = skew + int64_t{t} * kSkewPitch;  // E(r, t - r) at e_c[r]
    const float* e_1 = e_c + kSkewPitch;
    const float* e_2 = e_c + 2 * kSkewPitch;
    const float* w_left_1 = ws->w_left.data() + ws->diag_off[t + 1];
    const float* w_up_1 = ws->w_up.data() + ws->diag_off[t + 1];
    if (t >= kPrefetchDiagonals + 2) {  // the weights a few diagonals ahead (lower addresses)
      const int tp = t - kPrefetchDiagonals;
      const int64_t from = ws->diag_off[tp] + st.lo(tp) - 1, to = from + st.slots(tp);
      for (int64_t k = from; k < to; k += 16) {
        __builtin_prefetch(ws->w_left.data() + k);
        __builtin_prefetch(ws->w_up.data() + k);
        if (!kDiagFromSum) __builtin_prefetch(ws->w_diag.data() + k);
      }
    }
    // E(r,j) = E(r,j+1) w_left(r,j+1) + E(r+1,j) w_up(r+1,j) + E(r+1,j+1) w_diag(r+1,j+1).
    if (kDiagFromSum) {  // w_diag = 1 - w_up - w_left (the ratio forward stores two)
      const float* w_up_2 = ws->w_up.data() + ws->diag_off[t + 2];
      const float* w_left_2 = ws->w_left.data() + ws->diag_off[t + 2];
#pragma omp simd
      for (int i = lo; i < end; ++i) {
        const float w_diag = 1.f - w_up_2[i + 1] - w_left_2[i + 1];
        e_c[i] = e_1[i] * w_left_1[i] + e_1[i + 1] * w_up_1[i + 1] + e_2[i + 1] * w_diag;
      }
    } else {
      const float* w_diag_2 = ws->w_diag.data() + ws->diag_off[t + 2];
#pragma omp simd
      for (int i = lo; i < end; ++i) {
        e_c[i] = e_1[i] * w_left_1[i] + e_1[i + 1] * w_up_1[i + 1] + e_2[i + 1] * w_diag_2[i + 1];
      }
    }
    if (hi == rows && lo <= rows) e_c[rows] += below[t - rows];
    e_c[lo - 1] = 0.f;
    e_c[hi + 1] = 0.f;
    if (lo == 1 && hi >= 1) {  // first row of the strip: keep what it sends upwards
      ws->top_e[t - 1] = e_c[1];
      ws->top_w_up[t - 1] = ws->w_up.data()[ws->diag_off[t] + 1];
      const int64_t slot = ws->diag_off[t] + 1;
      ws->top_w_diag[t - 1] = kDiagFromSum
                                  ? 1.f - ws->w_up.data()[slot] - ws->w_left.data()[slot]
                                  : ws->w_diag.data()[slot];
    }
  }
  if (st.width < 0) {
    UnskewToRows(skew, scale, rows, m, E);
  } else {
    const int64_t pitch = TilePitch(m);
    float* tile = ws->tile.data();
    UnskewToTile(skew, tile, rows, m);
    for (int r = 0; r < rows; ++r) {
      const float* src = TileAt(tile, pitch, r, 0);
      float* dst = E + int64_t{r} * m;
      // Columns [j_lo, j_hi) hold band cells; the others are 0.
      const int i = st.i0 - 1 + r;  // 0-based global row
      const int j_lo = std::clamp(i - st.width, 0, m);
      const int j_hi = std::clamp(i + st.width + 1, j_lo, m);
      std::fill(dst, dst + j_lo, 0.f);
#pragma omp simd
      for (int j = j_lo; j < j_hi; ++j) dst[j] = scale * src[j];
      std::fill(dst + j_hi, dst + m, 0.f);
    }
  }
  above[0] = 0.f;
  for (int j = 1; j <= m; ++j) {
    above[j] = ws->top_e[j] * ws->top_w_up[j] + ws->top_e[j + 1] * ws->top_w_diag[j + 1];
  }
  above[m + 1] = 0.f;
}

// Sizes the per-diagonal temporaries and the weight store; returns the first
// weight slot of every strip (and the total at the end).
std::vector<int64_t> PrepareWorkspace(const std::vector<Strip>& strips, int m, bool weights,
                                      Buffers* ws) {
  const int stride = kStripRows + 2 + kLanes;
  ws->gap_diag.resize(stride);
  ws->gap_up.resize(stride);
  ws->gap_left.resize(stride);
  ws->log_sum.resize(stride);
  ws->base.resize(stride);
  ws->tile.Reserve(kStripRows * TilePitch(m));
  ws->skew.Reserve(SkewRows(m) * kSkewPitch);
  ws->row_a.resize(m + 2);
  ws->row_b.resize(m + 2);
  std::vector<int64_t> off(strips.size() + 1, 0);
  if (weights) {
    for (size_t s = 0; s < strips.size(); ++s) off[s + 1] = off[s] + strips[s].total_slots();
    ws->w_diag.Reserve(off.back() + 2 * kLanes);  // + the last diagonals' overrun
    ws->w_up.Reserve(off.back() + 2 * kLanes);
    ws->w_left.Reserve(off.back() + 2 * kLanes);
  }
  return off;
}

// Forward over all strips; returns R[n,m]. Without a band the ratio domain
// runs first; the log domain (ForwardStrip) runs with a band, or when a ratio
// left its range. Measured per pair against ForwardStrip alone (devbench,
// 2026-11-27, one core): forward + backward 1.0x from 8 x 8 to 64 x 64, 1.06x
// at 128, 1.08x at 256, 1.1x at 512 and 1.05x at 4096; the forward alone
// 1.2-1.4x at every size.
// *ratio tells which ran (the backward then reads two weights, not three).
template <bool kStoreWeights>
double Forward(const float* cost, int n, int m, double gamma, const std::vector<Strip>& strips,
               const std::vector<int64_t>& w_off, Buffers* ws, bool* ratio) {
  double value = 0.0;
  *ratio = strips[0].width < 0 &&
           ForwardRatio<kStoreWeights>(cost, n, m, gamma, strips, w_off, ws, &value);
  if (*ratio) return value;
  double* top = ws->row_a.data();
  double* bottom = ws->row_b.data();
  top[0] = 0.0;  // R(0,0) = 0, R(0,j) = +inf
  std::fill(top + 1, top + m + 1, kInf);
  for (size_t s = 0; s < strips.size(); ++s) {
    const float* cost_s = cost + static_cast<int64_t>(strips[s].i0 - 1) * m;
    ForwardStrip<kStoreWeights>(cost_s, strips[s], gamma, top, bottom, w_off[s], ws);
    std::swap(top, bottom);
  }
  return gamma * top[m];  // the strips work in units of gamma
}

}  // namespace

double soft_dtw_pair(const float* cost, int n, int m, double gamma, int band,
                     SdtwWorkspace* workspace) {
  CHECK(n >= 1 && m >= 1 && gamma > 0) << "n=" << n << " m=" << m << " gamma=" << gamma;
  Buffers* ws = workspace->buffers();
  const std::vector<Strip> strips = MakeStrips(n, m, band);
  const std::vector<int64_t> w_off = PrepareWorkspace(strips, m, /*weights=*/false, ws);
  bool ratio = false;
  return Forward<false>(cost, n, m, gamma, strips, w_off, ws, &ratio);
}

double soft_dtw_pair_backward(float* E, float scale, const float* cost, int n, int m,
                              double gamma, int band, SdtwWorkspace* workspace) {
  CHECK(n >= 1 && m >= 1 && gamma > 0) << "n=" << n << " m=" << m << " gamma=" << gamma;
  Buffers* ws = workspace->buffers();
  const std::vector<Strip> strips = MakeStrips(n, m, band);
  const std::vector<int64_t> w_off = PrepareWorkspace(strips, m, /*weights=*/true, ws);
  bool ratio = false;
  const double value = Forward<true>(cost, n, m, gamma, strips, w_off, ws, &ratio);
  // The costs are all read; E (which may alias them) is written from here on.
  ws->below.assign(m + 2, 0.f);
  ws->above.resize(m + 2);
  ws->below[m] = 1.f;  // dR(n,m)/dc(n,m) = 1 enters through the last row
  for (int s = static_cast<int>(strips.size()) - 1; s >= 0; --s) {
    float* E_s = E + static_cast<int64_t>(strips[s].i0 - 1) * m;
    if (ratio) {
      BackwardStrip<true>(E_s, scale, strips[s], ws->below.data(), ws->above.data(), w_off[s], ws);
    } else {
      BackwardStrip<false>(E_s, scale, strips[s], ws->below.data(), ws->above.data(), w_off[s], ws);
    }
    std::swap(ws->below, ws->above);
  }
  return value;
}

absl::Status ValidateSdtw(const SdtwBatch& batch, const SdtwOptions& options) {
  if (!(options.gamma > 0) || !std::isfinite(options.gamma)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "soft_dtw: gamma = ", options.gamma, " is not a finite positive number; use e.g. 1.0"));
  }
  if (batch.B < 0) {
    return absl::InvalidArgumentError(absl::StrCat("soft_dtw: batch size B = ", batch.B, " < 0"));
  }
  if (batch.B == 0) return absl::OkStatus();
  if (batch.n == nullptr || batch.m == nullptr || batch.offsets == nullptr) {
    return absl::InvalidArgumentError(
        "soft_dtw: SdtwBatch needs n, m and offsets arrays (one of them is null)");
  }
  for (int b = 0; b < batch.B; ++b) {
    if (batch.n[b] < 1 || batch.m[b] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "soft_dtw: pair ", b, " has lengths n = ", batch.n[b], ", m = ", batch.m[b],
          "; both sequences need at least one element (drop empty pairs before the call)"));
    }
    const int64_t cells = static_cast<int64_t>(batch.n[b]) * batch.m[b];
    if (batch.offsets[b] < 0 || batch.offsets[b + 1] - batch.offsets[b] != cells) {
      return absl::InvalidArgumentError(absl::StrCat(
          "soft_dtw: pair ", b, " spans offsets [", batch.offsets[b], ", ", batch.offsets[b + 1],
          ") but needs n * m = ", cells, " packed cells; offsets[b+1] must be offsets[b] + n*m"));
    }
  }
  return absl::OkStatus();
}

namespace {

// Runs the batch's tasks (internal::PlanPairTasks: lane groups of equal
// shapes, single pairs otherwise), largest first, one workspace per thread:
// single(b, workspace) for a single pair, group(pairs, count) for a lane group.
// Each task's results depend only on its own pairs and the plan only on the
// lengths, so the output is the same for any thread count or schedule.
template <typename Single, typename Group>
void ForEachTask(const SdtwBatch& batch, const SdtwOptions& options, Single single, Group group) {
  std::vector<int> order;
  const std::vector<internal::PairTask> tasks =
      internal::PlanPairTasks(batch.B, batch.n, batch.m, options.band, &order);
  const int requested = options.num_threads > 0 ? options.num_threads : omp_get_max_threads();
  const int threads = std::max(1, std::min(requested, static_cast<int>(tasks.size())));
#pragma omp parallel num_threads(threads)
  {
    SdtwWorkspace& ws = ThreadWorkspace();
#pragma omp for schedule(dynamic, 1)
    for (size_t t = 0; t < tasks.size(); ++t) {
      const internal::PairTask& task = tasks[t];
      if (task.lanes) {
        group(order.data() + task.begin, task.count);
      } else {
        single(order[task.begin], &ws);
      }
    }
    ws.Trim(internal::kRetainFloats);
    internal::TrimLaneScratch(internal::kRetainFloats);
  }
}

}  // namespace

absl::Status soft_dtw_forward(double* values, const float* costs, const SdtwBatch& batch,
                              const SdtwOptions& options) {
  RETURN_IF_ERROR(ValidateSdtw(batch, options));
  ForEachTask(
      batch, options,
      [&](int b, SdtwWorkspace* ws) {
        values[b] = soft_dtw_pair(costs + batch.offsets[b], batch.n[b], batch.m[b],
                                  options.gamma, options.band, ws);
      },
      [&](const int* pairs, int count) {
        internal::LaneGroup g;
        g.count = count;
        for (int p = 0; p < count; ++p) g.cost[p] = costs + batch.offsets[pairs[p]];
        double v[internal::kPairLanes];
        internal::soft_dtw_lanes(g, batch.n[pairs[0]], batch.m[pairs[0]], options.gamma,
                                 options.band, /*backward=*/false, v);
        for (int p = 0; p < count; ++p) values[pairs[p]] = v[p];
      });
  return absl::OkStatus();
}

absl::Status soft_dtw_forward_backward(double* values, float* E, const float* costs,
                                       const float* dvalues, const SdtwBatch& batch,
                                       const SdtwOptions& options) {
  RETURN_IF_ERROR(ValidateSdtw(batch, options));
  ForEachTask(
      batch, options,
      [&](int b, SdtwWorkspace* ws) {
        const int64_t off = batch.offsets[b];
        values[b] = soft_dtw_pair_backward(E + off, dvalues ? dvalues[b] : 1.f, costs + off,
                                           batch.n[b], batch.m[b], options.gamma, options.band,
                                           ws);
      },
      [&](const int* pairs, int count) {
        internal::LaneGroup g;
        g.count = count;
        for (int p = 0; p < count; ++p) {
          const int b = pairs[p];
          g.cost[p] = costs + batch.offsets[b];
          g.E[p] = E + batch.offsets[b];
          g.scale[p] = dvalues ? dvalues[b] : 1.f;
        }
        double v[internal::kPairLanes];
        internal::soft_dtw_lanes(g, batch.n[pairs[0]], batch.m[pairs[0]], options.gamma,
                                 options.band, /*backward=*/true, v);
        for (int p = 0; p < count; ++p) values[pairs[p]] = v[p];
      });
  return absl::OkStatus();
}

}  // namespace ut::cpu
