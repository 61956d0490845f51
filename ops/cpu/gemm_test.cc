// Tests for ops/gemm.h: GEMM against a double-precision loop (all transposes,
// padded leading dimensions, alpha/beta), batched GEMM, linear forward against
// a loop, linear backward against central differences, accumulate flags.
#include "ops/gemm.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::BitIdentical;
using ::ut::testing::CheckGradient;
using ::ut::testing::Dot;
using ::ut::testing::RandomVector;

// C[M,N] = alpha * op(A) @ op(B) + beta * C in double, row-major with leading dims.
std::vector<double> NaiveGemm(bool ta, bool tb, int M, int N, int K, double alpha,
                              const std::vector<float>& A, int lda, const std::vector<float>& B,
                              int ldb, double beta, const std::vector<float>& C, int ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int p = 0; p < K; ++p) {
        const double a = ta ? A[p * lda + i] : A[i * lda + p];
        const double b = tb ? B[j * ldb + p] : B[p * ldb + j];
        acc += a * b;
      }
      out[i * ldc + j] = alpha * acc + beta * C[i * ldc + j];
    }
  }
  return out;
}

TEST(GemmTest, MatchesNaiveForAllTransposesAndPaddedStrides) {
  Rng rng(1);
  const int M = 7, N = 5, K = 9;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      // Stored A is [M,K] or [K,M]; pad every leading dimension by 3.
      const int lda = (ta ? M : K) + 3;
      const int ldb = (tb ? K : N) + 3;
      const int ldc = N + 3;
      auto A = RandomVector(rng, (ta ? K : M) * lda);
      auto B = RandomVector(rng, (tb ? N : K) * ldb);
      auto C = RandomVector(rng, M * ldc);
      const auto expected = NaiveGemm(ta, tb, M, N, K, 0.7, A, lda, B, ldb, -1.3, C, ldc);
      gemm(ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, -1.3f, C.data(), ldc);
      EXPECT_TRUE(AllClose(C, expected, 1e-5, 1e-5)) << "ta=" << ta << " tb=" << tb;
    }
  }
}

TEST(GemmTest, BetaZeroOverwritesNaNAndEmptyKScalesC) {
  Rng rng(2);
  const int M = 4, N = 3, K = 5;
  auto A = RandomVector(rng, M * K);
  auto B = RandomVector(rng, K * N);
  std::vector<float> C(M * N, std::nanf(""));
  gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  const std::vector<float> zeros(M * N, 0.0f);
  const auto expected = NaiveGemm(false, false, M, N, K, 1.0, A, K, B, N, 0.0, zeros, N);
  EXPECT_TRUE(AllClose(C, expected, 1e-5, 1e-5));

  std::vector<float> C2 = {1, 2, 3, 4, 5, 6};
  gemm(false, false, 2, 3, 0, 1.0f, nullptr, 0, nullptr, 3, 2.0f, C2.data(), 3);
  EXPECT_EQ(C2, (std::vector<float>{2, 4, 6, 8, 10, 12}));
}

// Large GEMMs are split over the OpenMP threads (rows, or columns when N > M);
// the result must not depend on the split, and gemm() inside a parallel
// region (single-threaded there) must agree too.
TEST(GemmTest, SplitAcrossThreadsIsBitIdentical) {
  Rng rng(7);
  const int saved_threads = omp_get_max_threads();
  // 100 x 200: an even split over 3 threads would leave a last slice of
  // 4 rows (under OpenBLAS's small-matrix limit, which rounds differently).
  for (auto [M, N] : {std::pair{300, 200}, std::pair{90, 500}, std::pair{100, 200}}) {
    const int K = 120;
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        const int lda = ta ? M : K, ldb = tb ? K : N;
        const auto A = RandomVector(rng, M * K);
        const auto B = RandomVector(rng, K * N);
        const auto C0 = RandomVector(rng, M * N);
        std::vector<std::vector<float>> results;
        for (int threads : {1, 2, 3, 4}) {
          omp_set_num_threads(threads);
          auto C = C0;
          gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 2.0f, C.data(), N);
          results.push_back(C);
        }
        omp_set_num_threads(saved_threads);
        auto C_inner = C0;
#pragma omp parallel num_threads(2)
        {
#pragma omp single
          gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 2.0f, C_inner.data(), N);
        }
        results.push_back(C_inner);
        const auto expected = NaiveGemm(ta, tb, M, N, K, 0.5, A, lda, B, ldb, 2.0, C0, N);
        EXPECT_TRUE(AllClose(results[0], expected, 1e-5, 1e-4));
        for (size_t i = 1; i < results.size(); ++i) {
          EXPECT_TRUE(BitIdentical(results[0], results[i]))
              << "M=" << M << " N=" << N << " ta=" << ta << " tb=" << tb << " run " << i;
        }
      }
    }
  }
}

