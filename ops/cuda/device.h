// CUDA device detection, checked device memory, and the CUDA_CHECK macro.
// Plain C++ header (no kernels): host code compiled by g++ may include it.
//
// Error policy: allocation and copies that a user can make fail (a too-large
// batch, no GPU) return absl::Status with a message naming the call, the size
// and what to do. A failed CUDA call inside an op (bad launch, illegal address)
// is a programmer error: CUDA_CHECK logs the call, file:line and a hint, then
// aborts.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ut::cuda {

// True when a CUDA device can be used: the driver loads and reports at least
// one device. Without a GPU, cudaGetDeviceCount fails (35: insufficient driver,
// 100: no device); that gives false, never a crash. Cached after the first call.
bool CudaAvailable();

// One line about device 0 (name, compute capability, SMs, memory), or why
// there is no usable device.
std::string DeviceSummary();

// Logs "<expr> failed at file:line: <error name>: <error text>. <hint>" and
// aborts. Used by CUDA_CHECK.
[[noreturn]] void CudaCheckFailed(cudaError_t err, const char* expr, const char* file, int line);

// Error text for a failed CUDA call: what, where, and what to do about it.
std::string CudaErrorMessage(cudaError_t err, std::string_view call, std::string_view detail);

#define CUDA_CHECK(expr)                                                    \
  do {                                                                      \
    cudaError_t _ut_cuda_err = (expr);                                      \
    if (_ut_cuda_err != cudaSuccess)                                        \
      ::ut::cuda::CudaCheckFailed(_ut_cuda_err, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once. Faults
// inside the kernel surface at the next synchronising call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// Device memory. `what` names the buffer in error messages ("attention lse").
absl::StatusOr<void*> DeviceMalloc(size_t bytes, std::string_view what);
void DeviceFree(void* ptr);  // nullptr is fine
absl::Status CopyToDevice(void* dst, const void* src, size_t bytes);
absl::Status CopyToHost(void* dst, const void* src, size_t bytes);
absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes);
absl::Status DeviceZero(void* dst, size_t bytes);

// Scratch memory for one op call, stream-ordered on the default stream
// (cudaMallocAsync / cudaFreeAsync: the pool caches it, no device sync).
// Out of memory here aborts with a message saying which op and how much.
void* ScratchAlloc(size_t bytes, const char* what);
void ScratchFree(void* ptr);

// Owning array of n elements of T in device memory (move-only).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  // Aborts when the allocation fails (tests, scratch); use Create for a Status.
  explicit DeviceArray(int64_t n) : n_(n) {
    auto p = DeviceMalloc(bytes(), "DeviceArray");
    CheckOk(p.status());
    ptr_ = static_cast<T*>(*p);
  }
  static absl::StatusOr<DeviceArray> Create(int64_t n, std::string_view what) {
    DeviceArray a;
    auto p = DeviceMalloc(n * sizeof(T), what);
    if (!p.ok()) return p.status();
    a.ptr_ = static_cast<T*>(*p);
    a.n_ = n;
    return a;
  }
  // A device copy of host values.
  static DeviceArray FromHost(const std::vector<T>& host) {
    DeviceArray a(static_cast<int64_t>(host.size()));
    CheckOk(CopyToDevice(a.ptr_, host.data(), a.bytes()));
    return a;
  }
  ~DeviceArray() { DeviceFree(ptr_); }
  DeviceArray(DeviceArray&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(n_, o.n_);
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return ptr_; }
  int64_t size() const { return n_; }
  size_t bytes() const { return static_cast<size_t>(n_) * sizeof(T); }

  std::vector<T> ToHost() const {
    std::vector<T> host(n_);
    CheckOk(CopyToHost(host.data(), ptr_, bytes()));
    return host;
  }
  void CopyFrom(const std::vector<T>& host) {
    CheckOk(host.size() == static_cast<size_t>(n_)
                ? CopyToDevice(ptr_, host.data(), bytes())
                : absl::InvalidArgumentError("DeviceArray::CopyFrom: size mismatch"));
  }

 private:
  static void CheckOk(const absl::Status& s);  // aborts with s.message()
  T* ptr_ = nullptr;
  int64_t n_ = 0;
};

void AbortOnError(const absl::Status& status);  // defined in device.cu

template <typename T>
void DeviceArray<T>::CheckOk(const absl::Status& s) {
  if (!s.ok()) AbortOnError(s);
}

}  // namespace ut::cuda
