// End-to-end test of the soft_dtw binary (tools/sdtw/soft_dtw_main.cc): inputs
// written from the golden fixture (tests/golden/sdtw/sdtw_golden.json, values
// from tslearn and PyTorch autograd in float64, independent of our code) in
// .npy and text form; the printed value, E and the gradients must match the
// golden to the tolerance of tests/golden/sdtw/sdtw_golden_test.cc (scalars
// 1e-5 relative, arrays max|got - want| <= 1e-5 * max|want|). Bad inputs must
// exit 2 with one line naming the file and the row.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/sdtw/matrix_io.h"

namespace ut::tools {
namespace {

constexpr char kFixture[] = "tests/golden/sdtw/sdtw_golden.json";
constexpr double kTol = 1e-5;  // as sdtw_golden_test

std::string Cwd() {
  char buf[4096];
  return getcwd(buf, sizeof(buf)) != nullptr ? buf : ".";
}

std::string Tmp(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Outcome {
  int code = -1;
  std::string out, err;
};

// Runs the binary with args (single-quoted for the shell); `env` is prepended
// (e.g. "BUILD_WORKING_DIRECTORY=/x").
Outcome RunTool(const std::vector<std::string>& args, const std::string& env = "") {
  std::string cmd =
      "env -u BUILD_WORKING_DIRECTORY " + env + " '" + Cwd() + "/tools/sdtw/soft_dtw'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  const std::string out = Tmp("tool.out"), err = Tmp("tool.err");
  cmd += " >'" + out + "' 2>'" + err + "'";
  const int status = std::system(cmd.c_str());
  Outcome o;
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  o.out = Slurp(out);
  o.err = Slurp(err);
  return o;
}

// The JSON object printed by a good --format=json run.
nlohmann::json RunJson(std::vector<std::string> args) {
  args.push_back("--format=json");
  const Outcome o = RunTool(args);
  EXPECT_EQ(o.code, 0) << o.err;
  EXPECT_EQ(o.err, "");
  return o.code == 0 ? nlohmann::json::parse(o.out) : nlohmann::json::object();
}

nlohmann::json LoadFixture() {
  std::ifstream in(kFixture);
  EXPECT_TRUE(in.good()) << "cannot open " << kFixture;
  return nlohmann::json::parse(in);
}

std::vector<float> Floats(const nlohmann::json& j) {
  std::vector<float> out;
  for (const auto& v : j) out.push_back(static_cast<float>(v.get<double>()));
  return out;
}

std::string Num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void ExpectScalar(double got, double want, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), kTol * std::fabs(want) + 1e-12)
      << what << ": " << got << " vs " << want;
}

void ExpectArray(const std::vector<float>& got, const std::vector<double>& want,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double err = 0.0, scale = 0.0;
  for (size_t k = 0; k < want.size(); ++k) {
    const double e = std::fabs(static_cast<double>(got[k]) - want[k]);
    err = std::isnan(e) ? INFINITY : std::max(err, e);
    scale = std::max(scale, std::fabs(want[k]));
  }
  EXPECT_LE(err, kTol * scale) << what << " (max |want| " << scale << ")";
}

// The values of a [rows, cols] output file (the shape is checked too).
std::vector<float> ReadArray(const std::string& path, int64_t rows, int64_t cols) {
  auto m = ReadMatrix(path);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  EXPECT_EQ(m->rows, rows) << path;
  EXPECT_EQ(m->cols, cols) << path;
  return m->values;
}

// Writes rows [rows, cols] as .npy (even k) or text (odd k), so both readers
// are exercised; returns the path.
std::string WriteInput(const std::string& stem, int k, const std::vector<float>& v,
                       int64_t rows, int64_t cols) {
  const std::string path = Tmp(stem + (k % 2 == 0 ? ".npy" : ".txt"));
  EXPECT_TRUE(WriteMatrix(path, v.data(), rows, cols).ok()) << path;
  return path;
}

// ---- Against the golden fixture ------------------------------------------------

TEST(SoftDtwCli, SequencePairsMatchTslearnAndTorch) {
  const auto fixture = LoadFixture();
  ASSERT_FALSE(fixture["sequence_cases"].empty());
  int k = 0;
  for (const auto& c : fixture["sequence_cases"]) {
    const std::string name = c["name"];
    const int n = c["n"], m = c["m"], d = c["d"];
    const std::string x = WriteInput("seq_x", k, Floats(c["x"]), n, d);
    const std::string y = WriteInput("seq_y", k + 1, Floats(c["y"]), m, d);
    ++k;
    const std::string grad = Tmp("seq_grad"), E = Tmp("seq_E.npy");
    const auto j = RunJson({"--x=" + x, "--y=" + y, "--gamma=" + Num(c["gamma"]),
                            "--distance=" + c["distance"].get<std::string>(),
                            "--grad_out=" + grad, "--e_out=" + E});
    ASSERT_TRUE(j.contains("value")) << name;
    EXPECT_EQ(j["n"], n);
    EXPECT_EQ(j["m"], m);
    EXPECT_EQ(j["d"], d);
    ExpectScalar(j["value"].get<double>(), c["value"], name + " value");
    ExpectArray(ReadArray(grad + "_x.npy", n, d), c["dx"], name + " dx");
    ExpectArray(ReadArray(grad + "_y.npy", m, d), c["dy"], name + " dy");
    if (c["distance"] != "sqeuclid") continue;
    // E against tslearn through the chain rule: dR/dx_i = 2 sum_j E_ij (x_i - y_j).
    const std::vector<float> e = ReadArray(E, n, m), xs = Floats(c["x"]), ys = Floats(c["y"]);
    std::vector<float> dx_from_e(static_cast<size_t>(n) * d, 0.0f);
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < d; ++k) {
        double sum = 0.0;
        for (int jj = 0; jj < m && !e.empty(); ++jj) {
          sum += 2.0 * e[i * m + jj] * (static_cast<double>(xs[i * d + k]) - ys[jj * d + k]);
        }
        dx_from_e[i * d + k] = static_cast<float>(sum);
      }
    }
    ExpectArray(dx_from_e, c["dx"], name + " dx from E");
  }
}

