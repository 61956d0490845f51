// Soft-DTW with one pair per SIMD lane (see ops/cpu/sdtw_lanes.h; the math is
// in ops/sdtw.h).
//
// Layout: every per-cell array holds kPairLanes (G = 16) values side by side,
// lane p for pair p: costs [rows, m][G], R or ratios [m+1][G] per row, the
// softmin weights [n*m][3][G] (diag, up, left) and E [m+2][G] per row. Costs
// come in and E goes out through 8 x 8 register transposes (8 pairs by 8
// cells).
//
// Two forwards, the same backward:
// - ForwardRatio (no band): one pass per row, in the ratio domain (see the
//   section below); returns false when a lane leaves its range.
// - ForwardLog (any band, and the fallback): the diagonal sweep's log-domain
//   cell, rows swept kBlockRows at a time in a skewed front (step s handles
//   cells (i0 + k, s + 1 - k), k < kBlockRows), so that the core has
//   independent cells to overlap with each cell's exp/log chain (2, 4 and 8
//   rows measured alike, so the front is not critical; 1 row was not tried).
// - Backward: rows from n down to 1, cells from m down to 1; along a row the
//   chain is one multiply-add per cell, kept in a register.
#include "ops/cpu/sdtw_lanes.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "glog/logging.h"
#include "ops/cpu/sdtw_internal.h"

namespace ut::cpu::internal {
namespace {

constexpr int G = kPairLanes;
constexpr int kBlockRows = 4;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct LaneScratch {
  FloatBuffer cost;           // a block's costs [kBlockRows][m][G]
  std::vector<double> r;      // ForwardLog: ring of R / gamma rows [kBlockRows + 1][m + 1][G];
                              // ForwardRatio: h and 1 / h of two rows [4][m + 1][G]
  std::vector<double> ec;     // the ratio sweep's exp(-c / gamma) [m][G]
  FloatBuffer w;              // weights [n * m + 1][3][G] (diag, up, left; + a zero cell)
  std::vector<float> e_a, e_b;  // E of a row and of the row below [m + 2][G]
  std::vector<float> sink;    // where unused lanes' E goes [m + 8]
};

LaneScratch& Scratch() {
  static thread_local LaneScratch scratch;
  return scratch;
}

// dst[j * G + p] = src[p][j] for j < m, p < G: row-major pair rows to lanes.
void Interleave(const float* const* src, int m, float* dst) {
  int j0 = 0;
#if defined(__AVX2__)
  for (; j0 + 8 <= m; j0 += 8) {
    for (int h = 0; h < G; h += 8) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(src[h + l] + j0);
      Transpose8(r);  // r[k]: cell j0 + k of pairs h .. h + 7
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (j0 + k) * G + h, r[k]);
    }
  }
#endif
  for (int j = j0; j < m; ++j) {
    for (int p = 0; p < G; ++p) dst[j * G + p] = src[p][j];
  }
}

