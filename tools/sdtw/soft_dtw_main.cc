// soft_dtw: the engine's soft-DTW / normalised GAK on two sequences from files,
// so that anyone can compare it with tslearn or their own code without C++.
//
//   soft_dtw --x=a.npy --y=b.npy [--gamma=1] [--band=-1] [--distance=sqeuclid|cosine]
//            [--mode=sdtw|cost|gak] [--delta=1] [--e_out=E.npy] [--grad_out=P]
//            [--format=text|json] [--help]
//
// docs/soft_dtw_cli.md describes every flag, the input formats and exit codes.
// Every user error prints one "soft_dtw: error: ..." line and exits 2.
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "core/base/logging.h"
#include "core/base/status.h"
#include "launch/flags.h"
#include "nlohmann/json.hpp"
#include "ops/gak.h"
#include "ops/sdtw.h"
#include "tools/sdtw/matrix_io.h"

namespace ut::tools {
namespace {

using cpu::SliceDistance;

constexpr char kUsage[] =
    R"(usage: soft_dtw --x=A [--y=B] [--mode=sdtw|cost|gak] [--gamma=1] [--band=-1]
                [--distance=sqeuclid|cosine] [--delta=1] [--e_out=FILE]
                [--grad_out=PREFIX] [--format=text|json] [--help]

Prints the engine's soft-DTW value (ops/sdtw.h, ops/gak.h) for two sequences
read from files. docs/soft_dtw_cli.md has the formulas and a tslearn check.

flags:
  --x=A, --y=B       the sequences x [n,d] and y [m,d]: .npy (float32/float64,
                     C order, 1-D [n] or 2-D [n,d]) or text (one slice per line,
                     numbers separated by spaces, tabs or commas; '#' comments).
  --mode=sdtw        (default) soft-DTW R[n,m] on the slice distances of x, y.
  --mode=cost        soft-DTW on the cost matrix [n,m] given by --x alone.
  --mode=gak         normalised Global Alignment Kernel K~(x,y) (gamma = 1,
                     sigma = delta*sqrt((n+m)/2)); also prints log K~.
  --gamma=G          softmin temperature, > 0 (default 1; sdtw and cost modes).
  --band=W           Sakoe-Chiba half-width (widened by |n-m|); < 0: none (default).
  --distance=D       slice distance: sqeuclid |x_i-y_j|^2 (default, as tslearn's
                     soft_dtw) or cosine 1-cos(x_i,y_j) (sdtw and gak modes).
  --delta=D          GAK bandwidth factor, > 0 (default 1; gak mode).
  --e_out=FILE       write E = dR[n,m]/dcost [n,m] (gak: of R_xy over its GAK
                     cost), .npy (float32) or text by extension.
  --grad_out=P       write P_x.npy and P_y.npy: d value / d x and d value / d y
                     (gak: dK~/dx, dK~/dy). Not in cost mode (there E is the gradient).
  --format=text      (default) one "name value" line per field; json: one object.
  --help, -h         print this message and exit.

exit status: 0 done; 2 user error (bad flag or input), with one line on stderr.
Under `bazel run`, relative paths are relative to the directory you ran it in.
)";

struct Flags {
  bool help = false;
  std::string x, y, e_out, grad_out;
  std::string mode = "sdtw", distance = "sqeuclid", format = "text";
  double gamma = 1.0, delta = 1.0;
  int band = -1;
  // Which optional flags were given, for the mode checks.
  bool has_gamma = false, has_delta = false, has_distance = false;
};

absl::Status CheckChoice(const launch::ParsedFlag& p, std::initializer_list<const char*> ok) {
  for (const char* choice : ok) {
    if (p.value == choice) return absl::OkStatus();
  }
  std::string list;
  for (const char* choice : ok) absl::StrAppend(&list, list.empty() ? "" : "|", choice);
  return launch::BadFlag(p.arg, absl::StrCat("must be one of ", list));
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  ASSIGN_OR_RETURN(std::vector<launch::ParsedFlag> parsed,
                   launch::ParseArgs(argc, argv, {"help"},
                                     {"x", "y", "gamma", "band", "distance", "mode", "delta",
                                      "e_out", "grad_out", "format"}));
  Flags f;
  for (const launch::ParsedFlag& p : parsed) {
    if (p.name == "help") {
      f.help = true;
    } else if (p.name == "x") {
      f.x = p.value;
    } else if (p.name == "y") {
      f.y = p.value;
    } else if (p.name == "e_out") {
      f.e_out = p.value;
    } else if (p.name == "grad_out") {
      f.grad_out = p.value;
    } else if (p.name == "gamma") {
      RETURN_IF_ERROR(launch::DoubleFlag(p, /*positive=*/true, &f.gamma));
      f.has_gamma = true;
    } else if (p.name == "delta") {
      RETURN_IF_ERROR(launch::DoubleFlag(p, /*positive=*/true, &f.delta));
      f.has_delta = true;
    } else if (p.name == "band") {
      RETURN_IF_ERROR(launch::IntFlag(p, std::numeric_limits<int>::min(), &f.band));
      if (f.band < 0) f.band = -1;
    } else if (p.name == "distance") {
      RETURN_IF_ERROR(CheckChoice(p, {"sqeuclid", "cosine"}));
      f.distance = p.value;
      f.has_distance = true;
    } else if (p.name == "mode") {
      RETURN_IF_ERROR(CheckChoice(p, {"sdtw", "cost", "gak"}));
      f.mode = p.value;
    } else if (p.name == "format") {
      RETURN_IF_ERROR(CheckChoice(p, {"text", "json"}));
      f.format = p.value;
    } else {  // ParseArgs lets --a.b=c through as a config override; we have none
      return launch::BadFlag(p.arg, "unknown flag");
    }
  }
  if (f.help) return f;
  auto usage = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(what, " (run with --help for the flags)"));
  };
  if (f.x.empty()) return usage("--x=FILE is required");
  if (f.mode == "cost") {
    if (!f.y.empty()) {
      return usage("--mode=cost reads the [n,m] cost matrix from --x alone; drop --y");
    }
    if (f.has_distance) {
      return usage("--distance does not apply to --mode=cost (the costs are given)");
    }
    if (!f.grad_out.empty()) {
      return usage("--grad_out needs --mode=sdtw or gak; in --mode=cost the gradient w.r.t. "
                   "the cost matrix is E, written by --e_out");
    }
  } else if (f.y.empty()) {
    return usage(absl::StrCat("--mode=", f.mode, " needs --y=FILE (the second sequence)"));
  }
  if (f.mode == "gak" && f.has_gamma && f.gamma != 1.0) {
    return usage("--mode=gak always uses gamma = 1 (log K = -R); drop --gamma");
  }
  if (f.mode != "gak" && f.has_delta) return usage("--delta only applies to --mode=gak");
  return f;
}

