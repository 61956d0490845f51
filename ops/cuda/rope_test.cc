// ut::cuda RoPE against ut::cpu on fresh random inputs, positions up to 8191.
#include "ops/cuda/rope.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/test_util.h"
#include "ops/rope.h"

namespace ut::cuda {
namespace {

using testing::RandomInts;
using testing::RandomNormal;

TEST(CudaRopeTest, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(40);
  const int kShapes[][3] = {{1, 1, 2}, {37, 4, 64}, {300, 8, 128}, {5, 3, 1024}};  // N, H, D
  for (const auto& s : kShapes) {
    const int N = s[0], H = s[1], D = s[2];
    const int64_t n = int64_t{N} * H * D;
    auto x = RandomNormal(rng, n);
    auto dout = RandomNormal(rng, n);
    auto pos = RandomInts(rng, N, 0, 8192);
    std::vector<float> out(n), dx(n);
    auto d_x = DeviceArray<float>::FromHost(x);
    auto d_dout = DeviceArray<float>::FromHost(dout);
    auto d_pos = DeviceArray<int32_t>::FromHost(pos);
    DeviceArray<float> d_out(n);
    cpu::rope_forward(out.data(), x.data(), pos.data(), N, H, D, 10000.0f);
    rope_forward(d_out.get(), d_x.get(), d_pos.get(), N, H, D, 10000.0f);
    EXPECT_MATCHES_CPU(d_out, out) << " N=" << N << " H=" << H << " D=" << D;
    rope_forward(d_x.get(), d_x.get(), d_pos.get(), N, H, D, 10000.0f);  // in place
    EXPECT_MATCHES_CPU(d_x, out) << " in place";
    cpu::rope_backward(dx.data(), dout.data(), pos.data(), N, H, D, 500000.0f);
    rope_backward(d_dout.get(), d_dout.get(), d_pos.get(), N, H, D, 500000.0f);
    EXPECT_MATCHES_CPU(d_dout, dx) << " N=" << N << " H=" << H << " D=" << D;
  }
}

}  // namespace
}  // namespace ut::cuda
