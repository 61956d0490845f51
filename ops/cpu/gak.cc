// GAK and soft-DTW between sequences: GEMM slice distances, the GAK local
// cost, soft-DTW per pair (ops/sdtw.h), and the backward to the sequence rows.
//
// Work is organised in "jobs" (u, v, sigma): one soft-DTW between sequences u
// and v. A normalised kernel K~ over a pair list is one job per pair plus one
// self job per (sequence, sigma), shared by the pairs that need it. RunJobs
// does the jobs in chunks of bounded size, OpenMP threads taking whole jobs
// (jobs of one shape in lane groups, ops/cpu/sdtw_lanes.h); gradient rows are
// summed in job order, so results do not depend on the thread count.
#include "ops/gak.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <utility>

#include "glog/logging.h"
#include "ops/cpu/sdtw_internal.h"
#include "ops/cpu/sdtw_lanes.h"
#include "ops/gemm.h"
#include "ops/sdtw.h"

namespace ut::cpu {
namespace {

constexpr float kNormEps = 1e-12f;

// rows [n,d] -> unit [n,d] = rows / max(|row|, eps), inv_norm [n] = 1/max(|row|, eps).
void NormalizeRows(float* unit, float* inv_norm, const float* rows, int n, int d) {
  for (int i = 0; i < n; ++i) {
    const float* r = rows + static_cast<int64_t>(i) * d;
    double sq = 0.0;
    for (int k = 0; k < d; ++k) sq += static_cast<double>(r[k]) * r[k];
    const float inv = 1.0f / std::max(static_cast<float>(std::sqrt(sq)), kNormEps);
    inv_norm[i] = inv;
    float* u = unit + static_cast<int64_t>(i) * d;
    for (int k = 0; k < d; ++k) u[k] = r[k] * inv;
  }
}

// |row|^2 for rows [n,d] with leading dimension ld, columns [0, d).
void SquaredNorms(float* out, const float* rows, int n, int d, int ld) {
  for (int i = 0; i < n; ++i) {
    const float* r = rows + static_cast<int64_t>(i) * ld;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int k = 0; k < d; ++k) sq += r[k] * r[k];
    out[i] = sq;
  }
}

// The pair's rows shifted by their common mean: xc [n,d] = x - mu, yc [m,d] =
// y - mu, mu = the mean of all n + m rows (over d columns of rows with leading
// dimension ld). Squared distances and their gradients do not change under a
// common shift, but |x|^2 + |y|^2 - 2<x,y> in float loses everything to
// cancellation when the rows sit far from the origin (raw series around an
// offset of 1000 gave a 1% wrong soft-DTW); after centring only the spread of
// the pair matters.
void CenterPair(std::vector<float>* xc, std::vector<float>* yc, const float* x, const float* y,
                int n, int m, int d, int ld) {
  std::vector<double> mu(d, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < d; ++k) mu[k] += x[static_cast<int64_t>(i) * ld + k];
  }
  for (int j = 0; j < m; ++j) {
    for (int k = 0; k < d; ++k) mu[k] += y[static_cast<int64_t>(j) * ld + k];
  }
  std::vector<float> muf(d);
  for (int k = 0; k < d; ++k) muf[k] = static_cast<float>(mu[k] / (n + m));
  auto shift = [&](std::vector<float>* out, const float* rows, int count) {
    out->resize(static_cast<size_t>(count) * d);
    for (int i = 0; i < count; ++i) {
      const float* r = rows + static_cast<int64_t>(i) * ld;
      float* o = out->data() + static_cast<int64_t>(i) * d;
      for (int k = 0; k < d; ++k) o[k] = r[k] - muf[k];
    }
  };
  shift(xc, x, n);
  shift(yc, y, m);
}

