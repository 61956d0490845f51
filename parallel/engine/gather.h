// Whole tensors from shards, and shards from whole tensors.
//
// A rank's buffer holds its pipeline chunks' parameters with TP-local shapes;
// each ParamInfo says which slice of the global tensor it is (shard_dim,
// shard_start, global_shape; core/model/mllm.h). These two functions move
// between that and the single-process layout, for
//   - equivalence tests (gather every gradient on rank 0 and compare), and
//   - checkpoints (rank 0 writes the same HF-named safetensors as a single
//     process; any layout can resume from any other).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/model/mllm.h"
#include "parallel/comm/communicator.h"

namespace ut::parallel {

struct FullTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Collective over `world`: every rank passes its local params and a buffer
// laid out like them (parameters, gradients or optimizer moments). Only ranks
// with `contribute` true send (e.g. dp rank 0: DP replicas are identical).
// Rank 0 gets every global tensor (others get an empty map). Errors: a tensor
// with slices missing or overlapping (names it).
absl::StatusOr<std::map<std::string, FullTensor>> GatherFull(comm::Communicator* world,
                                                             const std::vector<ParamInfo>& params,
                                                             const float* local, bool contribute);

// local[param] = the slice of full[param.name] this rank owns. Errors: a name
// missing from `full`, or a global shape that differs (names both shapes).
absl::Status SliceFromFull(const std::map<std::string, FullTensor>& full,
                           const std::vector<ParamInfo>& params, float* local);

// The slice arithmetic, exposed for tests: copies between a global tensor of
// shape `global` and its slice [start, start + local_extent) along `dim`
// (dim -1: the whole tensor). to_local: global -> local, else local -> global.
void CopySlice(const std::vector<int64_t>& global, int dim, int64_t start, int64_t local_extent,
               float* global_data, float* local_data, bool to_local);

}  // namespace ut::parallel