TEST(SoftDtwCli, CostMatricesValueAndE) {
  const auto fixture = LoadFixture();
  ASSERT_FALSE(fixture["cost_cases"].empty());
  int k = 0;
  for (const auto& c : fixture["cost_cases"]) {
    const std::string name = c["name"];
    const int n = c["n"], m = c["m"];
    const std::string cost = WriteInput("cost", k, Floats(c["cost"]), n, m);
    const std::string E = Tmp(k % 2 == 0 ? "E.txt" : "E.npy");
    ++k;
    const auto j = RunJson({"--mode=cost", "--x=" + cost, "--gamma=" + Num(c["gamma"]),
                            "--band=" + std::to_string(c["band"].get<int>()), "--e_out=" + E});
    ASSERT_TRUE(j.contains("value")) << name;
    ExpectScalar(j["value"].get<double>(), c["value"], name + " value");
    ExpectArray(ReadArray(E, n, m), c["E"], name + " E");
  }
}

TEST(SoftDtwCli, NormalisedGakMatchesTorch) {
  const auto fixture = LoadFixture();
  ASSERT_FALSE(fixture["gak_pair_cases"].empty());
  int k = 0;
  for (const auto& c : fixture["gak_pair_cases"]) {
    const std::string name = c["name"];
    const int n = c["n"], m = c["m"], d = c["d"];
    const std::string x = WriteInput("gak_x", k, Floats(c["x"]), n, d);
    const std::string y = WriteInput("gak_y", k, Floats(c["y"]), m, d);
    ++k;
    const std::string grad = Tmp("gak_grad");
    const auto j = RunJson({"--mode=gak", "--x=" + x, "--y=" + y, "--delta=" + Num(c["delta"]),
                            "--distance=" + c["distance"].get<std::string>(),
                            "--grad_out=" + grad});
    ASSERT_TRUE(j.contains("value")) << name;
    const double k_tilde = j["value"];
    ExpectScalar(k_tilde, c["k"], name + " K~");
    EXPECT_NEAR(j["log_value"].get<double>(), std::log(k_tilde), 1e-9) << name;
    ExpectArray(ReadArray(grad + "_x.npy", n, d), c["dx"], name + " dx");
    ExpectArray(ReadArray(grad + "_y.npy", m, d), c["dy"], name + " dy");
  }
}

