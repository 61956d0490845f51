// ut::cuda embedding and patchify against ut::cpu on fresh random inputs.
#include "ops/cuda/embedding.cuh"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/test_util.h"
#include "ops/embedding.h"

namespace ut::cuda {
namespace {

using testing::RandomInts;
using testing::RandomNormal;

struct EmbeddingCase {
  int N, V, C;
};

TEST(CudaEmbeddingTest, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(30);
  // Small V: many repeated ids (long buckets); large V: mostly empty rows.
  for (const EmbeddingCase& t : {EmbeddingCase{1, 1, 5}, EmbeddingCase{100, 7, 33},
                                 EmbeddingCase{1000, 50000, 64}, EmbeddingCase{4097, 300, 515}}) {
    auto ids = RandomInts(rng, t.N, -1, t.V);  // -1: a masked row
    auto table = RandomNormal(rng, int64_t{t.V} * t.C);
    auto dout = RandomNormal(rng, int64_t{t.N} * t.C);
    auto dtable = RandomNormal(rng, int64_t{t.V} * t.C);  // accumulates onto this
    std::vector<float> out(int64_t{t.N} * t.C);
    auto d_ids = DeviceArray<int32_t>::FromHost(ids);
    auto d_table = DeviceArray<float>::FromHost(table);
    auto d_dout = DeviceArray<float>::FromHost(dout);
    auto d_dtable = DeviceArray<float>::FromHost(dtable);
    DeviceArray<float> d_out(out.size());
    cpu::embedding_forward(out.data(), ids.data(), table.data(), t.N, t.V, t.C);
    embedding_forward(d_out.get(), d_ids.get(), d_table.get(), t.N, t.V, t.C);
    EXPECT_MATCHES_CPU(d_out, out) << " N=" << t.N << " V=" << t.V;
    cpu::embedding_backward(dtable.data(), dout.data(), ids.data(), t.N, t.V, t.C);
    embedding_backward(d_dtable.get(), d_dout.get(), d_ids.get(), t.N, t.V, t.C);
    EXPECT_MATCHES_CPU(d_dtable, dtable) << " N=" << t.N << " V=" << t.V;
  }
}

TEST(CudaEmbeddingTest, BackwardIsDeterministicAndInCpuOrder) {
  SKIP_WITHOUT_GPU();
  Rng rng(31);
  const int N = 5000, V = 3, C = 40;  // ~1700 rows per bucket
  auto ids = RandomInts(rng, N, 0, V);
  auto dout = RandomNormal(rng, int64_t{N} * C);
  std::vector<float> dtable(int64_t{V} * C, 0.0f);
  auto d_ids = DeviceArray<int32_t>::FromHost(ids);
  auto d_dout = DeviceArray<float>::FromHost(dout);
  auto a = DeviceArray<float>::FromHost(dtable);
  auto b = DeviceArray<float>::FromHost(dtable);
  embedding_backward(a.get(), d_dout.get(), d_ids.get(), N, V, C);
  embedding_backward(b.get(), d_dout.get(), d_ids.get(), N, V, C);
  EXPECT_EQ(a.ToHost(), b.ToHost());
  // Same summation order as the CPU (rows in index order): bit-identical.
  cpu::embedding_backward(dtable.data(), dout.data(), ids.data(), N, V, C);
  EXPECT_EQ(a.ToHost(), dtable);
}

TEST(CudaPatchifyTest, ForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  Rng rng(32);
  const int kShapes[][4] = {{1, 4, 4, 2}, {2, 12, 8, 4}, {3, 28, 42, 14}};  // B, H, W, P
  for (const auto& s : kShapes) {
    const int B = s[0], H = s[1], W = s[2], P = s[3];
    const int64_t n = int64_t{B} * 3 * H * W;
    auto images = RandomNormal(rng, n);
    auto dpatches = RandomNormal(rng, n);
    std::vector<float> patches(n), dimages(n);
    auto d_images = DeviceArray<float>::FromHost(images);
    auto d_dpatches = DeviceArray<float>::FromHost(dpatches);
    DeviceArray<float> d_patches(n), d_dimages(n);
    cpu::patchify_forward(patches.data(), images.data(), B, H, W, P);
    patchify_forward(d_patches.get(), d_images.get(), B, H, W, P);
    EXPECT_EQ(d_patches.ToHost(), patches) << " B=" << B << " H=" << H << " W=" << W;
    cpu::patchify_backward(dimages.data(), dpatches.data(), B, H, W, P);
    patchify_backward(d_dimages.get(), d_dpatches.get(), B, H, W, P);
    EXPECT_EQ(d_dimages.ToHost(), dimages) << " B=" << B << " H=" << H << " W=" << W;
  }
}

}  // namespace
}  // namespace ut::cuda
