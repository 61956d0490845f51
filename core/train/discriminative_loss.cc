#include "core/train/discriminative_loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/base/rng.h"
#include "glog/logging.h"
#include "ops/gak.h"

namespace ut::train {
namespace {

using Mode = unified_train::ObjectiveConfig::Mode;

// Rows of the units' model-side sequences, back to back.
struct UnitRows {
  std::vector<float> rows;   // [total,R] (SEQUENCE) or [N,R] last rows (PAPER)
  std::vector<int> lengths;  // [N]
  std::vector<int> source;   // [rows] the Batch::slices index of each row
};

UnitRows GatherRows(const std::vector<Unit>& units, const float* r, int R, bool last_only) {
  UnitRows out;
  for (const Unit& u : units) {
    CHECK(!u.slices.empty()) << "a unit without slices";
    const int first = last_only ? static_cast<int>(u.slices.size()) - 1 : 0;
    for (int i = first; i < static_cast<int>(u.slices.size()); ++i) {
      const float* row = r + static_cast<int64_t>(u.slices[i]) * R;
      out.rows.insert(out.rows.end(), row, row + R);
      out.source.push_back(u.slices[i]);
    }
    out.lengths.push_back(static_cast<int>(u.slices.size()) - first);
  }
  return out;
}

cpu::Sequences AsSequences(const UnitRows& u, int R) {
  cpu::Sequences s;
  s.rows = u.rows.data();
  s.d = R;
  s.count = static_cast<int>(u.lengths.size());
  s.lengths = u.lengths.data();
  return s;
}

uint64_t Mix(uint64_t h, uint64_t x) { return Rng(h ^ (x * 0x9e3779b97f4a7c15ULL)).NextU64(); }

}  // namespace

std::vector<Unit> DrawUnits(const data::Batch& batch, int cuts_per_sample, uint64_t seed,
                            int64_t step, int micro, int* skipped) {
  const int num_samples = static_cast<int>(batch.sample_ids.size());
  std::vector<std::vector<int>> slices_of(num_samples);
  for (int i = 0; i < static_cast<int>(batch.slices.size()); ++i) {
    const int s = batch.slices[i].sample;
    CHECK(s >= 0 && s < num_samples) << "slice " << i << " names sample " << s << " of "
                                     << num_samples;
    slices_of[s].push_back(i);
  }
  std::vector<Unit> units;
  int skip = 0;
  for (int s = 0; s < num_samples; ++s) {
    const std::vector<int>& mine = slices_of[s];
    const bool has_teacher =
        !mine.empty() && std::all_of(mine.begin(), mine.end(), [&](int i) {
          return !batch.slices[i].teacher.empty();
        });
    if (!has_teacher) {
      ++skip;
      continue;
    }
    // Distinct cuts in 1..n: a partial Fisher-Yates shuffle, then ascending.
    const int n = static_cast<int>(mine.size());
    std::vector<int> cuts(n);
    std::iota(cuts.begin(), cuts.end(), 1);
    Rng rng(Mix(Mix(Mix(seed, static_cast<uint64_t>(step)), static_cast<uint64_t>(micro)),
                static_cast<uint64_t>(s)));
    const int k = std::min(cuts_per_sample, n);
    for (int i = 0; i < k; ++i) std::swap(cuts[i], cuts[i + rng.Below(n - i)]);
    cuts.resize(k);
    std::sort(cuts.begin(), cuts.end());
    for (int cut : cuts) units.push_back({s, std::vector<int>(mine.begin(), mine.begin() + cut)});
  }
  if (skipped != nullptr) *skipped = skip;
  return units;
}

namespace {

// M^l over units whose slice indices point into `slices`; names[s] names
// sample s (Unit::sample) in errors, quoted: "\"id\"" or "\"id\" (micro-batch j)".
absl::Status TeacherMatrixOver(const std::vector<const data::SliceSpan*>& slices,
                               const std::vector<std::string>& names,
                               const std::vector<Unit>& units, double delta,
                               std::vector<float>* ml) {
  const int N = static_cast<int>(units.size());
  ml->assign(static_cast<size_t>(N) * N, 1.0f);
  if (N == 0) return absl::OkStatus();
  const data::SliceSpan& first = *slices[units[0].slices[0]];
  const int dim = static_cast<int>(first.teacher.size()), split = first.teacher_split;
  std::vector<float> rows;
  std::vector<int32_t> modality;
  std::vector<int> lengths;
  for (const Unit& u : units) {
    for (int i : u.slices) {
      const data::SliceSpan& s = *slices[i];
      if (static_cast<int>(s.teacher.size()) != dim || s.teacher_split != split) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sample ", names[u.sample], ": a teacher feature of size ", s.teacher.size(),
            " (teacher_split ", s.teacher_split, ") in a batch whose features ",
            "have size ", dim, " (teacher_split ", split, "); every teacher feature of a data ",
            "set must have the same size and split"));
      }
      rows.insert(rows.end(), s.teacher.begin(), s.teacher.end());
      modality.push_back(s.is_image ? 1 : 0);
    }
    lengths.push_back(static_cast<int>(u.slices.size()));
  }
  cpu::Sequences seqs;
  seqs.rows = rows.data();
  seqs.d = dim;
  seqs.count = N;
  seqs.lengths = lengths.data();
  seqs.modality = modality.data();
  cpu::GakOptions o;
  o.delta = delta;
  // Two-part features use the triple kernel; single-part ones (split 0 or the
  // whole vector) the squared distance.
  const bool two_part = split > 0 && split < dim;
  o.distance = two_part ? cpu::SliceDistance::kTriple : cpu::SliceDistance::kSqEuclid;
  o.part1_dim = two_part ? split : 0;
  RETURN_IF_ERROR(cpu::gak_matrix_forward(ml->data(), seqs, o));
  for (int a = 0; a < N; ++a) {
    for (int b = 0; b < N; ++b) {
      if (units[a].sample == units[b].sample) (*ml)[static_cast<int64_t>(a) * N + b] = 1.0f;
    }
  }
  return absl::OkStatus();
}

