// ut::cuda fused softmax cross-entropy against ut::cpu on fresh random inputs.
#include "ops/cuda/cross_entropy.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cross_entropy.h"
#include "ops/cuda/test_util.h"

namespace ut::cuda {
namespace {

using testing::RandomInts;
using testing::RandomNormal;
using testing::RelError;

TEST(CudaCrossEntropyTest, LossCountAndGradMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(50);
  const int kIgnore = -100;
  const int kShapes[][2] = {{1, 2}, {37, 1000}, {64, 32000}, {5, 50257}};  // N, V
  for (const auto& s : kShapes) {
    const int N = s[0], V = s[1];
    const int64_t NV = int64_t{N} * V;
    auto logits = RandomNormal(rng, NV, 3.0);
    auto targets = RandomInts(rng, N, 0, V);
    for (int n = 0; n < N; n += 3) targets[n] = n % 2 ? kIgnore : -1;  // skipped rows
    if (N == 1) targets[0] = 1;
    const float grad_scale = 1.0f / N;
    std::vector<float> dlogits(NV);
    int64_t cpu_count = -1, gpu_count = -1;
    const double cpu_loss = cpu::softmax_cross_entropy(
        dlogits.data(), logits.data(), targets.data(), N, V, kIgnore, grad_scale, &cpu_count);
    auto d_logits = DeviceArray<float>::FromHost(logits);
    auto d_targets = DeviceArray<int32_t>::FromHost(targets);
    DeviceArray<float> d_dlogits(NV);
    const double gpu_loss = softmax_cross_entropy(d_dlogits.get(), d_logits.get(), d_targets.get(),
                                                  N, V, kIgnore, grad_scale, &gpu_count);
    EXPECT_LE(RelError(gpu_loss, cpu_loss), testing::kTol) << gpu_loss << " vs " << cpu_loss;
    EXPECT_EQ(gpu_count, cpu_count);
    EXPECT_MATCHES_CPU(d_dlogits, dlogits) << " N=" << N << " V=" << V;
    // Loss only (no gradient), then in place (dlogits aliases logits).
    EXPECT_LE(RelError(softmax_cross_entropy(nullptr, d_logits.get(), d_targets.get(), N, V,
                                             kIgnore, grad_scale, nullptr),
                       cpu_loss),
              testing::kTol);
    const double in_place = softmax_cross_entropy(d_logits.get(), d_logits.get(), d_targets.get(),
                                                  N, V, kIgnore, grad_scale, &gpu_count);
    EXPECT_LE(RelError(in_place, cpu_loss), testing::kTol);
    EXPECT_MATCHES_CPU(d_logits, dlogits) << " in place";
  }
}

TEST(CudaCrossEntropyTest, AllRowsSkipped) {
  SKIP_WITHOUT_GPU();
  auto d_logits = DeviceArray<float>::FromHost({1.0f, 2.0f, 3.0f, 4.0f});
  auto d_targets = DeviceArray<int32_t>::FromHost({-1, 7});
  DeviceArray<float> d_dlogits(4);
  int64_t count = -1;
  EXPECT_EQ(softmax_cross_entropy(d_dlogits.get(), d_logits.get(), d_targets.get(), 2, 2, 7, 1.0f,
                                  &count),
            0.0);
  EXPECT_EQ(count, 0);
  EXPECT_EQ(d_dlogits.ToHost(), std::vector<float>(4, 0.0f));
}

}  // namespace
}  // namespace ut::cuda