// dst[p][j] = scale[p] * src[j * G + p] for j < m, p < G: lanes back to rows.
void Deinterleave(const float* src, const float* scale, int m, float* const* dst) {
  int j0 = 0;
#if defined(__AVX2__)
  for (; j0 + 8 <= m; j0 += 8) {
    for (int h = 0; h < G; h += 8) {
      const __m256 s = _mm256_loadu_ps(scale + h);
      __m256 r[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_mul_ps(s, _mm256_loadu_ps(src + (j0 + k) * G + h));
      Transpose8(r);  // r[l]: cells j0 .. j0 + 7 of pair h + l
      for (int l = 0; l < 8; ++l) _mm256_storeu_ps(dst[h + l] + j0, r[l]);
    }
  }
#endif
  for (int j = j0; j < m; ++j) {
    for (int p = 0; p < G; ++p) dst[p][j] = scale[p] * src[j * G + p];
  }
}

// One cell for all lanes, the diagonal sweep's passes 1-3 fused (the same
// operations per lane; see ForwardStrip in ops/cpu/sdtw.cc for the reasoning).
// rd, ru, rl: R / gamma of the diagonal, upper and left neighbours [G];
// c: costs [G]; out: R / gamma [G]; w: weights [3][G].
template <bool kStoreWeights>
[[gnu::always_inline]] inline void Cell(const double* __restrict rd, const double* __restrict ru,
                                        const double* __restrict rl, const float* __restrict c,
                                        double inv_gamma, double* __restrict out,
                                        float* __restrict w) {
#pragma omp simd
  for (int p = 0; p < G; ++p) {
    const double a = rd[p], b = ru[p], l = rl[p];
    const double mn = std::min(std::min(a, b), l);
    const float gd = static_cast<float>(a - mn);
    const float gu = static_cast<float>(b - mn);
    const float gl = static_cast<float>(l - mn);
    const double base = c[p] * inv_gamma + mn;
    const Softmin sm = SoftminOfGaps<kStoreWeights>(gd, gu, gl);
    out[p] = base - sm.log_sum;
    if (kStoreWeights) {
      w[p] = sm.w_diag;
      w[G + p] = sm.w_up;
      w[2 * G + p] = sm.w_left;
    }
  }
}

// Log-domain forward over all rows (any band); R / gamma of cell (n, m) ends
// in ring row n.
template <bool kStoreWeights>
UT_SDTW_CLONES void ForwardLog(const float* const* cost, int n, int m, double gamma,
                                int width, LaneScratch* s) {
  const int64_t row = int64_t{m + 1} * G;  // one ring row
  double* ring = s->r.data();
  auto R = [&](int i, int j) { return ring + (i % (kBlockRows + 1)) * row + int64_t{j} * G; };
  std::fill(ring, ring + row, kInf);
  std::fill_n(R(0, 0), G, 0.0);  // R(0,0) = 0, R(0,j) = +inf
  const double inv_gamma = 1.0 / gamma;
  float* w = s->w.data();
  float* cbuf = s->cost.data();
  const float* rows[G];
  for (int i0 = 1; i0 <= n; i0 += kBlockRows) {
    const int kk = std::min(kBlockRows, n - i0 + 1);
    for (int k = 0; k < kk; ++k) {
      for (int p = 0; p < G; ++p) rows[p] = cost[p] + int64_t{i0 - 1 + k} * m;
      Interleave(rows, m, cbuf + int64_t{k} * m * G);
      std::fill_n(R(i0 + k, 0), G, kInf);  // R(i,0) = +inf
    }
    for (int step = 0; step < m + kk - 1; ++step) {
      for (int k = 0; k < kk; ++k) {
        const int i = i0 + k, j = step + 1 - k;
        if (j < 1 || j > m) continue;
        float* wc = kStoreWeights ? w + (int64_t{i - 1} * m + (j - 1)) * 3 * G : nullptr;
        if (width >= 0 && std::abs(i - j) > width) {  // outside the band
          std::fill_n(R(i, j), G, kInf);
          if (kStoreWeights) std::fill_n(wc, 3 * G, 0.f);
          continue;
        }
        Cell<kStoreWeights>(R(i - 1, j - 1), R(i - 1, j), R(i, j - 1),
                            cbuf + (int64_t{k} * m + (j - 1)) * G, inv_gamma, R(i, j), wc);
      }
    }
  }
}

// ---- Ratio-domain forward (no band) ------------------------------------------
//
// With a = R(i-1,j-1), b = R(i-1,j), l = R(i,j-1) (all / gamma here) and
// S = 1 + exp(a - b) + exp(a - l), the recursion is R(i,j) = c + a - log S.
// Keep, instead of R, the ratios of neighbouring cells (double):
//   h(i,j) = exp(R(i,j-1) - R(i,j))   (horizontal),  v(i,j) = exp(R(i-1,j) - R(i,j)),
// and their inverses. Then exp(a - b) = h(i-1,j), exp(a - l) = v(i,j-1), and with
// t = exp(a - R(i,j)) = exp(-c) * S:
//   h(i,j) = t / v(i,j-1),  v(i,j) = t / h(i-1,j),  softmin weights (1, h(i-1,j), v(i,j-1)) / S.
// That is one exp of the cost (off the critical path, all of a row at once) and
// one division per cell, instead of two exps and a log in the loop. The value
// telescopes along the diagonal that ends in (n,m): R(n,m) = R(boundary cell) +
// sum over its interior cells of (c - log S), so only the product of those S
// needs a log at the end. Row 1 and column 1 have one predecessor each (R is a
// running sum there, h or v is exp(-c)).
// The ratios can leave the double range when costs / gamma vary by tens per
// cell. Every lane therefore checks that each |c / gamma| <= 700 and each
// S <= 1e150 (the product of the chain's S is folded into a log whenever it
// passes 1e150, so it stays finite). A group with a failing lane stops at the
// end of that row and is swept again in the log domain (ForwardLog): results
// are always those of one of two equivalent sweeps (values within ~1e-9 of
// each other, E within ~1e-6; ops/cpu/sdtw_lanes_test.cc).

// Returns false if some lane's ratios left the safe range (then nothing it
// wrote may be used). values: R(n,m) / gamma per lane.
template <bool kStoreWeights>
UT_SDTW_CLONES bool ForwardRatio(const float* const* cost, int n, int m, double gamma,
                                  LaneScratch* s, double* values) {
  const double inv_gamma = 1.0 / gamma;
  const int64_t row = int64_t{m + 1} * G;
  double* ec = s->ec.data();  // exp(-c / gamma) [m][G]
  double* h_rows = s->r.data();  // h of the row above and of this row [2][m + 1][G]
  double* ih_rows = h_rows + 2 * row;  // their inverses
  float* cbuf = s->cost.data();
  float* w = s->w.data();
  alignas(64) double v[G], iv[G], boundary[G], acc[G], prod[G], col_sum[G];
  alignas(64) int32_t bad[G];
  for (int p = 0; p < G; ++p) {
    boundary[p] = acc[p] = col_sum[p] = 0.0;
    prod[p] = 1.0;
    bad[p] = 0;
  }
  const float* rows[G];
  for (int i = 1; i <= n; ++i) {
    for (int p = 0; p < G; ++p) rows[p] = cost[p] + int64_t{i - 1} * m;
    Interleave(rows, m, cbuf);
    for (int j = 0; j < m; ++j) {
      const float* c = cbuf + j * G;
      double* ecj = ec + j * G;
#pragma omp simd
      for (int p = 0; p < G; ++p) {
        const double x = c[p] * inv_gamma;
        bad[p] |= !(std::fabs(x) <= 700.0);
        ecj[p] = ExpDouble(-x);
      }
    }
    double* h = h_rows + (i & 1) * row;      // h(i, j) at h[j * G]
    double* ih = ih_rows + (i & 1) * row;
    const double* hu_row = h_rows + ((i - 1) & 1) * row;
    const double* ihu_row = ih_rows + ((i - 1) & 1) * row;
    // Weights of (i, 1) on (only written with kStoreWeights).
    float* wr = kStoreWeights ? w + int64_t{i - 1} * m * 3 * G : nullptr;
    // Column 1: R(i,1) = R(i-1,1) + c (R(1,1) = c: from R(0,0) = 0).
#pragma omp simd
    for (int p = 0; p < G; ++p) {
      col_sum[p] += cbuf[p] * inv_gamma;
      v[p] = ec[p];  // v(i,1) = exp(R(i-1,1) - R(i,1)), unused for i = 1
      iv[p] = 1.0 / ec[p];
      if (kStoreWeights) {
        wr[p] = i == 1 ? 1.f : 0.f;  // (1,1) comes from (0,0), the rest from above
        wr[G + p] = i == 1 ? 0.f : 1.f;
        wr[2 * G + p] = 0.f;
      }
    }
    if (i == 1) {  // row 1: R(1,j) = R(1,j-1) + c, h(1,j) = exp(-c)
      for (int j = 2; j <= m; ++j) {
        const double* ecj = ec + (j - 1) * G;
        float* wc = kStoreWeights ? wr + int64_t{j - 1} * 3 * G : nullptr;
#pragma omp simd
        for (int p = 0; p < G; ++p) {
          h[j * G + p] = ecj[p];
          ih[j * G + p] = 1.0 / ecj[p];
          if (kStoreWeights) {
            wc[p] = 0.f;
            wc[G + p] = 0.f;
            wc[2 * G + p] = 1.f;
          }
        }
      }
      if (n <= m) {  // the diagonal to (n,m) starts at (1, m - n + 1)
        for (int j = 1; j <= m - n + 1; ++j) {
#pragma omp simd
          for (int p = 0; p < G; ++p) boundary[p] += cbuf[(j - 1) * G + p] * inv_gamma;
        }
      }
    } else {
      const int chain_j = i + m - n;  // the diagonal to (n,m) meets row i here
      for (int j = 2; j <= m; ++j) {
        const double* ecj = ec + (j - 1) * G;
        const float* cj = cbuf + (j - 1) * G;
        const double* hu = hu_row + j * G;
        const double* ihu = ihu_row + j * G;
        float* wc = kStoreWeights ? wr + int64_t{j - 1} * 3 * G : nullptr;
        const bool on_chain = j == chain_j;
#pragma omp simd
        for (int p = 0; p < G; ++p) {
          const double S = 1.0 + hu[p] + v[p];
          const double t = ecj[p] * S;
          const double it = 1.0 / t;
          const double w_diag = ecj[p] * it;  // 1 / S
          if (kStoreWeights) {
            wc[p] = static_cast<float>(w_diag);
            wc[G + p] = static_cast<float>(hu[p] * w_diag);
            wc[2 * G + p] = static_cast<float>(v[p] * w_diag);
          }
          bad[p] |= !(S <= 1e150);  // also catches NaN
          if (on_chain) {
            acc[p] += cj[p] * inv_gamma;
            prod[p] *= S;
          }
          h[j * G + p] = t * iv[p];
          ih[j * G + p] = v[p] * it;
          const double v_new = t * ihu[p];
          iv[p] = hu[p] * it;
          v[p] = v_new;
        }
      }
      int row_bad = 0;
      for (int p = 0; p < G; ++p) {  // S <= 1e150, so prod * S stays finite
        if (prod[p] > 1e150) acc[p] -= std::log(prod[p]), prod[p] = 1.0;
        row_bad |= bad[p];
      }
      if (row_bad) return false;  // out of range: stop early, the log domain redoes it
      if (n > m && i == n - m + 1) {  // the diagonal to (n,m) starts at (i, 1)
        for (int p = 0; p < G; ++p) boundary[p] = col_sum[p];
      }
    }
  }
  int any_bad = 0;
  for (int p = 0; p < G; ++p) {
    any_bad |= bad[p];
    values[p] = boundary[p] + acc[p] - std::log(prod[p]);
  }
  return any_bad == 0;
}

// G floats as one value (GCC vector extension: one zmm, or two ymm), for
// loop-carried chains that should stay in registers.
typedef float VecF __attribute__((vector_size(G * sizeof(float))));

// E row by row from the bottom, from the weights [n * m + 1][3][G] (the last
// cell all zero).
UT_SDTW_CLONES void Backward(const LaneGroup& group, int n, int m, LaneScratch* s) {
  const float* w = s->w.data();
  auto W = [&](int i, int j) { return w + (int64_t{i - 1} * m + (j - 1)) * 3 * G; };
  float* cur = s->e_a.data();
  float* below = s->e_b.data();
  std::fill(below, below + (m + 2) * G, 0.f);
  float* out[G];
  float scale[G];
  for (int p = 0; p < G; ++p) {
    const bool used = p < group.count;
    scale[p] = used ? group.scale[p] : 0.f;
    out[p] = used ? group.E[p] : s->sink.data();
  }
  for (int i = n; i >= 1; --i) {
    std::fill_n(cur + (m + 1) * G, G, 0.f);  // E(i, m + 1) = 0
    // E(i,j) = E(i,j+1) w_left(i,j+1) + [E(i+1,j) w_up(i+1,j) + E(i+1,j+1) w_diag(i+1,j+1)].
    // Row n + 1 is all zero and E(n,m) = 1 enters as its bracket. W(i, m + 1) is the
    // next row's first cell (or the zero cell past the end): finite, times E(i, m + 1) = 0.
    // The row's chain (E(i,j) from E(i,j+1)) stays in a register.
    VecF e = {};  // E(i, m + 1)
    VecF wl, wu, wd, eb0, eb1;
    for (int j = m; j >= 1; --j) {
      std::memcpy(&wl, W(i, j + 1) + 2 * G, sizeof(VecF));
      if (i == n) {
        e = e * wl + (j == m ? 1.f : 0.f);
      } else {
        std::memcpy(&wu, W(i + 1, j) + G, sizeof(VecF));
        std::memcpy(&wd, W(i + 1, j + 1), sizeof(VecF));
        std::memcpy(&eb0, below + j * G, sizeof(VecF));
        std::memcpy(&eb1, below + (j + 1) * G, sizeof(VecF));
        e = e * wl + (eb0 * wu + eb1 * wd);
      }
      std::memcpy(cur + j * G, &e, sizeof(VecF));
    }
    float* dst[G];
    for (int p = 0; p < G; ++p) {
      dst[p] = p < group.count ? out[p] + int64_t{i - 1} * m : out[p];
    }
    Deinterleave(cur + G, scale, m, dst);
    std::swap(cur, below);
  }
}

// The band's half-width widened by |n - m| (ops/sdtw.h), or -1 when there is
// no band or it covers the whole matrix (then the ratio domain may run).
int BandWidth(int n, int m, int band) {
  const int width = band + std::abs(n - m);
  return band < 0 || width >= std::max(n, m) ? -1 : width;
}

}  // namespace

