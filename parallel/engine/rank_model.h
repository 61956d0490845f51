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
#include "data/loader.h"
#include "data/tokenizer.h"
#include "parallel/engine/dist_context.h"
#include "parallel/engine/dist_trainer.h"

namespace ut::parallel {

absl::StatusOr<std::unique_ptr<MLLM>> CreateRankModel(const Config& config,
                                                      const DistContext& ctx);

}  // namespace ut::parallel

namespace ut::parallel {

// Everything one rank needs to run distributed steps of `config` (for the
// equivalence tests and bench/parallel_bench; unified_train has its own
// set-up with checkpoints and evaluation): the groups, this rank's model
// (CreateRankModel), its DP share of the train split (prefetch 1) and the
// trainer. Collective over `world`.
struct RankJob {
  std::unique_ptr<DistContext> ctx;
  std::unique_ptr<MLLM> model;
  std::unique_ptr<data::Loader> loader;
  std::unique_ptr<DistTrainer> trainer;
};
absl::StatusOr<RankJob> MakeRankJob(const Config& config, comm::Communicator* world,
                                    const data::Tokenizer* tokenizer);

}  // namespace ut::parallel
