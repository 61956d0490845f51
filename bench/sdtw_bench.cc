// soft-DTW throughput: forward + backward between sequence pairs, including the
// squared-Euclidean cost GEMM and the gradients to both sequences (GEMMs), in
// cells/s (cells = n*m per pair). The same inputs go to tslearn (soft_dtw +
// gradient + Jacobian products, bench/sdtw_tslearn_ref.py, as a subprocess with
// the same number of worker processes) and the table shows both and the ratios:
//   ratio     tslearn wall time / ours, both with the same thread count;
//   per core  tslearn CPU seconds / ours for the same work (CPU time of the
//             timed section: robust when other jobs share the machine; ours
//             includes OpenMP/OpenBLAS spin-waiting, so it is conservative).
//
//   bazel run -c opt //bench:sdtw_bench -- [--threads=N] [--cases=0,1,2]
//       [--no_tslearn] [--python=python3] [--script=bench/sdtw_tslearn_ref.py]
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/base/rng.h"
#include "core/base/timer.h"
#include "ops/gak.h"

namespace {

struct Case {
  int pairs, n, d;
};

struct Reference {
  bool ok = false;
  double seconds = 0, cpu_seconds = 0, value_sum = 0;
};

// User + system CPU seconds of this process (all threads).
double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Runs the tslearn script on the pairs in `path`; "seconds=n/a" or a failure
// gives ok = false.
Reference RunTslearn(const std::string& python, const std::string& script,
                     const std::string& path, const Case& c, int threads) {
  const std::string cmd = python + " " + script + " --input " + path + " --pairs " +
                          std::to_string(c.pairs) + " --n " + std::to_string(c.n) + " --m " +
                          std::to_string(c.n) + " --d " + std::to_string(c.d) + " --threads " +
                          std::to_string(threads) + " 2>/dev/null";
  Reference ref;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return ref;
  char line[512];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    double s = 0, cpu = 0, v = 0;
    if (std::sscanf(line, "seconds=%lf cpu_seconds=%lf value_sum=%lf", &s, &cpu, &v) == 3) {
      ref = {true, s, cpu, v};
    }
  }
  pclose(pipe);
  return ref;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  bool use_tslearn = true;
  std::string python = "python3", script = "bench/sdtw_tslearn_ref.py";
  std::string only = "0,1,2";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--threads=", 0) == 0) threads = std::max(1, std::atoi(arg.c_str() + 10));
    else if (arg == "--no_tslearn") use_tslearn = false;
    else if (arg.rfind("--cases=", 0) == 0) only = arg.substr(8);
    else if (arg.rfind("--python=", 0) == 0) python = arg.substr(9);
    else if (arg.rfind("--script=", 0) == 0) script = arg.substr(9);
    else {
      std::fprintf(stderr, "unknown argument %s\nusage: sdtw_bench [--threads=N] [--no_tslearn] "
                   "[--cases=0,1,2] [--python=python3] [--script=bench/sdtw_tslearn_ref.py]\n", arg.c_str());
      return 2;
    }
  }
  omp_set_num_threads(threads);
  const std::vector<Case> cases = {{64, 128, 64}, {16, 512, 64}, {4, 4096, 256}};
  const std::string path = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                           "/sdtw_bench_pairs.f32";

  std::printf("soft-DTW forward+backward with squared-Euclidean cost GEMM and input gradients, "
              "gamma = 1, %d thread(s)\n", threads);
  std::printf("%5s %5s %5s %4s | %8s %8s %10s | %9s %9s %10s | %7s %8s | %s\n", "pairs", "n",
              "m", "d", "ours s", "ours cpu", "ours Mc/s", "tslearn s", "ts cpu", "ts Mc/s",
              "ratio", "per core", "values agree");
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    if (only.find(std::to_string(ci)) == std::string::npos) continue;
    const Case& c = cases[ci];
    // Pair b: sequence 2b (x) and 2b+1 (y), rows ~ N(0,1)/sqrt(d).
    ut::Rng rng(1234 + c.n);
    const int count = 2 * c.pairs;
    std::vector<int> lengths(count, c.n), u(c.pairs), v(c.pairs);
    std::vector<float> rows(static_cast<size_t>(count) * c.n * c.d);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
    for (float& x : rows) x = static_cast<float>(scale * rng.Normal());
    for (int b = 0; b < c.pairs; ++b) {
      u[b] = 2 * b;
      v[b] = 2 * b + 1;
    }
    const ut::cpu::Sequences seqs{rows.data(), c.d, count, lengths.data(), nullptr};
    const ut::cpu::SequencePairs pairs{c.pairs, u.data(), v.data()};
    ut::cpu::SequenceSdtwOptions opt;
    opt.distance = ut::cpu::SliceDistance::kSqEuclid;
    opt.gamma = 1.0;
    opt.num_threads = threads;
    std::vector<double> values(c.pairs), dvalues(c.pairs, 1.0);
    std::vector<float> drows(rows.size(), 0.0f);
    auto run = [&] {
      const absl::Status s = ut::cpu::soft_dtw_sequences_backward(
          values.data(), drows.data(), dvalues.data(), seqs, pairs, opt);
      if (!s.ok()) {
        std::fprintf(stderr, "soft_dtw_sequences_backward: %s\n", s.ToString().c_str());
        std::exit(1);
      }
    };
    run();  // warm-up: page faults, OpenBLAS buffers
    int reps = 0;
    const double cpu0 = CpuSeconds();
    ut::Timer timer;
    do {
      run();
      ++reps;
    } while (timer.Seconds() < 1.0 && reps < 20);
    const double ours = timer.Seconds() / reps;
    const double ours_cpu = (CpuSeconds() - cpu0) / reps;
    const double cells = static_cast<double>(c.pairs) * c.n * c.n;
    double value_sum = 0;
    for (double x : values) value_sum += x;

    Reference ref;
    if (use_tslearn) {
      std::ofstream out(path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(rows.data()), rows.size() * sizeof(float));
      out.close();
      ref = RunTslearn(python, script, path, c, threads);
      std::remove(path.c_str());
    }
    char ts_s[32] = "n/a", ts_cpu[32] = "n/a", ts_rate[32] = "n/a", ratio[32] = "n/a",
         per_core[32] = "n/a", agree[64] = "n/a";
    if (ref.ok) {
      std::snprintf(ts_s, sizeof(ts_s), "%.4f", ref.seconds);
      std::snprintf(ts_cpu, sizeof(ts_cpu), "%.4f", ref.cpu_seconds);
      std::snprintf(ts_rate, sizeof(ts_rate), "%.2f", cells / ref.seconds / 1e6);
      std::snprintf(ratio, sizeof(ratio), "%.1fx", ref.seconds / ours);
      std::snprintf(per_core, sizeof(per_core), "%.1fx", ref.cpu_seconds / ours_cpu);
      const double rel = std::fabs(value_sum - ref.value_sum) / std::fabs(ref.value_sum);
      std::snprintf(agree, sizeof(agree), "%s (rel %.1e)", rel < 1e-4 ? "yes" : "NO", rel);
    }
    std::printf("%5d %5d %5d %4d | %8.4f %8.4f %10.2f | %9s %9s %10s | %7s %8s | %s\n", c.pairs,
                c.n, c.n, c.d, ours, ours_cpu, cells / ours / 1e6, ts_s, ts_cpu, ts_rate, ratio,
                per_core, agree);
    std::fflush(stdout);
  }
  return 0;
}
