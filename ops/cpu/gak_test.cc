// Slice distances, the GAK local cost, soft-DTW between sequences and the
// normalised GAK: values against plain double-precision references, gradients
// against finite differences, kernel properties, determinism, long sequences.
#include "ops/gak.h"

#include <cmath>
#include <limits>
#include <vector>

#include "core/base/rng.h"
#include "gtest/gtest.h"
#include "ops/testing/gradcheck.h"

namespace ut::cpu {
namespace {

using ::ut::testing::AllClose;
using ::ut::testing::BitIdentical;
using ::ut::testing::CheckGradient;
using ::ut::testing::RandomUniform;
using ::ut::testing::RandomVector;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- double-precision references ----

double RefPhi(SliceDistance kind, const float* a, const float* b, int d) {
  double dot = 0, aa = 0, bb = 0, sq = 0;
  for (int k = 0; k < d; ++k) {
    dot += double{a[k]} * b[k];
    aa += double{a[k]} * a[k];
    bb += double{b[k]} * b[k];
    sq += (double{a[k]} - b[k]) * (double{a[k]} - b[k]);
  }
  return kind == SliceDistance::kCosine ? 1.0 - dot / std::sqrt(aa * bb) : sq;
}

std::vector<double> RefPhiMatrix(SliceDistance kind, const float* x, const float* y, int n, int m,
                                 int d) {
  std::vector<double> phi(n * m);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) phi[i * m + j] = RefPhi(kind, x + i * d, y + j * d, d);
  }
  return phi;
}

double RefGakCost(double phi, double sigma) {
  const double t = phi / (2 * sigma * sigma);
  return t + std::log(2 - std::exp(-t));
}

double RefSoftDtw(const std::vector<double>& c, int n, int m, double g) {
  const int w = m + 1;
  std::vector<double> R((n + 1) * w, kInf);
  R[0] = 0;
  for (int i = 1; i <= n; ++i) {
    for (int j = 1; j <= m; ++j) {
      const double a = R[(i - 1) * w + j - 1], b = R[(i - 1) * w + j], l = R[i * w + j - 1];
      const double mn = std::min({a, b, l});
      R[i * w + j] = c[(i - 1) * m + j - 1] + mn -
                     g * std::log(std::exp(-(a - mn) / g) + std::exp(-(b - mn) / g) +
                                  std::exp(-(l - mn) / g));
    }
  }
  return R[n * w + m];
}

// Test data: N sequences of the given lengths, rows ~ N(0,1).
struct Data {
  std::vector<int> lengths;
  std::vector<int64_t> start;
  std::vector<float> rows;
  std::vector<int32_t> modality;
  int d;
  Sequences seqs() const {
    return {rows.data(), d, static_cast<int>(lengths.size()), lengths.data(),
            modality.empty() ? nullptr : modality.data()};
  }
  const float* row(int s) const { return rows.data() + start[s] * d; }
};

Data MakeData(Rng& rng, std::vector<int> lengths, int d) {
  Data data{std::move(lengths), {0}, {}, {}, d};
  for (int len : data.lengths) data.start.push_back(data.start.back() + len);
  data.rows = RandomVector(rng, data.start.back() * d);
  return data;
}

double RefGak(const Data& data, SliceDistance kind, double delta, int u, int v) {
  const int n = data.lengths[u], m = data.lengths[v], d = data.d;
  const double sigma = delta * std::sqrt(0.5 * (n + m));
  auto r = [&](int a, int b) {
    auto c = RefPhiMatrix(kind, data.row(a), data.row(b), data.lengths[a], data.lengths[b], d);
    for (double& x : c) x = RefGakCost(x, sigma);
    return RefSoftDtw(c, data.lengths[a], data.lengths[b], 1.0);
  };
  return std::exp(-(r(u, v) - 0.5 * r(u, u) - 0.5 * r(v, v)));
}

// ---- slice distances and local cost ----