// phi [n,m] = |x_i - y_j|^2 >= 0 over d columns (leading dimension ld), as
// |xc_i|^2 + |yc_j|^2 - 2 <xc_i, yc_j> of the centred pair (one GEMM).
void SqEuclidStrided(float* phi, const float* x, const float* y, int n, int m, int d, int ld) {
  std::vector<float> xc, yc, xx(n), yy(m);
  CenterPair(&xc, &yc, x, y, n, m, d, ld);
  SquaredNorms(xx.data(), xc.data(), n, d, d);
  SquaredNorms(yy.data(), yc.data(), m, d, d);
  gemm(false, true, n, m, d, -2.0f, xc.data(), d, yc.data(), d, 0.0f, phi, m);
  const float* yy_p = yy.data();
  for (int i = 0; i < n; ++i) {
    float* p = phi + static_cast<int64_t>(i) * m;
    const float xi = xx[i];
#pragma omp simd
    for (int j = 0; j < m; ++j) p[j] = std::max(p[j] + xi + yy_p[j], 0.0f);
  }
}

// d(unit)/d(rows) applied to v [n,d] (the gradient w.r.t. the unit rows):
// drows_i += inv_i * (v_i - <unit_i, v_i> unit_i), or v_i / eps for tiny rows.
void UnitRowsBackward(float* drows, const float* v, const float* unit, const float* inv_norm,
                      int n, int d) {
  for (int i = 0; i < n; ++i) {
    const float* vi = v + static_cast<int64_t>(i) * d;
    const float* ui = unit + static_cast<int64_t>(i) * d;
    float* gi = drows + static_cast<int64_t>(i) * d;
    const bool clamped = inv_norm[i] >= 1.0f / kNormEps;
    double dot = 0.0;
    for (int k = 0; k < d; ++k) dot += static_cast<double>(ui[k]) * vi[k];
    const float proj = clamped ? 0.0f : static_cast<float>(dot);
    for (int k = 0; k < d; ++k) gi[k] += inv_norm[i] * (vi[k] - proj * ui[k]);
  }
}

}  // namespace

// ---- Slice distances --------------------------------------------------------

void cosine_distance_forward(float* phi, const float* x, const float* y, int n, int m, int d) {
  std::vector<float> xu(static_cast<int64_t>(n) * d), yu(static_cast<int64_t>(m) * d);
  std::vector<float> xin(n), yin(m);
  NormalizeRows(xu.data(), xin.data(), x, n, d);
  NormalizeRows(yu.data(), yin.data(), y, m, d);
  std::fill(phi, phi + static_cast<int64_t>(n) * m, 1.0f);
  gemm(false, true, n, m, d, -1.0f, xu.data(), d, yu.data(), d, 1.0f, phi, m);
}

void cosine_distance_backward(float* dx, float* dy, const float* dphi, const float* x,
                              const float* y, int n, int m, int d) {
  std::vector<float> xu(static_cast<int64_t>(n) * d), yu(static_cast<int64_t>(m) * d);
  std::vector<float> xin(n), yin(m);
  NormalizeRows(xu.data(), xin.data(), x, n, d);
  NormalizeRows(yu.data(), yin.data(), y, m, d);
  // phi = 1 - <xu_i, yu_j>: dL/dxu = -dphi @ yu, dL/dyu = -dphi^T @ xu.
  if (dx != nullptr) {
    std::vector<float> v(static_cast<int64_t>(n) * d);
    gemm(false, false, n, d, m, -1.0f, dphi, m, yu.data(), d, 0.0f, v.data(), d);
    UnitRowsBackward(dx, v.data(), xu.data(), xin.data(), n, d);
  }
  if (dy != nullptr) {
    std::vector<float> v(static_cast<int64_t>(m) * d);
    gemm(true, false, m, d, n, -1.0f, dphi, m, xu.data(), d, 0.0f, v.data(), d);
    UnitRowsBackward(dy, v.data(), yu.data(), yin.data(), m, d);
  }
}

void sqeuclid_distance_forward(float* phi, const float* x, const float* y, int n, int m, int d) {
  SqEuclidStrided(phi, x, y, n, m, d, d);
}

