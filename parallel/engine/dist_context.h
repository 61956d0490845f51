// Everything a rank knows about the distributed run: its place in the process
// grid and one communicator per group it belongs to (parallel/grid.h has the
// rank layout, with a worked 16-rank example).
//
//   world = TP x DP x PP ranks;  rank = tp + dp*TP + pp*TP*DP
//   tp    : the TP ranks of this (dp, pp)       (f/g all-reduces, vocab-parallel CE)
//   dp    : the DP ranks of this (tp, pp)       (gradient all-reduce / ZeRO-1, L_d gather)
//   pp    : the PP ranks of this (tp, dp)       (activations between stages)
//   dp_tp : the DP x TP ranks of this pp stage  (L_d pair work split)
//
// Every group is built once, with Split, by every rank in the same order.
#pragma once

#include <memory>

#include "core/base/config.h"
#include "core/base/status.h"
#include "parallel/comm/communicator.h"
#include "parallel/grid.h"

namespace ut::parallel {

struct DistContext {
  ProcessGrid grid;
  GridCoord coord;
  int rank = 0;
  comm::Communicator* world = nullptr;  // not owned
  std::unique_ptr<comm::Communicator> tp, dp, pp, dp_tp;

  bool first_stage() const { return coord.pp == 0; }
  bool last_stage() const { return coord.pp == grid.pp() - 1; }
};

// Checks the grid against the config and the world size (clear errors: see
// ProcessGrid::Create) and splits `world` into the four groups.
absl::StatusOr<std::unique_ptr<DistContext>> MakeDistContext(const Config& config,
                                                             comm::Communicator* world);

}  // namespace ut::parallel
