// Global Alignment Kernel (GAK) over sequences of slice embeddings (CPU):
// slice distances from GEMMs, the GAK local cost, soft-DTW between sequences
// (ops/sdtw.h), the normalised kernel K~ and the N x N kernel matrix, each with
// its backward to the sequence rows. DESIGN.md section 1 has the method.
//
//   phi(i,j)  slice distance: cosine 1 - cos(x_i, y_j), squared Euclidean
//             |x_i - y_j|^2, or the triple kernel on two-part teacher features
//   c(i,j)    = phi/(2 s^2) + log(2 - exp(-phi/(2 s^2))),  s = delta*sqrt((n+m)/2)
//   R_xy      = soft-DTW of c with gamma = 1, log K(x,y) = -R_xy
//   log K~    = -(R_xy - R_xx/2 - R_yy/2), all three with the pair's own s,
//             so K~ is in (0,1] and K~(x,x) = 1.
//
// The distances use cpu::gemm (ops/gemm.h): split over the OpenMP team when
// called outside a parallel region, single-threaded inside one. Gradients to
// rows accumulate (+=) unless noted.
#pragma once

#include <cstdint>
#include <vector>

#include "core/base/status.h"

namespace ut::cpu {

enum class SliceDistance {
  kCosine,    // 1 - cos(x, y); rows need not be normalised
  kSqEuclid,  // |x - y|^2
  kTriple,    // two-part features [part 1 (part1_dim) ; part 2]: same modality ->
              // |a1 - b1|^2, different modality -> |a2 - b2|^2 (forward only)
};

// ---- Slice distances: x [n,d], y [m,d] -> phi [n,m] -------------------------

// phi = 1 - <x_i, y_j> / (|x_i| |y_j|); norms below 1e-12 count as 1e-12.
void cosine_distance_forward(float* phi, const float* x, const float* y, int n, int m, int d);
// dphi [n,m] -> dx [n,d] +=, dy [m,d] += (either may be nullptr).
void cosine_distance_backward(float* dx, float* dy, const float* dphi, const float* x,
                              const float* y, int n, int m, int d);

// phi = |x_i - y_j|^2, computed as |x^_i|^2 + |y^_j|^2 - 2 <x^_i, y^_j> (one
// GEMM) on the pair shifted by its common mean (x^ = x - mu, y^ = y - mu, mu
// the mean of all n + m rows), clamped at 0. The shift changes nothing in
// exact arithmetic and keeps a large common offset from cancelling in float.
void sqeuclid_distance_forward(float* phi, const float* x, const float* y, int n, int m, int d);
// dphi [n,m] -> dx [n,d] += 2 (rowsum(dphi) x^ - dphi y^), dy [m,d] += 2 (colsum(dphi) y^ - dphi^T x^)
// (the centred rows, as above).
void sqeuclid_distance_backward(float* dx, float* dy, const float* dphi, const float* x,
                                const float* y, int n, int m, int d);

// Triple kernel. x [n,d] with modality_x [n], y [m,d] with modality_y [m];
// part 1 is columns [0, part1_dim), part 2 the rest (both non-empty).
void triple_distance_forward(float* phi, const float* x, const int32_t* modality_x,
                             const float* y, const int32_t* modality_y, int n, int m, int d,
                             int part1_dim);

// ---- GAK local cost ---------------------------------------------------------

// s = delta * sqrt((n + m) / 2).
double gak_sigma(double delta, int n, int m);
// cost [count] = phi/(2 s^2) + log(2 - exp(-phi/(2 s^2))) (cost may alias phi).
void gak_local_cost_forward(float* cost, const float* phi, int64_t count, double sigma);
// dphi [count] = dcost * dc/dphi, dc/dphi = 1 / (s^2 (2 - exp(-phi/(2 s^2))))
// (written; dphi may alias dcost).
void gak_local_cost_backward(float* dphi, const float* dcost, const float* phi, int64_t count,
                             double sigma);

// ---- Sequences and pairs ----------------------------------------------------

// N sequences stored back to back: sequence s is rows [start_s, start_s + lengths[s])
// of rows [total, d], start_s = lengths[0] + ... + lengths[s-1].
struct Sequences {
  const float* rows = nullptr;
  int d = 0;
  int count = 0;                       // N
  const int* lengths = nullptr;        // [N], each >= 1
  const int32_t* modality = nullptr;   // [total] (kTriple only)
};

struct SequencePairs {
  int count = 0;             // P
  const int* u = nullptr;    // [P] first sequence of each pair
  const int* v = nullptr;    // [P] second sequence
};

enum class LocalCost {
  kIdentity,  // c = phi (plain soft-DTW between sequences)
  kGak,       // the GAK local cost with s = delta * sqrt((n+m)/2)
};

struct SequenceSdtwOptions {
  SliceDistance distance = SliceDistance::kCosine;
  int part1_dim = 0;  // kTriple
  LocalCost local_cost = LocalCost::kIdentity;
  double delta = 1.0;  // kGak
  double gamma = 1.0;
  int band = -1;
  int num_threads = 0;  // OpenMP threads, each taking whole pairs; 0: OpenMP default
  // Pairs are processed in chunks of at most this many cells (or one larger
  // pair): the chunk's distance/cost buffers take 4-8 bytes per cell, each
  // thread's soft-DTW 12 bytes per cell of the pair (or 192 per cell of the
  // lane group, ops/cpu/sdtw_lanes.h) it works on. Pairs of one shape share
  // lane groups only within a chunk, so another chunk size can change results
  // at the rounding level (never with the thread count).
  int64_t max_chunk_cells = int64_t{1} << 25;
};

// Checks sequences, pairs and options; `need_backward` also requires a
// distance with a backward (not kTriple).
absl::Status ValidateSequencePairs(const Sequences& seqs, const SequencePairs& pairs,
                                   const SequenceSdtwOptions& options, bool need_backward);

// values [P] = R between sequences u[p] and v[p].
absl::Status soft_dtw_sequences_forward(double* values, const Sequences& seqs,
                                        const SequencePairs& pairs,
                                        const SequenceSdtwOptions& options);

// Recomputes the forward (values [P], may be nullptr) and adds
// dvalues[p] * dR_p/drows to drows [total, d] (+=; pairs in order, so the
// result does not depend on the thread count).
absl::Status soft_dtw_sequences_backward(double* values, float* drows, const double* dvalues,
                                         const Sequences& seqs, const SequencePairs& pairs,
                                         const SequenceSdtwOptions& options);

// ---- Normalised GAK ---------------------------------------------------------

struct GakOptions {
  SliceDistance distance = SliceDistance::kCosine;
  int part1_dim = 0;    // kTriple
  double delta = 1.0;   // s = delta * sqrt((n+m)/2) per pair
  int band = -1;
  int num_threads = 0;
};

// k [P] = K~(seq u[p], seq v[p]). Any pair list works, e.g. one rank's shard of
// the upper triangle; the self terms R_uu are computed once per (u, sigma).
absl::Status gak_pairs_forward(double* k, const Sequences& seqs, const SequencePairs& pairs,
                               const GakOptions& options);
// drows [total, d] += sum_p dk[p] * dK~_p/drows.
absl::Status gak_pairs_backward(float* drows, const double* dk, const Sequences& seqs,
                                const SequencePairs& pairs, const GakOptions& options);

// K [N,N] = K~ between every two sequences (symmetric, diagonal exactly 1;
// computed on the upper triangle).
absl::Status gak_matrix_forward(float* K, const Sequences& seqs, const GakOptions& options);
// dK [N,N] = dL/dK (the full matrix; K[u,v] and K[v,u] are one value, so both
// entries count) -> drows [total, d] (written).
absl::Status gak_matrix_backward(float* drows, const float* dK, const Sequences& seqs,
                                 const GakOptions& options);

}  // namespace ut::cpu
