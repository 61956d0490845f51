#include "core/model/tp.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "core/model/common.h"
#include "glog/logging.h"
#include "ops/gemm.h"

namespace ut::model {

void Tp::AllReduceSum(float* x, int64_t n, const char* where) const {
  if (size == 1) return;
  CHECK(comm != nullptr) << "tensor parallelism of size " << size << " needs a communicator";
  const absl::Status s =
      comm->AllReduce(std::span<float>(x, static_cast<size_t>(n)), comm::ReduceOp::kSum);
  CHECK(s.ok()) << "TP rank " << rank << "/" << size << ": all-reduce in " << where
                << " failed: " << s;
}

// residual [N,OC], inp [N,C], weight [OC,C] -> out [N,OC]
void RowParallelResidualForward(const Tp& tp, float* out, const float* residual, const float* inp,
                                const float* weight, const float* bias, float* partial, int N,
                                int C, int OC, const char* where) {
  if (tp.size == 1) {
    linear_residual_forward(out, residual, inp, weight, bias, N, C, OC);
    return;
  }
  cpu::linear_forward(partial, inp, weight, nullptr, N, C, OC);
  ReduceFromTpRegion(tp, partial, int64_t{N} * OC, where);
#pragma omp parallel for
  for (int r = 0; r < N; ++r) {
    const int64_t row = int64_t{r} * OC;
    for (int c = 0; c < OC; ++c) {
      out[row + c] = residual[row + c] + partial[row + c] + (bias != nullptr ? bias[c] : 0.0f);
    }
  }
}

// logits [N,Vl] -> dlogits [N,Vl], sum of row losses
double VocabParallelCrossEntropy(const Tp& tp, float* dlogits, const float* logits,
                                 const int32_t* targets, int N, int Vl, int vocab_start,
                                 float grad_scale, int64_t* count) {
  // 1. Row max over the whole vocabulary (skipped rows keep -inf: harmless).
  std::vector<float> row_max(N, -std::numeric_limits<float>::infinity());
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const float* x = logits + int64_t{n} * Vl;
    row_max[n] = *std::max_element(x, x + Vl);
  }
  if (tp.size > 1) {
    const absl::Status s = tp.comm->AllReduce(std::span<float>(row_max), comm::ReduceOp::kMax);
    CHECK(s.ok()) << "TP rank " << tp.rank << ": vocab-parallel CE max failed: " << s;
  }
  // 2. Sum of exp(x - max) and the target logit (0 unless this rank holds it).
  std::vector<double> sums(2 * static_cast<size_t>(N), 0.0);  // [sumexp | target logit]
#pragma omp parallel for
  for (int n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    if (t < 0) continue;
    const float* x = logits + int64_t{n} * Vl;
    double s = 0;
    for (int c = 0; c < Vl; ++c) s += std::exp(static_cast<double>(x[c]) - row_max[n]);
    sums[n] = s;
    if (t >= vocab_start && t < vocab_start + Vl) sums[N + n] = x[t - vocab_start];
  }
  if (tp.size > 1) {
    const absl::Status s = tp.comm->AllReduce(std::span<double>(sums), comm::ReduceOp::kSum);
    CHECK(s.ok()) << "TP rank " << tp.rank << ": vocab-parallel CE sums failed: " << s;
  }
  // 3. Loss and gradient.
  double total = 0;
  int64_t counted = 0;
  for (int n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    float* dx = dlogits + int64_t{n} * Vl;
    const float* x = logits + int64_t{n} * Vl;
    if (t < 0) {
      std::fill(dx, dx + Vl, 0.0f);
      continue;
    }
    ++counted;
    total += std::log(sums[n]) + row_max[n] - sums[N + n];
    const double scale = grad_scale / sums[n];
    for (int c = 0; c < Vl; ++c) {
      dx[c] = static_cast<float>(std::exp(static_cast<double>(x[c]) - row_max[n]) * scale);
    }
    if (t >= vocab_start && t < vocab_start + Vl) dx[t - vocab_start] -= grad_scale;
  }
  if (count != nullptr) *count = counted;
  return total;
}

}  // namespace ut::model