int MinLanes(int n, int m) {
  const int64_t cells = int64_t{n} * m;
  if (cells > kLaneMaxCells) return kPairLanes + 1;  // never
  if (cells <= 32 * 32) return 2;
  if (cells <= 64 * 64) return 8;
  return 12;
}

LaneSweep soft_dtw_lanes(const LaneGroup& group, int n, int m, double gamma, int band,
                         bool backward, double* values) {
  CHECK(group.count >= 1 && group.count <= G && n >= 1 && m >= 1 && gamma > 0)
      << "count=" << group.count << " n=" << n << " m=" << m << " gamma=" << gamma;
  LaneScratch* s = &Scratch();
  s->cost.Reserve(int64_t{kBlockRows} * m * G);
  s->r.resize(int64_t{std::max(kBlockRows + 1, 4)} * (m + 1) * G);
  s->ec.resize(int64_t{m} * G);
  const int width = BandWidth(n, m, band);
  const float* cost[G];
  for (int p = 0; p < G; ++p) cost[p] = group.cost[p < group.count ? p : 0];  // spare lanes: pair 0
  double r_nm[G];
  const int64_t weights = (int64_t{n} * m + 1) * 3 * G;
  if (backward) {
    s->w.Reserve(weights);
    std::fill_n(s->w.data() + weights - 3 * G, 3 * G, 0.f);  // the zero cell past the end
  }
  LaneSweep sweep = LaneSweep::kLog;
  if (width < 0) {
    const bool ok = backward ? ForwardRatio<true>(cost, n, m, gamma, s, r_nm)
                             : ForwardRatio<false>(cost, n, m, gamma, s, r_nm);
    if (ok) sweep = LaneSweep::kRatio;
  }
  if (sweep == LaneSweep::kLog) {
    if (backward) {
      ForwardLog<true>(cost, n, m, gamma, width, s);
    } else {
      ForwardLog<false>(cost, n, m, gamma, width, s);
    }
    const double* last = s->r.data() + (n % (kBlockRows + 1)) * int64_t{m + 1} * G + int64_t{m} * G;
    std::copy(last, last + G, r_nm);
  }
  for (int p = 0; p < group.count; ++p) values[p] = gamma * r_nm[p];
  if (!backward) return sweep;
  s->e_a.resize(int64_t{m + 2} * G);
  s->e_b.resize(int64_t{m + 2} * G);
  s->sink.resize(m + 8);
  Backward(group, n, m, s);
  return sweep;
}

