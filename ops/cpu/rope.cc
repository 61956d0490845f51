// Rotary position embedding (Hugging Face LLaMA rotate_half) on the CPU.
// cos/sin are computed in float the way Hugging Face does (inv_freq =
// 1 / theta^(2i/D) in float, angle = float(pos) * inv_freq), once per
// (position, frequency): a per-thread table for positions 0..max is kept
// between calls (keyed by theta and D) and shared by all rows and heads.
#include "ops/rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "glog/logging.h"

namespace ut::cpu {
namespace {

constexpr int kMaxHalf = 512;                     // D <= 1024
constexpr int64_t kMaxTableFloats = int64_t{1} << 22;  // per cos/sin table (16 MB)

// cos/sin of angle = float(p) * inv_freq[i] for p in [0, size), i < half.
class RopeTable {
 public:
  // Switches to (theta, D), dropping the table if either differs.
  void Prepare(float theta, int D) {
    if (theta == theta_ && D == D_) return;
    const int half = D / 2;
    theta_ = theta;
    D_ = D;
    size_ = 0;
    inv_freq_.resize(half);
    for (int i = 0; i < half; ++i) {
      inv_freq_[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(D));
    }
  }
  int32_t size() const { return size_; }
  // Makes the table cover positions [0, max_pos].
  void Extend(int32_t max_pos) {
    const int half = D_ / 2;
    if (max_pos < size_) return;
    const int32_t old = size_;
    size_ = max_pos + 1;
    cos_.resize(static_cast<size_t>(size_) * half);
    sin_.resize(cos_.size());
    for (int32_t p = old; p < size_; ++p) {
      Angles(p, &cos_[int64_t{p} * half], &sin_[int64_t{p} * half]);
    }
  }
  // cos/sin [half] of position p (0 <= p < size).
  const float* cos(int32_t p) const { return cos_.data() + int64_t{p} * (D_ / 2); }
  const float* sin(int32_t p) const { return sin_.data() + int64_t{p} * (D_ / 2); }
  // Computes the row of position p into c, s [half] (any p).
  void Angles(int32_t p, float* c, float* s) const {
    const float fp = static_cast<float>(p);
    for (int i = 0; i < D_ / 2; ++i) {
      const float angle = fp * inv_freq_[i];
      c[i] = std::cos(angle);
      s[i] = std::sin(angle);
    }
  }

 private:
  float theta_ = 0.0f;
  int D_ = 0;
  int32_t size_ = 0;
  std::vector<float> inv_freq_, cos_, sin_;
};

// x [N,H,D] (rows ld apart) -> out rotated by +angle (sign = 1) or -angle (sign = -1):
//   out1 = x1 cos - sign x2 sin, out2 = x2 cos + sign x1 sin.
void Rotate(float* out, const float* x, int64_t ld, const int32_t* pos, int N, int H, int D,
            float theta, float sign) {
  CHECK(D % 2 == 0 && D / 2 <= kMaxHalf) << "rope: head dim " << D << " must be even, <= 1024";
  const int half = D / 2;
  int32_t max_pos = 0;
  bool tabulated = true;
  for (int n = 0; n < N; ++n) {
    max_pos = std::max(max_pos, pos[n]);
    tabulated = tabulated && pos[n] >= 0;
  }
  thread_local RopeTable table;
  table.Prepare(theta, D);
  // Tabulate unless the table would be huge or cost more than twice the
  // per-row work (a few rows at large positions).
  const int64_t new_rows = int64_t{max_pos} + 1 - table.size();
  tabulated = tabulated && (int64_t{max_pos} + 1) * half <= kMaxTableFloats &&
              new_rows <= 2 * int64_t{N} + 64;
  if (tabulated) table.Extend(max_pos);
  const RopeTable& tab = table;
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(N) * H * D >= (1 << 15))
  for (int n = 0; n < N; ++n) {
    float cos_buf[kMaxHalf];
    float sin_buf[kMaxHalf];
    const float* cos_a = cos_buf;
    const float* sin_a = sin_buf;
    if (tabulated) {
      cos_a = tab.cos(pos[n]);
      sin_a = tab.sin(pos[n]);
    } else {
      tab.Angles(pos[n], cos_buf, sin_buf);
    }
    for (int h = 0; h < H; ++h) {
      const float* x1 = x + n * ld + int64_t{h} * D;
      const float* x2 = x1 + half;
      float* o1 = out + n * ld + int64_t{h} * D;
      float* o2 = o1 + half;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float a = x1[i];  // read both halves before writing (out may alias x)
        const float b = x2[i];
        const float s = sign * sin_a[i];
        o1[i] = a * cos_a[i] - b * s;
        o2[i] = b * cos_a[i] + a * s;
      }
    }
  }
}

}  // namespace

// x [N,H,D], pos [N] -> out [N,H,D] = x * cos + rotate_half(x) * sin.
void rope_forward(float* out, const float* x, const int32_t* pos, int N, int H, int D,
                  float theta) {
  Rotate(out, x, int64_t{H} * D, pos, N, H, D, theta, 1.0f);
}

// dout [N,H,D] -> dx [N,H,D]: the transpose of a rotation is the rotation by -angle.
void rope_backward(float* dx, const float* dout, const int32_t* pos, int N, int H, int D,
                   float theta) {
  Rotate(dx, dout, int64_t{H} * D, pos, N, H, D, theta, -1.0f);
}

void rope_forward_strided(float* out, const float* x, int64_t ld, const int32_t* pos, int N,
                          int H, int D, float theta) {
  CHECK_GE(ld, int64_t{H} * D) << "rope: row stride shorter than a row";
  Rotate(out, x, ld, pos, N, H, D, theta, 1.0f);
}

void rope_backward_strided(float* dx, const float* dout, int64_t ld, const int32_t* pos, int N,
                           int H, int D, float theta) {
  CHECK_GE(ld, int64_t{H} * D) << "rope: row stride shorter than a row";
  Rotate(dx, dout, ld, pos, N, H, D, theta, -1.0f);
}

}  // namespace ut::cpu
