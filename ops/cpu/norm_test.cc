// Tests for ops/norm.h: LayerNorm and RMSNorm forward against double loops,
// backward against central differences, accumulate flags, and the
// column-parallel weight gradients on a shape large enough to go parallel.
#include "ops/norm.h"

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

constexpr float kEps = 1e-5f;

TEST(LayerNormTest, ForwardMatchesNaive) {
  Rng rng(10);
  const int N = 5, C = 37;
  auto inp = RandomVector(rng, N * C, 2.0f, 0.5f);
  auto weight = RandomVector(rng, C);
  auto bias = RandomVector(rng, C);
  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                    N, C, kEps);
  std::vector<double> e_out(N * C), e_mean(N), e_rstd(N);
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += inp[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (inp[n * C + c] - m) * (inp[n * C + c] - m);
    v /= C;
    const double s = 1.0 / std::sqrt(v + kEps);
    for (int c = 0; c < C; ++c) e_out[n * C + c] = (inp[n * C + c] - m) * s * weight[c] + bias[c];
    e_mean[n] = m;
    e_rstd[n] = s;
  }
  EXPECT_TRUE(AllClose(out, e_out, 1e-5, 1e-5));
  EXPECT_TRUE(AllClose(mean, e_mean, 1e-5, 1e-6));
  EXPECT_TRUE(AllClose(rstd, e_rstd, 1e-5, 0.0));
}

TEST(LayerNormTest, BackwardMatchesFiniteDifferences) {
  Rng rng(11);
  const int N = 4, C = 19;
  auto inp = RandomVector(rng, N * C, 1.5f, 0.3f);
  auto weight = RandomVector(rng, C, 1.0f, 1.0f);
  auto bias = RandomVector(rng, C);
  const auto probe = RandomVector(rng, N * C);
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                      bias.data(), N, C, kEps);
    return Dot(out, probe);
  };
  loss();
  std::vector<float> dinp(N * C, std::nanf("")), dweight(C, 0.0f), dbias(C, 0.0f);
  layernorm_backward(dinp.data(), dweight.data(), dbias.data(), probe.data(), inp.data(),
                     weight.data(), mean.data(), rstd.data(), N, C);
  EXPECT_TRUE(CheckGradient("dinp", loss, inp.data(), dinp.data(), N * C));
  EXPECT_TRUE(CheckGradient("dweight", loss, weight.data(), dweight.data(), C));
  EXPECT_TRUE(CheckGradient("dbias", loss, bias.data(), dbias.data(), C));
}

TEST(LayerNormTest, AccumulatesAndParallelColumnSumsMatchDouble) {
  Rng rng(12);
  const int N = 200, C = 300;  // N*C > 2^15: parallel path, several column blocks
  auto inp = RandomVector(rng, N * C);
  auto weight = RandomVector(rng, C);
  auto bias = RandomVector(rng, C);
  const auto dout = RandomVector(rng, N * C);
  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                    N, C, kEps);
  const auto dw0 = RandomVector(rng, C);
  const auto db0 = RandomVector(rng, C);
  const auto dinp0 = RandomVector(rng, N * C);
  std::vector<float> dinp_w(N * C), dinp_a = dinp0, dweight = dw0, dbias = db0;
  std::vector<float> dw_unused(C), db_unused(C);
  layernorm_backward(dinp_w.data(), dw_unused.data(), db_unused.data(), dout.data(), inp.data(),
                     weight.data(), mean.data(), rstd.data(), N, C);
  layernorm_backward(dinp_a.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                     weight.data(), mean.data(), rstd.data(), N, C, /*accumulate_dinp=*/true);
  std::vector<double> e_dw(C), e_db(C);
  for (int c = 0; c < C; ++c) {
    double sw = 0, sb = 0;
    for (int n = 0; n < N; ++n) {
      sw += static_cast<double>(dout[n * C + c]) * (inp[n * C + c] - mean[n]) * rstd[n];
      sb += dout[n * C + c];
    }
    e_dw[c] = dw0[c] + sw;
    e_db[c] = db0[c] + sb;
  }
  EXPECT_TRUE(AllClose(dweight, e_dw, 1e-4, 1e-4));
  EXPECT_TRUE(AllClose(dbias, e_db, 1e-4, 1e-4));
  std::vector<float> e_dinp(N * C);
  for (int i = 0; i < N * C; ++i) e_dinp[i] = dinp0[i] + dinp_w[i];
  EXPECT_TRUE(AllClose(dinp_a, e_dinp, 1e-6, 1e-6));
}

