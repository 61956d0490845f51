// CopySlice: a tensor cut into TP slices along each dimension and put back
// together is the original, and each slice holds exactly the expected elements.
#include "parallel/engine/gather.h"

#include <vector>

#include "gtest/gtest.h"

namespace ut::parallel {
namespace {

TEST(CopySlice, RowsAndColumnsOfAMatrixRoundTrip) {
  const std::vector<int64_t> shape = {6, 4};
  std::vector<float> full(24);
  for (int i = 0; i < 24; ++i) full[i] = static_cast<float>(i);
  for (int dim : {0, 1}) {
    const int parts = 2, extent = static_cast<int>(shape[dim]) / parts;
    std::vector<float> rebuilt(24, -1.0f);
    for (int p = 0; p < parts; ++p) {
      std::vector<float> local(24 / parts, -1.0f);
      CopySlice(shape, dim, p * extent, extent, full.data(), local.data(), /*to_local=*/true);
      for (int i = 0; i < static_cast<int>(local.size()); ++i) {
        // Element i of the slice: row r, column c in local [6,2] or [3,4] coordinates.
        const int lc = dim == 0 ? 4 : extent;
        const int r = i / lc, c = i % lc;
        const int gr = dim == 0 ? r + p * extent : r, gc = dim == 1 ? c + p * extent : c;
        EXPECT_EQ(local[i], full[gr * 4 + gc]) << "dim " << dim << " part " << p << " i " << i;
      }
      CopySlice(shape, dim, p * extent, extent, rebuilt.data(), local.data(), /*to_local=*/false);
    }
    EXPECT_EQ(rebuilt, full) << "dim " << dim;
  }
}

TEST(CopySlice, MiddleDimensionOfA3dTensor) {
  const std::vector<int64_t> shape = {2, 3, 2};  // slice [1,3) of dim 1
  std::vector<float> full(12);
  for (int i = 0; i < 12; ++i) full[i] = static_cast<float>(i);
  std::vector<float> local(8);
  CopySlice(shape, 1, 1, 2, full.data(), local.data(), true);
  EXPECT_EQ(local, (std::vector<float>{2, 3, 4, 5, 8, 9, 10, 11}));
}

TEST(CopySlice, ReplicatedIsTheWholeTensor) {
  std::vector<float> full = {1, 2, 3}, local(3);
  CopySlice({3}, -1, 0, 0, full.data(), local.data(), true);
  EXPECT_EQ(local, full);
}

}  // namespace
}  // namespace ut::parallel
