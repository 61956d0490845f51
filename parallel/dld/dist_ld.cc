#include "parallel/dld/dist_ld.h"

#include <algorithm>
#include <numeric>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "ops/gak.h"

namespace ut::dld {
namespace {

using Mode = unified_train::ObjectiveConfig::Mode;

// Per-rank size header, gathered first.
enum Header { kS, kU, kK, kD, kSplit, kR, kHeaderSize };

// The pool as every rank sees it after the gather: slices of DP rank 0, then
// DP rank 1, ...; units in the same order.
struct GatheredPool {
  int R = 0, D = 0, split = 0;
  std::vector<int64_t> slice_offset;   // [dp + 1] first gathered slice of each DP rank
  std::vector<float> r;                // [S_total,R]
  std::vector<float> teacher;          // [S_total,D]
  std::vector<int32_t> modality;       // [S_total]
  std::vector<int32_t> unit_length;    // [N]
  std::vector<int64_t> unit_start;     // [N] first entry of the unit in unit_slices
  std::vector<int32_t> unit_slices;    // [K_total] gathered slice indices
  std::vector<int64_t> unit_sample;    // [N]
  int N() const { return static_cast<int>(unit_length.size()); }
};

template <typename T>
absl::Status GatherV(comm::Communicator* dp, const std::vector<T>& mine,
                     const std::vector<int64_t>& counts, std::vector<T>* all) {
  all->resize(std::accumulate(counts.begin(), counts.end(), int64_t{0}));
  return dp->AllGatherV(std::span<const T>(mine), std::span<T>(*all),
                        std::span<const int64_t>(counts));
}

absl::StatusOr<GatheredPool> Gather(const PoolUnits& local, const float* r, int R,
                                    comm::Communicator* dp) {
  const int S = local.num_slices(), U = local.num_units();
  const int64_t K = static_cast<int64_t>(local.unit_slices.size());
  CHECK_EQ(std::accumulate(local.unit_length.begin(), local.unit_length.end(), int64_t{0}), K)
      << "PoolUnits: unit_slices must hold sum(unit_length) entries";
  CHECK_EQ(local.unit_sample.size(), static_cast<size_t>(U));
  CHECK_EQ(local.teacher.size(), static_cast<size_t>(S) * local.teacher_dim);
  for (int32_t i : local.unit_slices) CHECK(i >= 0 && i < S) << "unit slice " << i << " of " << S;

  const int W = dp->size();
  const std::vector<int64_t> mine = {S, U, K, U > 0 ? local.teacher_dim : 0,
                                     U > 0 ? local.teacher_split : 0, R};
  std::vector<int64_t> hdr(static_cast<size_t>(W) * kHeaderSize);
  RETURN_IF_ERROR(dp->AllGather(std::span<const int64_t>(mine), std::span<int64_t>(hdr)));
  auto at = [&](int q, Header h) { return hdr[static_cast<size_t>(q) * kHeaderSize + h]; };

  GatheredPool g;
  g.R = R;
  int first_with_units = -1;
  for (int q = 0; q < W; ++q) {
    if (at(q, kR) != R) {
      return absl::InvalidArgumentError(absl::StrCat(
          "distributed L_d on ", dp->name(), ": rank ", q, " has slice embeddings of size ",
          at(q, kR), ", rank ", dp->rank(), " of size ", R, "; every rank needs the same ",
          "model.retrieval_dim"));
    }
    if (at(q, kU) == 0) continue;
    if (first_with_units < 0) {
      first_with_units = q;
      g.D = static_cast<int>(at(q, kD));
      g.split = static_cast<int>(at(q, kSplit));
    } else if (at(q, kD) != g.D || at(q, kSplit) != g.split) {
      return absl::InvalidArgumentError(absl::StrCat(
          "distributed L_d on ", dp->name(), ": rank ", q, " has teacher features of size ",
          at(q, kD), " (split ", at(q, kSplit), "), rank ", first_with_units, " of size ", g.D,
          " (split ", g.split, "); every teacher feature of a data set must have the same size ",
          "and split"));
    }
  }

  std::vector<int64_t> n_r(W), n_t(W), n_s(W), n_u(W), n_k(W);
  g.slice_offset.assign(W + 1, 0);
  for (int q = 0; q < W; ++q) {
    n_s[q] = at(q, kS);
    n_r[q] = at(q, kS) * R;
    n_t[q] = at(q, kS) * at(q, kD);
    n_u[q] = at(q, kU);
    n_k[q] = at(q, kK);
    g.slice_offset[q + 1] = g.slice_offset[q] + at(q, kS);
  }
  std::vector<float> my_r(r, r + static_cast<int64_t>(S) * R);
  RETURN_IF_ERROR(GatherV(dp, my_r, n_r, &g.r));
  const std::vector<float> my_teacher = U > 0 ? local.teacher : std::vector<float>();
  std::vector<float> teacher_packed;
  RETURN_IF_ERROR(GatherV(dp, my_teacher, n_t, &teacher_packed));
  RETURN_IF_ERROR(GatherV(dp, local.modality, n_s, &g.modality));
  RETURN_IF_ERROR(GatherV(dp, local.unit_length, n_u, &g.unit_length));
  RETURN_IF_ERROR(GatherV(dp, local.unit_slices, n_k, &g.unit_slices));
  RETURN_IF_ERROR(GatherV(dp, local.unit_sample, n_u, &g.unit_sample));

  // Teacher rows [S_total,D] (ranks without units sent none: zeros); unit
  // slices from rank-local to gathered indices.
  const int64_t S_total = g.slice_offset[W];
  g.teacher.assign(S_total * g.D, 0.0f);
  int64_t t_pos = 0, k_pos = 0;
  for (int q = 0; q < W; ++q) {
    if (at(q, kD) == g.D && g.D > 0) {
      std::copy(teacher_packed.begin() + t_pos, teacher_packed.begin() + t_pos + n_t[q],
                g.teacher.begin() + g.slice_offset[q] * g.D);
    }
    t_pos += n_t[q];
    for (int64_t i = 0; i < n_k[q]; ++i) g.unit_slices[k_pos + i] += g.slice_offset[q];
    k_pos += n_k[q];
  }
  g.unit_start.resize(g.unit_length.size());
  int64_t start = 0;
  for (size_t u = 0; u < g.unit_length.size(); ++u) {
    g.unit_start[u] = start;
    start += g.unit_length[u];
  }
  return g;
}

// Every rank of dp_tp must see the same pool and the same gradient request;
// a mismatch (e.g. TP ranks that loaded different data) is a desync.
absl::Status CheckSamePool(const GatheredPool& g, bool want_grad, comm::Communicator* dp_tp) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](uint64_t x) { h = (h ^ x) * 1099511628211ULL; };
  for (int64_t k : g.unit_sample) mix(static_cast<uint64_t>(k));
  for (int32_t s : g.unit_slices) mix(static_cast<uint64_t>(s));
  const std::vector<int64_t> fp = {g.N(), static_cast<int64_t>(g.modality.size()),
                                   static_cast<int64_t>(h >> 2), want_grad ? 1 : 0};
  std::vector<int64_t> both(2 * fp.size());
  for (size_t i = 0; i < fp.size(); ++i) {
    both[i] = fp[i];
    both[fp.size() + i] = -fp[i];
  }
  RETURN_IF_ERROR(dp_tp->AllReduce(std::span<int64_t>(both), comm::ReduceOp::kMax));
  for (size_t i = 0; i < fp.size(); ++i) {
    if (both[i] != -both[fp.size() + i]) {
      return absl::InternalError(absl::StrCat(
          "distributed L_d on ", dp_tp->name(), ": the ranks hold different pools (",
          i == 0 ? "unit counts" : i == 1 ? "slice counts" : i == 2 ? "sample keys" :
          "gradient requests", " differ; rank ", dp_tp->rank(), " has ", fp[i],
          "); the tensor-parallel ranks of one data-parallel rank must load the same ",
          "micro-batches and call this together"));
    }
  }
  return absl::OkStatus();
}