// ---- Output formats, examples, paths -------------------------------------------

TEST(SoftDtwCli, TextOutputHasTheFieldsAndTheSameValue) {
  const std::string ex = "tools/sdtw/examples/";
  const Outcome o = RunTool({"--x=" + ex + "x.npy", "--y=" + ex + "y.csv", "--gamma=0.5",
                             "--band=2"});
  ASSERT_EQ(o.code, 0) << o.err;
  std::istringstream lines(o.out);
  std::string key, value, text_value;
  std::vector<std::string> keys;
  while (lines >> key >> value) {
    keys.push_back(key);
    if (key == "value") text_value = value;
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"mode", "distance", "x", "y", "n", "m", "d", "gamma",
                                            "band", "value"}));
  EXPECT_NE(o.out.find("gamma      0.5\n"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("band       2\n"), std::string::npos) << o.out;
  // The same sequence as text, and JSON output: the very same double.
  const auto j = RunJson({"--x=" + ex + "x.txt", "--y=" + ex + "y.csv", "--gamma=0.5",
                          "--band=2"});
  ASSERT_TRUE(j.contains("value"));
  EXPECT_EQ(std::strtod(text_value.c_str(), nullptr), j["value"].get<double>());
  EXPECT_EQ(j["n"], 6);
  EXPECT_EQ(j["m"], 4);
  EXPECT_EQ(j["d"], 2);
}

TEST(SoftDtwCli, OneDimensionalInputGivesOneDimensionalGradient) {
  const std::string z = "tools/sdtw/examples/z_1d.npy";
  const std::string grad = Tmp("z_grad");
  const auto j = RunJson({"--x=" + z, "--y=tools/sdtw/examples/z_1d.txt", "--grad_out=" + grad});
  ASSERT_TRUE(j.contains("value"));
  EXPECT_EQ(j["d"], 1);
  auto gx = ReadMatrix(grad + "_x.npy"), gy = ReadMatrix(grad + "_y.npy");
  ASSERT_TRUE(gx.ok() && gy.ok());
  EXPECT_TRUE(gx->one_d);    // x was 1-D
  EXPECT_FALSE(gy->one_d);   // y was text [5, 1]
}

TEST(SoftDtwCli, RelativePathsUnderBazelRun) {
  const std::string dir = Tmp("workdir");
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  const float x[] = {0.0f, 1.0f, 2.0f}, y[] = {0.5f, 2.5f};
  ASSERT_TRUE(WriteText(dir + "/a.csv", x, 3, 1).ok());
  ASSERT_TRUE(WriteText(dir + "/b.csv", y, 2, 1).ok());
  const Outcome o = RunTool({"--x=a.csv", "--y=b.csv", "--e_out=E.npy"},
                            "BUILD_WORKING_DIRECTORY='" + dir + "'");
  ASSERT_EQ(o.code, 0) << o.err;
  auto E = ReadMatrix(dir + "/E.npy");
  ASSERT_TRUE(E.ok()) << E.status();
  EXPECT_EQ(E->rows, 3);
  EXPECT_EQ(E->cols, 2);
}

TEST(SoftDtwCli, HelpExitsZero) {
  const Outcome o = RunTool({"--help"});
  EXPECT_EQ(o.code, 0);
  EXPECT_EQ(o.out.rfind("usage: soft_dtw", 0), 0u) << o.out;
}

