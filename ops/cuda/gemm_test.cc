// ut::cuda GEMM/linear against ut::cpu on fresh random inputs (rel. error <= 1e-5).
#include "ops/cuda/gemm.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/test_util.h"
#include "ops/gemm.h"

namespace ut::cuda {
namespace {

using testing::RandomNormal;

TEST(CudaGemmTest, AllTransposesWithPaddedLeadingDims) {
  SKIP_WITHOUT_GPU();
  Rng rng(1);
  const int M = 37, N = 53, K = 71;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      // Stored shapes: A is [M,K] or [K,M]; B is [K,N] or [N,K]; 3 columns of padding.
      const int a_rows = ta ? K : M, a_cols = ta ? M : K;
      const int b_rows = tb ? N : K, b_cols = tb ? K : N;
      const int lda = a_cols + 3, ldb = b_cols + 3, ldc = N + 3;
      auto A = RandomNormal(rng, int64_t{a_rows} * lda);
      auto B = RandomNormal(rng, int64_t{b_rows} * ldb);
      auto C = RandomNormal(rng, int64_t{M} * ldc);
      auto dA = DeviceArray<float>::FromHost(A);
      auto dB = DeviceArray<float>::FromHost(B);
      auto dC = DeviceArray<float>::FromHost(C);
      cpu::gemm(ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, 0.3f, C.data(), ldc);
      gemm(ta, tb, M, N, K, 0.7f, dA.get(), lda, dB.get(), ldb, 0.3f, dC.get(), ldc);
      EXPECT_MATCHES_CPU(dC, C) << " trans_a=" << ta << " trans_b=" << tb;
    }
  }
}

TEST(CudaGemmTest, EmptyInnerDimensionScalesC) {
  SKIP_WITHOUT_GPU();
  Rng rng(2);
  auto C = RandomNormal(rng, 6 * 5);
  auto dC = DeviceArray<float>::FromHost(C);
  cpu::gemm(false, false, 6, 5, 0, 1.0f, nullptr, 0, nullptr, 0, 0.5f, C.data(), 5);
  gemm(false, false, 6, 5, 0, 1.0f, nullptr, 0, nullptr, 0, 0.5f, dC.get(), 5);
  EXPECT_MATCHES_CPU(dC, C);
}

TEST(CudaGemmTest, StridedBatched) {
  SKIP_WITHOUT_GPU();
  Rng rng(3);
  const int M = 17, N = 24, K = 40, batch = 5;
  const int64_t sa = int64_t{K} * M + 7, sb = int64_t{N} * K + 5, sc = int64_t{M} * N + 2;
  auto A = RandomNormal(rng, sa * batch);
  auto B = RandomNormal(rng, sb * batch);
  auto C = RandomNormal(rng, sc * batch);
  auto dA = DeviceArray<float>::FromHost(A);
  auto dB = DeviceArray<float>::FromHost(B);
  auto dC = DeviceArray<float>::FromHost(C);
  // A stored [K,M] (trans_a), B stored [K,N].
  cpu::gemm_strided_batched(true, false, M, N, K, 1.0f, A.data(), M, sa, B.data(), N, sb, 1.0f,
                            C.data(), N, sc, batch);
  gemm_strided_batched(true, false, M, N, K, 1.0f, dA.get(), M, sa, dB.get(), N, sb, 1.0f, dC.get(),
                       N, sc, batch);
  EXPECT_MATCHES_CPU(dC, C);
}

TEST(CudaLinearTest, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(4);
  const int N = 67, C = 96, OC = 130;
  for (bool with_bias : {true, false}) {
    for (bool accumulate : {false, true}) {
      auto inp = RandomNormal(rng, int64_t{N} * C);
      auto w = RandomNormal(rng, int64_t{OC} * C, 0.1);
      auto b = RandomNormal(rng, OC);
      auto dout = RandomNormal(rng, int64_t{N} * OC);
      auto dinp = RandomNormal(rng, int64_t{N} * C);  // prior contents (accumulate)
      auto dw = RandomNormal(rng, int64_t{OC} * C);   // parameter grads accumulate
      auto db = RandomNormal(rng, OC);
      std::vector<float> out(int64_t{N} * OC);
      auto d_inp = DeviceArray<float>::FromHost(inp);
      auto d_w = DeviceArray<float>::FromHost(w);
      auto d_b = DeviceArray<float>::FromHost(b);
      auto d_dout = DeviceArray<float>::FromHost(dout);
      auto d_dinp = DeviceArray<float>::FromHost(dinp);
      auto d_dw = DeviceArray<float>::FromHost(dw);
      auto d_db = DeviceArray<float>::FromHost(db);
      DeviceArray<float> d_out(out.size());
      const float* bias = with_bias ? b.data() : nullptr;
      cpu::linear_forward(out.data(), inp.data(), w.data(), bias, N, C, OC);
      linear_forward(d_out.get(), d_inp.get(), d_w.get(), with_bias ? d_b.get() : nullptr, N, C,
                     OC);
      EXPECT_MATCHES_CPU(d_out, out) << " bias=" << with_bias;
      cpu::linear_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(),
                           inp.data(), w.data(), N, C, OC, accumulate);
      linear_backward(d_dinp.get(), d_dw.get(), with_bias ? d_db.get() : nullptr, d_dout.get(),
                      d_inp.get(), d_w.get(), N, C, OC, accumulate);
      EXPECT_MATCHES_CPU(d_dinp, dinp) << " accumulate=" << accumulate;
      EXPECT_MATCHES_CPU(d_dw, dw);
      EXPECT_MATCHES_CPU(d_db, db);
    }
  }
}

TEST(CudaLinearTest, BiasGradIsDeterministic) {
  SKIP_WITHOUT_GPU();
  Rng rng(5);
  const int N = 3001, C = 77;
  auto x = DeviceArray<float>::FromHost(RandomNormal(rng, int64_t{N} * C));
  DeviceArray<float> a = DeviceArray<float>::FromHost(std::vector<float>(C, 0.0f));
  DeviceArray<float> b = DeviceArray<float>::FromHost(std::vector<float>(C, 0.0f));
  column_sum_accumulate(a.get(), x.get(), N, C);
  column_sum_accumulate(b.get(), x.get(), N, C);
  EXPECT_EQ(a.ToHost(), b.ToHost());
}

}  // namespace
}  // namespace ut::cuda