TEST(GemmTest, StridedBatchedEqualsLoopOfGemms) {
  Rng rng(3);
  const int M = 60, N = 40, K = 300, batch = 3;  // 2.2M multiply-adds: parallel over batch
  const int64_t sa = M * K + 2, sb = N * K + 1, sc = M * N + 4;
  auto A = RandomVector(rng, batch * sa);
  auto B = RandomVector(rng, batch * sb);
  auto C = RandomVector(rng, batch * sc);
  auto C_loop = C;
  gemm_strided_batched(false, true, M, N, K, 1.5f, A.data(), K, sa, B.data(), K, sb, 0.5f,
                       C.data(), N, sc, batch);
  for (int i = 0; i < batch; ++i) {
    gemm(false, true, M, N, K, 1.5f, A.data() + i * sa, K, B.data() + i * sb, K, 0.5f,
         C_loop.data() + i * sc, N);
  }
  EXPECT_EQ(C, C_loop);
}

TEST(LinearTest, ForwardMatchesNaive) {
  Rng rng(4);
  const int N = 5, C = 7, OC = 6;
  auto inp = RandomVector(rng, N * C);
  auto weight = RandomVector(rng, OC * C);
  auto bias = RandomVector(rng, OC);
  for (bool with_bias : {false, true}) {
    std::vector<float> out(N * OC, std::nanf(""));
    linear_forward(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, N, C,
                   OC);
    std::vector<double> expected(N * OC);
    for (int n = 0; n < N; ++n) {
      for (int o = 0; o < OC; ++o) {
        double acc = with_bias ? bias[o] : 0.0;
        for (int c = 0; c < C; ++c) acc += static_cast<double>(inp[n * C + c]) * weight[o * C + c];
        expected[n * OC + o] = acc;
      }
    }
    EXPECT_TRUE(AllClose(out, expected, 1e-5, 1e-5)) << "with_bias=" << with_bias;
  }
}

TEST(LinearTest, BackwardMatchesFiniteDifferences) {
  Rng rng(5);
  const int N = 6, C = 5, OC = 4;
  auto inp = RandomVector(rng, N * C);
  auto weight = RandomVector(rng, OC * C);
  auto bias = RandomVector(rng, OC);
  const auto probe = RandomVector(rng, N * OC);  // dL/dout
  std::vector<float> out(N * OC);
  auto loss = [&] {
    linear_forward(out.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
    return Dot(out, probe);
  };
  std::vector<float> dinp(N * C, std::nanf(""));  // written, so NaN must vanish
  std::vector<float> dweight(OC * C, 0.0f), dbias(OC, 0.0f);
  linear_backward(dinp.data(), dweight.data(), dbias.data(), probe.data(), inp.data(),
                  weight.data(), N, C, OC);
  EXPECT_TRUE(CheckGradient("dinp", loss, inp.data(), dinp.data(), N * C));
  EXPECT_TRUE(CheckGradient("dweight", loss, weight.data(), dweight.data(), OC * C));
  EXPECT_TRUE(CheckGradient("dbias", loss, bias.data(), dbias.data(), OC));
}

TEST(LinearTest, BackwardAccumulatesParamsAndOptionallyInput) {
  Rng rng(6);
  // Large enough that the bias column sums take the parallel path.
  const int N = 300, C = 24, OC = 160;
  auto inp = RandomVector(rng, N * C);
  auto weight = RandomVector(rng, OC * C);
  const auto dout = RandomVector(rng, N * OC);
  std::vector<float> dinp(N * C, 0.0f), dweight(OC * C, 0.0f), dbias(OC, 0.0f);
  linear_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                  weight.data(), N, C, OC);
  // dbias is the column sum of dout.
  std::vector<double> col(OC, 0.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) col[o] += dout[n * OC + o];
  EXPECT_TRUE(AllClose(dbias, col, 1e-5, 1e-4));

  // Second call: params add up, dinp accumulates only with the flag.
  const auto dinp_prev = RandomVector(rng, N * C);
  std::vector<float> dinp_acc = dinp_prev, dweight2 = dweight, dbias2 = dbias;
  linear_backward(dinp_acc.data(), dweight2.data(), dbias2.data(), dout.data(), inp.data(),
                  weight.data(), N, C, OC, /*accumulate_dinp=*/true);
  std::vector<float> expect_dinp(N * C), expect_dw(OC * C), expect_db(OC);
  for (int i = 0; i < N * C; ++i) expect_dinp[i] = dinp_prev[i] + dinp[i];
  for (int i = 0; i < OC * C; ++i) expect_dw[i] = 2.0f * dweight[i];
  for (int i = 0; i < OC; ++i) expect_db[i] = 2.0f * dbias[i];
  EXPECT_TRUE(AllClose(dinp_acc, expect_dinp, 1e-5, 1e-5));
  EXPECT_TRUE(AllClose(dweight2, expect_dw, 1e-5, 1e-5));
  EXPECT_TRUE(AllClose(dbias2, expect_db, 1e-6, 0.0));

  // nullptr dinp / dbias are skipped.
  std::vector<float> dweight3(OC * C, 0.0f);
  linear_backward(nullptr, dweight3.data(), nullptr, dout.data(), inp.data(), weight.data(), N, C,
                  OC);
  EXPECT_EQ(dweight3, dweight);
}

}  // namespace
}  // namespace ut::cpu
