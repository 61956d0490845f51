// Soft-DTW (Cuturi & Blondel 2017) in the log domain, forward and backward (CPU).
//
// For a cost matrix c [n,m] (1-based cells (i,j) below):
//   R[0,0] = 0,  R[i,0] = R[0,j] = +inf,
//   R[i,j] = c(i,j) + softmin_g(R[i-1,j-1], R[i-1,j], R[i,j-1]),
//   softmin_g(a,b,c) = -g * log(exp(-a/g) + exp(-b/g) + exp(-c/g)),
//   value = R[n,m].
// With g = 1, -value is log K of the Global Alignment Kernel (ops/gak.h).
// The backward gives E = dR[n,m]/dc [n,m], the expected alignment matrix: the
// probability that cell (i,j) lies on the alignment path under the Gibbs
// distribution over monotone alignments; every entry is in [0,1].
//
// How it is computed: cells are swept along anti-diagonals k = i + j (no cell
// on a diagonal depends on another on the same diagonal, so the inner loops are
// SIMD loops over whole vectors), in strips of 128 rows for cache locality; a
// strip's costs are first re-laid diagonal-major by 8 x 8 register transposes
// so that each diagonal is one contiguous run, and E goes back the same way.
// The sweep works on R / gamma (costs c / gamma, softmin of temperature 1). R
// is kept in double;
// exp/log run in float on the gaps to the minimum (absolute error ~1e-7 * gamma
// per cell whatever the size of R). The three softmin weights of every cell
// (the share of each predecessor, in [0,1]) are kept in float; the backward is
// then E[p] = sum over successors q of E[q] * w(q <- p), all in the ratio
// domain, so nothing overflows and unreachable cells (R = +inf, e.g. +inf
// costs) get weight 0 and E = 0, never NaN.
// Memory per pair: 12 bytes per band cell for the backward, O(n+m) for the
// forward alone. Accuracy against a float64 reference: value ~1e-8 relative,
// E ~5e-7 absolute (tests/golden/sdtw).
//
// Pairs without a band run the same sweep in the ratio domain first (ratios
// of neighbouring cells and exp(-cost) in double, one division per cell
// instead of two exps and a log; ops/cpu/sdtw_ratio.cc): value ~1e-12
// relative, E ~1e-6 absolute (it keeps two weights per cell, 8 bytes; the
// third is 1 minus their sum), the forward 1.2-1.4x faster. A pair whose
// |cost| / gamma exceeds 700 or whose ratios leave the double range (costs /
// gamma varying by tens per cell) is redone in the log domain described above.
//
// The batch functions below send pairs of one shape, up to 192 x 192 cells,
// in groups of up to 16 to a second sweep with one pair per SIMD lane
// (ops/cpu/sdtw_lanes.h): 1.4x (128 x 128) to 14x (8 x 8) faster, and
// without a band it runs in the ratio domain too, falling back to the log
// domain for the whole group when a ratio leaves its range.
// A grouped pair's results can differ from soft_dtw_pair's at the rounding
// level above; they never depend on the thread count.
//
// Sakoe-Chiba band: with band w >= 0, only cells with |i - j| <= w + |n - m|
// exist (widened by |n - m| so that (n,m) stays reachable); others are +inf in R
// and 0 in E. band < 0: no band.
#pragma once

#include <cstdint>
#include <memory>

#include "core/base/status.h"

namespace ut::cpu {

struct SdtwOptions {
  double gamma = 1.0;   // softmin temperature, > 0
  int band = -1;        // Sakoe-Chiba half-width before widening; < 0: none
  int num_threads = 0;  // OpenMP threads over pairs; 0: the OpenMP default
};

// A batch of B pairs with their own lengths. Pair b's cost matrix is row-major
// [n[b], m[b]] at costs + offsets[b]; offsets has B + 1 entries and
// offsets[b+1] - offsets[b] == n[b] * m[b] (packed, no padding).
struct SdtwBatch {
  int B = 0;
  const int* n = nullptr;            // [B], >= 1
  const int* m = nullptr;            // [B], >= 1
  const int64_t* offsets = nullptr;  // [B+1]
};

// Checks lengths, offsets and options; the message names the bad pair/field.
absl::Status ValidateSdtw(const SdtwBatch& batch, const SdtwOptions& options);

// values [B] = R_b[n_b, m_b]. costs: packed cost matrices (see SdtwBatch).
absl::Status soft_dtw_forward(double* values, const float* costs, const SdtwBatch& batch,
                              const SdtwOptions& options);

// Forward and backward in one pass per pair (the backward needs the forward's
// softmin weights, which are only kept for the pair being worked on).
// values [B] as above; E: packed like costs, E_b = dvalues[b] * dR_b[n,m]/dc_b
// (written; dvalues == nullptr means 1 for every pair). E may alias costs: a
// pair's costs are all read before its E is written.
absl::Status soft_dtw_forward_backward(double* values, float* E, const float* costs,
                                       const float* dvalues, const SdtwBatch& batch,
                                       const SdtwOptions& options);

// ---- Single pair, for callers that run their own loop over pairs ----------

// Scratch for one pair: about 12 bytes per band cell for the backward, O(n+m)
// for the forward alone. Reuse one per thread; buffers only grow.
class SdtwWorkspace {
 public:
  SdtwWorkspace();
  ~SdtwWorkspace();
  SdtwWorkspace(SdtwWorkspace&&) noexcept;
  SdtwWorkspace& operator=(SdtwWorkspace&&) noexcept;

  struct Buffers;  // ops/cpu/sdtw.cc
  Buffers* buffers() { return buffers_.get(); }
  // Frees the large buffers if one holds more than max_floats.
  void Trim(int64_t max_floats);

 private:
  std::unique_ptr<Buffers> buffers_;
};

// This thread's workspace, kept between calls (the batch and sequence APIs
// use it and free its buffers above 64 MiB afterwards).
SdtwWorkspace& ThreadWorkspace();

// cost [n,m] -> R[n,m]. Arguments must be valid (CHECKed).
double soft_dtw_pair(const float* cost, int n, int m, double gamma, int band,
                     SdtwWorkspace* ws);

// cost [n,m] -> R[n,m]; E [n,m] = scale * dR[n,m]/dcost (written; may alias cost).
double soft_dtw_pair_backward(float* E, float scale, const float* cost, int n, int m,
                              double gamma, int band, SdtwWorkspace* ws);

// Whether cell (i,j) (0-based) of an n x m matrix lies inside the band.
inline bool SdtwInBand(int i, int j, int n, int m, int band) {
  if (band < 0) return true;
  const int width = band + (n > m ? n - m : m - n);
  return (i > j ? i - j : j - i) <= width;
}

}  // namespace ut::cpu
