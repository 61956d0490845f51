// Tests for ops/embedding.h: lookup with negative ids, scatter-add backward
// (repeated ids, accumulation, finite differences, determinism on a parallel
// shape), patchify against a Conv2d-layout loop and its inverse.
#include "ops/embedding.h"

#include <vector>

#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::CheckGradient;
using ::ut::testing::Dot;
using ::ut::testing::RandomVector;

TEST(EmbeddingTest, ForwardCopiesRowsAndZeroesNegativeIds) {
  Rng rng(30);
  const int V = 6, C = 5;
  const auto table = RandomVector(rng, V * C);
  const std::vector<int32_t> ids = {3, -1, 0, 3, 5};
  std::vector<float> out(ids.size() * C, 7.0f);
  embedding_forward(out.data(), ids.data(), table.data(), ids.size(), V, C);
  for (size_t n = 0; n < ids.size(); ++n) {
    for (int c = 0; c < C; ++c) {
      EXPECT_EQ(out[n * C + c], ids[n] < 0 ? 0.0f : table[ids[n] * C + c]) << n << "," << c;
    }
  }
}

TEST(EmbeddingTest, BackwardMatchesFiniteDifferencesWithRepeatedIds) {
  Rng rng(31);
  const int V = 5, C = 4;
  auto table = RandomVector(rng, V * C);
  const std::vector<int32_t> ids = {1, 4, 1, -1, 0, 1};
  const int N = ids.size();
  const auto probe = RandomVector(rng, N * C);
  std::vector<float> out(N * C);
  auto loss = [&] {
    embedding_forward(out.data(), ids.data(), table.data(), N, V, C);
    return Dot(out, probe);
  };
  std::vector<float> dtable(V * C, 0.0f);
  embedding_backward(dtable.data(), probe.data(), ids.data(), N, V, C);
  EXPECT_TRUE(CheckGradient("dtable", loss, table.data(), dtable.data(), V * C));
  // Rows never looked up (id 2, 3) get exactly zero; a second call doubles.
  for (int c = 0; c < C; ++c) {
    EXPECT_EQ(dtable[2 * C + c], 0.0f);
    EXPECT_EQ(dtable[3 * C + c], 0.0f);
  }
  auto twice = dtable;
  embedding_backward(twice.data(), probe.data(), ids.data(), N, V, C);
  for (int i = 0; i < V * C; ++i) EXPECT_FLOAT_EQ(twice[i], 2.0f * dtable[i]);
}

TEST(EmbeddingTest, ParallelBackwardEqualsSerialRowOrderSum) {
  Rng rng(32);
  const int V = 50, C = 200, N = 400;  // parallel over column ranges
  std::vector<int32_t> ids(N);
  for (auto& id : ids) id = static_cast<int32_t>(rng.Below(V + 5)) - 5;  // some negative
  const auto dout = RandomVector(rng, N * C);
  const auto base = RandomVector(rng, V * C);
  auto dtable = base;
  embedding_backward(dtable.data(), dout.data(), ids.data(), N, V, C);
  auto expected = base;  // the same float additions, rows in order
  for (int n = 0; n < N; ++n) {
    if (ids[n] < 0) continue;
    for (int c = 0; c < C; ++c) expected[ids[n] * C + c] += dout[n * C + c];
  }
  EXPECT_EQ(dtable, expected);
}

TEST(PatchifyTest, ForwardMatchesConvWeightLayoutAndBackwardInverts) {
  Rng rng(33);
  const int B = 2, H = 8, W = 12, P = 4;
  const int gh = H / P, gw = W / P, row_len = 3 * P * P;
  const auto images = RandomVector(rng, B * 3 * H * W);
  std::vector<float> patches(B * gh * gw * row_len, -1.0f);
  patchify_forward(patches.data(), images.data(), B, H, W, P);
  for (int b = 0; b < B; ++b)
    for (int py = 0; py < gh; ++py)
      for (int px = 0; px < gw; ++px)
        for (int ch = 0; ch < 3; ++ch)
          for (int dy = 0; dy < P; ++dy)
            for (int dx = 0; dx < P; ++dx) {
              const int row = (b * gh + py) * gw + px;
              const float got = patches[row * row_len + (ch * P + dy) * P + dx];
              const float want = images[((b * 3 + ch) * H + py * P + dy) * W + px * P + dx];
              ASSERT_EQ(got, want);
            }
  // The backward is the inverse permutation (written, so stale values vanish).
  std::vector<float> dimages(images.size(), 123.0f);
  patchify_backward(dimages.data(), patches.data(), B, H, W, P);
  EXPECT_EQ(dimages, images);
  // And the gradient of <patchify(x), w> w.r.t. x, by finite differences.
  auto x = images;
  const auto probe = RandomVector(rng, patches.size());
  auto loss = [&] {
    patchify_forward(patches.data(), x.data(), B, H, W, P);
    return Dot(patches, probe);
  };
  patchify_backward(dimages.data(), probe.data(), B, H, W, P);
  EXPECT_TRUE(CheckGradient("dimages", loss, x.data(), dimages.data(), x.size(), {.stride = 7}));
}

}  // namespace
}  // namespace ut::cpu
