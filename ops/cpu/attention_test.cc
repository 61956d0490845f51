// Tests for ops/attention.h: forward and backward against a naive double
// softmax(QK^T/sqrt(D))V with causal / GQA / lens masks over several key
// blocks, for the templated head dims and the generic one; backward against
// central differences; determinism (two runs, and 1 vs 2 threads, bit-identical).
#include "ops/attention.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::BitIdentical;
using ::ut::testing::CheckGradient;
using ::ut::testing::Dot;
using ::ut::testing::RandomVector;

struct Inputs {
  std::vector<float> q, k, v, dout;
  std::vector<int32_t> lens;
};

Inputs MakeInputs(const AttentionShape& s, std::vector<int32_t> lens, uint64_t seed) {
  Rng rng(seed);
  Inputs in;
  in.q = RandomVector(rng, int64_t{s.B} * s.T * s.H * s.D);
  in.k = RandomVector(rng, int64_t{s.B} * s.T * s.Hkv * s.D);
  in.v = RandomVector(rng, int64_t{s.B} * s.T * s.Hkv * s.D);
  in.dout = RandomVector(rng, int64_t{s.B} * s.T * s.H * s.D);
  in.lens = std::move(lens);
  return in;
}

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive attention in double: P = softmax(mask(Q K^T / sqrt(D))), out = P V, and
// its backward dP = dout V^T, dS = P * (dP - rowsum(dP * P)), dQ = dS K / sqrt(D),
// dK = dS^T Q / sqrt(D), dV = P^T dout (summed over the heads of a group).
Reference NaiveAttention(const Inputs& in, const AttentionShape& s) {
  const int B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, D = s.D, group = H / Hkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Reference r;
  r.out.assign(in.q.size(), 0.0);
  r.dq.assign(in.q.size(), 0.0);
  r.dk.assign(in.k.size(), 0.0);
  r.dv.assign(in.v.size(), 0.0);
  r.lse.assign(int64_t{B} * H * T, 0.0);
  auto qi = [&](int b, int t, int h, int d) { return ((int64_t{b} * T + t) * H + h) * D + d; };
  auto ki = [&](int b, int t, int h, int d) { return ((int64_t{b} * T + t) * Hkv + h) * D + d; };
  std::vector<double> p(T), dp(T);
  for (int b = 0; b < B; ++b) {
    const int len = in.lens.empty() ? T : in.lens[b];
    for (int h = 0; h < H; ++h) {
      const int kh = h / group;
      for (int i = 0; i < len; ++i) {
        const int nkeys = s.causal ? i + 1 : len;
        double mx = -1e300;
        for (int j = 0; j < nkeys; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double{in.q[qi(b, i, h, d)]} * in.k[ki(b, j, kh, d)];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < nkeys; ++j) sum += std::exp(p[j] - mx);
        r.lse[(int64_t{b} * H + h) * T + i] = mx + std::log(sum);
        for (int j = 0; j < nkeys; ++j) p[j] = std::exp(p[j] - mx) / sum;
        double rowdot = 0;
        for (int j = 0; j < nkeys; ++j) {
          dp[j] = 0;
          for (int d = 0; d < D; ++d) {
            r.out[qi(b, i, h, d)] += p[j] * in.v[ki(b, j, kh, d)];
            dp[j] += double{in.dout[qi(b, i, h, d)]} * in.v[ki(b, j, kh, d)];
            r.dv[ki(b, j, kh, d)] += p[j] * in.dout[qi(b, i, h, d)];
          }
          rowdot += p[j] * dp[j];
        }
        for (int j = 0; j < nkeys; ++j) {
          const double ds = p[j] * (dp[j] - rowdot) * scale;
          for (int d = 0; d < D; ++d) {
            r.dq[qi(b, i, h, d)] += ds * in.k[ki(b, j, kh, d)];
            r.dk[ki(b, j, kh, d)] += ds * in.q[qi(b, i, h, d)];
          }
        }
      }
    }
  }
  return r;
}

struct Outputs {
  std::vector<float> out, lse, dq, dk, dv;
};

