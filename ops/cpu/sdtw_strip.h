// Internal to //ops:sdtw: what the diagonal sweep's files share. The strip
// layout, its constants and the per-thread buffers (ops/cpu/sdtw.cc, which
// explains the layout), and the ratio-domain forward (ops/cpu/sdtw_ratio.cc).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "ops/cpu/sdtw_internal.h"
#include "ops/sdtw.h"

namespace ut::cpu {

struct SdtwWorkspace::Buffers {
  std::vector<double> r;                  // 3 rolling diagonals of R in a strip
  internal::FloatBuffer tile;             // a strip's costs, then its E, by rows [128, m+24]
  internal::FloatBuffer skew;             // the same, by diagonals [128+m+24, 136]
  std::vector<float> gap_diag, gap_up, gap_left, log_sum;  // per-diagonal temporaries [130]
  std::vector<double> base;
  std::vector<double> row_a, row_b;       // R of the rows between strips [m+2]
  std::vector<double> row_c, row_d;       // (the ratio forward: h and 1/h of those rows)
  std::vector<float> below, above;        // E flowing between strips [m+2]
  std::vector<float> top_e, top_w_up, top_w_diag;
  std::vector<int64_t> diag_off;          // weight slot base of each diagonal
  internal::FloatBuffer w_diag;           // per band cell: weight of (i-1,j-1) in (i,j)
  internal::FloatBuffer w_up;             // weight of (i-1,j)
  internal::FloatBuffer w_left;           // weight of (i,j-1)
};

namespace strip {

using Buffers = SdtwWorkspace::Buffers;

constexpr double kInf = std::numeric_limits<double>::infinity();

// The matrix is swept in horizontal strips of at most kStripRows rows (so a
// diagonal's cost gather and E scatter touch few cache lines and pages); in a
// strip, local row r in [1, rows] is global row i0 - 1 + r, and diagonal
// t = r + j in [2, rows + m]. Band cells of diagonal t: r in [lo(t), hi(t)];
// hi(t) = lo(t) - 1 means an empty diagonal (band 0 on equal lengths gives
// those). lo and hi never decrease and grow by at most 1 per diagonal, which is
// what makes one sentinel on each side of a diagonal enough.
constexpr int kStripRows = 128;

// The diagonal loops run over whole vectors: [lo, PaddedEnd(lo, hi)), a
// multiple of kLanes cells. The extra lanes compute on whatever lies past hi
// (sentinels, then stale values) and write only scratch that nothing reads as
// a cell: the rolling R slots past hi + 1, weight slots of the next diagonal
// (written again when that diagonal is done) and skew slots outside the strip
// or the band. Without this the compiler's scalar remainder loop (up to 15
// cells of exp/log per diagonal) costs about as much as the vector part.
constexpr int kLanes = 16;
inline int PaddedEnd(int lo, int hi) { return lo + ((hi - lo + 1 + kLanes - 1) & ~(kLanes - 1)); }


// The skewed layout (ops/cpu/sdtw.cc, "Skewed (diagonal-major) layout").
constexpr int kTileLeft = 8, kTileRight = 16;
constexpr int kSkewPitch = kStripRows + kLanes;  // slots 0 .. kStripRows + 1 used, + overrun

inline int64_t TilePitch(int m) { return kTileLeft + m + kTileRight; }
// Diagonals 0 .. rows + m + 2 plus the overhang of the last block.
inline int64_t SkewRows(int m) { return kStripRows + m + 24; }

struct Strip {
  int i0, rows, m, width;  // width < 0: no band
  int lo(int t) const {
    int v = std::max(1, t - m);
    if (width >= 0) v = std::max(v, (t - (i0 - 1) - width + 1) >> 1);  // ceil(/2)
    return std::min(v, rows + 1);
  }
  int hi(int t) const {
    int v = std::min(rows, t - 1);
    if (width >= 0) v = std::min(v, (t - (i0 - 1) + width) >> 1);  // floor(/2)
    return std::max(v, lo(t) - 1);
  }
  // Padded weight slots of diagonal t: [lo - 1, hi + 1].
  int64_t slots(int t) const { return hi(t) - lo(t) + 3; }
  // Weight slots of the whole strip: diagonals 2 .. rows + m + 2 (the last
  // two are all padding: the backward reads them as zero weights).
  int64_t total_slots() const {
    int64_t total = 0;
    for (int t = 2; t <= rows + m + 2; ++t) total += slots(t);
    return total;
  }
};

std::vector<Strip> MakeStrips(int n, int m, int band);

// cost: a strip's rows [rows, m] -> ws->skew, diagonal-major (ops/cpu/sdtw.cc).
void SkewCosts(const float* cost, int rows, int m, Buffers* ws);

// All strips of a pair without a band in the ratio domain (ops/cpu/sdtw_ratio.cc):
// *value = R[n,m]; with kStoreWeights w_up and w_left per cell (w_diag = 1 -
// their sum; BackwardStrip<true>). False if a cell left the range: the caller
// then runs the log-domain forward.
template <bool kStoreWeights>
bool ForwardRatio(const float* cost, int n, int m, double gamma, const std::vector<Strip>& strips,
                  const std::vector<int64_t>& w_off, Buffers* ws, double* value);

}  // namespace strip
}  // namespace ut::cpu
