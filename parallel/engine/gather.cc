#include "parallel/engine/gather.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ut::parallel {

void CopySlice(const std::vector<int64_t>& global, int dim, int64_t start, int64_t local_extent,
               float* global_data, float* local_data, bool to_local) {
  int64_t numel = 1;
  for (int64_t d : global) numel *= d;
  if (dim < 0) {
    if (to_local) std::memcpy(local_data, global_data, sizeof(float) * numel);
    else std::memcpy(global_data, local_data, sizeof(float) * numel);
    return;
  }
  // global viewed as [outer, G, inner], local as [outer, local_extent, inner].
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= global[d];
  for (size_t d = dim + 1; d < global.size(); ++d) inner *= global[d];
  const int64_t G = global[dim], run = local_extent * inner;
  for (int64_t o = 0; o < outer; ++o) {
    float* g = global_data + (o * G + start) * inner;
    float* l = local_data + o * run;
    if (to_local) std::memcpy(l, g, sizeof(float) * run);
    else std::memcpy(g, l, sizeof(float) * run);
  }
}

namespace {

// Per parameter in the metadata stream: name_len, shard_dim, shard_start,
// local extent along shard_dim, ndim, global dims..., numel.
void AppendMeta(const ParamInfo& p, std::vector<int64_t>* meta, std::vector<int32_t>* names) {
  const int dim = p.shard_dim;
  meta->push_back(static_cast<int64_t>(p.name.size()));
  meta->push_back(dim);
  meta->push_back(p.shard_start);
  meta->push_back(dim >= 0 ? p.shape[dim] : 0);
  meta->push_back(static_cast<int64_t>(p.global_shape.size()));
  for (int64_t d : p.global_shape) meta->push_back(d);
  meta->push_back(p.numel);
  for (char ch : p.name) names->push_back(static_cast<unsigned char>(ch));
}

struct Piece {
  std::string name;
  int dim;
  int64_t start, extent;
  std::vector<int64_t> global;
  int64_t numel;
  const float* data;
};

}  // namespace

absl::StatusOr<std::map<std::string, FullTensor>> GatherFull(comm::Communicator* world,
                                                             const std::vector<ParamInfo>& params,
                                                             const float* local,
                                                             bool contribute) {
  std::vector<int64_t> meta;
  std::vector<int32_t> names;
  std::vector<float> data;
  if (contribute) {
    for (const ParamInfo& p : params) {
      AppendMeta(p, &meta, &names);
      data.insert(data.end(), local + p.offset, local + p.offset + p.numel);
    }
  }
  const int rank = world->rank(), n = world->size();
  constexpr int kTag = 7301;
  std::map<std::string, FullTensor> full;
  if (rank != 0) {
    std::vector<int64_t> sizes = {static_cast<int64_t>(meta.size()),
                                  static_cast<int64_t>(names.size()),
                                  static_cast<int64_t>(data.size())};
    RETURN_IF_ERROR(world->Send(std::span<const int64_t>(sizes), 0, kTag));
    if (!contribute) return full;
    RETURN_IF_ERROR(world->Send(std::span<const int64_t>(meta), 0, kTag + 1));
    RETURN_IF_ERROR(world->Send(std::span<const int32_t>(names), 0, kTag + 2));
    RETURN_IF_ERROR(world->Send(std::span<const float>(data), 0, kTag + 3));
    return full;
  }
  // Rank 0: its own pieces, then every other rank's, in rank order.
  std::vector<std::vector<int64_t>> all_meta(n);
  std::vector<std::vector<int32_t>> all_names(n);
  std::vector<std::vector<float>> all_data(n);
  all_meta[0] = std::move(meta);
  all_names[0] = std::move(names);
  all_data[0] = std::move(data);
  for (int r = 1; r < n; ++r) {
    std::vector<int64_t> sizes(3);
    RETURN_IF_ERROR(world->Recv(std::span<int64_t>(sizes), r, kTag));
    if (sizes[0] == 0 && sizes[2] == 0) continue;
    all_meta[r].resize(sizes[0]);
    all_names[r].resize(sizes[1]);
    all_data[r].resize(sizes[2]);
    RETURN_IF_ERROR(world->Recv(std::span<int64_t>(all_meta[r]), r, kTag + 1));
    RETURN_IF_ERROR(world->Recv(std::span<int32_t>(all_names[r]), r, kTag + 2));
    RETURN_IF_ERROR(world->Recv(std::span<float>(all_data[r]), r, kTag + 3));
  }
  std::map<std::string, int64_t> covered;  // elements written per tensor
  for (int r = 0; r < n; ++r) {
    size_t m = 0, c = 0;
    int64_t off = 0;
    const auto& M = all_meta[r];
    while (m < M.size()) {
      Piece p;
      const int64_t name_len = M[m++];
      p.name.assign(all_names[r].begin() + c, all_names[r].begin() + c + name_len);
      c += name_len;
      p.dim = static_cast<int>(M[m++]);
      p.start = M[m++];
      p.extent = M[m++];
      const int64_t ndim = M[m++];
      p.global.assign(M.begin() + m, M.begin() + m + ndim);
      m += ndim;
      p.numel = M[m++];
      p.data = all_data[r].data() + off;
      off += p.numel;
      FullTensor& t = full[p.name];
      int64_t gnumel = 1;
      for (int64_t d : p.global) gnumel *= d;
      if (t.data.empty()) {
        t.shape = p.global;
        t.data.assign(gnumel, 0.0f);
      } else if (t.shape != p.global) {
        return absl::InternalError(absl::StrCat(
            "GatherFull: rank ", r, " says ", p.name, " has global shape [",
            absl::StrJoin(p.global, ","), "], another rank [", absl::StrJoin(t.shape, ","), "]"));
      }
      // Replicated tensors (and TP-replicated copies) arrive several times: the
      // first copy wins; a slice counts once per distinct start.
      const std::string key = absl::StrCat(p.name, "#", p.start);
      if (covered.count(key)) continue;
      covered[key] = p.numel;
      CopySlice(p.global, p.dim, p.start, p.extent, t.data.data(), const_cast<float*>(p.data),
                /*to_local=*/false);
    }
  }
  // Every tensor must be covered exactly once.
  std::map<std::string, int64_t> total;
  for (const auto& [key, numel] : covered) total[key.substr(0, key.rfind('#'))] += numel;
  for (const auto& [name, t] : full) {
    if (total[name] != static_cast<int64_t>(t.data.size())) {
      return absl::InternalError(absl::StrCat("GatherFull: ", name, " has ", total[name],
                                              " of its ", t.data.size(),
                                              " elements after gathering every rank's slices"));
    }
  }
  return full;
}

absl::Status SliceFromFull(const std::map<std::string, FullTensor>& full,
                           const std::vector<ParamInfo>& params, float* local) {
  for (const ParamInfo& p : params) {
    auto it = full.find(p.name);
    if (it == full.end()) {
      return absl::NotFoundError(absl::StrCat("tensor ", p.name, " is missing"));
    }
    if (it->second.shape != p.global_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", p.name, " has shape [", absl::StrJoin(it->second.shape, ","),
          "], the model expects [", absl::StrJoin(p.global_shape, ","), "]"));
    }
    CopySlice(p.global_shape, p.shard_dim, p.shard_start,
              p.shard_dim >= 0 ? p.shape[p.shard_dim] : 0,
              const_cast<float*>(it->second.data.data()), local + p.offset, /*to_local=*/true);
  }
  return absl::OkStatus();
}

}  // namespace ut::parallel
