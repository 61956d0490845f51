// Device detection, checked memory and error messages (host code only).
// Note: Debian's absl has its own absl::string_view (not std::string_view), so
// std::string_view arguments are copied into std::string before absl::StrCat.
#include "ops/cuda/device.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"

namespace ut::cuda {
namespace {

// What to do about an error, by kind.
const char* Hint(cudaError_t err) {
  switch (err) {
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice:
      return "No usable GPU or NVIDIA driver here: run on a GPU machine (check `nvidia-smi`), "
             "or skip GPU work when CudaAvailable() is false.";
    case cudaErrorMemoryAllocation:
      return "Out of GPU memory: lower the micro-batch size or sequence length, or use more "
             "tensor/pipeline-parallel ranks (see `nvidia-smi` for other processes on the GPU).";
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
      return "A kernel touched memory it does not own (a bad pointer or size): rerun under "
             "`compute-sanitizer` to find it. The CUDA context is unusable after this error.";
    case cudaErrorAssert:
      return "A device-side check in a kernel failed (its message, printed above, names the op "
             "and the condition, e.g. an id outside the vocabulary). The CUDA context is "
             "unusable after this error.";
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidValue:
      return "A bad launch configuration or argument (grid/block/shared-memory size, a host "
             "pointer passed as a device pointer, or a size that is too large).";
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return "The binary has no code for this GPU: build for its architecture (see "
             "NVCC_FLAGS in third_party/cuda.bzl) with an nvcc the driver supports.";
    default:
      return "See the CUDA error text above; `compute-sanitizer` locates faults in kernels.";
  }
}

}  // namespace

bool CudaAvailable() {
  static const bool available = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear it, so a later cudaGetLastError() does not report it
      return false;
    }
    return count > 0;
  }();
  return available;
}

std::string DeviceSummary() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::StrCat("no CUDA device: cudaGetDeviceCount returned ", static_cast<int>(err), " (",
                        cudaGetErrorName(err), ": ", cudaGetErrorString(err), ")");
  }
  if (count == 0) return "no CUDA device: cudaGetDeviceCount found 0 devices";
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    cudaGetLastError();
    return "CUDA device 0 present, but cudaGetDeviceProperties failed";
  }
  return absl::StrFormat("%d device(s); device 0: %s, sm_%d%d, %d SMs, %.1f GiB", count, prop.name,
                         prop.major, prop.minor, prop.multiProcessorCount,
                         prop.totalGlobalMem / double(1 << 30));
}

std::string CudaErrorMessage(cudaError_t err, std::string_view call, std::string_view detail) {
  std::string where = detail.empty() ? "" : absl::StrCat(" (", std::string(detail), ")");
  return absl::StrCat(std::string(call), " failed", where, ": ", cudaGetErrorName(err), ": ",
                      cudaGetErrorString(err), ". ", Hint(err));
}

void CudaCheckFailed(cudaError_t err, const char* expr, const char* file, int line) {
  LOG(FATAL) << CudaErrorMessage(err, expr, absl::StrCat(file, ":", line));
  std::abort();  // LOG(FATAL) does not return; keeps [[noreturn]] honest
}

void AbortOnError(const absl::Status& status) {
  LOG(FATAL) << status.message();
  std::abort();
}

absl::StatusOr<void*> DeviceMalloc(size_t bytes, std::string_view what) {
  void* ptr = nullptr;
  if (bytes == 0) return ptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    const std::string detail = absl::StrFormat("%s, %d bytes = %.3f GiB", std::string(what), bytes,
                                               bytes / double(1 << 30));
    if (err == cudaErrorMemoryAllocation) {
      return absl::ResourceExhaustedError(CudaErrorMessage(err, "cudaMalloc", detail));
    }
    return absl::UnavailableError(CudaErrorMessage(err, "cudaMalloc", detail));
  }
  return ptr;
}

void DeviceFree(void* ptr) {
  if (ptr == nullptr) return;
  // At process exit the driver may already be gone; a failed free then is harmless.
  if (cudaFree(ptr) != cudaSuccess) cudaGetLastError();
}

namespace {
absl::Status Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const char* call) {
  if (bytes == 0) return absl::OkStatus();
  const cudaError_t err = cudaMemcpy(dst, src, bytes, kind);
  if (err == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return absl::InternalError(
      CudaErrorMessage(err, call, absl::StrFormat("%d bytes, dst=%p src=%p", bytes, dst, src)));
}
}  // namespace

absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, cudaMemcpyHostToDevice, "cudaMemcpy host->device");
}
absl::Status CopyToHost(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, cudaMemcpyDeviceToHost, "cudaMemcpy device->host");
}
absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, cudaMemcpyDeviceToDevice, "cudaMemcpy device->device");
}

absl::Status DeviceZero(void* dst, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  const cudaError_t err = cudaMemset(dst, 0, bytes);
  if (err == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
  return absl::InternalError(
      CudaErrorMessage(err, "cudaMemset", absl::StrFormat("%d bytes at %p", bytes, dst)));
}

void* ScratchAlloc(size_t bytes, const char* what) {
  void* ptr = nullptr;
  if (bytes == 0) return ptr;
  const cudaError_t err = cudaMallocAsync(&ptr, bytes, /*stream=*/0);
  if (err != cudaSuccess) {
    LOG(FATAL) << CudaErrorMessage(err, "cudaMallocAsync",
                                   absl::StrFormat("scratch for %s, %d bytes = %.3f GiB", what,
                                                   bytes, bytes / double(1 << 30)));
  }
  return ptr;
}

void ScratchFree(void* ptr) {
  if (ptr != nullptr) CUDA_CHECK(cudaFreeAsync(ptr, /*stream=*/0));
}

}  // namespace ut::cuda
