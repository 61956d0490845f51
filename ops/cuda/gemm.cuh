// GEMM and linear layers on the GPU (cuBLAS), same contract as ops/gemm.h with
// DEVICE pointers; row-major throughout; default stream. FP32 math (no TF32).
#pragma once

#include <cstdint>

namespace ut::cuda {

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, row-major with leading
// dimensions lda/ldb/ldc. op(X) = X^T when trans_X.
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);

// `batch` independent GEMMs; matrix i starts at A + i*stride_a (etc.).
void gemm_strided_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float* A, int lda, int64_t stride_a, const float* B, int ldb,
                          int64_t stride_b, float beta, float* C, int ldc, int64_t stride_c,
                          int batch);

// inp [N,C], weight [OC,C] (PyTorch layout), bias [OC] or nullptr -> out [N,OC].
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC);

// dout [N,OC] -> dinp [N,C] (written, or added when accumulate_dinp; skipped if nullptr),
// dweight [OC,C] += dout^T @ inp (skipped if nullptr), dbias [OC] += column sums of dout
// (skipped if nullptr; deterministic, no atomics).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC, bool accumulate_dinp = false);

// The pieces of linear_forward/backward, exposed for other layers.
// out [N,C] += bias [C] broadcast over rows.
void add_bias(float* out, const float* bias, int N, int C);
// dbias [C] += column sums of x [N,C] (deterministic).
void column_sum_accumulate(float* dbias, const float* x, int N, int C);

}  // namespace ut::cuda
