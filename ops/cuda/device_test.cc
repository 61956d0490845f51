// Device detection and checked memory. The detection test runs everywhere
// (it must not crash without a GPU); the memory tests need a device.
#include "ops/cuda/device.h"

#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/test_util.h"

namespace ut::cuda {
namespace {

TEST(DeviceTest, DetectionNeverCrashes) {
  const bool available = CudaAvailable();
  const std::string summary = DeviceSummary();
  EXPECT_FALSE(summary.empty());
  EXPECT_EQ(available, summary.find("no CUDA device") == std::string::npos) << summary;
  EXPECT_EQ(available, CudaAvailable());  // cached, stable
}

TEST(DeviceTest, RoundTripCopies) {
  SKIP_WITHOUT_GPU();
  std::vector<float> host = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
  DeviceArray<float> a = DeviceArray<float>::FromHost(host);
  DeviceArray<float> b(a.size());
  ASSERT_TRUE(CopyOnDevice(b.get(), a.get(), a.bytes()).ok());
  EXPECT_EQ(b.ToHost(), host);
  ASSERT_TRUE(DeviceZero(b.get(), b.bytes()).ok());
  EXPECT_EQ(b.ToHost(), std::vector<float>(host.size(), 0.0f));
}

TEST(DeviceTest, HugeAllocationIsAStatusThatSaysWhatToDo) {
  SKIP_WITHOUT_GPU();
  auto p = DeviceMalloc(size_t{1} << 50, "test buffer");  // 1 PiB
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted) << p.status();
  EXPECT_NE(p.status().message().find("test buffer"), std::string::npos) << p.status();
  EXPECT_NE(p.status().message().find("micro-batch"), std::string::npos) << p.status();
  // The failure left no sticky error behind: later calls still work.
  DeviceArray<int> ok = DeviceArray<int>::FromHost({1, 2, 3});
  EXPECT_EQ(ok.ToHost(), (std::vector<int>{1, 2, 3}));
}

TEST(DeviceTest, ScratchIsStreamOrdered) {
  SKIP_WITHOUT_GPU();
  void* p = ScratchAlloc(1 << 20, "test");
  ASSERT_NE(p, nullptr);
  ScratchFree(p);
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace ut::cuda