// A pool's units over the concatenation of its parts: slice i of part p is
// pool slice slice_offset[p] + i, sample s of part p is pool sample
// sample_offset[p] + s.
struct Pool {
  std::vector<const data::SliceSpan*> slices;  // [S_pool]
  std::vector<std::string> names;              // [pool samples] for messages
  std::vector<int64_t> sample_key;             // [pool samples] dld::SampleKey
  std::vector<int> slice_offset;               // [parts + 1]
  std::vector<Unit> units;
  int skipped = 0;
};

absl::StatusOr<Pool> BuildPool(std::span<const PoolPart> parts, int cuts_per_sample,
                               uint64_t seed, int64_t step) {
  Pool pool;
  pool.slice_offset.push_back(0);
  for (size_t p = 0; p < parts.size(); ++p) {
    const data::Batch& b = *parts[p].batch;
    for (size_t q = 0; q < p; ++q) {
      if (parts[q].micro == parts[p].micro) {
        return absl::InvalidArgumentError(absl::StrCat(
            "L_d pool: parts ", q, " and ", p, " both have micro-batch index ", parts[p].micro,
            "; every micro-batch of a pool needs its own global index j"));
      }
    }
    const int sample_offset = static_cast<int>(pool.names.size());
    const int slice_offset = static_cast<int>(pool.slices.size());
    int skipped = 0;
    for (Unit u : DrawUnits(b, cuts_per_sample, seed, step, parts[p].micro, &skipped)) {
      u.sample += sample_offset;
      for (int& i : u.slices) i += slice_offset;
      pool.units.push_back(std::move(u));
    }
    pool.skipped += skipped;
    for (size_t s = 0; s < b.sample_ids.size(); ++s) {
      pool.names.push_back(absl::StrCat("\"", b.sample_ids[s], "\" (micro-batch ",
                                        parts[p].micro, ")"));
      pool.sample_key.push_back(dld::SampleKey(parts[p].micro, static_cast<int>(s)));
    }
    for (const data::SliceSpan& s : b.slices) pool.slices.push_back(&s);
    pool.slice_offset.push_back(static_cast<int>(pool.slices.size()));
  }
  return pool;
}

}  // namespace

