// Soft-DTW and GAK against the golden fixture (tests/golden/sdtw/make_sdtw_golden.py:
// tslearn and PyTorch autograd in float64 on float32 inputs). Scalars must agree
// to 1e-5 relative; arrays to max|got - want| <= 1e-5 * max|want|.
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "ops/gak.h"
#include "ops/sdtw.h"

namespace ut::cpu {
namespace {

constexpr char kFixture[] = "tests/golden/sdtw/sdtw_golden.json";
constexpr double kTol = 1e-5;

nlohmann::json LoadFixture() {
  std::ifstream in(kFixture);
  EXPECT_TRUE(in.good()) << "cannot open " << kFixture
                         << " (regenerate: python3 tests/golden/sdtw/make_sdtw_golden.py)";
  return nlohmann::json::parse(in);
}

std::vector<float> Floats(const nlohmann::json& j) {
  std::vector<float> out;
  for (const auto& v : j) out.push_back(static_cast<float>(v.get<double>()));
  return out;
}

std::vector<double> Doubles(const nlohmann::json& j) { return j.get<std::vector<double>>(); }

void ExpectScalar(double got, double want, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), kTol * std::fabs(want) + 1e-12)
      << what << ": " << got << " vs " << want;
}

template <typename T>
void ExpectArray(const std::vector<T>& got, const std::vector<double>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double err = 0.0, scale = 0.0;
  size_t worst = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const double e = std::fabs(static_cast<double>(got[k]) - want[k]);
    if (!(e <= err)) {  // NaN is the worst
      err = std::isnan(e) ? INFINITY : e;
      worst = k;
    }
    scale = std::max(scale, std::fabs(want[k]));
  }
  EXPECT_LE(err, kTol * scale) << what << ": worst [" << worst << "] " << got[worst] << " vs "
                               << want[worst] << " (max |want| " << scale << ")";
}

SliceDistance Distance(const std::string& name) {
  if (name == "cosine") return SliceDistance::kCosine;
  if (name == "sqeuclid") return SliceDistance::kSqEuclid;
  return SliceDistance::kTriple;
}

TEST(SdtwGolden, CostMatrices) {
  const auto fixture = LoadFixture();
  ASSERT_FALSE(fixture["cost_cases"].empty());
  SdtwWorkspace ws;
  for (const auto& c : fixture["cost_cases"]) {
    const std::string name = c["name"];
    const int n = c["n"], m = c["m"], band = c["band"];
    const double gamma = c["gamma"];
    const auto cost = Floats(c["cost"]);
    std::vector<float> E(cost.size());
    const double value = soft_dtw_pair_backward(E.data(), 1.0f, cost.data(), n, m, gamma, band,
                                                &ws);
    ExpectScalar(value, c["value"], name + " value");
    ExpectArray(E, Doubles(c["E"]), name + " E");
  }
}

TEST(SdtwGolden, SequencePairs) {
  const auto fixture = LoadFixture();
  ASSERT_FALSE(fixture["sequence_cases"].empty());
  for (const auto& c : fixture["sequence_cases"]) {
    const std::string name = c["name"];
    const int n = c["n"], m = c["m"], d = c["d"];
    std::vector<float> rows = Floats(c["x"]);
    const auto y = Floats(c["y"]);
    rows.insert(rows.end(), y.begin(), y.end());
    const std::vector<int> lengths = {n, m}, u = {0}, v = {1};
    const Sequences seqs{rows.data(), d, 2, lengths.data(), nullptr};
    SequenceSdtwOptions opt;
    opt.distance = Distance(c["distance"]);
    opt.gamma = c["gamma"];
    double value = 0.0;
    const double one = 1.0;
    std::vector<float> drows(rows.size(), 0.0f);
    ASSERT_TRUE(soft_dtw_sequences_backward(&value, drows.data(), &one, seqs, {1, u.data(), v.data()},
                                            opt).ok());
    ExpectScalar(value, c["value"], name + " value");
    ExpectArray(std::vector<float>(drows.begin(), drows.begin() + n * d), Doubles(c["dx"]),
                name + " dx");
    ExpectArray(std::vector<float>(drows.begin() + n * d, drows.end()), Doubles(c["dy"]),
                name + " dy");
  }
}

TEST(SdtwGolden, NormalisedGakPairs) {
  const auto fixture = LoadFixture();
  ASSERT_FALSE(fixture["gak_pair_cases"].empty());
  for (const auto& c : fixture["gak_pair_cases"]) {
    const std::string name = c["name"];
    const int n = c["n"], m = c["m"], d = c["d"];
    std::vector<float> rows = Floats(c["x"]);
    const auto y = Floats(c["y"]);
    rows.insert(rows.end(), y.begin(), y.end());
    const std::vector<int> lengths = {n, m}, u = {0}, v = {1};
    const Sequences seqs{rows.data(), d, 2, lengths.data(), nullptr};
    const SequencePairs pairs{1, u.data(), v.data()};
    GakOptions opt;
    opt.distance = Distance(c["distance"]);
    opt.delta = c["delta"];
    double k = 0.0;
    ASSERT_TRUE(gak_pairs_forward(&k, seqs, pairs, opt).ok());
    ExpectScalar(k, c["k"], name + " K~");
    const double one = 1.0;
    std::vector<float> drows(rows.size(), 0.0f);
    ASSERT_TRUE(gak_pairs_backward(drows.data(), &one, seqs, pairs, opt).ok());
    ExpectArray(std::vector<float>(drows.begin(), drows.begin() + n * d), Doubles(c["dx"]),
                name + " dx");
    ExpectArray(std::vector<float>(drows.begin() + n * d, drows.end()), Doubles(c["dy"]),
                name + " dy");
  }
}

TEST(SdtwGolden, KernelMatrices) {
  const auto fixture = LoadFixture();
  ASSERT_EQ(fixture["matrix_cases"].size(), 2u);
  for (const auto& c : fixture["matrix_cases"]) {
    const std::string name = c["name"];
    const auto lengths = c["lengths"].get<std::vector<int>>();
    const auto rows = Floats(c["rows"]);
    const auto modality = c["modality"].get<std::vector<int32_t>>();
    const int N = static_cast<int>(lengths.size());
    const Sequences seqs{rows.data(), c["d"], N, lengths.data(),
                         modality.empty() ? nullptr : modality.data()};
    GakOptions opt;
    opt.distance = Distance(c["distance"]);
    opt.delta = c["delta"];
    opt.part1_dim = c["part1_dim"];
    std::vector<float> K(N * N);
    ASSERT_TRUE(gak_matrix_forward(K.data(), seqs, opt).ok());
    ExpectArray(K, Doubles(c["K"]), name + " K");
    if (c["drows"].empty()) continue;
    // L = sum (K - T)^2  ->  dL/dK = 2 (K - T).
    const auto target = Doubles(c["target"]);
    std::vector<float> dK(N * N);
    for (int k = 0; k < N * N; ++k) dK[k] = static_cast<float>(2.0 * (K[k] - target[k]));
    std::vector<float> drows(rows.size());
    ASSERT_TRUE(gak_matrix_backward(drows.data(), dK.data(), seqs, opt).ok());
    ExpectArray(drows, Doubles(c["drows"]), name + " drows");
  }
}

}  // namespace
}  // namespace ut::cpu