// ---- Bad input: exit 2, one line on stderr naming the problem ------------------

TEST(SoftDtwCli, BadInputExitsTwoWithOneLine) {
  const std::string ex = "tools/sdtw/examples/";
  const std::string ragged = Tmp("ragged.csv"), nan = Tmp("nan.npy"), empty = Tmp("empty.txt");
  const std::string huge = Tmp("huge.txt"), minus_huge = Tmp("minus_huge.txt");
  const std::string int_npy = Tmp("int.npy");
  std::ofstream(ragged) << "1,2\n3\n";
  std::ofstream(empty) << "# nothing\n";
  std::ofstream(huge) << "1e19 1e19\n";
  std::ofstream(minus_huge) << "-1e19 -1e19\n";
  const float nan_values[] = {1.0f, std::nanf("")};
  ASSERT_TRUE(WriteNpy(nan, nan_values, 1, 2).ok());
  {
    std::string bytes = Slurp(ex + "x.npy");  // NumPy's header with another dtype
    const size_t at = bytes.find("<f4");
    ASSERT_NE(at, std::string::npos);
    bytes.replace(at, 3, "<i4");
    std::ofstream(int_npy, std::ios::binary) << bytes;
  }
  const std::string x = "--x=" + ex + "x.npy", y = "--y=" + ex + "y.csv";
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {{x, y, "--gama=1"}, {"'--gama=1'", "unknown flag"}},
      {{x, y, "extra"}, {"'extra'", "unexpected argument"}},
      {{y}, {"--x=FILE is required"}},
      {{x, y, "--gamma=0"}, {"--gamma=0", "> 0"}},
      {{x, y, "--gamma=abc"}, {"--gamma=abc"}},
      {{x, y, "--band=1.5"}, {"--band=1.5", "integer"}},
      {{x, y, "--distance=l1"}, {"sqeuclid|cosine"}},
      {{x, y, "--mode=dtw"}, {"sdtw|cost|gak"}},
      {{x, y, "--format=xml"}, {"text|json"}},
      {{x, "--y=" + ex + "z_1d.npy"}, {"x.npy has d = 2", "z_1d.npy has d = 1"}},
      {{x, "--y=" + ragged}, {ragged, "line 2", "1 numbers"}},
      {{"--x=" + nan, y}, {nan, "element [0, 1]", "NaN"}},
      {{x, "--y=" + empty}, {empty, "no data rows"}},
      {{"--x=" + int_npy, y}, {int_npy, "dtype '<i4'"}},
      {{"--x=" + Tmp("missing.npy"), y}, {"missing.npy", "cannot open"}},
      {{"--x=" + huge, "--y=" + minus_huge}, {"not finite", "scale the inputs down"}},
      {{"--mode=cost", x, y}, {"--mode=cost", "drop --y"}},
      {{"--mode=cost", x, "--grad_out=g"}, {"--grad_out", "--e_out"}},
      {{"--mode=gak", x, y, "--gamma=2"}, {"gamma = 1"}},
      {{x, y, "--delta=2"}, {"--delta only applies to --mode=gak"}},
      {{x, y, "--e_out=" + Tmp("no/such/dir/E.npy")}, {"no/such/dir/E.npy", "cannot write"}},
  };
  for (const Case& c : cases) {
    std::string what;
    for (const std::string& a : c.args) what += a + " ";
    const Outcome o = RunTool(c.args);
    EXPECT_EQ(o.code, 2) << what << "\n" << o.out << o.err;
    EXPECT_EQ(o.out, "") << what;
    EXPECT_EQ(o.err.rfind("soft_dtw: error: ", 0), 0u) << what << ": " << o.err;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << what << ": " << o.err;
    for (const std::string& part : c.expect) {
      EXPECT_NE(o.err.find(part), std::string::npos) << what << ": '" << part << "' not in "
                                                     << o.err;
    }
  }
}

}  // namespace
}  // namespace ut::tools
