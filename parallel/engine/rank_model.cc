#include "parallel/engine/rank_model.h"

#include "core/model/shard.h"

namespace ut::parallel {

absl::StatusOr<std::unique_ptr<MLLM>> CreateRankModel(const Config& config,
                                                      const DistContext& ctx) {
  const auto& p = config.parallel();
  ASSIGN_OR_RETURN(std::vector<ModelShard::Chunk> chunks,
                   PartitionLayers(config.model(), p.pp(), p.virtual_stages()));
  const ModelShard shard = ShardFor(chunks, ctx.coord.pp, p.pp(), ctx.coord.tp, p.tp());
  ASSIGN_OR_RETURN(std::unique_ptr<MLLM> model,
                   MLLM::Create(config.model(), shard, ctx.tp.get()));
  model->InitParams(config.train().seed());
  return model;
}

}  // namespace ut::parallel

namespace ut::parallel {

absl::StatusOr<RankJob> MakeRankJob(const Config& config, comm::Communicator* world,
                                    const data::Tokenizer* tokenizer) {
  RankJob job;
  ASSIGN_OR_RETURN(job.ctx, MakeDistContext(config, world));
  ASSIGN_OR_RETURN(job.model, CreateRankModel(config, *job.ctx));
  data::LoaderOptions lo =
      data::LoaderOptionsFromConfig(config, "train", job.ctx->coord.dp, job.ctx->grid.dp());
  lo.prefetch = 1;
  ASSIGN_OR_RETURN(job.loader, data::Loader::Create(lo, tokenizer));
  ASSIGN_OR_RETURN(job.trainer,
                   DistTrainer::Create(config, job.ctx.get(), job.model.get(), job.loader.get()));
  return job;
}

}  // namespace ut::parallel