TEST(Gak, DistancesMatchDoubleReferenceAndFiniteDifferences) {
  Rng rng(11);
  const int n = 5, m = 7, d = 6;
  auto x = RandomVector(rng, n * d), y = RandomVector(rng, m * d);
  const auto w = RandomVector(rng, n * m);  // probe dL/dphi
  for (SliceDistance kind : {SliceDistance::kCosine, SliceDistance::kSqEuclid}) {
    const bool cosine = kind == SliceDistance::kCosine;
    std::vector<float> phi(n * m);
    auto forward = [&] {
      if (cosine) cosine_distance_forward(phi.data(), x.data(), y.data(), n, m, d);
      else sqeuclid_distance_forward(phi.data(), x.data(), y.data(), n, m, d);
    };
    forward();
    const auto ref = RefPhiMatrix(kind, x.data(), y.data(), n, m, d);
    EXPECT_TRUE(AllClose(phi, ref, 1e-5, 1e-5)) << (cosine ? "cosine" : "sqeuclid");
    std::vector<float> dx(n * d, 0.5f), dy(m * d, -0.25f);  // backward accumulates
    if (cosine) cosine_distance_backward(dx.data(), dy.data(), w.data(), x.data(), y.data(), n, m, d);
    else sqeuclid_distance_backward(dx.data(), dy.data(), w.data(), x.data(), y.data(), n, m, d);
    for (auto& g : dx) g -= 0.5f;
    for (auto& g : dy) g += 0.25f;
    auto loss = [&] {
      forward();
      return ::ut::testing::Dot(phi, w);
    };
    EXPECT_TRUE(CheckGradient(cosine ? "cos dx" : "sq dx", loss, x.data(), dx.data(), n * d));
    EXPECT_TRUE(CheckGradient(cosine ? "cos dy" : "sq dy", loss, y.data(), dy.data(), m * d));
  }
}

// Raw series often sit far from the origin. |x|^2 + |y|^2 - 2<x,y> in float
// then cancels catastrophically (before centring: 1.1% error at offset 1000 on
// a soft-DTW value); the squared distance, soft-DTW value and gradients must
// not depend on a shift shared by both sequences.
TEST(Gak, SquaredEuclideanIsExactUnderALargeCommonOffset) {
  Rng rng(15);
  const int n = 40, m = 30, d = 2;
  const auto x = RandomVector(rng, n * d), y = RandomVector(rng, m * d);
  const auto w = RandomVector(rng, n * m);
  std::vector<float> phi(n * m), dx(n * d, 0.f), dy(m * d, 0.f);
  sqeuclid_distance_forward(phi.data(), x.data(), y.data(), n, m, d);
  sqeuclid_distance_backward(dx.data(), dy.data(), w.data(), x.data(), y.data(), n, m, d);
  const auto ref = RefPhiMatrix(SliceDistance::kSqEuclid, x.data(), y.data(), n, m, d);
  for (float offset : {10.f, 1000.f, -3.0e4f}) {
    auto xs = x, ys = y;
    for (int k = 0; k < n * d; ++k) xs[k] += offset * (k % d == 0 ? 1.f : -0.5f);
    for (int k = 0; k < m * d; ++k) ys[k] += offset * (k % d == 0 ? 1.f : -0.5f);
    // The shifted inputs are themselves rounded (ulp of 3e4 is 2e-3), so the
    // reference is the double distance of the float inputs as given.
    const auto ref_s = RefPhiMatrix(SliceDistance::kSqEuclid, xs.data(), ys.data(), n, m, d);
    std::vector<float> phi_s(n * m), dx_s(n * d, 0.f), dy_s(m * d, 0.f);
    sqeuclid_distance_forward(phi_s.data(), xs.data(), ys.data(), n, m, d);
    EXPECT_TRUE(AllClose(phi_s, ref_s, 1e-5, 1e-5)) << "offset " << offset;
    sqeuclid_distance_backward(dx_s.data(), dy_s.data(), w.data(), xs.data(), ys.data(), n, m,
                               d);
    if (offset == 10.f) {  // inputs still exact to ~1e-6: same gradients
      EXPECT_TRUE(AllClose(dx_s, std::vector<double>(dx.begin(), dx.end()), 2e-4, 2e-4));
      EXPECT_TRUE(AllClose(dy_s, std::vector<double>(dy.begin(), dy.end()), 2e-4, 2e-4));
    }
  }
  // And the soft-DTW value on top (1000 is exactly representable; the rows
  // shift by 1000 * ulp-level amounts only).
  for (float offset : {0.f, 1000.f}) {
    auto xs = x, ys = y;
    for (float& v : xs) v += offset;
    for (float& v : ys) v += offset;
    Data data;
    data.d = d;
    data.lengths = {n, m};
    data.start = {0, n, n + m};
    data.rows = xs;
    data.rows.insert(data.rows.end(), ys.begin(), ys.end());
    const int pu = 0, pv = 1;
    SequenceSdtwOptions opt;
    opt.distance = SliceDistance::kSqEuclid;
    double value = 0;
    ASSERT_TRUE(soft_dtw_sequences_forward(&value, data.seqs(), {1, &pu, &pv}, opt).ok());
    const auto c = RefPhiMatrix(SliceDistance::kSqEuclid, xs.data(), ys.data(), n, m, d);
    const double want = RefSoftDtw(c, n, m, opt.gamma);
    EXPECT_NEAR(value, want, 1e-5 * std::fabs(want)) << "offset " << offset;
  }
}

