// Internal helpers of //ops:sdtw: branch-free float exp/log for the soft-DTW
// and GAK loops (Cephes polynomials, about 1 ulp, no branches or libm calls,
// so `#pragma omp simd` loops vectorise them) and an uninitialised buffer for
// the large per-pair arrays.
#pragma once

#include <sys/mman.h>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "glog/logging.h"

// The sweep kernels (ops/cpu/sdtw.cc, sdtw_ratio.cc, sdtw_lanes.cc) are also
// compiled for x86-64-v4 (AVX-512) and picked at load time where the CPU has
// it (about 1.3x faster on the forward); the lanes do the same IEEE
// operations either way. UT_SDTW_NO_CLONES (set by //ops:sdtw_baseline_isa)
// builds them for the target architecture only, so that the tests can run
// code that this machine would otherwise never pick.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(UT_SDTW_NO_CLONES)
#define UT_SDTW_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define UT_SDTW_CLONES
#endif

namespace ut::cpu::internal {

// exp(x) for x in [-87, 0] (Cephes expf polynomial, ~1 ulp); branch-free so
// that the diagonal loop vectorises. The polynomial is evaluated in Estrin's
// order (depth 3 instead of 5): the soft-DTW sweep is bound by the latency of
// these chains.
inline float ExpNonPositive(float x) {
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  const float r2 = r * r;
  const float a = 1.9875691500e-4f * r + 1.3981999507e-3f;
  const float b = 8.3334519073e-3f * r + 4.1665795894e-2f;
  const float c = 1.6666665459e-1f * r + 5.0000001201e-1f;
  const float p = (a * r2 + b) * r2 + c;
  const float y = p * r2 + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  return y * std::bit_cast<float>(bits);
}

// log(s) for a normal s > 0 (Cephes logf polynomial, ~1 ulp); branch-free.
inline float LogPositive(float s) {
  const int32_t bits = std::bit_cast<int32_t>(s);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  float x = std::bit_cast<float>((bits & 0x807fffff) | 0x3f000000);  // [0.5, 1)
  const bool small = x < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  x = small ? x + x - 1.0f : x - 1.0f;
  const float z = x * x;
  // sum_k c_k x^k, k = 0..8, in Estrin's order (depth 4 instead of 9).
  const float q0 = -2.4999993993e-1f * x + 3.3333331174e-1f;
  const float q1 = -1.6668057665e-1f * x + 2.0000714765e-1f;
  const float q2 = -1.2420140846e-1f * x + 1.4249322787e-1f;
  const float q3 = -1.1514610310e-1f * x + 1.1676998740e-1f;
  const float z2 = z * z;
  float y = (q3 * z + q2) * z2 + (q1 * z + q0) + 7.0376836292e-2f * (z2 * z2);
  y = y * x * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return x + y + 0.693359375f * e;
}

// The log-domain softmin of one cell from the gaps of its three neighbours
// (diag, up, left) to their minimum (the minimum's gap is exactly 0; an
// unreachable neighbour's is +inf, all three NaN when none is reachable):
// with g1, g2 the gaps of the two neighbours other than the (first) minimum,
// softmin = min - log(1 + e1 + e2), e = exp(-g) (two exps, the minimum's is 1),
// and each neighbour's weight e / (1 + e1 + e2). A gap of 87 or more, +inf or
// NaN gives e = 0; no reachable neighbour gives weights 0. Shared by the
// diagonal sweep and the lane sweep, which must do the same operations.
struct Softmin {
  float log_sum, w_diag, w_up, w_left;
};
template <bool kWeights>
[[gnu::always_inline]] inline Softmin SoftminOfGaps(float gd, float gu, float gl) {
  const bool d_min = gd == 0.f, u_min = gu == 0.f;
  const bool reachable = d_min | u_min | (gl == 0.f);
  const float g1 = d_min ? gu : gd;
  const float g2 = (d_min | u_min) ? gl : gu;
  const float x1 = ExpNonPositive(-std::min(g1, 87.f));
  const float x2 = ExpNonPositive(-std::min(g2, 87.f));
  const float e1 = g1 < 87.f ? x1 : 0.f;
  const float e2 = g2 < 87.f ? x2 : 0.f;
  const float sum = 1.f + e1 + e2;  // in [1, 3]
  Softmin out{LogPositive(sum), 0.f, 0.f, 0.f};
  if (kWeights) {
    // Each neighbour's e: 1 for the minimum, else e1 or e2 in the order diag,
    // up, left. Selects of values, not of stores: GCC turns nested selects in
    // a store into masked stores behind data-dependent branches.
    const bool du_min = d_min | u_min;
    const float e_diag = d_min ? 1.f : e1;
    const float e_up = d_min ? e1 : (u_min ? 1.f : e2);
    const float e_left = du_min ? e2 : 1.f;
    const float inv = reachable ? 1.f / sum : 0.f;
    out.w_diag = e_diag * inv;
    out.w_up = e_up * inv;
    out.w_left = e_left * inv;
  }
  return out;
}

// exp(x) in double for |x| <= 708: Cody-Waite reduction to |r| <= ln2/2, then
// a degree-8 polynomial fitted here for relative error (max 7.8e-13 on that
// interval; the fit: tests/golden/sdtw/fit_exp_poly.py); branch-free, vectorises.
[[gnu::always_inline]] inline double ExpDouble(double x) {
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52: rounds to an integer
  const double shifted = x * 1.4426950408889634 + kShift;
  const double k = shifted - kShift;
  const double r = (x - k * 0.693147180369123816490) - k * 1.90821492927058770002e-10;
  double p = 2.4727201577799495e-05;
  p = p * r + 0.0001991542208410231;
  p = p * r + 0.0013889178681736041;
  p = p * r + 0.008333267031849837;
  p = p * r + 0.04166666421975363;
  p = p * r + 0.1666666688544748;
  p = p * r + 0.5000000000618295;
  p = p * r + 0.9999999999806233;
  p = p * r + 0.9999999999997631;
  const uint64_t bits = (std::bit_cast<uint64_t>(shifted) + 1023) << 52;  // 2^k
  return p * std::bit_cast<double>(bits);
}

#if defined(__AVX2__)
// In-register 8 x 8 transpose: r[k] element l becomes r[l] element k.
[[gnu::always_inline]] inline void Transpose8(__m256 (&r)[8]) {
  __m256 t[8];
  for (int l = 0; l < 8; l += 2) {
    t[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
    t[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (int q = 0; q < 8; q += 4) {
    r[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);          // a0 b0 c0 d0 | a4 b4 c4 d4
    r[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);      // a1 b1 c1 d1 | a5 ..
    r[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);  // a2 .. | a6 ..
    r[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);  // a3 .. | a7 ..
  }
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
    t[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
  }
  for (int k = 0; k < 8; ++k) r[k] = t[k];
}
#endif

// A float array that grows without initialising its contents (a resized
// std::vector would zero hundreds of MB per long pair). Blocks of 32 MiB and
// more (beyond what malloc recycles) are 2 MiB aligned and marked for
// transparent huge pages, which cuts page faults; smaller ones come from malloc,
// which reuses freed memory without the kernel clearing it again.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  FloatBuffer(FloatBuffer&& o) noexcept { *this = std::move(o); }
  FloatBuffer& operator=(FloatBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(capacity_, o.capacity_);
    return *this;
  }
  ~FloatBuffer() { std::free(data_); }

  // Makes room for n floats; the contents are unspecified afterwards.
  void Reserve(int64_t n) {
    if (n <= capacity_) return;
    std::free(data_);
    constexpr size_t kHuge = size_t{2} << 20, kHugeFrom = size_t{32} << 20;
    const size_t bytes = sizeof(float) * static_cast<size_t>(n);
    const size_t align = bytes >= kHugeFrom ? kHuge : 64;
    const size_t rounded = (bytes + align - 1) / align * align;
    data_ = static_cast<float*>(std::aligned_alloc(align, rounded));
    CHECK(data_ != nullptr) << "out of memory allocating " << rounded << " bytes";
    if (align == kHuge) madvise(data_, rounded, MADV_HUGEPAGE);  // a hint; errors are fine
    capacity_ = n;
  }
  float* data() { return data_; }
  const float* data() const { return data_; }
  int64_t capacity() const { return capacity_; }
  // Frees the memory when more than max_floats are held.
  void Trim(int64_t max_floats) {
    if (capacity_ <= max_floats) return;
    std::free(data_);
    data_ = nullptr;
    capacity_ = 0;
  }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};

// Per-thread scratch is kept between calls (each step of training calls these
// ops with similar sizes, and fresh allocations cost page faults: 4 pairs of
// 4096 x 4096 took 29% longer when their 200 MB of softmin weights were
// faulted in again on every call), but only up to this many floats per
// buffer (pairs up to about 5700 x 5700), so one very long pair does not pin
// its memory.
inline constexpr int64_t kRetainFloats = int64_t{32} << 20;  // 128 MiB

}  // namespace ut::cpu::internal