// ---- Computation ----------------------------------------------------------

struct Result {
  int n = 0, m = 0, d = 0;  // d = 0 in cost mode
  double value = 0.0;       // R[n,m], or K~ in gak mode
  double sigma = 0.0, r_xy = 0.0, r_xx = 0.0, r_yy = 0.0, log_value = 0.0;  // gak
  std::vector<float> E;       // [n,m] when --e_out
  std::vector<float> dx, dy;  // [n,d], [m,d] when --grad_out
};

Result Sized(int64_t n, int64_t m, int64_t d) {
  Result r;
  r.n = static_cast<int>(n);
  r.m = static_cast<int>(m);
  r.d = static_cast<int>(d);
  return r;
}

SliceDistance DistanceOf(const Flags& f) {
  return f.distance == "cosine" ? SliceDistance::kCosine : SliceDistance::kSqEuclid;
}

// a [n,d], b [m,d] -> phi [n,m].
std::vector<float> SliceDistances(const Matrix& a, const Matrix& b, SliceDistance distance) {
  const int n = static_cast<int>(a.rows), m = static_cast<int>(b.rows);
  const int d = static_cast<int>(a.cols);
  std::vector<float> phi(static_cast<size_t>(n) * m);
  if (distance == SliceDistance::kCosine) {
    cpu::cosine_distance_forward(phi.data(), a.values.data(), b.values.data(), n, m, d);
  } else {
    cpu::sqeuclid_distance_forward(phi.data(), a.values.data(), b.values.data(), n, m, d);
  }
  return phi;
}

