// This rank's part of the model, the same way on every rank: the decoder cut
// into parallel.pp * parallel.virtual_stages chunks balanced by cost
// (PartitionLayers), the chunks of this pipeline stage (ShardFor),
// tensor-parallel over ctx.tp, parameters initialised from train.seed (each
// rank gets exactly its slices of the single-process init).
#pragma once

#include <memory>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "parallel/engine/dist_context.h"

namespace ut::parallel {

absl::StatusOr<std::unique_ptr<MLLM>> CreateRankModel(const Config& config,
                                                      const DistContext& ctx);

}  // namespace ut::parallel
