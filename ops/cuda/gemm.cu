// GEMM and linear layers on the GPU: cuBLAS SGEMM plus small bias kernels.
//
// Row-major on column-major cuBLAS: a row-major matrix X [r,c] with leading
// dimension ld has the same bytes as the column-major matrix X^T [c,r] with the
// same ld. So the row-major product C = op(A) @ op(B) is, read column-major,
// C^T = op(B)^T @ op(A)^T: we call cuBLAS with the operands swapped (B first,
// then A), the dimensions swapped (N, M, K) and the same transpose flags and
// leading dimensions. No data is moved.
#include "ops/cuda/gemm.cuh"

#include <cublas_v2.h>

#include "glog/logging.h"
#include "ops/cuda/common.cuh"

namespace ut::cuda {
namespace {

#define CUBLAS_CHECK(expr)                                                             \
  do {                                                                                 \
    const cublasStatus_t _ut_status = (expr);                                          \
    LOG_IF(FATAL, _ut_status != CUBLAS_STATUS_SUCCESS)                                 \
        << #expr << " failed: " << cublasGetStatusName(_ut_status) << ": "             \
        << cublasGetStatusString(_ut_status)                                           \
        << ". Check the GEMM sizes and leading dimensions (row-major: lda >= columns " \
           "of A as stored), and that the pointers are device pointers.";              \
  } while (0)

// One cuBLAS handle per host thread, created on first use and kept for the
// life of the process (destroying it at exit can race the driver's teardown).
// Plain FP32 math: no TF32, so results agree with the CPU to ~1e-6.
cublasHandle_t Handle() {
  thread_local cublasHandle_t handle = [] {
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    return h;
  }();
  return handle;
}

cublasOperation_t Op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// C [M,N] (leading dim ldc) = beta * C; beta == 0 writes zeros (clears NaNs).
// For K == 0, where cuBLAS would reject lda/ldb = 0.
__global__ void ScaleMatrixKernel(float* C, int M, int N, int ldc, float beta) {
  const int64_t total = static_cast<int64_t>(M) * N;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    float* c = C + (i / N) * ldc + i % N;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

// out [N,C] += bias [C] broadcast over rows.
__global__ void AddBiasKernel(float* out, const float* bias, int N, int C) {
  const int64_t total = static_cast<int64_t>(N) * C;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] += bias[i % C];
  }
}

// dbias [C] += sum over rows of x [N,C]; grid ColumnSumGrid(C), block ColumnSumBlock().
__global__ void ColumnSumKernel(float* dbias, const float* x, int N, int C) {
  ColumnSum(dbias, N, C, [=](int n, int c) { return x[static_cast<int64_t>(n) * C + c]; });
}

}  // namespace

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C (row-major).
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  CHECK(M >= 0 && N >= 0 && K >= 0) << "gemm: negative size M=" << M << " N=" << N << " K=" << K;
  if (M == 0 || N == 0) return;
  if (K == 0) {
    ScaleMatrixKernel<<<ElementwiseBlocks(int64_t{M} * N), 256>>>(C, M, N, ldc, beta);
    CUDA_CHECK_LAUNCH();
    return;
  }
  CUBLAS_CHECK(cublasSgemm(Handle(), Op(trans_b), Op(trans_a), N, M, K, &alpha, B, ldb, A, lda,
                           &beta, C, ldc));
}

// batch x { C_i[M,N] = alpha * op(A_i) @ op(B_i) + beta * C_i }, X_i = X + i * stride_x.
void gemm_strided_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float* A, int lda, int64_t stride_a, const float* B, int ldb,
                          int64_t stride_b, float beta, float* C, int ldc, int64_t stride_c,
                          int batch) {
  CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 0) << "gemm_strided_batched: negative size M=" << M
                                                  << " N=" << N << " K=" << K << " batch=" << batch;
  if (M == 0 || N == 0 || batch == 0) return;
  if (K == 0) {
    for (int i = 0; i < batch; ++i) {
      ScaleMatrixKernel<<<ElementwiseBlocks(int64_t{M} * N), 256>>>(C + i * stride_c, M, N, ldc,
                                                                    beta);
      CUDA_CHECK_LAUNCH();
    }
    return;
  }
  CUBLAS_CHECK(cublasSgemmStridedBatched(Handle(), Op(trans_b), Op(trans_a), N, M, K, &alpha, B,
                                         ldb, stride_b, A, lda, stride_a, &beta, C, ldc, stride_c,
                                         batch));
}

// out [N,C] += bias [C].
void add_bias(float* out, const float* bias, int N, int C) {
  if (N == 0 || C == 0) return;
  AddBiasKernel<<<ElementwiseBlocks(int64_t{N} * C), 256>>>(out, bias, N, C);
  CUDA_CHECK_LAUNCH();
}

// dbias [C] += column sums of x [N,C].
void column_sum_accumulate(float* dbias, const float* x, int N, int C) {
  if (C == 0) return;
  ColumnSumKernel<<<ColumnSumGrid(C), ColumnSumBlock()>>>(dbias, x, N, C);
  CUDA_CHECK_LAUNCH();
}

// inp [N,C] @ weight[OC,C]^T + bias [OC] -> out [N,OC].
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC) {
  gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
  if (bias != nullptr) add_bias(out, bias, N, OC);
}

// dout [N,OC] -> dinp [N,C] = dout @ weight (= or +=), dweight [OC,C] += dout^T @ inp,
// dbias [OC] += column sums of dout.
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC, bool accumulate_dinp) {
  if (dinp != nullptr) {
    gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, accumulate_dinp ? 1.0f : 0.0f, dinp, C);
  }
  if (dweight != nullptr) gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (dbias != nullptr) column_sum_accumulate(dbias, dout, N, OC);
}

}  // namespace ut::cuda