// Units' sequences back to back: SEQUENCE every slice, PAPER the last one.
struct UnitSeqs {
  std::vector<float> model;        // [rows,R]
  std::vector<float> teacher;      // [K_total,D]
  std::vector<int32_t> modality;   // [K_total]
  std::vector<int> model_length;   // [N]
  std::vector<int> teacher_length; // [N]
  std::vector<int64_t> model_source;  // [rows] gathered slice of each model row
  std::vector<int64_t> model_start;   // [N] first model row of each unit
};

UnitSeqs Expand(const GatheredPool& g, bool last_only) {
  UnitSeqs s;
  for (int u = 0; u < g.N(); ++u) {
    const int k = g.unit_length[u];
    s.model_start.push_back(static_cast<int64_t>(s.model_source.size()));
    for (int i = 0; i < k; ++i) {
      const int64_t slice = g.unit_slices[g.unit_start[u] + i];
      s.teacher.insert(s.teacher.end(), g.teacher.begin() + slice * g.D,
                       g.teacher.begin() + (slice + 1) * g.D);
      s.modality.push_back(g.modality[slice]);
      if (last_only && i != k - 1) continue;
      s.model.insert(s.model.end(), g.r.begin() + slice * g.R, g.r.begin() + (slice + 1) * g.R);
      s.model_source.push_back(slice);
    }
    s.model_length.push_back(last_only ? 1 : k);
    s.teacher_length.push_back(k);
  }
  return s;
}

