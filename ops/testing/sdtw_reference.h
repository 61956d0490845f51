// Double-precision soft-DTW references for tests: brute force over every
// monotone alignment (tiny sizes) and the textbook DP with the Cuturi &
// Blondel backward, the comparison used against them, and the check of the
// batch API against single pairs. Header-only; link //ops:sdtw_reference
// (testonly).
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ops/sdtw.h"
#include "ops/testing/gradcheck.h"

namespace ut::testing {

using ::ut::cpu::SdtwInBand;

inline constexpr double kInf = std::numeric_limits<double>::infinity();

struct SdtwReference {
  double value;
  std::vector<double> E;  // [n,m]
};

// Enumerates every monotone alignment from (0,0) to (n-1,m-1) with steps
// (1,0), (0,1), (1,1) that stays in the band and avoids +inf cells:
// value = -g log sum_paths exp(-cost/g), E[i,j] = P(path visits (i,j)).
inline SdtwReference BruteForce(const std::vector<float>& cost, int n, int m, double g, int band) {
  std::vector<std::vector<int>> paths;
  std::vector<double> path_cost;
  std::vector<int> cells;
  std::function<void(int, int, double)> walk = [&](int i, int j, double acc) {
    if (!SdtwInBand(i, j, n, m, band) || std::isinf(cost[i * m + j])) return;
    cells.push_back(i * m + j);
    acc += cost[i * m + j];
    if (i == n - 1 && j == m - 1) {
      paths.push_back(cells);
      path_cost.push_back(acc);
    } else {
      if (i + 1 < n) walk(i + 1, j, acc);
      if (j + 1 < m) walk(i, j + 1, acc);
      if (i + 1 < n && j + 1 < m) walk(i + 1, j + 1, acc);
    }
    cells.pop_back();
  };
  walk(0, 0, 0.0);
  double lo = kInf;
  for (double c : path_cost) lo = std::min(lo, c);
  double z = 0.0;
  for (double c : path_cost) z += std::exp(-(c - lo) / g);
  SdtwReference ref{lo - g * std::log(z), std::vector<double>(n * m, 0.0)};
  for (size_t p = 0; p < paths.size(); ++p) {
    const double prob = std::exp(-(path_cost[p] - lo) / g) / z;
    for (int c : paths[p]) ref.E[c] += prob;
  }
  return ref;
}

// Textbook DP in double: the forward recursion and the Cuturi & Blondel
// backward E[p] = sum_q E[q] exp((R[q] - c[q] - R[p]) / g); cells outside the
// band are +inf in R and 0 in E.
inline SdtwReference PlainDp(const std::vector<float>& cost, int n, int m, double g, int band = -1) {
  const int w = m + 2;
  std::vector<double> R((n + 2) * w, kInf);
  auto r = [&](int i, int j) -> double& { return R[i * w + j]; };
  auto c = [&](int i, int j) { return static_cast<double>(cost[(i - 1) * m + (j - 1)]); };
  auto in = [&](int i, int j) { return i <= n && j <= m && SdtwInBand(i - 1, j - 1, n, m, band); };
  r(0, 0) = 0.0;
  for (int i = 1; i <= n; ++i) {
    for (int j = 1; j <= m; ++j) {
      if (!in(i, j)) continue;
      const double a = r(i - 1, j - 1), b = r(i - 1, j), l = r(i, j - 1);
      const double mn = std::min({a, b, l});
      r(i, j) = c(i, j) + mn -
                g * std::log(std::exp(-(a - mn) / g) + std::exp(-(b - mn) / g) +
                             std::exp(-(l - mn) / g));
    }
  }
  std::vector<double> E((n + 2) * w, 0.0);
  auto e = [&](int i, int j) -> double& { return E[i * w + j]; };
  auto from = [&](int qi, int qj, int i, int j) {  // E(q) * weight of (i,j) in q
    if (!in(qi, qj)) return 0.0;
    return e(qi, qj) * std::exp((r(qi, qj) - c(qi, qj) - r(i, j)) / g);
  };
  e(n, m) = 1.0;
  for (int i = n; i >= 1; --i) {
    for (int j = m; j >= 1; --j) {
      if ((i == n && j == m) || !in(i, j)) continue;
      e(i, j) = from(i, j + 1, i, j) + from(i + 1, j, i, j) + from(i + 1, j + 1, i, j);
    }
  }
  SdtwReference ref{r(n, m), std::vector<double>(n * m)};
  for (int i = 1; i <= n; ++i) {
    for (int j = 1; j <= m; ++j) ref.E[(i - 1) * m + (j - 1)] = e(i, j);
  }
  return ref;
}

// Value within 1e-6 relative (plus 1e-6 absolute), every E entry within 2e-6
// (E is a probability); NaN fails.
inline void ExpectMatches(const SdtwReference& ref, double value, const std::vector<float>& E,
                   const std::string& what) {
  EXPECT_LE(std::fabs(value - ref.value), 1e-6 * (1.0 + std::fabs(ref.value)))
      << what << ": value " << value << " vs " << ref.value;
  double worst = 0.0;
  int worst_at = -1;
  for (size_t k = 0; k < E.size(); ++k) {
    const double err = std::fabs(E[k] - ref.E[k]);
    if (!(err <= worst)) {
      worst = std::isnan(err) ? kInf : err;
      worst_at = static_cast<int>(k);
    }
  }
  EXPECT_LE(worst, 2e-6) << what << ": E[" << worst_at << "] = " << E[worst_at] << " vs "
                         << ref.E[worst_at];
}


// Runs soft_dtw_forward_backward and soft_dtw_forward on the batch with 1, 2
// and 3 threads and checks, against soft_dtw_pair_backward on each pair alone:
// values within value_rel (relative; 0: bit for bit), E within e_abs *
// |dvalues[b]| (0: bit for bit); the forward-only values equal the
// forward-backward ones; and E is bit for bit the same for every thread
// count. Returns E (1 thread).
inline std::vector<float> ExpectBatchMatchesSinglePairs(
    const std::vector<int>& n, const std::vector<int>& m, const std::vector<float>& costs,
    const std::vector<float>& dvalues, const ::ut::cpu::SdtwOptions& options, double value_rel,
    double e_abs) {
  using namespace ::ut::cpu;  // NOLINT
  const int B = static_cast<int>(n.size());
  std::vector<int64_t> offsets(B + 1, 0);
  for (int b = 0; b < B; ++b) offsets[b + 1] = offsets[b] + int64_t{n[b]} * m[b];
  const SdtwBatch batch{B, n.data(), m.data(), offsets.data()};
  SdtwOptions opt = options;
  std::vector<std::vector<float>> E_by_threads;
  for (int threads : {1, 2, 3}) {
    opt.num_threads = threads;
    std::vector<double> values(B), values_fwd(B);
    std::vector<float> E(offsets[B], -1.0f);
    EXPECT_TRUE(soft_dtw_forward_backward(values.data(), E.data(), costs.data(), dvalues.data(),
                                          batch, opt).ok());
    EXPECT_TRUE(soft_dtw_forward(values_fwd.data(), costs.data(), batch, opt).ok());
    SdtwWorkspace ws;
    for (int b = 0; b < B; ++b) {
      std::vector<float> Eb(int64_t{n[b]} * m[b]);
      const double vb = soft_dtw_pair_backward(Eb.data(), dvalues[b], costs.data() + offsets[b],
                                               n[b], m[b], opt.gamma, opt.band, &ws);
      EXPECT_LE(std::fabs(values[b] - vb), value_rel * std::fabs(vb))
          << "pair " << b << ": " << values[b] << " vs " << vb;
      EXPECT_EQ(values_fwd[b], values[b]) << "pair " << b;
      double worst = 0.0;
      for (size_t k = 0; k < Eb.size(); ++k) {
        const double err = std::fabs(E[offsets[b] + k] - Eb[k]);
        worst = std::isnan(err) ? kInf : std::max(worst, err);
      }
      EXPECT_LE(worst, e_abs * std::fabs(dvalues[b])) << "pair " << b;
    }
    E_by_threads.push_back(E);
  }
  EXPECT_TRUE(BitIdentical(E_by_threads[0], E_by_threads[1]));
  EXPECT_TRUE(BitIdentical(E_by_threads[0], E_by_threads[2]));
  return E_by_threads[0];
}

}  // namespace ut::testing
