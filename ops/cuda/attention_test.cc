// ut::cuda attention against ut::cpu on fresh random inputs: MHA and GQA,
// causal and bidirectional, with and without lens, head dims 24..256,
// sequence lengths that are not multiples of the 32-row tile.
#include "ops/cuda/attention.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/attention.h"
#include "ops/cuda/test_util.h"

namespace ut::cuda {
namespace {

using testing::RandomNormal;

struct Case {
  AttentionShape shape;
  std::vector<int32_t> lens;  // empty: nullptr (all T)
};

std::string Describe(const Case& c) {
  const AttentionShape& s = c.shape;
  std::string lens;
  for (int32_t l : c.lens) lens += std::to_string(l) + " ";
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
         " Hkv=" + std::to_string(s.Hkv) + " D=" + std::to_string(s.D) +
         " causal=" + std::to_string(s.causal) + " lens=" + lens;
}

TEST(CudaAttentionTest, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(70);
  const std::vector<Case> cases = {
      {{2, 37, 4, 2, 64, true}, {37, 20}},     // GQA, causal, padding
      {{1, 70, 3, 1, 80, false}, {}},          // MQA, bidirectional (ViT-like)
      {{3, 33, 2, 2, 128, true}, {0, 33, 1}},  // empty and length-1 sequences
      {{1, 40, 2, 1, 256, true}, {}},          // largest head dim
      {{2, 100, 4, 4, 24, false}, {99, 64}},   // small head dim, masked keys
  };
  for (const Case& c : cases) {
    const AttentionShape& s = c.shape;
    const int64_t q_n = int64_t{s.B} * s.T * s.H * s.D;
    const int64_t kv_n = int64_t{s.B} * s.T * s.Hkv * s.D;
    const int64_t lse_n = int64_t{s.B} * s.H * s.T;
    auto q = RandomNormal(rng, q_n);
    auto k = RandomNormal(rng, kv_n);
    auto v = RandomNormal(rng, kv_n);
    auto dout = RandomNormal(rng, q_n);
    std::vector<float> out(q_n), lse(lse_n), dq(q_n), dk(kv_n), dv(kv_n);
    const int32_t* lens = c.lens.empty() ? nullptr : c.lens.data();
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), lens, s);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                            v.data(), out.data(), lse.data(), lens, s);

    auto d_q = DeviceArray<float>::FromHost(q);
    auto d_k = DeviceArray<float>::FromHost(k);
    auto d_v = DeviceArray<float>::FromHost(v);
    auto d_dout = DeviceArray<float>::FromHost(dout);
    DeviceArray<int32_t> d_lens =
        c.lens.empty() ? DeviceArray<int32_t>() : DeviceArray<int32_t>::FromHost(c.lens);
    // Outputs start as NaN so rows the kernels fail to write cannot pass.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto d_out = DeviceArray<float>::FromHost(std::vector<float>(q_n, nan));
    auto d_lse = DeviceArray<float>::FromHost(std::vector<float>(lse_n, nan));
    auto d_dq = DeviceArray<float>::FromHost(std::vector<float>(q_n, nan));
    auto d_dk = DeviceArray<float>::FromHost(std::vector<float>(kv_n, nan));
    auto d_dv = DeviceArray<float>::FromHost(std::vector<float>(kv_n, nan));
    cuda::attention_forward(d_out.get(), d_lse.get(), d_q.get(), d_k.get(), d_v.get(), d_lens.get(),
                            s);
    EXPECT_MATCHES_CPU(d_out, out) << Describe(c);
    EXPECT_MATCHES_CPU(d_lse, lse) << Describe(c);
    // Backward from the CPU's out and lse, so only the backward is compared.
    d_out.CopyFrom(out);
    d_lse.CopyFrom(lse);
    cuda::attention_backward(d_dq.get(), d_dk.get(), d_dv.get(), d_dout.get(), d_q.get(), d_k.get(),
                             d_v.get(), d_out.get(), d_lse.get(), d_lens.get(), s);
    EXPECT_MATCHES_CPU(d_dq, dq) << Describe(c);
    EXPECT_MATCHES_CPU(d_dk, dk) << Describe(c);
    EXPECT_MATCHES_CPU(d_dv, dv) << Describe(c);
  }
}

TEST(CudaAttentionTest, BackwardIsDeterministic) {
  SKIP_WITHOUT_GPU();
  Rng rng(71);
  const AttentionShape s{2, 65, 8, 2, 64, true};
  const int64_t q_n = int64_t{s.B} * s.T * s.H * s.D;
  const int64_t kv_n = int64_t{s.B} * s.T * s.Hkv * s.D;
  auto d_q = DeviceArray<float>::FromHost(RandomNormal(rng, q_n));
  auto d_k = DeviceArray<float>::FromHost(RandomNormal(rng, kv_n));
  auto d_v = DeviceArray<float>::FromHost(RandomNormal(rng, kv_n));
  auto d_dout = DeviceArray<float>::FromHost(RandomNormal(rng, q_n));
  DeviceArray<float> d_out(q_n), d_lse(int64_t{s.B} * s.H * s.T);
  cuda::attention_forward(d_out.get(), d_lse.get(), d_q.get(), d_k.get(), d_v.get(), nullptr, s);
  std::vector<float> first[3];
  for (int run = 0; run < 2; ++run) {
    DeviceArray<float> dq(q_n), dk(kv_n), dv(kv_n);
    cuda::attention_backward(dq.get(), dk.get(), dv.get(), d_dout.get(), d_q.get(), d_k.get(),
                             d_v.get(), d_out.get(), d_lse.get(), nullptr, s);
    if (run == 0) {
      first[0] = dq.ToHost();
      first[1] = dk.ToHost();
      first[2] = dv.ToHost();
    } else {
      EXPECT_EQ(dq.ToHost(), first[0]);
      EXPECT_EQ(dk.ToHost(), first[1]);
      EXPECT_EQ(dv.ToHost(), first[2]);
    }
  }
}

}  // namespace
}  // namespace ut::cuda
