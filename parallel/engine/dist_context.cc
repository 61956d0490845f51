#include "parallel/engine/dist_context.h"

#include "absl/strings/str_cat.h"

namespace ut::parallel {

absl::StatusOr<std::unique_ptr<DistContext>> MakeDistContext(const Config& config,
                                                             comm::Communicator* world) {
  ASSIGN_OR_RETURN(ProcessGrid grid, ProcessGrid::Create(config, world->size()));
  auto ctx = std::make_unique<DistContext>(DistContext{grid});
  ctx->rank = world->rank();
  ctx->coord = grid.CoordOf(ctx->rank);
  ctx->world = world;
  const GridCoord c = ctx->coord;
  // color = the coordinates that stay fixed inside the group; key = the position in it.
  const int TP = grid.tp(), DP = grid.dp();
  ASSIGN_OR_RETURN(ctx->tp, world->Split(c.dp + c.pp * DP, c.tp,
                                         absl::StrCat("tp[pp=", c.pp, ",dp=", c.dp, "]")));
  ASSIGN_OR_RETURN(ctx->dp, world->Split(c.tp + c.pp * TP, c.dp,
                                         absl::StrCat("dp[pp=", c.pp, ",tp=", c.tp, "]")));
  ASSIGN_OR_RETURN(ctx->pp, world->Split(c.tp + c.dp * TP, c.pp,
                                         absl::StrCat("pp[dp=", c.dp, ",tp=", c.tp, "]")));
  ASSIGN_OR_RETURN(ctx->dp_tp, world->Split(c.pp, c.tp + c.dp * TP,
                                            absl::StrCat("dp_tp[pp=", c.pp, "]")));
  return ctx;
}

}  // namespace ut::parallel
