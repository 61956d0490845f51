// ut::cuda AdamW / sum_squares / clip_scale against ut::cpu on fresh random inputs.
#include "ops/cuda/optim.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/test_util.h"
#include "ops/optim.h"

namespace ut::cuda {
namespace {

using testing::RandomNormal;
using testing::RandomUniform;
using testing::RelError;

TEST(CudaOptimTest, AdamWMatchesCpuOverSeveralSteps) {
  SKIP_WITHOUT_GPU();
  Rng rng(60);
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1 << 20}}) {
    auto params = RandomNormal(rng, n);
    auto m = RandomNormal(rng, n, 0.01);
    auto v = RandomUniform(rng, n, 0.0, 1e-3);  // second moments are >= 0
    auto d_params = DeviceArray<float>::FromHost(params);
    auto d_m = DeviceArray<float>::FromHost(m);
    auto d_v = DeviceArray<float>::FromHost(v);
    AdamWParams hp{3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};
    for (int step = 1; step <= 3; ++step) {
      hp.step = step;
      auto grads = RandomNormal(rng, n, 0.1);
      auto d_grads = DeviceArray<float>::FromHost(grads);
      cpu::adamw_update(params.data(), grads.data(), m.data(), v.data(), n, hp, 0.5f);
      cuda::adamw_update(d_params.get(), d_grads.get(), d_m.get(), d_v.get(), n, hp, 0.5f);
    }
    EXPECT_MATCHES_CPU(d_params, params) << " n=" << n;
    EXPECT_MATCHES_CPU(d_m, m) << " n=" << n;
    EXPECT_MATCHES_CPU(d_v, v) << " n=" << n;
  }
}

TEST(CudaOptimTest, SumSquaresMatchesCpuAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  Rng rng(61);
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{1000003}}) {
    auto x = RandomNormal(rng, n, 2.0);
    auto d_x = DeviceArray<float>::FromHost(x);
    const double cpu = cpu::sum_squares(x.data(), n);
    const double gpu = sum_squares(d_x.get(), n);
    EXPECT_LE(RelError(gpu, cpu), 1e-12) << gpu << " vs " << cpu;  // both in double
    EXPECT_EQ(sum_squares(d_x.get(), n), gpu);
  }
}

TEST(CudaOptimTest, ClipScaleMatchesCpu) {
  for (double norm : {0.0, 0.5, 1.0, 3.0, 1e9}) {
    for (float max_norm : {-1.0f, 0.0f, 1.0f, 2.5f}) {
      EXPECT_EQ(clip_scale(norm, max_norm), cpu::clip_scale(norm, max_norm));
    }
  }
}

}  // namespace
}  // namespace ut::cuda
