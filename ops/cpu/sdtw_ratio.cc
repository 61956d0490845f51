// The diagonal sweep's forward in the ratio domain (declared in
// ops/cpu/sdtw_strip.h; the math is in ops/sdtw.h and below).
#include <cmath>
#include <vector>

#include "ops/cpu/sdtw_internal.h"
#include "ops/cpu/sdtw_strip.h"

namespace ut::cpu::strip {
namespace {

// ---- Ratio-domain forward (no band) -----------------------------------------
//
// The recursion of ops/cpu/sdtw_lanes.cc ("Ratio-domain forward"), with the
// lanes along a diagonal as in ForwardStrip: instead of R keep, per cell, the
// ratios to its left and upper neighbours h = exp(R(i,j-1) - R(i,j)),
// v = exp(R(i-1,j) - R(i,j)) and their inverses (double). Cell (r, j) reads
// h and 1/h of (r-1, j) and v and 1/v of (r, j-1), both on the previous
// diagonal; per cell one exp of the cost (not in the chain) and one
// division, against two exps and a log in ForwardStrip's chain. Row 1 and
// column 1 (one predecessor each) are fixed up after each diagonal's loop.
// The value telescopes along the diagonal to (n, m) (RatioChain). A cell with
// |c / gamma| > 700 or S > 1e150 makes the whole pair run ForwardStrip.

// Running sums for R(n,m) / gamma = boundary + acc - log(prod): boundary is R
// of the cell where the diagonal to (n,m) leaves row 1 or column 1; acc and
// prod sum c / gamma and multiply S over its interior cells.
struct RatioChain {
  double boundary = 0.0, acc = 0.0, prod = 1.0, col_sum = 0.0;
};

// One strip. top_h, top_ih [m+1]: h and 1/h of global row i0 - 1 (read for
// i0 > 1); bottom_h, bottom_ih [m+1] get those of the strip's last row.
// Returns false as soon as a diagonal leaves the range.
template <bool kStoreWeights>
UT_SDTW_CLONES bool ForwardStripRatio(const float* cost, const Strip& st, int n, double gamma,
                                      const double* top_h, const double* top_ih,
                                      double* bottom_h, double* bottom_ih, int64_t w_off,
                                      RatioChain* chain, Buffers* ws) {
  const int rows = st.rows, m = st.m;
  const int stride = rows + 2 + kLanes;
  ws->r.assign(8 * stride, 1.0);  // h, 1/h, v, 1/v of two diagonals
  double* ring = ws->r.data();
  SkewCosts(cost, rows, m, ws);
  const float* skew = ws->skew.data();
  const double inv_gamma = 1.0 / gamma;
  const bool first_strip = st.i0 == 1;
  float *__restrict w_up = nullptr, *__restrict w_left = nullptr;
  for (int t = 2; t <= rows + m; ++t) {
    const int lo = st.lo(t), hi = st.hi(t), end = PaddedEnd(lo, hi);
    // Eight disjoint rows of the ring (restrict: no alias checks in the loop).
    double* __restrict hp = ring + ((t - 1) & 1) * 4 * stride;  // diagonal t - 1
    double* __restrict ihp = hp + stride;
    const double* __restrict vp = hp + 2 * stride;
    const double* __restrict ivp = hp + 3 * stride;
    double* __restrict hc = ring + (t & 1) * 4 * stride;  // diagonal t
    double* __restrict ihc = hc + stride;
    double* __restrict vc = hc + 2 * stride;
    double* __restrict ivc = hc + 3 * stride;
    const float* __restrict cd = skew + int64_t{t} * kSkewPitch;  // cost of (r, t - r) at cd[r]
    if (kStoreWeights) {  // w_diag = 1 - w_up - w_left: not stored (BackwardStrip<true>)
      w_up = ws->w_up.data() + w_off - (lo - 1);
      w_left = ws->w_left.data() + w_off - (lo - 1);
    }
    if (lo == 1 && !first_strip) {  // (1, t - 1)'s upper neighbour: the row above
      hp[0] = top_h[t - 1];
      ihp[0] = top_ih[t - 1];
    }
    const bool row1 = first_strip && lo == 1;  // cell r = 1 is global row 1
    const bool col1 = t - hi == 1;             // cell r = hi is column 1
    const int ilo = row1 ? 2 : lo, ihi = col1 ? hi - 1 : hi;  // the interior cells
    // No test on i in this loop (GCC would split it there and run the
    // padding part as scalar code): S goes to a scratch row, checked below.
    double* __restrict s_row = ws->base.data();
#pragma omp simd
    for (int i = lo; i < end; ++i) {
      const double x = cd[i] * inv_gamma;
      const double ec = internal::ExpDouble(-x);
      const double hu = hp[i - 1], vl = vp[i];
      const double S = 1.0 + hu + vl;
      const double tt = ec * S;
      const double it = 1.0 / tt;
      const double wd = ec * it;  // 1 / S
      if (kStoreWeights) {
        w_up[i] = static_cast<float>(hu * wd);
        w_left[i] = static_cast<float>(vl * wd);
      }
      hc[i] = tt * ivp[i];
      ihc[i] = vl * it;
      vc[i] = tt * ihp[i - 1];
      ivc[i] = hu * it;
      s_row[i] = S;
    }
    // The range check, on the diagonal's cells only (S on the interior ones).
    int bad = 0;
#pragma omp simd reduction(| : bad)
    for (int i = lo; i <= hi; ++i) bad |= !(std::fabs(cd[i] * inv_gamma) <= 700.0);
#pragma omp simd reduction(| : bad)
    for (int i = ilo; i <= ihi; ++i) bad |= !(s_row[i] <= 1e150);
    if (bad) return false;
    // Row 1: R(1,j) = R(1,j-1) + c, so h = exp(-c); (1,1) comes from (0,0).
    if (row1) {
      const int j = t - 1;
      const double x = cd[1] * inv_gamma, ec = internal::ExpDouble(-x);
      hc[1] = vc[1] = ec;
      ihc[1] = ivc[1] = 1.0 / ec;
      if (kStoreWeights) {  // (1,1): w_diag = 1
        w_up[1] = 0.f;
        w_left[1] = j == 1 ? 0.f : 1.f;
      }
      if (n <= m && j <= m - n + 1) chain->boundary += x;  // R(1, m - n + 1)
      if (j == 1) chain->col_sum += x;
    }
    // Column 1 (below row 1): R(i,1) = R(i-1,1) + c, so v = exp(-c).
    if (col1 && !(row1 && hi == 1)) {
      const int i = st.i0 - 1 + hi;  // global row
      const double x = cd[hi] * inv_gamma, ec = internal::ExpDouble(-x);
      hc[hi] = vc[hi] = ec;
      ihc[hi] = ivc[hi] = 1.0 / ec;
      if (kStoreWeights) {
        w_up[hi] = 1.f;
        w_left[hi] = 0.f;
      }
      chain->col_sum += x;
      if (n > m && i == n - m + 1) chain->boundary = chain->col_sum;  // R(n - m + 1, 1)
    }
    // The diagonal to (n,m): global (i, i + m - n), here 2r = t - i0 + 1 + n - m.
    const int twice_r = t - st.i0 + 1 + n - m;
    if ((twice_r & 1) == 0 && twice_r / 2 >= ilo && twice_r / 2 <= ihi) {
      const int r = twice_r / 2;
      chain->acc += cd[r] * inv_gamma;
      chain->prod *= 1.0 + hp[r - 1] + vp[r];  // S of that cell, as in the loop
      if (chain->prod > 1e150) chain->acc -= std::log(chain->prod), chain->prod = 1.0;
    }
    if (hi == rows && lo <= rows) {
      bottom_h[t - rows] = hc[rows];
      bottom_ih[t - rows] = ihc[rows];
    }
    if (kStoreWeights) {  // pads: w_diag = 1 there, but E is 0 in those slots
      w_up[lo - 1] = w_left[lo - 1] = 0.f;
      w_up[hi + 1] = w_left[hi + 1] = 0.f;
      w_off += hi - lo + 3;
    }
  }
  if (kStoreWeights) {  // the two all-padding diagonals after the last one
    const int64_t pad = st.slots(rows + m + 1) + st.slots(rows + m + 2);
    std::fill_n(ws->w_up.data() + w_off, pad, 0.f);
    std::fill_n(ws->w_left.data() + w_off, pad, 0.f);
  }
  return true;
}

}  // namespace

template <bool kStoreWeights>
bool ForwardRatio(const float* cost, int n, int m, double gamma, const std::vector<Strip>& strips,
                  const std::vector<int64_t>& w_off, Buffers* ws, double* value) {
  ws->row_c.resize(m + 2);
  ws->row_d.resize(m + 2);
  double *top_h = ws->row_a.data(), *top_ih = ws->row_b.data();
  double *bottom_h = ws->row_c.data(), *bottom_ih = ws->row_d.data();
  RatioChain chain;
  for (size_t s = 0; s < strips.size(); ++s) {
    const float* cost_s = cost + static_cast<int64_t>(strips[s].i0 - 1) * m;
    if (!ForwardStripRatio<kStoreWeights>(cost_s, strips[s], n, gamma, top_h, top_ih, bottom_h,
                                          bottom_ih, w_off[s], &chain, ws)) {
      return false;
    }
    std::swap(top_h, bottom_h);
    std::swap(top_ih, bottom_ih);
  }
  *value = gamma * (chain.boundary + chain.acc - std::log(chain.prod));
  return true;
}

template bool ForwardRatio<true>(const float*, int, int, double, const std::vector<Strip>&,
                                 const std::vector<int64_t>&, Buffers*, double*);
template bool ForwardRatio<false>(const float*, int, int, double, const std::vector<Strip>&,
                                  const std::vector<int64_t>&, Buffers*, double*);

}  // namespace ut::cpu::strip
