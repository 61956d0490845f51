// Tensor: a typed, shaped view of aligned memory on a device.
//
// Ownership: a Tensor made by Tensor::Empty/Zeros owns its storage through a
// shared_ptr; View() and Slice() share that storage (cheap, no copy). A Tensor
// made by Tensor::Wrap borrows memory the caller keeps alive (e.g. a slice of
// the model's single contiguous parameter buffer).
// Shapes are row-major; the last dimension is contiguous.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "glog/logging.h"

namespace ut {

enum class DType : uint8_t { kF32, kBF16, kI32, kI64 };
enum class Device : uint8_t { kCPU, kCUDA };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

// bf16 <-> f32 (round to nearest even), for storage and checkpoints.
uint16_t F32ToBF16(float x);
float BF16ToF32(uint16_t x);

// 64-byte aligned host allocation; Free releases it.
void* AlignedAlloc(size_t bytes);
void AlignedFree(void* p);

class Tensor {
 public:
  Tensor() = default;

  static Tensor Empty(std::vector<int64_t> shape, DType dtype = DType::kF32,
                      Device device = Device::kCPU);
  static Tensor Zeros(std::vector<int64_t> shape, DType dtype = DType::kF32,
                      Device device = Device::kCPU);
  static Tensor Wrap(void* data, std::vector<int64_t> shape, DType dtype = DType::kF32,
                     Device device = Device::kCPU);

  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? i + shape_.size() : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  size_t nbytes() const { return numel() * DTypeSize(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return data_ != nullptr; }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const { return static_cast<T*>(data_); }
  float* f32() const {
    CHECK(dtype_ == DType::kF32) << "tensor is " << DTypeName(dtype_) << ", not f32";
    return static_cast<float*>(data_);
  }

  // Same storage, new shape with the same number of elements.
  Tensor View(std::vector<int64_t> shape) const;
  // Rows [begin, end) along dimension 0; shares storage.
  Tensor Slice(int64_t begin, int64_t end) const;

  void Fill(float value);  // f32 only
  std::string ShapeString() const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
};

}  // namespace ut