// Runs forward and backward; outputs start as NaN (everything is written).
Outputs RunAttention(const Inputs& in, const AttentionShape& s) {
  Outputs o;
  const float nan = std::nanf("");
  o.out.assign(in.q.size(), nan);
  o.lse.assign(int64_t{s.B} * s.H * s.T, nan);
  o.dq.assign(in.q.size(), nan);
  o.dk.assign(in.k.size(), nan);
  o.dv.assign(in.v.size(), nan);
  const int32_t* lens = in.lens.empty() ? nullptr : in.lens.data();
  attention_forward(o.out.data(), o.lse.data(), in.q.data(), in.k.data(), in.v.data(), lens, s);
  attention_backward(o.dq.data(), o.dk.data(), o.dv.data(), in.dout.data(), in.q.data(),
                     in.k.data(), in.v.data(), o.out.data(), o.lse.data(), lens, s);
  return o;
}

struct Case {
  AttentionShape shape;
  std::vector<int32_t> lens;  // empty = nullptr
};

class AttentionVsNaiveTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionVsNaiveTest, ForwardAndBackwardMatchDoubleReference) {
  const Case& c = GetParam();
  const Inputs in = MakeInputs(c.shape, c.lens, 70 + c.shape.D + c.shape.T);
  const Outputs got = RunAttention(in, c.shape);
  const Reference want = NaiveAttention(in, c.shape);
  EXPECT_TRUE(AllClose(got.out, want.out, 1e-4, 1e-5));
  EXPECT_TRUE(AllClose(got.lse, want.lse, 1e-5, 1e-5));
  EXPECT_TRUE(AllClose(got.dq, want.dq, 1e-4, 1e-4));
  EXPECT_TRUE(AllClose(got.dk, want.dk, 1e-4, 1e-4));
  EXPECT_TRUE(AllClose(got.dv, want.dv, 1e-4, 1e-4));
}

// T > 64 so rows span several key blocks (online softmax rescaling), partial
// last blocks, lens that cut blocks, a zero-length row, GQA groups of 1, 2, 4.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionVsNaiveTest,
    ::testing::Values(Case{{2, 150, 4, 2, 32, true}, {150, 93}},
                      Case{{2, 150, 4, 2, 32, false}, {129, 64}},
                      Case{{1, 130, 4, 1, 64, true}, {}},
                      Case{{2, 70, 2, 2, 64, false}, {}},
                      Case{{1, 80, 2, 1, 128, true}, {77}},
                      Case{{3, 67, 4, 4, 20, true}, {67, 0, 5}},
                      Case{{2, 200, 2, 1, 12, false}, {200, 1}}));

TEST(AttentionTest, BackwardMatchesFiniteDifferences) {
  // Generic head dim (16) and a templated one (32), both over two key blocks.
  for (int D : {16, 32}) {
    const AttentionShape s{1, 70, 2, 1, D, true};
    Inputs in = MakeInputs(s, {66}, 80 + D);
    std::vector<float> out(in.q.size()), lse(s.B * s.H * s.T);
    auto loss = [&] {
      attention_forward(out.data(), lse.data(), in.q.data(), in.k.data(), in.v.data(),
                        in.lens.data(), s);
      return Dot(out, in.dout);
    };
    const Outputs o = RunAttention(in, s);
    // Sample entries (every 5th) to keep the test fast.
    const ::ut::testing::GradCheckOptions opt{.step = 1e-2, .rtol = 2e-2, .atol = 2e-3,
                                              .stride = 5};
    EXPECT_TRUE(CheckGradient("dq", loss, in.q.data(), o.dq.data(), in.q.size(), opt)) << D;
    EXPECT_TRUE(CheckGradient("dk", loss, in.k.data(), o.dk.data(), in.k.size(), opt)) << D;
    EXPECT_TRUE(CheckGradient("dv", loss, in.v.data(), o.dv.data(), in.v.size(), opt)) << D;
    // Padded rows (i >= 66): zero output, zero lse and zero gradients.
    for (int i = 66; i < s.T; ++i) {
      for (int h = 0; h < s.H; ++h) {
        EXPECT_EQ(o.lse[h * s.T + i], 0.0f);
        for (int d = 0; d < D; ++d) {
          EXPECT_EQ(o.out[(i * s.H + h) * D + d], 0.0f);
          EXPECT_EQ(o.dq[(i * s.H + h) * D + d], 0.0f);
        }
      }
      for (int d = 0; d < D; ++d) {
        EXPECT_EQ(o.dk[i * D + d], 0.0f);
        EXPECT_EQ(o.dv[i * D + d], 0.0f);
      }
    }
  }
}

