// ut::cuda LayerNorm/RMSNorm against ut::cpu on fresh random inputs.
#include "ops/cuda/norm.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/test_util.h"
#include "ops/norm.h"

namespace ut::cuda {
namespace {

using testing::RandomNormal;

// Odd sizes: a partial last warp, a row shorter than one warp, a row longer than the block.
const int kShapes[][2] = {{1, 7}, {33, 100}, {70, 769}, {5, 4096}};

TEST(CudaNormTest, LayerNormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(10);
  for (const auto& shape : kShapes) {
    for (bool accumulate : {false, true}) {
      const int N = shape[0], C = shape[1];
      const int64_t NC = int64_t{N} * C;
      auto inp = RandomNormal(rng, NC, 2.0);
      for (auto& x : inp) x += 0.5f;  // nonzero mean
      auto w = RandomNormal(rng, C);
      auto b = RandomNormal(rng, C);
      auto dout = RandomNormal(rng, NC);
      auto dinp = RandomNormal(rng, NC);
      auto dw = RandomNormal(rng, C);
      auto db = RandomNormal(rng, C);
      std::vector<float> out(NC), mean(N), rstd(N);
      auto d_inp = DeviceArray<float>::FromHost(inp);
      auto d_w = DeviceArray<float>::FromHost(w);
      auto d_b = DeviceArray<float>::FromHost(b);
      auto d_dout = DeviceArray<float>::FromHost(dout);
      auto d_dinp = DeviceArray<float>::FromHost(dinp);
      auto d_dw = DeviceArray<float>::FromHost(dw);
      auto d_db = DeviceArray<float>::FromHost(db);
      DeviceArray<float> d_out(NC), d_mean(N), d_rstd(N);
      cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(),
                             N, C, 1e-5f);
      layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(), d_b.get(),
                        N, C, 1e-5f);
      EXPECT_MATCHES_CPU(d_out, out) << " N=" << N << " C=" << C;
      EXPECT_MATCHES_CPU(d_mean, mean);
      EXPECT_MATCHES_CPU(d_rstd, rstd);
      // Backward from the CPU's saved statistics, so only the backward is compared.
      d_mean.CopyFrom(mean);
      d_rstd.CopyFrom(rstd);
      cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(),
                              mean.data(), rstd.data(), N, C, accumulate);
      layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_inp.get(), d_w.get(),
                         d_mean.get(), d_rstd.get(), N, C, accumulate);
      EXPECT_MATCHES_CPU(d_dinp, dinp) << " N=" << N << " C=" << C << " acc=" << accumulate;
      EXPECT_MATCHES_CPU(d_dw, dw);
      EXPECT_MATCHES_CPU(d_db, db);
    }
  }
}

TEST(CudaNormTest, RmsNormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(11);
  for (const auto& shape : kShapes) {
    for (bool accumulate : {false, true}) {
      const int N = shape[0], C = shape[1];
      const int64_t NC = int64_t{N} * C;
      auto inp = RandomNormal(rng, NC, 3.0);
      auto w = RandomNormal(rng, C);
      auto dout = RandomNormal(rng, NC);
      auto dinp = RandomNormal(rng, NC);
      auto dw = RandomNormal(rng, C);
      std::vector<float> out(NC), rstd(N);
      auto d_inp = DeviceArray<float>::FromHost(inp);
      auto d_w = DeviceArray<float>::FromHost(w);
      auto d_dout = DeviceArray<float>::FromHost(dout);
      auto d_dinp = DeviceArray<float>::FromHost(dinp);
      auto d_dw = DeviceArray<float>::FromHost(dw);
      DeviceArray<float> d_out(NC), d_rstd(N);
      cpu::rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-6f);
      rmsnorm_forward(d_out.get(), d_rstd.get(), d_inp.get(), d_w.get(), N, C, 1e-6f);
      EXPECT_MATCHES_CPU(d_out, out) << " N=" << N << " C=" << C;
      EXPECT_MATCHES_CPU(d_rstd, rstd);
      d_rstd.CopyFrom(rstd);
      cpu::rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), rstd.data(),
                            N, C, accumulate);
      rmsnorm_backward(d_dinp.get(), d_dw.get(), d_dout.get(), d_inp.get(), d_w.get(), d_rstd.get(),
                       N, C, accumulate);
      EXPECT_MATCHES_CPU(d_dinp, dinp) << " N=" << N << " C=" << C << " acc=" << accumulate;
      EXPECT_MATCHES_CPU(d_dw, dw);
    }
  }
}

}  // namespace
}  // namespace ut::cuda