void sqeuclid_distance_backward(float* dx, float* dy, const float* dphi, const float* x,
                                const float* y, int n, int m, int d) {
  // dphi_ij * 2 (x_i - y_j), summed: the same with the centred rows (see CenterPair).
  std::vector<float> xc, yc;
  CenterPair(&xc, &yc, x, y, n, m, d, d);
  if (dx != nullptr) {
    gemm(false, false, n, d, m, -2.0f, dphi, m, yc.data(), d, 1.0f, dx, d);  // dx -= 2 dphi yc
    for (int i = 0; i < n; ++i) {
      const float* g = dphi + static_cast<int64_t>(i) * m;
      float rs = 0.0f;
#pragma omp simd reduction(+ : rs)
      for (int j = 0; j < m; ++j) rs += g[j];
      const float s = 2.0f * rs;
      const float* xi = xc.data() + static_cast<int64_t>(i) * d;
      float* dxi = dx + static_cast<int64_t>(i) * d;
#pragma omp simd
      for (int k = 0; k < d; ++k) dxi[k] += s * xi[k];
    }
  }
  if (dy != nullptr) {
    gemm(true, false, m, d, n, -2.0f, dphi, m, xc.data(), d, 1.0f, dy, d);  // dy -= 2 dphi^T xc
    std::vector<float> cs(m, 0.0f);
    float* cs_p = cs.data();
    for (int i = 0; i < n; ++i) {
      const float* g = dphi + static_cast<int64_t>(i) * m;
#pragma omp simd
      for (int j = 0; j < m; ++j) cs_p[j] += g[j];
    }
    for (int j = 0; j < m; ++j) {
      const float s = 2.0f * cs[j];
      const float* yj = yc.data() + static_cast<int64_t>(j) * d;
      float* dyj = dy + static_cast<int64_t>(j) * d;
#pragma omp simd
      for (int k = 0; k < d; ++k) dyj[k] += s * yj[k];
    }
  }
}

void triple_distance_forward(float* phi, const float* x, const int32_t* modality_x,
                             const float* y, const int32_t* modality_y, int n, int m, int d,
                             int part1_dim) {
  CHECK(part1_dim > 0 && part1_dim < d) << "part1_dim " << part1_dim << " d " << d;
  std::vector<float> phi2(static_cast<int64_t>(n) * m);
  SqEuclidStrided(phi, x, y, n, m, part1_dim, d);
  SqEuclidStrided(phi2.data(), x + part1_dim, y + part1_dim, n, m, d - part1_dim, d);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) {
      const int64_t c = static_cast<int64_t>(i) * m + j;
      if (modality_x[i] != modality_y[j]) phi[c] = phi2[c];
    }
  }
}

// ---- GAK local cost ---------------------------------------------------------

double gak_sigma(double delta, int n, int m) { return delta * std::sqrt(0.5 * (n + m)); }

void gak_local_cost_forward(float* cost, const float* phi, int64_t count, double sigma) {
  const float inv = static_cast<float>(1.0 / (2.0 * sigma * sigma));
#pragma omp parallel for simd schedule(static) if (count >= (1 << 16))
  for (int64_t c = 0; c < count; ++c) {
    const float t = phi[c] * inv;
    cost[c] = t + internal::LogPositive(2.0f - internal::ExpNonPositive(-std::min(t, 87.0f)));
  }
}

void gak_local_cost_backward(float* dphi, const float* dcost, const float* phi, int64_t count,
                             double sigma) {
  const float s2 = static_cast<float>(sigma * sigma);
  const float inv = static_cast<float>(1.0 / (2.0 * sigma * sigma));
#pragma omp parallel for simd schedule(static) if (count >= (1 << 16))
  for (int64_t c = 0; c < count; ++c) {
    const float e = internal::ExpNonPositive(-std::min(phi[c] * inv, 87.0f));
    dphi[c] = dcost[c] / (s2 * (2.0f - e));
  }
}

// ---- Sequence soft-DTW ------------------------------------------------------