TEST(Gak, TripleKernelPicksThePartByModality) {
  Rng rng(12);
  const int n = 4, m = 3, d = 7, part1 = 3;
  const auto x = RandomVector(rng, n * d), y = RandomVector(rng, m * d);
  const std::vector<int32_t> mx = {0, 1, 1, 0}, my = {1, 0, 1};
  std::vector<float> phi(n * m);
  triple_distance_forward(phi.data(), x.data(), mx.data(), y.data(), my.data(), n, m, d, part1);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < m; ++j) {
      const bool same = mx[i] == my[j];
      const double want = same ? RefPhi(SliceDistance::kSqEuclid, x.data() + i * d,
                                        y.data() + j * d, part1)
                               : RefPhi(SliceDistance::kSqEuclid, x.data() + i * d + part1,
                                        y.data() + j * d + part1, d - part1);
      EXPECT_NEAR(phi[i * m + j], want, 1e-5 * (1 + want)) << i << "," << j;
    }
  }
}

TEST(Gak, LocalCostAndItsDerivative) {
  Rng rng(13);
  auto phi = RandomUniform(rng, 50, 0.0f, 4.0f);
  phi[0] = 0.0f;
  const double sigma = gak_sigma(0.7, 3, 6);
  EXPECT_NEAR(sigma, 0.7 * std::sqrt(4.5), 1e-12);
  std::vector<float> cost(50), dphi(50);
  gak_local_cost_forward(cost.data(), phi.data(), 50, sigma);
  for (int k = 0; k < 50; ++k) EXPECT_NEAR(cost[k], RefGakCost(phi[k], sigma), 1e-6);
  EXPECT_EQ(cost[0], 0.0f);  // c(0) = 0 + log(1)
  const auto w = RandomVector(rng, 50);
  gak_local_cost_backward(dphi.data(), w.data(), phi.data(), 50, sigma);
  auto loss = [&] {
    gak_local_cost_forward(cost.data(), phi.data(), 50, sigma);
    return ::ut::testing::Dot(cost, w);
  };
  ::ut::testing::GradCheckOptions opt;
  opt.step = 1e-3;
  phi[0] = 0.01f;  // keep phi - step >= 0
  gak_local_cost_backward(dphi.data(), w.data(), phi.data(), 50, sigma);
  EXPECT_TRUE(CheckGradient("dc/dphi", loss, phi.data(), dphi.data(), 50, opt));
}

// ---- soft-DTW between sequences ----

