#include "parallel/grid.h"

namespace ut {

absl::StatusOr<ProcessGrid> ProcessGrid::Create(const Config& config, int world_size) {
  const auto& p = config.parallel();
  const auto& llm = config.model().llm();
  const auto& vit = config.model().vision();
  if (p.tp() < 1 || p.dp() < 1 || p.pp() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config fields 'parallel.tp/dp/pp' must be >= 1, got tp=", p.tp(), " dp=", p.dp(),
        " pp=", p.pp()));
  }
  const int product = p.tp() * p.dp() * p.pp();
  if (product != world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world size ", world_size, " != parallel.tp x dp x pp = ", p.tp(), " x ", p.dp(), " x ",
        p.pp(), " = ", product, ": launch with mpirun -np ", product,
        " or change the parallel section"));
  }
  auto divisible = [&](const char* field, int value) -> absl::Status {
    if (value % p.tp() == 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("config field '", field, "' = ", value,
                                                   " is not divisible by parallel.tp = ", p.tp(),
                                                   ": choose a TP size that divides it"));
  };
  RETURN_IF_ERROR(divisible("model.llm.heads", llm.heads()));
  RETURN_IF_ERROR(divisible("model.llm.kv_heads", llm.kv_heads()));
  RETURN_IF_ERROR(divisible("model.vision.heads", vit.heads()));
  RETURN_IF_ERROR(divisible("model.llm.ffn", llm.ffn()));    // gate/up columns, down rows
  RETURN_IF_ERROR(divisible("model.vision.mlp", vit.mlp()));  // fc1 columns, fc2 rows
  if (llm.vocab_size() % p.tp() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'model.llm.vocab_size' = ", llm.vocab_size(),
        " is not a multiple of parallel.tp = ", p.tp(),
        ": pad the vocabulary up to a multiple of TP (extra rows are never predicted)"));
  }
  if (llm.layers() < p.pp()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'model.llm.layers' = ", llm.layers(), " is fewer than parallel.pp = ",
        p.pp(), " pipeline stages: every stage needs at least one decoder layer"));
  }
  return ProcessGrid(p.tp(), p.dp(), p.pp());
}

std::vector<int> ProcessGrid::TpGroup(int rank) const {
  GridCoord c = CoordOf(rank);
  std::vector<int> g;
  for (int t = 0; t < tp_; ++t) g.push_back(RankOf({t, c.dp, c.pp}));
  return g;
}

std::vector<int> ProcessGrid::DpGroup(int rank) const {
  GridCoord c = CoordOf(rank);
  std::vector<int> g;
  for (int d = 0; d < dp_; ++d) g.push_back(RankOf({c.tp, d, c.pp}));
  return g;
}

std::vector<int> ProcessGrid::PpGroup(int rank) const {
  GridCoord c = CoordOf(rank);
  std::vector<int> g;
  for (int s = 0; s < pp_; ++s) g.push_back(RankOf({c.tp, c.dp, s}));
  return g;
}

}  // namespace ut