TEST(RmsNormTest, ForwardMatchesNaive) {
  Rng rng(13);
  const int N = 6, C = 41;
  auto inp = RandomVector(rng, N * C, 2.0f);
  auto weight = RandomVector(rng, C);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, kEps);
  std::vector<double> e_out(N * C), e_rstd(N);
  for (int n = 0; n < N; ++n) {
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += static_cast<double>(inp[n * C + c]) * inp[n * C + c];
    const double s = 1.0 / std::sqrt(ss / C + kEps);
    for (int c = 0; c < C; ++c) e_out[n * C + c] = inp[n * C + c] * s * weight[c];
    e_rstd[n] = s;
  }
  EXPECT_TRUE(AllClose(out, e_out, 1e-5, 1e-6));
  EXPECT_TRUE(AllClose(rstd, e_rstd, 1e-5, 0.0));
}

TEST(RmsNormTest, BackwardMatchesFiniteDifferences) {
  Rng rng(14);
  const int N = 4, C = 23;
  auto inp = RandomVector(rng, N * C, 1.0f, 0.2f);
  auto weight = RandomVector(rng, C, 1.0f, 1.0f);
  const auto probe = RandomVector(rng, N * C);
  std::vector<float> out(N * C), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, kEps);
    return Dot(out, probe);
  };
  loss();
  std::vector<float> dinp(N * C, std::nanf("")), dweight(C, 0.0f);
  rmsnorm_backward(dinp.data(), dweight.data(), probe.data(), inp.data(), weight.data(),
                   rstd.data(), N, C);
  EXPECT_TRUE(CheckGradient("dinp", loss, inp.data(), dinp.data(), N * C));
  EXPECT_TRUE(CheckGradient("dweight", loss, weight.data(), dweight.data(), C));
}

TEST(RmsNormTest, AccumulatesAndParallelColumnSumsMatchDouble) {
  Rng rng(15);
  const int N = 180, C = 290;
  auto inp = RandomVector(rng, N * C);
  auto weight = RandomVector(rng, C);
  const auto dout = RandomVector(rng, N * C);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, kEps);
  const auto dw0 = RandomVector(rng, C);
  const auto dinp0 = RandomVector(rng, N * C);
  std::vector<float> dinp_w(N * C), dinp_a = dinp0, dweight = dw0, dw_unused(C);
  rmsnorm_backward(dinp_w.data(), dw_unused.data(), dout.data(), inp.data(), weight.data(),
                   rstd.data(), N, C);
  rmsnorm_backward(dinp_a.data(), dweight.data(), dout.data(), inp.data(), weight.data(),
                   rstd.data(), N, C, /*accumulate_dinp=*/true);
  std::vector<double> e_dw(C);
  for (int c = 0; c < C; ++c) {
    double sw = 0;
    for (int n = 0; n < N; ++n) {
      sw += static_cast<double>(dout[n * C + c]) * inp[n * C + c] * rstd[n];
    }
    e_dw[c] = dw0[c] + sw;
  }
  EXPECT_TRUE(AllClose(dweight, e_dw, 1e-4, 1e-4));
  std::vector<float> e_dinp(N * C);
  for (int i = 0; i < N * C; ++i) e_dinp[i] = dinp0[i] + dinp_w[i];
  EXPECT_TRUE(AllClose(dinp_a, e_dinp, 1e-6, 1e-6));
}

// Rows are split over threads and weight gradients over column blocks, each
// summed in row order: results must not depend on the thread count.
TEST(NormTest, BitIdenticalForAnyThreadCount) {
  Rng rng(16);
  const int N = 150, C = 260;
  const auto inp = RandomVector(rng, N * C);
  const auto weight = RandomVector(rng, C);
  const auto bias = RandomVector(rng, C);
  const auto dout = RandomVector(rng, N * C);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::vector<float> out(N * C), mean(N), rstd(N), dinp(N * C), dw(C, 0.0f), db(C, 0.0f);
    layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(),
                      bias.data(), N, C, kEps);
    layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), weight.data(),
                       mean.data(), rstd.data(), N, C);
    std::vector<float> all = out;
    for (const auto* v : {&dinp, &dw, &db}) all.insert(all.end(), v->begin(), v->end());
    rmsnorm_forward(out.data(), rstd.data(), inp.data(), weight.data(), N, C, kEps);
    rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), weight.data(), rstd.data(),
                     N, C);
    for (const auto* v : {&out, &dinp, &dw}) all.insert(all.end(), v->begin(), v->end());
    runs.push_back(all);
  }
  omp_set_num_threads(saved);
  EXPECT_TRUE(BitIdentical(runs[0], runs[1]));
  EXPECT_TRUE(BitIdentical(runs[0], runs[2]));
}

}  // namespace
}  // namespace ut::cpu