// The two sequences as the engine's batch API sees them: rows [n+m, d].
struct SequencePair {
  std::vector<float> rows;  // [n+m, d]: x then y
  int d = 0;
  int lengths[2] = {0, 0};  // n, m
  int u = 0, v = 1;         // the one pair (x, y)
  cpu::Sequences seqs() const { return {rows.data(), d, 2, lengths, nullptr}; }
  cpu::SequencePairs pairs() const { return {1, &u, &v}; }
};

SequencePair MakePair(const Matrix& x, const Matrix& y) {
  SequencePair p;
  p.rows = x.values;
  p.rows.insert(p.rows.end(), y.values.begin(), y.values.end());
  p.lengths[0] = static_cast<int>(x.rows);
  p.lengths[1] = static_cast<int>(y.rows);
  p.d = static_cast<int>(x.cols);
  return p;
}

// Gradients of the value w.r.t. x and y: backward(drows, &one) fills drows
// [n+m, d] (the pair's rows), split here into dx [n,d] and dy [m,d].
template <typename Backward>
absl::Status RowGradients(const SequencePair& pair, Backward backward, Result* out) {
  const double one = 1.0;
  std::vector<float> drows(pair.rows.size(), 0.0f);
  RETURN_IF_ERROR(backward(drows.data(), &one));
  const size_t nx = static_cast<size_t>(out->n) * out->d;
  out->dx.assign(drows.begin(), drows.begin() + nx);
  out->dy.assign(drows.begin() + nx, drows.end());
  return absl::OkStatus();
}

// Soft-DTW between sequences: the value (and gradients) from the batch API the
// trainer uses; E from the single-pair API on the same slice distances.
absl::StatusOr<Result> RunSdtw(const Flags& f, const Matrix& x, const Matrix& y) {
  Result r = Sized(x.rows, y.rows, x.cols);
  const SequencePair pair = MakePair(x, y);
  cpu::SequenceSdtwOptions opt;
  opt.distance = DistanceOf(f);
  opt.gamma = f.gamma;
  opt.band = f.band;
  if (f.grad_out.empty()) {
    RETURN_IF_ERROR(cpu::soft_dtw_sequences_forward(&r.value, pair.seqs(), pair.pairs(), opt));
  } else {
    RETURN_IF_ERROR(RowGradients(pair, [&](float* drows, const double* one) {
      return cpu::soft_dtw_sequences_backward(&r.value, drows, one, pair.seqs(), pair.pairs(),
                                              opt);
    }, &r));
  }
  if (!f.e_out.empty()) {
    r.E = SliceDistances(x, y, opt.distance);  // E overwrites the costs
    cpu::soft_dtw_pair_backward(r.E.data(), 1.0f, r.E.data(), r.n, r.m, f.gamma, f.band,
                                &cpu::ThreadWorkspace());
  }
  return r;
}

// Soft-DTW on a given cost matrix [n,m].
absl::StatusOr<Result> RunCost(const Flags& f, const Matrix& cost) {
  Result r = Sized(cost.rows, cost.cols, 0);
  const int64_t offsets[2] = {0, cost.rows * cost.cols};
  const cpu::SdtwBatch batch{1, &r.n, &r.m, offsets};
  cpu::SdtwOptions opt;
  opt.gamma = f.gamma;
  opt.band = f.band;
  RETURN_IF_ERROR(cpu::ValidateSdtw(batch, opt));
  if (f.e_out.empty()) {
    RETURN_IF_ERROR(cpu::soft_dtw_forward(&r.value, cost.values.data(), batch, opt));
  } else {
    r.E.resize(cost.values.size());
    RETURN_IF_ERROR(cpu::soft_dtw_forward_backward(&r.value, r.E.data(), cost.values.data(),
                                                   nullptr, batch, opt));
  }
  return r;
}

