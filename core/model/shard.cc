#include "core/model/shard.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/model/layout.h"
#include "glog/logging.h"

namespace ut {

LayerCosts EstimateCosts(const model::Dims& d) {
  const double C = d.width, F = d.ffn, D = d.head_dim;
  const double qkvo = C * (d.heads + 2.0 * d.kv_heads) * D + d.heads * D * C;
  LayerCosts c;
  c.layer = 6.0 * (qkvo + 3.0 * C * F);
  const double Wv = d.vwidth, Fv = d.vmlp;
  const double vit_per_patch =
      d.patch_dim * Wv + d.vlayers * (4.0 * Wv * Wv + 2.0 * Wv * Fv) + Wv * C + C * C;
  c.pre = 6.0 * kVisualTokenFraction * vit_per_patch;
  c.post = 6.0 * d.vocab * C;
  return c;
}

absl::StatusOr<std::vector<ModelShard::Chunk>> PartitionLayers(const model::Dims& d, int stages,
                                                               int virtual_stages) {
  if (stages < 1 || virtual_stages < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.pp (", stages, ") and parallel.virtual_stages (", virtual_stages,
                     ") must be >= 1"));
  }
  const int L = d.layers, K = stages * virtual_stages;
  if (K > L) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.pp (", stages, ") x parallel.virtual_stages (", virtual_stages, ") = ", K,
        " pipeline chunks, but model.llm.layers is ", L,
        "; every chunk needs at least one decoder layer: lower pp or virtual_stages"));
  }
  if (d.tied && stages > 1) {
    return absl::UnimplementedError(absl::StrCat(
        "model.llm.tie_embeddings with parallel.pp = ", stages,
        " is not supported yet (embed_tokens and lm_head would live on different stages); "
        "untie the embeddings or use pp = 1"));
  }
  // cost[i] of layer i, with the pre/post parts folded into the first/last.
  const LayerCosts lc = EstimateCosts(d);
  std::vector<double> prefix(L + 1, 0.0);
  for (int i = 0; i < L; ++i) {
    double c = lc.layer + (i == 0 ? lc.pre : 0.0) + (i == L - 1 ? lc.post : 0.0);
    prefix[i + 1] = prefix[i] + c;
  }
  auto cost = [&](int a, int b) { return prefix[b] - prefix[a]; };
  constexpr double kInf = std::numeric_limits<double>::infinity();

  // best[k][i]: (max, sum of squares) splitting layers [0,i) into k chunks;
  // first minimise the max, then, under that max, the sum of squares.
  std::vector<std::vector<double>> mx(K + 1, std::vector<double>(L + 1, kInf));
  mx[0][0] = 0;
  for (int k = 1; k <= K; ++k) {
    for (int i = k; i <= L; ++i) {
      for (int j = k - 1; j < i; ++j) {
        if (mx[k - 1][j] == kInf) continue;
        mx[k][i] = std::min(mx[k][i], std::max(mx[k - 1][j], cost(j, i)));
      }
    }
  }
  const double bound = mx[K][L] * (1 + 1e-12);
  std::vector<std::vector<double>> sq(K + 1, std::vector<double>(L + 1, kInf));
  std::vector<std::vector<int>> from(K + 1, std::vector<int>(L + 1, -1));
  sq[0][0] = 0;
  for (int k = 1; k <= K; ++k) {
    for (int i = k; i <= L; ++i) {
      for (int j = k - 1; j < i; ++j) {
        const double c = cost(j, i);
        if (sq[k - 1][j] == kInf || c > bound) continue;
        const double s = sq[k - 1][j] + c * c;
        if (s < sq[k][i]) {
          sq[k][i] = s;
          from[k][i] = j;
        }
      }
    }
  }
  CHECK(from[K][L] >= 0) << "PartitionLayers: no split found";
  std::vector<ModelShard::Chunk> chunks(K);
  for (int k = K, i = L; k >= 1; --k) {
    const int j = from[k][i];
    chunks[k - 1] = ModelShard::Chunk{j, i, j == 0, i == L};
    i = j;
  }
  return chunks;
}

absl::StatusOr<std::vector<ModelShard::Chunk>> PartitionLayers(
    const unified_train::ModelConfig& config, int stages, int virtual_stages) {
  ASSIGN_OR_RETURN(model::Dims d, model::MakeDims(config));
  return PartitionLayers(d, stages, virtual_stages);
}

ModelShard ShardFor(const std::vector<ModelShard::Chunk>& chunks, int stage, int stages,
                    int tp_rank, int tp_size) {
  CHECK(stages >= 1 && stage >= 0 && stage < stages) << "stage " << stage << " of " << stages;
  ModelShard s;
  s.tp_rank = tp_rank;
  s.tp_size = tp_size;
  s.chunks.clear();
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (static_cast<int>(k) % stages == stage) s.chunks.push_back(chunks[k]);
  }
  return s;
}

}  // namespace ut
