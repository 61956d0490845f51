// The soft-DTW lane sweep (ops/cpu/sdtw_lanes.h: 16 pairs of one shape, one
// per SIMD lane) against the reference kernel it replaces for such batches,
// the per-pair diagonal sweep (ops/cpu/sdtw.cc), on the same 16 pairs, one
// thread, forward + backward and forward alone, per square size. Prints one
// table: ns per cell for each and the ratio, which sweep the lanes ran (ratio
// or log domain), and how far their values and E are apart.
//
//   bazel run -c opt //bench:sdtw_lanes_bench -- [--sizes=8,16,32,64,128,256] [--gamma=1]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "core/base/timer.h"
#include "ops/cpu/sdtw_lanes.h"
#include "ops/sdtw.h"

namespace {

using ut::cpu::internal::kPairLanes;
using ut::cpu::internal::LaneGroup;
using ut::cpu::internal::LaneSweep;

// Seconds per call: the best of 5 rounds of at least 0.2 s each.
template <typename Fn>
double Seconds(Fn fn) {
  fn();  // warm-up (scratch allocation)
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    int calls = 0;
    ut::Timer timer;
    do {
      fn();
      ++calls;
    } while (timer.Seconds() < 0.2);
    best = std::min(best, timer.Seconds() / calls);
  }
  return best;
}

std::vector<int> ParseSizes(const std::string& list) {
  std::vector<int> sizes;
  size_t at = 0;
  while (at < list.size()) {
    const size_t comma = list.find(',', at);
    const std::string item = list.substr(at, comma == std::string::npos ? std::string::npos
                                                                         : comma - at);
    const int n = std::atoi(item.c_str());
    if (n < 1) {
      std::fprintf(stderr, "sdtw_lanes_bench: --sizes entry '%s' is not a positive integer\n",
                   item.c_str());
      std::exit(2);
    }
    sizes.push_back(n);
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {8, 16, 32, 64, 128, 256};
  double gamma = 1.0;
  for (int a = 1; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg.rfind("--sizes=", 0) == 0) {
      sizes = ParseSizes(arg.substr(8));
    } else if (arg.rfind("--gamma=", 0) == 0) {
      gamma = std::atof(arg.c_str() + 8);
      if (!(gamma > 0)) {
        std::fprintf(stderr, "sdtw_lanes_bench: --gamma needs a number > 0\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: sdtw_lanes_bench [--sizes=8,16,...] [--gamma=1]\n");
      return 2;
    }
  }
  const int P = kPairLanes;
  std::printf("soft-DTW, %d pairs of n x n, costs 2 + 0.35 N(0,1), gamma = %g, 1 thread.\n"
              "diagonal = soft_dtw_pair[_backward] per pair (the reference); lanes = one "
              "soft_dtw_lanes group. ns per cell (cells = %d n^2).\n",
              P, gamma, P);
  std::printf("    n | fwd+bwd: diagonal    lanes   speed-up | fwd: diagonal    lanes   speed-up"
              " | lanes ran | max value rel diff | max |E diff|\n");
  for (const int n : sizes) {
    const int64_t cells = int64_t{n} * n;
    ut::Rng rng(n);
    std::vector<float> cost(P * cells), E_diag(P * cells), E_lanes(P * cells);
    for (float& c : cost) c = 2.0f + 0.35f * rng.Normal();
    ut::cpu::SdtwWorkspace ws;
    std::vector<double> v_diag(P), v_lanes(P);
    LaneGroup group;
    group.count = P;
    for (int p = 0; p < P; ++p) {
      group.cost[p] = cost.data() + p * cells;
      group.E[p] = E_lanes.data() + p * cells;
      group.scale[p] = 1.0f;
    }
    auto diag_fb = [&] {
      for (int p = 0; p < P; ++p) {
        v_diag[p] = ut::cpu::soft_dtw_pair_backward(E_diag.data() + p * cells, 1.0f,
                                                    cost.data() + p * cells, n, n, gamma, -1, &ws);
      }
    };
    auto diag_f = [&] {
      for (int p = 0; p < P; ++p) {
        v_diag[p] = ut::cpu::soft_dtw_pair(cost.data() + p * cells, n, n, gamma, -1, &ws);
      }
    };
    LaneSweep sweep = LaneSweep::kLog;
    auto lanes_fb = [&] {
      sweep = ut::cpu::internal::soft_dtw_lanes(group, n, n, gamma, -1, true, v_lanes.data());
    };
    auto lanes_f = [&] {
      ut::cpu::internal::soft_dtw_lanes(group, n, n, gamma, -1, false, v_lanes.data());
    };
    const double t_diag_fb = Seconds(diag_fb), t_lanes_fb = Seconds(lanes_fb);
    const double t_diag_f = Seconds(diag_f), t_lanes_f = Seconds(lanes_f);
    diag_fb();
    lanes_fb();
    double dv = 0.0, de = 0.0;
    for (int p = 0; p < P; ++p) dv = std::max(dv, std::fabs(v_diag[p] - v_lanes[p]) / std::fabs(v_diag[p]));
    for (int64_t k = 0; k < P * cells; ++k) {
      de = std::max(de, static_cast<double>(std::fabs(E_diag[k] - E_lanes[k])));
    }
    const double per_cell = 1e9 / (static_cast<double>(P) * cells);
    std::printf("%5d |        %8.2f %8.2f %9.2fx |    %8.2f %8.2f %9.2fx | %9s | %18.1e | %12.1e\n", n,
                t_diag_fb * per_cell, t_lanes_fb * per_cell, t_diag_fb / t_lanes_fb,
                t_diag_f * per_cell, t_lanes_f * per_cell, t_diag_f / t_lanes_f,
                sweep == LaneSweep::kRatio ? "ratio" : "log", dv, de);
  }
  return 0;
}