absl::Status TeacherMatrix(const data::Batch& batch, const std::vector<Unit>& units,
                           double delta, std::vector<float>* ml) {
  std::vector<const data::SliceSpan*> slices;
  for (const data::SliceSpan& s : batch.slices) slices.push_back(&s);
  std::vector<std::string> names;
  for (const std::string& id : batch.sample_ids) names.push_back(absl::StrCat("\"", id, "\""));
  return TeacherMatrixOver(slices, names, units, delta, ml);
}

// Model-side GAK options. The slice distance is the squared Euclidean distance
// between the L2-normalised r, i.e. 2 (1 - cos): the cosine distance DESIGN.md
// names, on the same scale as the teacher side's squared distance between
// unit-norm parts. With plain 1 - cos the two sides' local costs differ by 2x
// under one delta, and M^r could not reach the teacher targets (see
// docs/objective.md).
static cpu::GakOptions ModelSideGak(double delta) {
  cpu::GakOptions o;
  o.distance = cpu::SliceDistance::kSqEuclid;
  o.delta = delta;
  return o;
}

absl::Status ModelMatrix(const std::vector<Unit>& units, const float* r, int R, Mode mode,
                         double delta, std::vector<float>* mr) {
  const int N = static_cast<int>(units.size());
  mr->assign(static_cast<size_t>(N) * N, 1.0f);
  if (N == 0) return absl::OkStatus();
  const bool paper = mode == unified_train::ObjectiveConfig::PAPER;
  const UnitRows u = GatherRows(units, r, R, /*last_only=*/paper);
  if (paper) {
    // M^r = 1 - cosine distance; exactly 1 on the diagonal.
    cpu::cosine_distance_forward(mr->data(), u.rows.data(), u.rows.data(), N, N, R);
    for (int64_t i = 0; i < int64_t{N} * N; ++i) (*mr)[i] = 1.0f - (*mr)[i];
    for (int a = 0; a < N; ++a) (*mr)[static_cast<int64_t>(a) * N + a] = 1.0f;
    return absl::OkStatus();
  }
  return cpu::gak_matrix_forward(mr->data(), AsSequences(u, R), ModelSideGak(delta));
}

absl::StatusOr<double> DiscriminativeLossFromMatrices(const std::vector<Unit>& units,
                                                      const std::vector<float>& mr,
                                                      const std::vector<float>& ml, const float* r,
                                                      int R, Mode mode, double delta,
                                                      float grad_scale, float* dr) {
  const int N = static_cast<int>(units.size());
  CHECK_EQ(mr.size(), static_cast<size_t>(N) * N);
  CHECK_EQ(ml.size(), static_cast<size_t>(N) * N);
  if (N == 0) return 0.0;
  double sum = 0;
  std::vector<float> dm(static_cast<size_t>(N) * N);  // grad_scale * dL/dM^r = 2 (M^r - M^l) / N
  for (size_t i = 0; i < dm.size(); ++i) {
    const double diff = double{mr[i]} - ml[i];
    sum += diff * diff;
    dm[i] = static_cast<float>(2.0 * diff / N * grad_scale);
  }
  const double loss = sum / N;
  if (dr == nullptr || grad_scale == 0.0f) return loss;

  const bool paper = mode == unified_train::ObjectiveConfig::PAPER;
  const UnitRows u = GatherRows(units, r, R, /*last_only=*/paper);
  std::vector<float> drows(u.rows.size(), 0.0f);
  if (paper) {
    // M^r = 1 - phi off the diagonal (the diagonal is the constant 1).
    for (int a = 0; a < N; ++a) dm[static_cast<int64_t>(a) * N + a] = 0.0f;
    for (float& x : dm) x = -x;
    std::vector<float> dy(drows.size(), 0.0f);
    cpu::cosine_distance_backward(drows.data(), dy.data(), dm.data(), u.rows.data(),
                                  u.rows.data(), N, N, R);
    for (size_t i = 0; i < drows.size(); ++i) drows[i] += dy[i];
  } else {
    RETURN_IF_ERROR(
        cpu::gak_matrix_backward(drows.data(), dm.data(), AsSequences(u, R), ModelSideGak(delta)));
  }
  for (size_t row = 0; row < u.source.size(); ++row) {
    float* d = dr + static_cast<int64_t>(u.source[row]) * R;
    const float* g = drows.data() + row * R;
    for (int c = 0; c < R; ++c) d[c] += g[c];
  }
  return loss;
}