TEST(AttentionTest, DeterministicAcrossRunsAndThreadCounts) {
  const AttentionShape s{3, 200, 4, 2, 32, true};
  const Inputs in = MakeInputs(s, {200, 150, 77}, 90);
  const Outputs a = RunAttention(in, s);
  const Outputs b = RunAttention(in, s);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Outputs c = RunAttention(in, s);
  omp_set_num_threads(threads + 1);  // more threads than items of some kinds
  const Outputs d = RunAttention(in, s);
  omp_set_num_threads(threads);
  for (const Outputs* other : {&b, &c, &d}) {
    EXPECT_TRUE(BitIdentical(a.out, other->out));
    EXPECT_TRUE(BitIdentical(a.lse, other->lse));
    EXPECT_TRUE(BitIdentical(a.dq, other->dq));
    EXPECT_TRUE(BitIdentical(a.dk, other->dk));
    EXPECT_TRUE(BitIdentical(a.dv, other->dv));
  }
}

// Packed projections: q, k, v as column blocks of one [B*T, (H+2Hkv)*D] array
// (the decoder's fused QKV GEMM), out/dout with a padded row stride. The
// strided functions must give exactly the plain functions' bits, and leave
// the rest of every row alone.
TEST(AttentionTest, StridedPackedQkvEqualsPlain) {
  for (const bool causal : {true, false}) {
    const AttentionShape s{2, 150, 4, 2, 32, causal};
    const Inputs in = MakeInputs(s, {150, 93}, 95);
    const Outputs want = RunAttention(in, s);
    const int HD = s.H * s.D, KD = s.Hkv * s.D, QKV = HD + 2 * KD, OUT = HD + 8;
    const int64_t N = int64_t{s.B} * s.T;
    std::vector<float> qkv(N * QKV), dout(N * OUT, 7.0f);
    for (int64_t n = 0; n < N; ++n) {
      for (int c = 0; c < HD; ++c) qkv[n * QKV + c] = in.q[n * HD + c];
      for (int c = 0; c < KD; ++c) qkv[n * QKV + HD + c] = in.k[n * KD + c];
      for (int c = 0; c < KD; ++c) qkv[n * QKV + HD + KD + c] = in.v[n * KD + c];
      for (int c = 0; c < HD; ++c) dout[n * OUT + c] = in.dout[n * HD + c];
    }
    const AttentionStrides ld{QKV, QKV, QKV, OUT};
    const float nan = std::nanf("");
    std::vector<float> out(N * OUT, 5.0f), lse(int64_t{s.B} * s.H * s.T, nan);
    std::vector<float> dqkv(N * QKV, nan);
    attention_forward_strided(out.data(), lse.data(), qkv.data(), qkv.data() + HD,
                              qkv.data() + HD + KD, in.lens.data(), s, ld);
    attention_backward_strided(dqkv.data(), dqkv.data() + HD, dqkv.data() + HD + KD, dout.data(),
                               qkv.data(), qkv.data() + HD, qkv.data() + HD + KD, out.data(),
                               lse.data(), in.lens.data(), s, ld);
    std::vector<float> got_out(N * HD), dq(N * HD), dk(N * KD), dv(N * KD);
    for (int64_t n = 0; n < N; ++n) {
      for (int c = 0; c < HD; ++c) got_out[n * HD + c] = out[n * OUT + c];
      for (int c = HD; c < OUT; ++c) ASSERT_EQ(out[n * OUT + c], 5.0f);  // padding untouched
      for (int c = 0; c < HD; ++c) dq[n * HD + c] = dqkv[n * QKV + c];
      for (int c = 0; c < KD; ++c) dk[n * KD + c] = dqkv[n * QKV + HD + c];
      for (int c = 0; c < KD; ++c) dv[n * KD + c] = dqkv[n * QKV + HD + KD + c];
    }
    EXPECT_TRUE(BitIdentical(got_out, want.out)) << causal;
    EXPECT_TRUE(BitIdentical(lse, want.lse)) << causal;
    EXPECT_TRUE(BitIdentical(dq, want.dq)) << causal;
    EXPECT_TRUE(BitIdentical(dk, want.dk)) << causal;
    EXPECT_TRUE(BitIdentical(dv, want.dv)) << causal;
  }
}

}  // namespace
}  // namespace ut::cpu