cpu::Sequences AsSequences(const std::vector<float>& rows, int d, const std::vector<int>& lengths,
                           const int32_t* modality) {
  cpu::Sequences s;
  s.rows = rows.data();
  s.d = d;
  s.count = static_cast<int>(lengths.size());
  s.lengths = lengths.data();
  s.modality = modality;
  return s;
}

}  // namespace

std::vector<int> SplitPairs(const std::vector<int64_t>& weight, int ranks) {
  CHECK_GE(ranks, 1);
  const int64_t total = std::accumulate(weight.begin(), weight.end(), int64_t{0});
  std::vector<int> owner(weight.size(), 0);
  if (total == 0) return owner;
  // A pair goes to the rank whose share [q T/W, (q+1) T/W) holds its midpoint.
  int64_t before = 0;
  for (size_t p = 0; p < weight.size(); ++p) {
    const __int128 mid2 = static_cast<__int128>(2 * before + weight[p]) * ranks;
    owner[p] = static_cast<int>(std::min<__int128>(ranks - 1, mid2 / (2 * total)));
    before += weight[p];
  }
  return owner;
}

absl::StatusOr<DistLdResult> DistributedLd(const PoolUnits& local, const float* r, int R,
                                           const DistLdOptions& options, comm::Communicator* dp,
                                           comm::Communicator* dp_tp, float* dr) {
  if (dp_tp->size() % dp->size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distributed L_d: the DP x TP group ", dp_tp->name(), " has ", dp_tp->size(),
        " ranks, not a multiple of the DP group ", dp->name(), "'s ", dp->size()));
  }
  const bool want_grad = dr != nullptr && options.grad_scale != 0.0f;
  ASSIGN_OR_RETURN(GatheredPool g, Gather(local, r, R, dp));
  RETURN_IF_ERROR(CheckSamePool(g, want_grad, dp_tp));
  // DP rank of every dp_tp rank (the owner of gradient block q).
  const int W = dp_tp->size();
  std::vector<int32_t> dp_of(W);
  const std::vector<int32_t> my_dp = {dp->rank()};
  RETURN_IF_ERROR(dp_tp->AllGather(std::span<const int32_t>(my_dp), std::span<int32_t>(dp_of)));

  DistLdResult result;
  const int N = g.N();
  result.units = N;
  if (N < 2) return result;  // no pairs: L_d = 0 (the diagonal is exact)

  // The upper triangle, weighed and split.
  const bool paper = options.mode == unified_train::ObjectiveConfig::PAPER;
  std::vector<int64_t> weight;
  weight.reserve(static_cast<size_t>(N) * (N - 1) / 2);
  for (int u = 0; u < N; ++u) {
    for (int v = u + 1; v < N; ++v) {
      weight.push_back(paper ? 1 : int64_t{g.unit_length[u]} * g.unit_length[v]);
    }
  }
  const std::vector<int> owner = SplitPairs(weight, W);
  std::vector<int64_t> work(W, 0);
  std::vector<int> pu, pv;
  int64_t p = 0;
  for (int u = 0; u < N; ++u) {
    for (int v = u + 1; v < N; ++v, ++p) {
      work[owner[p]] += weight[p];
      if (owner[p] == dp_tp->rank()) {
        pu.push_back(u);
        pv.push_back(v);
      }
    }
  }
  result.pairs = static_cast<int64_t>(pu.size());
  result.work = work[dp_tp->rank()];
  result.work_max = *std::max_element(work.begin(), work.end());
  result.work_mean = std::accumulate(work.begin(), work.end(), 0.0) / W;

  // M^l and M^r of this rank's pairs; the loss terms and dL/dM^r as in
  // core/train DiscriminativeLossFromMatrices (float matrices, double sums).
  const UnitSeqs s = Expand(g, /*last_only=*/paper);
  const int P = static_cast<int>(pu.size());
  const cpu::SequencePairs pairs{P, pu.data(), pv.data()};
  std::vector<float> ml(P), mr(P);
  if (P > 0) {
    cpu::GakOptions to;
    to.delta = options.delta;
    const bool two_part = g.split > 0 && g.split < g.D;
    to.distance = two_part ? cpu::SliceDistance::kTriple : cpu::SliceDistance::kSqEuclid;
    to.part1_dim = two_part ? g.split : 0;
    std::vector<double> k(P);
    RETURN_IF_ERROR(cpu::gak_pairs_forward(
        k.data(), AsSequences(s.teacher, g.D, s.teacher_length, s.modality.data()), pairs, to));
    for (int i = 0; i < P; ++i) {
      ml[i] = g.unit_sample[pu[i]] == g.unit_sample[pv[i]] ? 1.0f : static_cast<float>(k[i]);
    }
  }
  // Model side: the squared distance of normalised r, i.e. 2 (1 - cos), as
  // ModelSideGak in core/train/discriminative_loss.cc.
  cpu::GakOptions mo;
  mo.distance = cpu::SliceDistance::kSqEuclid;
  mo.delta = options.delta;
  const cpu::Sequences model_seqs = AsSequences(s.model, R, s.model_length, nullptr);
  if (P > 0 && paper) {
    for (int i = 0; i < P; ++i) {
      float phi;
      cpu::cosine_distance_forward(&phi, &s.model[s.model_start[pu[i]] * R],
                                   &s.model[s.model_start[pv[i]] * R], 1, 1, R);
      mr[i] = 1.0f - phi;
    }
  } else if (P > 0) {
    std::vector<double> k(P);
    RETURN_IF_ERROR(cpu::gak_pairs_forward(k.data(), model_seqs, pairs, mo));
    for (int i = 0; i < P; ++i) mr[i] = static_cast<float>(k[i]);
  }
  double partial = 0;
  std::vector<double> dk(P);  // dL/dK~_uv, both entries (u,v) and (v,u)
  for (int i = 0; i < P; ++i) {
    const double diff = double{mr[i]} - ml[i];
    partial += 2 * diff * diff;
    const float dm = static_cast<float>(2.0 * diff / N * options.grad_scale);
    dk[i] = static_cast<double>(dm) + dm;
  }
  RETURN_IF_ERROR(dp_tp->AllReduce(std::span<double>(&partial, 1), comm::ReduceOp::kSum));
  result.loss = partial / N;
  if (!want_grad) return result;

  // dL/d(model rows) of this rank's pairs -> gathered slices [S_total,R].
  std::vector<float> drows(s.model.size(), 0.0f);
  if (P > 0 && paper) {
    for (int i = 0; i < P; ++i) {
      const float dphi = static_cast<float>(-dk[i]);
      const int64_t a = s.model_start[pu[i]] * R, b = s.model_start[pv[i]] * R;
      cpu::cosine_distance_backward(&drows[a], &drows[b], &dphi, &s.model[a], &s.model[b], 1, 1,
                                    R);
    }
  } else if (P > 0) {
    RETURN_IF_ERROR(cpu::gak_pairs_backward(drows.data(), dk.data(), model_seqs, pairs, mo));
  }
  const int DP = dp->size();
  std::vector<float> dr_all(static_cast<size_t>(g.slice_offset[DP]) * R, 0.0f);
  for (size_t row = 0; row < s.model_source.size(); ++row) {
    float* d = &dr_all[s.model_source[row] * R];
    const float* x = &drows[row * R];
    for (int c = 0; c < R; ++c) d[c] += x[c];
  }
  // Back to the owners: block q (padded to S_max rows) = the rows of DP rank
  // dp_of[q]; each rank receives the sum over dp_tp of its block.
  int64_t s_max = 0;
  for (int q = 0; q < DP; ++q) s_max = std::max(s_max, g.slice_offset[q + 1] - g.slice_offset[q]);
  const int64_t block = s_max * R;
  std::vector<float> send(static_cast<size_t>(W) * block, 0.0f), recv(block);
  for (int q = 0; q < W; ++q) {
    const int owner_dp = dp_of[q];
    std::copy(dr_all.begin() + g.slice_offset[owner_dp] * R,
              dr_all.begin() + g.slice_offset[owner_dp + 1] * R, send.begin() + q * block);
  }
  RETURN_IF_ERROR(dp_tp->ReduceScatter(std::span<const float>(send), std::span<float>(recv),
                                       comm::ReduceOp::kSum));
  const int64_t mine = static_cast<int64_t>(local.num_slices()) * R;
  for (int64_t i = 0; i < mine; ++i) dr[i] += recv[i];
  return result;
}

}  // namespace ut::dld