TEST(Gak, SequenceSoftDtwMatchesReferenceAndFiniteDifferences) {
  Rng rng(14);
  Data data = MakeData(rng, {3, 5, 1, 4}, 5);
  const std::vector<int> pu = {0, 1, 2, 3, 1}, pv = {1, 3, 0, 3, 2};
  const SequencePairs pairs{5, pu.data(), pv.data()};
  const std::vector<double> dvalues = {0.7, -1.3, 0.4, 1.1, -0.6};
  for (SliceDistance kind : {SliceDistance::kCosine, SliceDistance::kSqEuclid}) {
    for (LocalCost local : {LocalCost::kIdentity, LocalCost::kGak}) {
      SequenceSdtwOptions opt;
      opt.distance = kind;
      opt.local_cost = local;
      opt.gamma = local == LocalCost::kGak ? 1.0 : 0.7;
      opt.delta = 0.8;
      std::vector<double> values(5);
      ASSERT_TRUE(soft_dtw_sequences_forward(values.data(), data.seqs(), pairs, opt).ok());
      for (int p = 0; p < 5; ++p) {
        const int n = data.lengths[pu[p]], m = data.lengths[pv[p]];
        auto c = RefPhiMatrix(kind, data.row(pu[p]), data.row(pv[p]), n, m, data.d);
        if (local == LocalCost::kGak) {
          for (double& x : c) x = RefGakCost(x, 0.8 * std::sqrt(0.5 * (n + m)));
        }
        const double want = RefSoftDtw(c, n, m, opt.gamma);
        EXPECT_NEAR(values[p], want, 1e-5 * (1 + std::fabs(want))) << p;
      }
      std::vector<float> drows(data.rows.size(), 0.0f);
      std::vector<double> values_bwd(5);
      ASSERT_TRUE(soft_dtw_sequences_backward(values_bwd.data(), drows.data(), dvalues.data(),
                                              data.seqs(), pairs, opt).ok());
      for (int p = 0; p < 5; ++p) EXPECT_EQ(values_bwd[p], values[p]);
      auto loss = [&] {
        std::vector<double> v(5);
        EXPECT_TRUE(soft_dtw_sequences_forward(v.data(), data.seqs(), pairs, opt).ok());
        double l = 0;
        for (int p = 0; p < 5; ++p) l += dvalues[p] * v[p];
        return l;
      };
      EXPECT_TRUE(CheckGradient("drows", loss, data.rows.data(), drows.data(),
                                static_cast<int64_t>(drows.size())));
    }
  }
}

// ---- normalised GAK ----

TEST(Gak, NormalisedKernelMatchesReference) {
  Rng rng(15);
  Data data = MakeData(rng, {3, 5, 1, 4}, 5);
  const std::vector<int> pu = {0, 1, 2, 3, 0}, pv = {1, 3, 0, 1, 0};
  const SequencePairs pairs{5, pu.data(), pv.data()};
  for (SliceDistance kind : {SliceDistance::kCosine, SliceDistance::kSqEuclid}) {
    GakOptions opt;
    opt.distance = kind;
    opt.delta = kind == SliceDistance::kCosine ? 0.5 : 2.0;
    std::vector<double> k(5);
    ASSERT_TRUE(gak_pairs_forward(k.data(), data.seqs(), pairs, opt).ok());
    for (int p = 0; p < 5; ++p) {
      const double want = RefGak(data, kind, opt.delta, pu[p], pv[p]);
      EXPECT_NEAR(k[p], want, 1e-5 * want) << p;
    }
    EXPECT_EQ(k[4], 1.0);  // K~(x,x)
  }
}

