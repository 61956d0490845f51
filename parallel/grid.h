// The process grid: world = TP x DP x PP, with TP varying fastest, then DP,
// then PP (TP groups stay inside a node):
//
//   rank = tp + dp * TP + pp * TP * DP
//
// Worked example, 16 ranks, TP = 2, DP = 2, PP = 4:
//
//   rank : 0 1 | 2 3 | 4 5 | 6 7 | 8 9 | 10 11 | 12 13 | 14 15
//   pp   : 0 0   0 0   1 1   1 1   2 2   2  2    3  3    3  3
//   dp   : 0 0   1 1   0 0   1 1   0 0   1  1    0  0    1  1
//   tp   : 0 1   0 1   0 1   0 1   0 1   0  1    0  1    0  1
//
//   TP groups (same pp, dp): {0,1} {2,3} {4,5} ... {14,15}
//   DP groups (same pp, tp): {0,2} {1,3} {4,6} {5,7} ... {13,15}
//   PP groups (same dp, tp): {0,4,8,12} {1,5,9,13} {2,6,10,14} {3,7,11,15}
//
// Stage 0 (ranks 0-3) holds the vision encoder, projector and embeddings; the
// last stage (ranks 12-15) holds the final norm, LM head and both losses.
#pragma once

#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"

namespace ut {

struct GridCoord {
  int tp = 0, dp = 0, pp = 0;
};

class ProcessGrid {
 public:
  // Checks world == tp*dp*pp and that the model splits: heads and KV heads
  // (LLM and ViT) divisible by TP, at least one decoder layer per stage, vocab
  // divisible by TP. Errors name the config field and the fix.
  static absl::StatusOr<ProcessGrid> Create(const Config& config, int world_size);

  int tp() const { return tp_; }
  int dp() const { return dp_; }
  int pp() const { return pp_; }
  int world() const { return tp_ * dp_ * pp_; }

  int RankOf(const GridCoord& c) const { return c.tp + c.dp * tp_ + c.pp * tp_ * dp_; }
  GridCoord CoordOf(int rank) const {
    return {rank % tp_, (rank / tp_) % dp_, rank / (tp_ * dp_)};
  }
  // World ranks of the TP / DP / PP group that `rank` belongs to, in group order.
  std::vector<int> TpGroup(int rank) const;
  std::vector<int> DpGroup(int rank) const;
  std::vector<int> PpGroup(int rank) const;

 private:
  ProcessGrid(int tp, int dp, int pp) : tp_(tp), dp_(dp), pp_(pp) {}
  int tp_, dp_, pp_;
};

}  // namespace ut
