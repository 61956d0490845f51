// GEMM and linear layers on the CPU. The products go to OpenBLAS cblas_sgemm,
// but OpenBLAS is told to stay single-threaded and a large GEMM is split into
// row (or column) slices across the OpenMP team instead: only one thread pool
// ever runs, so OpenBLAS's spinning workers never compete with OpenMP's on a
// small machine, and gemm() may also be called inside a parallel region (it
// then runs on the calling thread). Every C element is computed by the same
// single-threaded kernel whatever the split (no slice is small enough for
// OpenBLAS's small-matrix kernel, see kMinSliceMacs), so results are
// deterministic and do not depend on the thread count.
//
// The slices are handed out dynamically: one large slice per thread (2/3 of
// its share), then one small slice per thread (the rest) to whichever thread
// is free first. On an idle machine every thread ends with its equal share; on
// a shared one a thread whose core is busy with another process takes fewer
// rows instead of keeping the others waiting at the barrier.
#include "ops/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "glog/logging.h"
#include "ops/cpu/vec_math.h"

namespace ut::cpu {
namespace {

void UseSingleThreadedBlas() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// Below this many multiply-adds a GEMM runs on one thread.
constexpr int64_t kMinParallelMacs = int64_t{1} << 21;
// Every slice of a split GEMM has at least this many: OpenBLAS sends products
// of <= 1e6 multiply-adds to a different ("small matrix") kernel whose sums
// round differently, and a slice must round like the whole product.
constexpr int64_t kMinSliceMacs = int64_t{1} << 20;

// Boundaries [b[i], b[i+1]) of the slices of a side of `len` rows (or
// columns), each worth macs_per_row multiply-adds per row: whole 16-row units,
// `threads` large slices (2/3 of a thread's share) then `threads` small ones
// (the rest), fewer and larger slices where that would make one too small.
std::vector<int> SliceBounds(int len, int threads, int64_t macs_per_row) {
  const int units = (len + 15) / 16;
  const int64_t min_rows = (kMinSliceMacs + macs_per_row - 1) / macs_per_row;
  const int min_units = static_cast<int>((min_rows + 15) / 16);
  std::vector<int> sizes;  // in units
  const int big = units / threads * 2 / 3;
  const int small = big > 0 ? (units - big * threads + threads - 1) / threads : 0;
  if (big >= min_units && small >= min_units) {
    sizes.assign(threads, big);
    sizes.insert(sizes.end(), threads, small);
  } else {
    const int n = std::max(1, std::min(threads, units / min_units));
    sizes.assign(n, (units + n - 1) / n);
  }
  std::vector<int> bounds = {0};
  for (int s : sizes) {
    if (bounds.back() >= units) break;
    bounds.push_back(std::min(units, bounds.back() + s));
  }
  for (int& b : bounds) b = std::min(len, b * 16);
  bounds.back() = len;
  // A short last slice (len need not be whole units) joins the one before it.
  if (bounds.size() > 2 && bounds[bounds.size() - 1] - bounds[bounds.size() - 2] < min_rows) {
    bounds.erase(bounds.end() - 2);
  }
  return bounds;
}

}  // namespace

// C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C (row-major).
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  CHECK_GE(M, 0);
  CHECK_GE(N, 0);
  CHECK_GE(K, 0);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // Empty product: BLAS would reject lda = 0; C = beta * C (beta 0 clears NaNs too).
    for (int i = 0; i < M; ++i) {
      float* c = C + static_cast<int64_t>(i) * ldc;
      for (int j = 0; j < N; ++j) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    }
    return;
  }
  UseSingleThreadedBlas();
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads == 1 || static_cast<int64_t>(M) * N * K < kMinParallelMacs) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the longer side of C into slices (SliceBounds), handed out dynamically.
  const bool split_rows = M >= N;
  const int len = split_rows ? M : N;
  const std::vector<int> bounds =
      SliceBounds(len, threads, static_cast<int64_t>(split_rows ? N : M) * K);
  const int slices = static_cast<int>(bounds.size()) - 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::min(threads, slices))
  for (int slice = 0; slice < slices; ++slice) {
    const int begin = bounds[slice];
    const int end = bounds[slice + 1];
    if (begin < end && split_rows) {
      // Rows [begin, end) of C come from rows [begin, end) of op(A).
      const float* a = trans_a ? A + begin : A + static_cast<int64_t>(begin) * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, end - begin, N, K, alpha, a, lda, B, ldb, beta,
                  C + static_cast<int64_t>(begin) * ldc, ldc);
    } else if (begin < end) {
      // Columns [begin, end) of C come from columns [begin, end) of op(B).
      const float* b = trans_b ? B + static_cast<int64_t>(begin) * ldb : B + begin;
      cblas_sgemm(CblasRowMajor, ta, tb, M, end - begin, K, alpha, A, lda, b, ldb, beta,
                  C + begin, ldc);
    }
  }
}

// `batch` GEMMs; matrix i of A/B/C starts at i * stride_{a,b,c}.
void gemm_strided_batched(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float* A, int lda, int64_t stride_a, const float* B, int ldb,
                          int64_t stride_b, float beta, float* C, int ldc, int64_t stride_c,
                          int batch) {
  // At least one matrix per thread: whole GEMMs in parallel (each runs
  // single-threaded inside the region). Fewer: gemm() splits each one.
  const bool parallel = batch > 1 && batch >= omp_get_max_threads() &&
                        static_cast<int64_t>(M) * N * K * batch >= kMinParallelMacs;
#pragma omp parallel for schedule(static) if (parallel)
  for (int i = 0; i < batch; ++i) {
    gemm(trans_a, trans_b, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
         C + i * stride_c, ldc);
  }
}

// inp [N,C], weight [OC,C], bias [OC] or nullptr -> out [N,OC] = inp @ weight^T + bias.
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int C, int OC) {
  float beta = 0.0f;
  if (bias != nullptr) {
    // out rows start as the bias, then the GEMM adds onto them (beta = 1).
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * OC >= (1 << 15))
    for (int n = 0; n < N; ++n) {
      std::memcpy(out + static_cast<int64_t>(n) * OC, bias, sizeof(float) * OC);
    }
    beta = 1.0f;
  }
  gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

// dout [N,OC] -> dinp [N,C] = dout @ weight (written or added; skipped if nullptr),
// dweight [OC,C] += dout^T @ inp, dbias [OC] += column sums of dout (skipped if nullptr).
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int C, int OC,
                     bool accumulate_dinp) {
  if (dinp != nullptr) {
    gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, accumulate_dinp ? 1.0f : 0.0f, dinp,
         C);
  }
  if (dweight != nullptr) {
    gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  }
  if (dbias != nullptr) {
    // Each column block is summed by one thread over rows in order: deterministic.
    internal::ParallelRanges(OC, 16, N, [&](int64_t begin, int64_t end) {
      constexpr int64_t kBlock = 256;
      float acc[kBlock];
      for (int64_t c0 = begin; c0 < end; c0 += kBlock) {
        const int64_t width = std::min(kBlock, end - c0);
        for (int64_t c = 0; c < width; ++c) acc[c] = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
          const float* row = dout + n * OC + c0;
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) acc[c] += row[c];
        }
        for (int64_t c = 0; c < width; ++c) dbias[c0 + c] += acc[c];
      }
    });
  }
}

}  // namespace ut::cpu