TEST(Gak, KernelProperties) {
  Rng rng(16);
  Data data = MakeData(rng, {4, 6, 2, 5, 3, 4}, 8);
  // Sequence 5 is a copy of sequence 0: K~ = 1 between them.
  std::copy(data.row(0), data.row(0) + 4 * 8, data.rows.begin() + data.start[5] * 8);
  for (SliceDistance kind : {SliceDistance::kCosine, SliceDistance::kSqEuclid}) {
    GakOptions opt;
    opt.distance = kind;
    opt.delta = kind == SliceDistance::kCosine ? 0.5 : 2.0;
    const int N = 6;
    std::vector<float> K(N * N, -1.0f);
    ASSERT_TRUE(gak_matrix_forward(K.data(), data.seqs(), opt).ok());
    for (int a = 0; a < N; ++a) {
      EXPECT_EQ(K[a * N + a], 1.0f);
      for (int b = 0; b < N; ++b) {
        EXPECT_EQ(K[a * N + b], K[b * N + a]);
        EXPECT_GT(K[a * N + b], 0.0f) << a << "," << b;
        EXPECT_LE(K[a * N + b], 1.0f) << a << "," << b;
      }
    }
    EXPECT_NEAR(K[0 * N + 5], 1.0f, 1e-6);
    EXPECT_LT(K[0 * N + 1], 0.999f);
    // Symmetry of the pair computation itself: (u,v) and (v,u).
    const std::vector<int> pu = {1, 3}, pv = {3, 1};
    std::vector<double> k(2);
    ASSERT_TRUE(gak_pairs_forward(k.data(), data.seqs(), {2, pu.data(), pv.data()}, opt).ok());
    EXPECT_NEAR(k[0], k[1], 1e-6 * k[0]);
  }
}

TEST(Gak, GradientsMatchFiniteDifferences) {
  Rng rng(17);
  for (SliceDistance kind : {SliceDistance::kCosine, SliceDistance::kSqEuclid}) {
    Data data = MakeData(rng, {3, 1, 4, 2}, 5);
    GakOptions opt;
    opt.distance = kind;
    opt.delta = kind == SliceDistance::kCosine ? 0.5 : 2.0;
    const char* what = kind == SliceDistance::kCosine ? "cosine" : "sqeuclid";
    // Pair list, including a repeated pair and a self pair.
    const std::vector<int> pu = {0, 2, 1, 3, 0, 2}, pv = {2, 3, 3, 0, 2, 2};
    const SequencePairs pairs{6, pu.data(), pv.data()};
    const std::vector<double> dk = {1.5, -0.8, 0.6, 2.0, -0.4, 3.0};
    std::vector<float> drows(data.rows.size(), 0.0f);
    ASSERT_TRUE(gak_pairs_backward(drows.data(), dk.data(), data.seqs(), pairs, opt).ok());
    auto pair_loss = [&] {
      std::vector<double> k(6);
      EXPECT_TRUE(gak_pairs_forward(k.data(), data.seqs(), pairs, opt).ok());
      double l = 0;
      for (int p = 0; p < 6; ++p) l += dk[p] * k[p];
      return l;
    };
    EXPECT_TRUE(CheckGradient(std::string(what) + " pairs", pair_loss, data.rows.data(),
                              drows.data(), static_cast<int64_t>(drows.size())));
    // N x N matrix with a non-symmetric dL/dK.
    const int N = 4;
    const auto dK = RandomVector(rng, N * N);
    std::vector<float> dmat(data.rows.size(), 123.0f);  // written, not added
    ASSERT_TRUE(gak_matrix_backward(dmat.data(), dK.data(), data.seqs(), opt).ok());
    auto matrix_loss = [&] {
      std::vector<float> K(N * N);
      EXPECT_TRUE(gak_matrix_forward(K.data(), data.seqs(), opt).ok());
      return ::ut::testing::Dot(K, dK);
    };
    EXPECT_TRUE(CheckGradient(std::string(what) + " matrix", matrix_loss, data.rows.data(),
                              dmat.data(), static_cast<int64_t>(dmat.size())));
  }
}

