// ut::cuda GELU/SwiGLU/softmax against ut::cpu on fresh random inputs.
#include "ops/cuda/activation.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/activation.h"
#include "ops/cuda/test_util.h"

namespace ut::cuda {
namespace {

using testing::RandomNormal;

TEST(CudaActivationTest, GeluMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(20);
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{300001}}) {
    auto x = RandomNormal(rng, n, 4.0);  // reaches the saturated tails
    auto dout = RandomNormal(rng, n);
    std::vector<float> out(n), dinp(n);
    auto d_x = DeviceArray<float>::FromHost(x);
    auto d_dout = DeviceArray<float>::FromHost(dout);
    DeviceArray<float> d_out(n);
    cpu::gelu_forward(out.data(), x.data(), n);
    gelu_forward(d_out.get(), d_x.get(), n);
    EXPECT_MATCHES_CPU(d_out, out) << " n=" << n;
    cpu::gelu_backward(dinp.data(), x.data(), dout.data(), n);
    gelu_backward(d_dout.get(), d_x.get(), d_dout.get(), n);  // in place: dinp aliases dout
    EXPECT_MATCHES_CPU(d_dout, dinp) << " n=" << n;
  }
}

TEST(CudaActivationTest, SwigluMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(21);
  for (int64_t n : {int64_t{3}, int64_t{4097}, int64_t{200003}}) {
    auto gate = RandomNormal(rng, n, 3.0);
    auto up = RandomNormal(rng, n);
    auto dout = RandomNormal(rng, n);
    std::vector<float> out(n), dgate(n), dup(n);
    auto d_gate = DeviceArray<float>::FromHost(gate);
    auto d_up = DeviceArray<float>::FromHost(up);
    auto d_dout = DeviceArray<float>::FromHost(dout);
    DeviceArray<float> d_out(n), d_dgate(n), d_dup(n);
    cpu::swiglu_forward(out.data(), gate.data(), up.data(), n);
    swiglu_forward(d_out.get(), d_gate.get(), d_up.get(), n);
    EXPECT_MATCHES_CPU(d_out, out) << " n=" << n;
    cpu::swiglu_backward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n);
    swiglu_backward(d_dgate.get(), d_dup.get(), d_dout.get(), d_gate.get(), d_up.get(), n);
    EXPECT_MATCHES_CPU(d_dgate, dgate) << " n=" << n;
    EXPECT_MATCHES_CPU(d_dup, dup) << " n=" << n;
  }
}

TEST(CudaActivationTest, SoftmaxMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(22);
  const int kShapes[][2] = {{1, 1}, {7, 33}, {64, 1000}, {3, 50257}};
  for (const auto& shape : kShapes) {
    const int N = shape[0], C = shape[1];
    const int64_t NC = int64_t{N} * C;
    auto x = RandomNormal(rng, NC, 5.0);
    auto dout = RandomNormal(rng, NC);
    std::vector<float> out(NC), dinp(NC);
    auto d_x = DeviceArray<float>::FromHost(x);
    auto d_dout = DeviceArray<float>::FromHost(dout);
    cpu::softmax_forward(out.data(), x.data(), N, C);
    softmax_forward(d_x.get(), d_x.get(), N, C);  // in place
    EXPECT_MATCHES_CPU(d_x, out) << " N=" << N << " C=" << C;
    d_x.CopyFrom(out);  // backward from the CPU's probabilities
    cpu::softmax_backward(dinp.data(), dout.data(), out.data(), N, C);
    softmax_backward(d_dout.get(), d_dout.get(), d_x.get(), N, C);  // in place
    EXPECT_MATCHES_CPU(d_dout, dinp) << " N=" << N << " C=" << C;
  }
}

}  // namespace
}  // namespace ut::cuda