std::vector<PairTask> PlanPairTasks(int B, const int* n, const int* m, int band,
                                    std::vector<int>* order) {
  order->resize(B);
  for (int b = 0; b < B; ++b) (*order)[b] = b;
  std::stable_sort(order->begin(), order->end(), [&](int x, int y) {
    return n[x] != n[y] ? n[x] < n[y] : m[x] < m[y];
  });
  std::vector<PairTask> tasks;
  for (int begin = 0; begin < B;) {  // one run of equal shapes at a time
    const int b = (*order)[begin];
    int end = begin + 1;
    while (end < B && n[(*order)[end]] == n[b] && m[(*order)[end]] == m[b]) ++end;
    const bool banded = BandWidth(n[b], m[b], band) >= 0;
    const int min_lanes = banded && int64_t{n[b]} * m[b] > 32 * 32 ? G + 1 : MinLanes(n[b], m[b]);
    const int64_t cells = int64_t{n[b]} * m[b];
    for (int k = begin; k < end;) {
      const int count = std::min(G, end - k);
      if (count >= min_lanes) {
        tasks.push_back({k, count, true, cells * count});
        k += count;
      } else {
        tasks.push_back({k, 1, false, cells});
        ++k;
      }
    }
    begin = end;
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const PairTask& x, const PairTask& y) { return x.cells > y.cells; });
  return tasks;
}

void TrimLaneScratch(int64_t max_floats) {
  LaneScratch& s = Scratch();
  s.cost.Trim(max_floats);
  s.w.Trim(max_floats);
}

}  // namespace ut::cpu::internal