TEST(Gak, DeterministicAcrossThreadsAndChunks) {
  Rng rng(18);
  Data data = MakeData(rng, {5, 3, 7, 2, 6, 4, 5}, 16);
  const int N = 7;
  const auto dK = RandomVector(rng, N * N);
  GakOptions opt;
  opt.delta = 0.5;
  std::vector<std::vector<float>> grads;
  for (int threads : {1, 2, 3}) {
    opt.num_threads = threads;
    std::vector<float> g(data.rows.size());
    ASSERT_TRUE(gak_matrix_backward(g.data(), dK.data(), data.seqs(), opt).ok());
    grads.push_back(g);
  }
  EXPECT_TRUE(BitIdentical(grads[0], grads[1]));
  EXPECT_TRUE(BitIdentical(grads[0], grads[2]));
  // One job per chunk gives the same sequence soft-DTW gradients.
  const std::vector<int> pu = {0, 1, 2, 3}, pv = {4, 5, 6, 0};
  const std::vector<double> dv = {1, -2, 3, 0.5};
  SequenceSdtwOptions sopt;
  std::vector<float> g_big(data.rows.size(), 0.0f), g_small(data.rows.size(), 0.0f);
  ASSERT_TRUE(soft_dtw_sequences_backward(nullptr, g_big.data(), dv.data(), data.seqs(),
                                          {4, pu.data(), pv.data()}, sopt).ok());
  sopt.max_chunk_cells = 1;
  ASSERT_TRUE(soft_dtw_sequences_backward(nullptr, g_small.data(), dv.data(), data.seqs(),
                                          {4, pu.data(), pv.data()}, sopt).ok());
  EXPECT_TRUE(BitIdentical(g_big, g_small));
}

TEST(Gak, RejectsBadInputsWithAMessage) {
  Rng rng(19);
  Data data = MakeData(rng, {3, 0, 2}, 4);
  std::vector<float> K(9);
  GakOptions opt;
  absl::Status s = gak_matrix_forward(K.data(), data.seqs(), opt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("sequence 1"), std::string::npos) << s;
  data = MakeData(rng, {3, 1, 2}, 4);
  opt.distance = SliceDistance::kTriple;
  opt.part1_dim = 2;
  s = gak_matrix_forward(K.data(), data.seqs(), opt);  // no modality
  EXPECT_NE(s.message().find("modality"), std::string::npos) << s;
  data.modality = {0, 1, 0, 1, 1, 0};
  EXPECT_TRUE(gak_matrix_forward(K.data(), data.seqs(), opt).ok());
  std::vector<float> g(data.rows.size());
  s = gak_matrix_backward(g.data(), K.data(), data.seqs(), opt);
  EXPECT_NE(s.message().find("no backward"), std::string::npos) << s;
  opt.distance = SliceDistance::kCosine;
  opt.delta = -1;
  s = gak_matrix_forward(K.data(), data.seqs(), opt);
  EXPECT_NE(s.message().find("delta"), std::string::npos) << s;
  const std::vector<int> pu = {0}, pv = {3};
  std::vector<double> k(1);
  opt.delta = 1;
  s = gak_pairs_forward(k.data(), data.seqs(), {1, pu.data(), pv.data()}, opt);
  EXPECT_NE(s.message().find("pair 0"), std::string::npos) << s;
}

TEST(Gak, LongSequencesGiveFiniteKernelAndGradients) {
  Rng rng(20);
  const int n = 4096, d = 4;
  Data data = MakeData(rng, {n, n}, d);
  // The second sequence is a noisy copy of the first, so K~ is well inside (0,1).
  for (int64_t k = 0; k < int64_t{n} * d; ++k) {
    data.rows[n * d + k] = data.rows[k] + 0.05f * data.rows[n * d + k];
  }
  GakOptions opt;
  opt.delta = 0.05;
  const std::vector<int> pu = {0}, pv = {1};
  const SequencePairs pairs{1, pu.data(), pv.data()};
  std::vector<double> k(1);
  ASSERT_TRUE(gak_pairs_forward(k.data(), data.seqs(), pairs, opt).ok());
  EXPECT_GT(k[0], 0.0);
  EXPECT_LT(k[0], 1.0);
  std::vector<float> g(data.rows.size(), 0.0f);
  const double dk = 1.0;
  ASSERT_TRUE(gak_pairs_backward(g.data(), &dk, data.seqs(), pairs, opt).ok());
  int64_t bad = 0, nonzero = 0;
  for (float x : g) {
    if (!std::isfinite(x)) ++bad;
    if (x != 0.0f) ++nonzero;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_GT(nonzero, int64_t{n} * d / 2);
}

}  // namespace
}  // namespace ut::cpu