namespace {

struct Job {
  int u, v;
  double sigma;  // kGak only
};

std::vector<int64_t> RowStarts(const Sequences& seqs) {
  std::vector<int64_t> start(seqs.count + 1, 0);
  for (int s = 0; s < seqs.count; ++s) start[s + 1] = start[s] + seqs.lengths[s];
  return start;
}

absl::Status ValidateSequences(const Sequences& seqs, SliceDistance distance, int part1_dim) {
  if (seqs.count < 0 || seqs.d < 1) {
    return absl::InvalidArgumentError(absl::StrCat("sequences: count = ", seqs.count, ", d = ",
                                                   seqs.d, "; need count >= 0 and d >= 1"));
  }
  if (seqs.count > 0 && (seqs.rows == nullptr || seqs.lengths == nullptr)) {
    return absl::InvalidArgumentError("sequences: rows or lengths is null");
  }
  for (int s = 0; s < seqs.count; ++s) {
    if (seqs.lengths[s] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequences: sequence ", s, " has length ", seqs.lengths[s],
          "; every sequence needs at least one slice (drop empty units first)"));
    }
  }
  if (distance == SliceDistance::kTriple) {
    if (seqs.modality == nullptr) {
      return absl::InvalidArgumentError(
          "sequences: the triple kernel needs a modality per row (Sequences::modality is null)");
    }
    if (part1_dim < 1 || part1_dim >= seqs.d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "triple kernel: part1_dim = ", part1_dim, " must split d = ", seqs.d,
          " into two non-empty parts; for single-part features use kSqEuclid"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePairs(const Sequences& seqs, const SequencePairs& pairs) {
  if (pairs.count < 0) return absl::InvalidArgumentError("pairs: count < 0");
  if (pairs.count > 0 && (pairs.u == nullptr || pairs.v == nullptr)) {
    return absl::InvalidArgumentError("pairs: u or v is null");
  }
  for (int p = 0; p < pairs.count; ++p) {
    if (pairs.u[p] < 0 || pairs.u[p] >= seqs.count || pairs.v[p] < 0 ||
        pairs.v[p] >= seqs.count) {
      return absl::InvalidArgumentError(absl::StrCat("pairs: pair ", p, " = (", pairs.u[p], ", ",
                                                     pairs.v[p], ") names a sequence outside [0, ",
                                                     seqs.count, ")"));
    }
  }
  return absl::OkStatus();
}

void DistanceForward(float* phi, const Sequences& seqs, const std::vector<int64_t>& start,
                     const SequenceSdtwOptions& opt, int u, int v) {
  const int n = seqs.lengths[u], m = seqs.lengths[v], d = seqs.d;
  const float* x = seqs.rows + start[u] * d;
  const float* y = seqs.rows + start[v] * d;
  switch (opt.distance) {
    case SliceDistance::kCosine:
      cosine_distance_forward(phi, x, y, n, m, d);
      break;
    case SliceDistance::kSqEuclid:
      sqeuclid_distance_forward(phi, x, y, n, m, d);
      break;
    case SliceDistance::kTriple:
      triple_distance_forward(phi, x, seqs.modality + start[u], y, seqs.modality + start[v], n,
                              m, d, opt.part1_dim);
      break;
  }
}

// dphi [n,m] -> dx [n,d], dy [m,d] (both +=).
void DistanceBackward(float* dx, float* dy, const float* dphi, const Sequences& seqs,
                      const std::vector<int64_t>& start, const SequenceSdtwOptions& opt, int u,
                      int v) {
  const int n = seqs.lengths[u], m = seqs.lengths[v], d = seqs.d;
  const float* x = seqs.rows + start[u] * d;
  const float* y = seqs.rows + start[v] * d;
  if (opt.distance == SliceDistance::kCosine) {
    cosine_distance_backward(dx, dy, dphi, x, y, n, m, d);
  } else {
    CHECK(opt.distance == SliceDistance::kSqEuclid);
    sqeuclid_distance_backward(dx, dy, dphi, x, y, n, m, d);
  }
}

// Runs every job's soft-DTW: values [jobs] (written). With dvalues != nullptr
// also drows += dvalues[t] * dR_t/drows.
//
// Jobs go in chunks of at most max_chunk_cells cells (or one job). In a chunk,
// OpenMP threads take whole jobs, largest first: distance GEMM (single-threaded
// inside the parallel region, see ops/gemm.h), local cost, soft-DTW forward
// (+ backward), and for the backward the job's own gradient rows. The rows are
// then added to drows serially in job order, so the result is the same for
// any thread count.
void RunJobs(const std::vector<Job>& jobs, const Sequences& seqs, const SequenceSdtwOptions& opt,
             double* values, const double* dvalues, float* drows) {
  const std::vector<int64_t> start = RowStarts(seqs);
  const bool gak = opt.local_cost == LocalCost::kGak;
  const bool backward = dvalues != nullptr;
  const int d = seqs.d;
  const int max_threads = opt.num_threads > 0 ? opt.num_threads : omp_get_max_threads();
  // Packed per chunk, not zeroed; kept per thread between calls (trimmed below).
  static thread_local internal::FloatBuffer phi, cost, grad;
  std::vector<int64_t> cell_off, grad_off;
  std::vector<int> order, chunk_n, chunk_m;
  size_t begin = 0;
  while (begin < jobs.size()) {
    // The chunk [begin, end): at least one job, at most max_chunk_cells cells.
    size_t end = begin;
    cell_off.assign(1, 0);
    grad_off.assign(1, 0);
    while (end < jobs.size()) {
      const int n = seqs.lengths[jobs[end].u], m = seqs.lengths[jobs[end].v];
      const int64_t cells = int64_t{n} * m;
      if (end > begin && cell_off.back() + cells > opt.max_chunk_cells) break;
      cell_off.push_back(cell_off.back() + cells);
      grad_off.push_back(grad_off.back() + int64_t{n + m} * d);
      ++end;
    }
    const int count = static_cast<int>(end - begin);
    phi.Reserve(cell_off.back());
    if (gak) cost.Reserve(cell_off.back());
    if (backward) grad.Reserve(grad_off.back());
    // Plain pointers: inside the parallel region `phi` etc. would name each
    // worker thread's own (thread_local) buffers.
    float* const phi_data = phi.data();
    float* const cost_data = cost.data();
    float* const grad_data = grad.data();
    // Jobs of one shape share lane groups of the soft-DTW (ops/cpu/sdtw_lanes.h).
    chunk_n.resize(count);
    chunk_m.resize(count);
    for (int t = 0; t < count; ++t) {
      chunk_n[t] = seqs.lengths[jobs[begin + t].u];
      chunk_m[t] = seqs.lengths[jobs[begin + t].v];
    }
    const std::vector<internal::PairTask> tasks =
        internal::PlanPairTasks(count, chunk_n.data(), chunk_m.data(), opt.band, &order);
    const int threads = std::max(1, std::min(max_threads, static_cast<int>(tasks.size())));
#pragma omp parallel num_threads(threads)
    {
      SdtwWorkspace& ws = ThreadWorkspace();
#pragma omp for schedule(dynamic, 1)
      for (size_t k = 0; k < tasks.size(); ++k) {
        const internal::PairTask& task = tasks[k];
        const int* jobs_of_task = order.data() + task.begin;
        const int n = chunk_n[jobs_of_task[0]], m = chunk_m[jobs_of_task[0]];
        const int64_t cells = int64_t{n} * m;
        // Costs of every job of the task (for GAK: the local cost of the distances).
        auto cost_of = [&](int t) { return (gak ? cost_data : phi_data) + cell_off[t]; };
        for (int q = 0; q < task.count; ++q) {
          const int t = jobs_of_task[q];
          const Job& job = jobs[begin + t];
          float* phi_t = phi_data + cell_off[t];
          DistanceForward(phi_t, seqs, start, opt, job.u, job.v);
          if (gak) gak_local_cost_forward(cost_of(t), phi_t, cells, job.sigma);
        }
        // Soft-DTW; for the backward E overwrites the costs (all costs are
        // read before E is written).
        if (task.lanes) {
          internal::LaneGroup group;
          group.count = task.count;
          for (int q = 0; q < task.count; ++q) {
            const int t = jobs_of_task[q];
            group.cost[q] = group.E[q] = cost_of(t);
            group.scale[q] = backward ? static_cast<float>(dvalues[begin + t]) : 0.f;
          }
          double v[internal::kPairLanes];
          internal::soft_dtw_lanes(group, n, m, opt.gamma, opt.band, backward, v);
          for (int q = 0; q < task.count; ++q) values[begin + jobs_of_task[q]] = v[q];
        } else {
          const int t = jobs_of_task[0];
          values[begin + t] =
              backward ? soft_dtw_pair_backward(cost_of(t), static_cast<float>(dvalues[begin + t]),
                                                cost_of(t), n, m, opt.gamma, opt.band, &ws)
                       : soft_dtw_pair(cost_of(t), n, m, opt.gamma, opt.band, &ws);
        }
        if (!backward) continue;
        for (int q = 0; q < task.count; ++q) {
          const int t = jobs_of_task[q];
          const Job& job = jobs[begin + t];
          float* dphi = cost_of(t);  // E, then (GAK) d/dphi
          if (gak) gak_local_cost_backward(dphi, dphi, phi_data + cell_off[t], cells, job.sigma);
          float* dx = grad_data + grad_off[t];
          float* dy = dx + int64_t{n} * d;
          std::fill(dx, dx + int64_t{n + m} * d, 0.0f);
          DistanceBackward(dx, dy, dphi, seqs, start, opt, job.u, job.v);
        }
      }
      ws.Trim(internal::kRetainFloats);
      internal::TrimLaneScratch(internal::kRetainFloats);
    }
    if (backward) {
      for (int t = 0; t < count; ++t) {
        const Job& job = jobs[begin + t];
        const float* g = grad_data + grad_off[t];
        const int64_t nx = int64_t{seqs.lengths[job.u]} * d, ny = int64_t{seqs.lengths[job.v]} * d;
        float* dx = drows + start[job.u] * d;
        float* dy = drows + start[job.v] * d;
        for (int64_t k = 0; k < nx; ++k) dx[k] += g[k];
        for (int64_t k = 0; k < ny; ++k) dy[k] += g[nx + k];
      }
    }
    begin = end;
  }
  phi.Trim(internal::kRetainFloats);
  cost.Trim(internal::kRetainFloats);
  grad.Trim(internal::kRetainFloats);
}

std::vector<Job> PairJobs(const Sequences& seqs, const SequencePairs& pairs, double delta) {
  std::vector<Job> jobs(pairs.count);
  for (int p = 0; p < pairs.count; ++p) {
    const int u = pairs.u[p], v = pairs.v[p];
    jobs[p] = {u, v, gak_sigma(delta, seqs.lengths[u], seqs.lengths[v])};
  }
  return jobs;
}

}  // namespace

absl::Status ValidateSequencePairs(const Sequences& seqs, const SequencePairs& pairs,
                                   const SequenceSdtwOptions& options, bool need_backward) {
  RETURN_IF_ERROR(ValidateSequences(seqs, options.distance, options.part1_dim));
  RETURN_IF_ERROR(ValidatePairs(seqs, pairs));
  if (!(options.gamma > 0) || !std::isfinite(options.gamma)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence soft-DTW: gamma = ", options.gamma, " must be finite and > 0"));
  }
  if (options.local_cost == LocalCost::kGak &&
      (!(options.delta > 0) || !std::isfinite(options.delta))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GAK: delta = ", options.delta, " must be finite and > 0 (sigma = delta*sqrt((n+m)/2))"));
  }
  if (options.max_chunk_cells < 1) {
    return absl::InvalidArgumentError("sequence soft-DTW: max_chunk_cells must be >= 1");
  }
  if (need_backward && options.distance == SliceDistance::kTriple) {
    return absl::InvalidArgumentError(
        "sequence soft-DTW: the triple kernel has no backward (it is for frozen teacher "
        "features); use kCosine or kSqEuclid where gradients are needed");
  }
  return absl::OkStatus();
}

absl::Status soft_dtw_sequences_forward(double* values, const Sequences& seqs,
                                        const SequencePairs& pairs,
                                        const SequenceSdtwOptions& options) {
  RETURN_IF_ERROR(ValidateSequencePairs(seqs, pairs, options, /*need_backward=*/false));
  RunJobs(PairJobs(seqs, pairs, options.delta), seqs, options, values, nullptr, nullptr);
  return absl::OkStatus();
}

absl::Status soft_dtw_sequences_backward(double* values, float* drows, const double* dvalues,
                                         const Sequences& seqs, const SequencePairs& pairs,
                                         const SequenceSdtwOptions& options) {
  RETURN_IF_ERROR(ValidateSequencePairs(seqs, pairs, options, /*need_backward=*/true));
  std::vector<double> scratch;
  if (values == nullptr) {
    scratch.resize(pairs.count);
    values = scratch.data();
  }
  RunJobs(PairJobs(seqs, pairs, options.delta), seqs, options, values, dvalues, drows);
  return absl::OkStatus();
}

// ---- Normalised GAK ---------------------------------------------------------

namespace {

SequenceSdtwOptions ToSequenceOptions(const GakOptions& g) {
  SequenceSdtwOptions o;
  o.distance = g.distance;
  o.part1_dim = g.part1_dim;
  o.local_cost = LocalCost::kGak;
  o.delta = g.delta;
  o.gamma = 1.0;
  o.band = g.band;
  o.num_threads = g.num_threads;
  return o;
}

// The jobs of K~ over a pair list: job p is R_xy of pair p (pairs with u == v
// are skipped: K~ = 1); then one self job R_ss per (sequence, sigma), shared by
// every pair that needs it.
struct GakPlan {
  std::vector<Job> jobs;
  std::vector<int> xy_job;                   // [P] job index, -1 when u == v
  std::vector<std::pair<int, int>> self_job;  // [P] jobs of R_uu and R_vv
};

GakPlan PlanGak(const Sequences& seqs, const SequencePairs& pairs, double delta) {
  GakPlan plan;
  plan.xy_job.assign(pairs.count, -1);
  plan.self_job.assign(pairs.count, {-1, -1});
  for (int p = 0; p < pairs.count; ++p) {
    const int u = pairs.u[p], v = pairs.v[p];
    if (u == v) continue;
    plan.xy_job[p] = static_cast<int>(plan.jobs.size());
    plan.jobs.push_back({u, v, gak_sigma(delta, seqs.lengths[u], seqs.lengths[v])});
  }
  std::map<std::pair<int, int>, int> self_index;  // (sequence, other length) -> job
  auto self = [&](int s, int other_length, double sigma) {
    auto [it, inserted] = self_index.emplace(std::make_pair(s, other_length),
                                             static_cast<int>(plan.jobs.size()));
    if (inserted) plan.jobs.push_back({s, s, sigma});
    return it->second;
  };
  for (int p = 0; p < pairs.count; ++p) {
    if (plan.xy_job[p] < 0) continue;
    const int u = pairs.u[p], v = pairs.v[p];
    const double sigma = plan.jobs[plan.xy_job[p]].sigma;
    plan.self_job[p] = {self(u, seqs.lengths[v], sigma), self(v, seqs.lengths[u], sigma)};
  }
  return plan;
}

double NormalisedKernel(const GakPlan& plan, const std::vector<double>& r, int p) {
  if (plan.xy_job[p] < 0) return 1.0;
  const double log_k = -(r[plan.xy_job[p]] - 0.5 * r[plan.self_job[p].first] -
                         0.5 * r[plan.self_job[p].second]);
  return std::exp(log_k);
}

absl::Status ValidateGak(const Sequences& seqs, const SequencePairs& pairs,
                         const GakOptions& options, bool need_backward) {
  return ValidateSequencePairs(seqs, pairs, ToSequenceOptions(options), need_backward);
}

}  // namespace

absl::Status gak_pairs_forward(double* k, const Sequences& seqs, const SequencePairs& pairs,
                               const GakOptions& options) {
  RETURN_IF_ERROR(ValidateGak(seqs, pairs, options, /*need_backward=*/false));
  const GakPlan plan = PlanGak(seqs, pairs, options.delta);
  std::vector<double> r(plan.jobs.size());
  RunJobs(plan.jobs, seqs, ToSequenceOptions(options), r.data(), nullptr, nullptr);
  for (int p = 0; p < pairs.count; ++p) k[p] = NormalisedKernel(plan, r, p);
  return absl::OkStatus();
}

absl::Status gak_pairs_backward(float* drows, const double* dk, const Sequences& seqs,
                                const SequencePairs& pairs, const GakOptions& options) {
  RETURN_IF_ERROR(ValidateGak(seqs, pairs, options, /*need_backward=*/true));
  const GakPlan plan = PlanGak(seqs, pairs, options.delta);
  const SequenceSdtwOptions sopt = ToSequenceOptions(options);
  std::vector<double> r(plan.jobs.size());
  RunJobs(plan.jobs, seqs, sopt, r.data(), nullptr, nullptr);
  // dK~/dR_xy = -K~, dK~/dR_xx = dK~/dR_yy = K~/2.
  std::vector<double> dr(plan.jobs.size(), 0.0);
  for (int p = 0; p < pairs.count; ++p) {
    if (plan.xy_job[p] < 0) continue;
    const double g = dk[p] * NormalisedKernel(plan, r, p);
    dr[plan.xy_job[p]] -= g;
    dr[plan.self_job[p].first] += 0.5 * g;
    dr[plan.self_job[p].second] += 0.5 * g;
  }
  // Only jobs with a non-zero upstream gradient need the backward.
  std::vector<Job> active;
  std::vector<double> active_dr;
  for (size_t t = 0; t < plan.jobs.size(); ++t) {
    if (dr[t] != 0.0) {
      active.push_back(plan.jobs[t]);
      active_dr.push_back(dr[t]);
    }
  }
  std::vector<double> unused(active.size());
  RunJobs(active, seqs, sopt, unused.data(), active_dr.data(), drows);
  return absl::OkStatus();
}

namespace {

void UpperTrianglePairs(int N, std::vector<int>* u, std::vector<int>* v) {
  for (int a = 0; a < N; ++a) {
    for (int b = a + 1; b < N; ++b) {
      u->push_back(a);
      v->push_back(b);
    }
  }
}

}  // namespace

absl::Status gak_matrix_forward(float* K, const Sequences& seqs, const GakOptions& options) {
  std::vector<int> u, v;
  UpperTrianglePairs(seqs.count, &u, &v);
  const SequencePairs pairs{static_cast<int>(u.size()), u.data(), v.data()};
  std::vector<double> k(pairs.count);
  RETURN_IF_ERROR(gak_pairs_forward(k.data(), seqs, pairs, options));
  const int N = seqs.count;
  for (int a = 0; a < N; ++a) K[static_cast<int64_t>(a) * N + a] = 1.0f;
  for (int p = 0; p < pairs.count; ++p) {
    K[static_cast<int64_t>(u[p]) * N + v[p]] = static_cast<float>(k[p]);
    K[static_cast<int64_t>(v[p]) * N + u[p]] = static_cast<float>(k[p]);
  }
  return absl::OkStatus();
}

absl::Status gak_matrix_backward(float* drows, const float* dK, const Sequences& seqs,
                                 const GakOptions& options) {
  std::vector<int> u, v;
  UpperTrianglePairs(seqs.count, &u, &v);
  const SequencePairs pairs{static_cast<int>(u.size()), u.data(), v.data()};
  const int N = seqs.count;
  std::vector<double> dk(pairs.count);
  for (int p = 0; p < pairs.count; ++p) {
    dk[p] = static_cast<double>(dK[static_cast<int64_t>(u[p]) * N + v[p]]) +
            dK[static_cast<int64_t>(v[p]) * N + u[p]];
  }
  RETURN_IF_ERROR(ValidateSequences(seqs, options.distance, options.part1_dim));
  const std::vector<int64_t> start = RowStarts(seqs);
  std::fill(drows, drows + start.back() * seqs.d, 0.0f);
  return gak_pairs_backward(drows, dk.data(), seqs, pairs, options);
}

}  // namespace ut::cpu