// Normalised GAK: K~ (and dK~/dx, dK~/dy) from gak_pairs_*; log K~ from the
// three soft-DTW terms, computed here on the GAK local costs with the pair's
// sigma (exact where K~ underflows); E is that of the R_xy term.
absl::StatusOr<Result> RunGak(const Flags& f, const Matrix& x, const Matrix& y) {
  Result r = Sized(x.rows, y.rows, x.cols);
  const SequencePair pair = MakePair(x, y);
  cpu::GakOptions opt;
  opt.distance = DistanceOf(f);
  opt.delta = f.delta;
  opt.band = f.band;
  RETURN_IF_ERROR(cpu::gak_pairs_forward(&r.value, pair.seqs(), pair.pairs(), opt));
  if (!f.grad_out.empty()) {
    RETURN_IF_ERROR(RowGradients(pair, [&](float* drows, const double* one) {
      return cpu::gak_pairs_backward(drows, one, pair.seqs(), pair.pairs(), opt);
    }, &r));
  }
  r.sigma = cpu::gak_sigma(f.delta, r.n, r.m);
  // The three terms as one soft-DTW batch in the order gak_pairs_forward runs
  // them (x-y, x-x, y-y): the batch API then groups them the same way (pairs
  // of one shape may share the lane sweep, ops/cpu/sdtw_lanes.h), so
  // log_value agrees with value to the last bits, not only to the ~1e-8 that
  // separates the two sweeps.
  const Matrix* parts[3][2] = {{&x, &y}, {&x, &x}, {&y, &y}};
  std::vector<float> costs;
  std::vector<int> n(3), m(3);
  std::vector<int64_t> offsets = {0};
  for (int t = 0; t < 3; ++t) {
    std::vector<float> cost = SliceDistances(*parts[t][0], *parts[t][1], opt.distance);
    cpu::gak_local_cost_forward(cost.data(), cost.data(), cost.size(), r.sigma);
    costs.insert(costs.end(), cost.begin(), cost.end());
    n[t] = static_cast<int>(parts[t][0]->rows);
    m[t] = static_cast<int>(parts[t][1]->rows);
    offsets.push_back(static_cast<int64_t>(costs.size()));
  }
  const cpu::SdtwBatch batch{3, n.data(), m.data(), offsets.data()};
  cpu::SdtwOptions sopt;
  sopt.gamma = 1.0;
  sopt.band = f.band;
  double R[3];
  if (f.e_out.empty()) {
    RETURN_IF_ERROR(cpu::soft_dtw_forward(R, costs.data(), batch, sopt));
  } else {
    const float only_xy[3] = {1.0f, 0.0f, 0.0f};  // E of the x-y term
    RETURN_IF_ERROR(cpu::soft_dtw_forward_backward(R, costs.data(), costs.data(), only_xy, batch,
                                                   sopt));
    r.E.assign(costs.begin(), costs.begin() + offsets[1]);
  }
  r.r_xy = R[0];
  r.r_xx = R[1];
  r.r_yy = R[2];
  r.log_value = -(r.r_xy - 0.5 * r.r_xx - 0.5 * r.r_yy);
  return r;
}

// ---- Output -----------------------------------------------------------------

// Shortest text that reads back as the same double (flag values).
std::string Shortest(double v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

std::string Full(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void PrintText(const Flags& f, const Result& r) {
  auto line = [](const char* name, const std::string& value) {
    std::printf("%-10s %s\n", name, value.c_str());
  };
  line("mode", f.mode);
  if (f.mode != "cost") line("distance", f.distance);
  line("x", f.x);
  if (f.mode != "cost") line("y", f.y);
  line("n", std::to_string(r.n));
  line("m", std::to_string(r.m));
  if (f.mode != "cost") line("d", std::to_string(r.d));
  line("gamma", f.mode == "gak" ? "1" : Shortest(f.gamma));
  line("band", std::to_string(f.band));
  if (f.mode == "gak") {
    line("delta", Shortest(f.delta));
    line("sigma", Full(r.sigma));
    line("r_xy", Full(r.r_xy));
    line("r_xx", Full(r.r_xx));
    line("r_yy", Full(r.r_yy));
    line("log_value", Full(r.log_value));
  }
  line("value", Full(r.value));
  if (!f.e_out.empty()) line("e_out", f.e_out);
  if (!f.grad_out.empty()) {
    line("grad_x_out", f.grad_out + "_x.npy");
    line("grad_y_out", f.grad_out + "_y.npy");
  }
}

void PrintJson(const Flags& f, const Result& r) {
  nlohmann::ordered_json j;
  j["mode"] = f.mode;
  if (f.mode != "cost") j["distance"] = f.distance;
  j["x"] = f.x;
  if (f.mode != "cost") j["y"] = f.y;
  j["n"] = r.n;
  j["m"] = r.m;
  if (f.mode != "cost") j["d"] = r.d;
  j["gamma"] = f.mode == "gak" ? 1.0 : f.gamma;
  j["band"] = f.band;
  if (f.mode == "gak") {
    j["delta"] = f.delta;
    j["sigma"] = r.sigma;
    j["r_xy"] = r.r_xy;
    j["r_xx"] = r.r_xx;
    j["r_yy"] = r.r_yy;
    j["log_value"] = r.log_value;
  }
  j["value"] = r.value;  // nlohmann prints doubles so that they read back exactly
  if (!f.e_out.empty()) j["e_out"] = f.e_out;
  if (!f.grad_out.empty()) {
    j["grad_x_out"] = f.grad_out + "_x.npy";
    j["grad_y_out"] = f.grad_out + "_y.npy";
  }
  std::printf("%s\n", j.dump().c_str());
}

// ---- Main -------------------------------------------------------------------

absl::Status CheckSize(const std::string& path, const Matrix& a, const char* what) {
  if (a.rows > (int64_t{1} << 30) || a.cols > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", a.rows, " x ", a.cols,
                                                   " is too large for ", what));
  }
  return absl::OkStatus();
}

