#include "core/tensor/tensor.h"

#include <cstdlib>
#include <cstring>

namespace ut {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
  }
  return "?";
}

uint16_t F32ToBF16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float BF16ToF32(uint16_t x) {
  uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void* AlignedAlloc(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  CHECK(p != nullptr) << "out of host memory allocating " << bytes << " bytes";
  return p;
}

void AlignedFree(void* p) { std::free(p); }

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

Tensor Tensor::Empty(std::vector<int64_t> shape, DType dtype, Device device) {
  CHECK(device == Device::kCPU) << "Tensor::Empty on CUDA: use the CUDA allocator in ops/cuda";
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  void* p = AlignedAlloc(t.nbytes());
  t.storage_ = std::shared_ptr<void>(p, AlignedFree);
  t.data_ = p;
  return t;
}

Tensor Tensor::Zeros(std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t = Empty(std::move(shape), dtype, device);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::Wrap(void* data, std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::View(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  CHECK_EQ(t.numel(), numel()) << "View " << t.ShapeString() << " of " << ShapeString();
  return t;
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0])
      << "Slice [" << begin << "," << end << ") of " << ShapeString();
  Tensor t = *this;
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.data_ = static_cast<char*>(data_) + begin * row * DTypeSize(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

void Tensor::Fill(float value) {
  float* p = f32();
  for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = value;
}

std::string Tensor::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape_[i]);
  }
  return s + "]" + DTypeName(dtype_);
}

}  // namespace ut
