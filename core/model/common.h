// Small helpers shared by the model's layers (CPU, f32).
#pragma once

#include <cstdint>
#include <cstring>

#include "ops/gemm.h"

namespace ut::model {

// out [N,OC] = residual [N,OC] + inp [N,C] @ weight[OC,C]^T + bias [OC] (bias may
// be nullptr). One pass to seed out, then one GEMM accumulating into it.
// out may alias residual.
inline void linear_residual_forward(float* out, const float* residual, const float* inp,
                                    const float* weight, const float* bias, int N, int C, int OC) {
#pragma omp parallel for
  for (int r = 0; r < N; ++r) {
    float* o = out + int64_t{r} * OC;
    const float* x = residual + int64_t{r} * OC;
    if (bias != nullptr) {
      for (int c = 0; c < OC; ++c) o[c] = x[c] + bias[c];
    } else if (o != x) {
      std::memcpy(o, x, sizeof(float) * OC);
    }
  }
  cpu::gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, 1.0f, out, OC);
}

// y [n] += x [n]
inline void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace ut::model