absl::StatusOr<LdResult> DiscriminativeLossStep(MLLM* model, const data::Batch& batch,
                                                const unified_train::ObjectiveConfig& objective,
                                                uint64_t seed, int64_t step, int micro,
                                                float grad_scale) {
  LdResult result;
  const std::vector<Unit> units = DrawUnits(batch, objective.cuts_per_sample(), seed, step, micro,
                                            &result.skipped_samples);
  result.units = static_cast<int>(units.size());
  if (units.empty()) return result;
  const int R = model->retrieval_dim();
  const int S = static_cast<int>(batch.slices.size());
  std::vector<float> r(static_cast<size_t>(S) * R);
  model->RetrievalForward(batch.slices, r.data());
  const PoolPart part{&batch, micro, r.data()};
  std::vector<std::vector<float>> dr;
  ASSIGN_OR_RETURN(result, PoolLoss({&part, 1}, R, objective, seed, step, grad_scale,
                                    grad_scale != 0.0f ? &dr : nullptr));
  if (grad_scale != 0.0f) model->RetrievalBackward(dr[0].data());
  return result;
}

absl::StatusOr<LdResult> PoolLoss(std::span<const PoolPart> parts, int R,
                                  const unified_train::ObjectiveConfig& objective, uint64_t seed,
                                  int64_t step, float grad_scale,
                                  std::vector<std::vector<float>>* dr_per_part) {
  ASSIGN_OR_RETURN(Pool pool, BuildPool(parts, objective.cuts_per_sample(), seed, step));
  LdResult result;
  result.units = static_cast<int>(pool.units.size());
  result.skipped_samples = pool.skipped;
  const bool want_grad = grad_scale != 0.0f && dr_per_part != nullptr;
  if (want_grad) {
    dr_per_part->resize(parts.size());
    for (size_t p = 0; p < parts.size(); ++p) {
      (*dr_per_part)[p].assign(static_cast<size_t>(parts[p].batch->slices.size()) * R, 0.0f);
    }
  }
  if (pool.units.empty()) return result;
  // One part: its r and dr as they are; several: back to back.
  std::vector<float> r_pool, dr_pool;
  const float* r = parts[0].r;
  if (parts.size() > 1) {
    r_pool = ConcatPoolRows(parts, R);
    r = r_pool.data();
  }
  float* dr = nullptr;
  if (want_grad) {
    if (parts.size() > 1) {
      dr_pool.assign(pool.slices.size() * static_cast<size_t>(R), 0.0f);
      dr = dr_pool.data();
    } else {
      dr = (*dr_per_part)[0].data();
    }
  }
  std::vector<float> ml, mr;
  RETURN_IF_ERROR(TeacherMatrixOver(pool.slices, pool.names, pool.units, objective.delta(), &ml));
  RETURN_IF_ERROR(ModelMatrix(pool.units, r, R, objective.mode(), objective.delta(), &mr));
  ASSIGN_OR_RETURN(result.loss,
                   DiscriminativeLossFromMatrices(pool.units, mr, ml, r, R, objective.mode(),
                                                  objective.delta(), grad_scale, dr));
  if (want_grad && parts.size() > 1) SplitPoolRows(parts, R, dr_pool.data(), dr_per_part);
  return result;
}