absl::Status Run(const Flags& f) {
  ASSIGN_OR_RETURN(const Matrix x, ReadMatrix(f.x));
  RETURN_IF_ERROR(CheckSize(f.x, x, f.mode == "cost" ? "a cost matrix" : "a sequence"));
  Matrix y;
  Result r;
  if (f.mode == "cost") {
    ASSIGN_OR_RETURN(r, RunCost(f, x));
  } else {
    ASSIGN_OR_RETURN(y, ReadMatrix(f.y));
    RETURN_IF_ERROR(CheckSize(f.y, y, "a sequence"));
    if (x.cols != y.cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slice dimensions differ: ", f.x, " has d = ", x.cols, " numbers per row, ", f.y,
          " has d = ", y.cols, "; both sequences need slices of the same dimension"));
    }
    if (f.mode == "sdtw") {
      ASSIGN_OR_RETURN(r, RunSdtw(f, x, y));
    } else {
      ASSIGN_OR_RETURN(r, RunGak(f, x, y));
    }
  }
  if (!std::isfinite(r.value) || (f.mode == "gak" && !std::isfinite(r.log_value))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the result is not finite (value = ", r.value, "): the costs overflow float32; "
        "scale the inputs down"));
  }
  if (!f.e_out.empty()) RETURN_IF_ERROR(WriteMatrix(f.e_out, r.E.data(), r.n, r.m));
  if (!f.grad_out.empty()) {
    RETURN_IF_ERROR(WriteNpy(f.grad_out + "_x.npy", r.dx.data(), r.n, r.d, x.one_d));
    RETURN_IF_ERROR(WriteNpy(f.grad_out + "_y.npy", r.dy.data(), r.m, r.d, y.one_d));
  }
  if (f.format == "json") {
    PrintJson(f, r);
  } else {
    PrintText(f, r);
  }
  return absl::OkStatus();
}

// Under `bazel run` the binary starts in its runfiles; relative paths mean the
// directory the user ran bazel in.
absl::Status EnterWorkingDirectory() {
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  if (dir == nullptr || *dir == 0 || chdir(dir) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("cannot chdir to ", dir,
                                                    " (BUILD_WORKING_DIRECTORY)"));
}

}  // namespace
}  // namespace ut::tools

int main(int argc, char** argv) {
  ut::InitLogging(argv[0]);
  absl::StatusOr<ut::tools::Flags> flags = ut::tools::ParseFlags(argc, argv);
  absl::Status status = flags.status();
  if (flags.ok() && flags->help) {
    std::printf("%s", ut::tools::kUsage);
    return 0;
  }
  if (status.ok()) status = ut::tools::EnterWorkingDirectory();
  try {
    if (status.ok()) status = ut::tools::Run(*flags);
  } catch (const std::bad_alloc&) {
    status = absl::ResourceExhaustedError(
        "out of memory: soft-DTW needs about 4 bytes per cell of the n x m matrix, about 16 with "
        "--e_out or --grad_out; use shorter sequences");
  }
  if (!status.ok()) {
    std::fprintf(stderr, "soft_dtw: error: %s\n", std::string(status.message()).c_str());
    return ut::kUserErrorExitCode;
  }
  return 0;
}
