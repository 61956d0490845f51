// Activation memory: one grow-only aligned buffer, carved into named arrays by
// a bump planner. Planning is done twice per shape: once with a null base to
// measure, then (after Reserve) with the real base. Once the largest shape
// has been seen, later Forward calls allocate nothing.
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace ut::model {

class Bump {
 public:
  explicit Bump(float* base) : base_(base) {}
  // n floats, 64-byte aligned; nullptr while measuring.
  float* Take(int64_t n) {
    float* p = base_ ? base_ + used_ : nullptr;
    used_ += (n + 15) / 16 * 16;
    return p;
  }
  int64_t used() const { return used_; }

 private:
  float* base_;
  int64_t used_ = 0;
};

class Arena {
 public:
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { AlignedFree(data_); }

  // Makes room for n floats; contents are lost only when it grows.
  void Reserve(int64_t n) {
    if (n <= capacity_) return;
    AlignedFree(data_);
    data_ = static_cast<float*>(AlignedAlloc(static_cast<size_t>(n) * sizeof(float)));
    capacity_ = n;
  }
  float* data() const { return data_; }
  int64_t capacity() const { return capacity_; }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};

}  // namespace ut::model
