#include "core/tensor/tensor.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace ut {
namespace {

TEST(Tensor, AllocationIsAlignedAndZeroed) {
  Tensor t = Tensor::Zeros({3, 5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_EQ(t.numel(), 15);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t.f32()[i], 0.0f);
}

TEST(Tensor, ViewsAndSlicesShareStorage) {
  Tensor t = Tensor::Zeros({4, 3});
  Tensor v = t.View({12});
  v.f32()[7] = 5.0f;
  EXPECT_EQ(t.f32()[7], 5.0f);
  Tensor s = t.Slice(2, 4);
  EXPECT_EQ(s.dim(0), 2);
  EXPECT_EQ(s.f32()[1], 5.0f);  // row 2, column 1 == flat index 7
}

TEST(Tensor, BF16RoundTrip) {
  for (float x : {0.0f, 1.0f, -2.5f, 3.140625f}) EXPECT_EQ(BF16ToF32(F32ToBF16(x)), x);
  EXPECT_NEAR(BF16ToF32(F32ToBF16(1.00390625f)), 1.0f, 1e-2);
}

TEST(Tensor, ShapeString) { EXPECT_EQ(Tensor::Empty({2, 3}, DType::kI32).ShapeString(), "[2,3]i32"); }

}  // namespace
}  // namespace ut