absl::StatusOr<dld::PoolUnits> FlattenPool(std::span<const PoolPart> parts, int cuts_per_sample,
                                           uint64_t seed, int64_t step, int* skipped) {
  ASSIGN_OR_RETURN(Pool pool, BuildPool(parts, cuts_per_sample, seed, step));
  if (skipped != nullptr) *skipped = pool.skipped;
  dld::PoolUnits out;
  const int S = static_cast<int>(pool.slices.size());
  out.modality.resize(S);
  for (int i = 0; i < S; ++i) out.modality[i] = pool.slices[i]->is_image ? 1 : 0;
  if (pool.units.empty()) return out;
  const data::SliceSpan& first = *pool.slices[pool.units[0].slices[0]];
  const int dim = static_cast<int>(first.teacher.size());
  out.teacher_dim = dim;
  out.teacher_split = first.teacher_split;
  for (const Unit& u : pool.units) {
    for (int i : u.slices) {
      const data::SliceSpan& s = *pool.slices[i];
      if (static_cast<int>(s.teacher.size()) != dim || s.teacher_split != first.teacher_split) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sample ", pool.names[u.sample], ": a teacher feature of size ", s.teacher.size(),
            " (teacher_split ", s.teacher_split, ") in an L_d pool whose features have size ",
            dim, " (teacher_split ", first.teacher_split, "); every teacher feature of a data ",
            "set must have the same size and split"));
      }
      out.unit_slices.push_back(i);
    }
    out.unit_length.push_back(static_cast<int32_t>(u.slices.size()));
    out.unit_sample.push_back(pool.sample_key[u.sample]);
  }
  out.teacher.assign(static_cast<size_t>(S) * dim, 0.0f);
  for (int i = 0; i < S; ++i) {
    const std::vector<float>& t = pool.slices[i]->teacher;
    if (static_cast<int>(t.size()) == dim) {
      std::copy(t.begin(), t.end(), out.teacher.begin() + static_cast<int64_t>(i) * dim);
    }
  }
  return out;
}

std::vector<float> ConcatPoolRows(std::span<const PoolPart> parts, int R) {
  std::vector<float> rows;
  for (const PoolPart& p : parts) {
    const size_t n = p.batch->slices.size() * static_cast<size_t>(R);
    if (n > 0) rows.insert(rows.end(), p.r, p.r + n);
  }
  return rows;
}

void SplitPoolRows(std::span<const PoolPart> parts, int R, const float* rows,
                   std::vector<std::vector<float>>* per_part) {
  per_part->resize(parts.size());
  for (size_t p = 0; p < parts.size(); ++p) {
    const size_t n = parts[p].batch->slices.size() * static_cast<size_t>(R);
    (*per_part)[p].assign(rows, rows + n);
    rows += n;
  }
}

absl::Status ValidateObjective(const unified_train::ObjectiveConfig& o) {
  if (!(o.alpha() >= 0) || !std::isfinite(o.alpha())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'objective.alpha' is ", o.alpha(), "; it must be finite and >= 0 (0 turns "
        "the discriminative loss off)"));
  }
  if (!(o.delta() > 0) || !std::isfinite(o.delta())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config field 'objective.delta' is ", o.delta(), "; it must be finite and > 0 (the GAK "
        "bandwidth is sigma = delta * sqrt((n+m)/2))"));
  }
  if (o.cuts_per_sample() < 1) {
    return absl::InvalidArgumentError(absl::StrCat("config field 'objective.cuts_per_sample' is ",
                                                   o.cuts_per_sample(), "; it must be >= 1"));
  }
  return absl::OkStatus();
}

}  // namespace ut::train
