// The discriminative (structure-induced) loss L_d (DESIGN.md section 1;
// docs/objective.md), single process.
//
// Units. Every sample of a micro-batch whose slices all carry a teacher feature
// gives min(objective.cuts_per_sample, n) distinct prefix cuts k in 1..n (n =
// its slices in Batch::slices), drawn without replacement, deterministic in
// (seed, step, micro, sample); unit = (sample, k). Its model side is r_1..r_k
// (the retrieval embeddings of the sample's first k slices), its target side
// the teacher features x_1..x_k.
//
//   M^l [N,N] = K~(x_u, x_v), triple kernel (part 1 = teacher_split, modality
//               = image/text), no gradient; 1 when u and v share a sample
//   M^r [N,N] = PAPER:    cos(r_u last, r_v last)
//               SEQUENCE: K~(r_u, r_v) with the cosine slice distance
//   L_d       = (1/N) sum_u sum_v (M^r[u,v] - M^l[u,v])^2
//
// K~ is the normalised Global Alignment Kernel of ops/gak.h with
// sigma = objective.delta * sqrt((n+m)/2) on both sides.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/base/config.h"
#include "core/base/status.h"
#include "core/model/mllm.h"
#include "data/batch.h"
#include "parallel/dld/pool_units.h"

namespace ut::train {

// One unit: a sample's first slices.
struct Unit {
  int sample = 0;           // Batch sample index (SliceSpan::sample)
  std::vector<int> slices;  // [k] indices into Batch::slices, in order
};

// Units of a micro-batch: sample by sample, cuts ascending. Samples with a slice
// without a teacher feature (or with no slices) give none and are counted in
// *skipped (may be nullptr).
std::vector<Unit> DrawUnits(const data::Batch& batch, int cuts_per_sample, uint64_t seed,
                            int64_t step, int micro, int* skipped);

// M^l [N,N] (written, resized) over the units' teacher sequences. Errors: teacher
// features of different sizes or splits within the batch (names the sample).
absl::Status TeacherMatrix(const data::Batch& batch, const std::vector<Unit>& units,
                           double delta, std::vector<float>* ml);

// M^r [N,N] (written, resized) from r [S,R] (one row per Batch::slices entry).
absl::Status ModelMatrix(const std::vector<Unit>& units, const float* r, int R,
                         unified_train::ObjectiveConfig::Mode mode, double delta,
                         std::vector<float>* mr);

// L_d for M^r and M^l [N,N]; with dr != nullptr also adds grad_scale * dL_d/dr
// to dr [S,R] (+=). r is the one ModelMatrix was given.
absl::StatusOr<double> DiscriminativeLossFromMatrices(
    const std::vector<Unit>& units, const std::vector<float>& mr, const std::vector<float>& ml,
    const float* r, int R, unified_train::ObjectiveConfig::Mode mode, double delta,
    float grad_scale, float* dr);

struct LdResult {
  double loss = 0;           // L_d (0 when there are no units)
  int units = 0;             // N
  int skipped_samples = 0;   // samples without teacher features
};

// The whole loss on a model between Forward(batch) and Backward: slice
// embeddings r (MLLM::RetrievalForward), units, M^l, M^r, L_d; when
// grad_scale != 0, grad_scale * dL_d/dr goes back through
// MLLM::RetrievalBackward (the next Backward carries it on).
absl::StatusOr<LdResult> DiscriminativeLossStep(MLLM* model, const data::Batch& batch,
                                                const unified_train::ObjectiveConfig& objective,
                                                uint64_t seed, int64_t step, int micro,
                                                float grad_scale);

// ---- Pools: L_d over several micro-batches (docs/objective.md, "Pools") ------
//
// A pool's units are the units of each of its parts (micro-batches), drawn
// with the part's GLOBAL micro index (so cuts match across parallel layouts),
// concatenated in part order. Sample identity is (part, sample): M^l = 1 only
// between units of one sample of one part. L_d of the pool is the formula
// above over all its N units. A pool of one part is exactly
// DiscriminativeLossStep's L_d.

struct PoolPart {
  const data::Batch* batch = nullptr;
  int micro = 0;             // global micro-batch index j within the step
  const float* r = nullptr;  // [S,R] slice embeddings, S = batch->slices.size()
};

// L_d of the pool; with grad_scale != 0 and dr_per_part != nullptr,
// (*dr_per_part)[i] [S_i,R] = grad_scale * dL_d/dr of part i (written,
// resized; zeros when the pool has no units). Errors: two parts with the same
// micro index; teacher features of different sizes/splits (names the sample).
absl::StatusOr<LdResult> PoolLoss(std::span<const PoolPart> parts, int R,
                                  const unified_train::ObjectiveConfig& objective, uint64_t seed,
                                  int64_t step, float grad_scale,
                                  std::vector<std::vector<float>>* dr_per_part);

// The same pool flattened for the distributed L_d (parallel/dld/dist_ld.h):
// the parts' slices back to back, units drawn as in PoolLoss, sample keys
// dld::SampleKey(part.micro, sample). r is not read. *skipped (may be
// nullptr) = samples without teacher features.
absl::StatusOr<dld::PoolUnits> FlattenPool(std::span<const PoolPart> parts, int cuts_per_sample,
                                           uint64_t seed, int64_t step, int* skipped);

// The parts' r back to back: [sum S_i, R] (the row order of FlattenPool).
std::vector<float> ConcatPoolRows(std::span<const PoolPart> parts, int R);
// Splits rows [sum S_i, R] in that order into (*per_part)[i] [S_i,R] (resized).
void SplitPoolRows(std::span<const PoolPart> parts, int R, const float* rows,
                   std::vector<std::vector<float>>* per_part);

// Checks the objective fields (alpha >= 0, delta > 0, cuts_per_sample >= 1);
// errors name the field.
absl::Status ValidateObjective(const unified_train::ObjectiveConfig& objective);

}  // namespace ut::train
