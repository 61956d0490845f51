// soft-DTW throughput, forward + backward, in cells/s (cells = n*m per pair),
// against tslearn (bench/sdtw_tslearn_ref.py, run as a subprocess with as many
// single-threaded worker processes as we use threads) on the same inputs, at
// two levels, each beside the same work in tslearn:
//   op     the soft-DTW op itself (ops/sdtw.h): cost matrices -> values and
//          the expected alignments E. tslearn: SoftDTW(D).compute() + grad().
//   whole  the sequence op (ops/gak.h): squared-Euclidean cost GEMM, soft-DTW,
//          E, and the gradients to both sequences (GEMMs E*Y, E^T*X).
//          tslearn: SquaredEuclidean.compute(), SoftDTW, and both
//          jacobian_product calls.
//   GEMMs  the whole op's GEMMs alone (cost matrices, E*Y, E^T*X); "bound" =
//          tslearn's whole time over it: the most the whole op could reach
//          on this CPU in float32 even if the soft-DTW itself took no time.
// "per core" = tslearn CPU seconds / ours for the same work (CPU time of the
// timed section: robust when other jobs share the machine; ours includes any
// OpenMP/OpenBLAS spin-waiting, so it is conservative). "ratio" = wall time.
//
//   bazel run -c opt //bench:sdtw_bench -- [--threads=N] [--cases=0,1,2]
//       [--no_tslearn] [--python=python3] [--script=bench/sdtw_tslearn_ref.py]
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/base/rng.h"
#include "core/base/timer.h"
#include "ops/gak.h"
#include "ops/sdtw.h"

namespace {

struct Case {
  int pairs, n, d;
};

struct Reference {
  bool ok = false;
  double seconds = 0, cpu_seconds = 0, value_sum = 0;
  double cost_cpu = 0, dp_cpu = 0, jac_cpu = 0;  // the parts of cpu_seconds
};

// Seconds per call of fn: the best of 5 rounds (each at least 0.2 s or one
// call), the usual way to keep other jobs on the machine out of a timing.
struct Timing {
  double seconds, cpu_seconds;
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
                     const std::string& path, const Case& c, int threads, int repeats) {
  const std::string cmd = python + " " + script + " --input " + path + " --pairs " +
                          std::to_string(c.pairs) + " --n " + std::to_string(c.n) + " --m " +
                          std::to_string(c.n) + " --d " + std::to_string(c.d) + " --threads " +
                          std::to_string(threads) + " --repeats " + std::to_string(repeats) + " 2>/dev/null";
  Reference ref;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return ref;
  char line[512];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    Reference r;
    if (std::sscanf(line, "seconds=%lf cpu_seconds=%lf value_sum=%lf cost_cpu=%lf dp_cpu=%lf "
                    "jac_cpu=%lf", &r.seconds, &r.cpu_seconds, &r.value_sum, &r.cost_cpu,
                    &r.dp_cpu, &r.jac_cpu) == 6) {
      r.ok = true;
      ref = r;
    }
  }
  pclose(pipe);
  return ref;
}

template <typename Fn>
Timing TimeIt(Fn fn) {
  fn();  // warm-up: page faults, OpenBLAS buffers
  Timing best{1e30, 1e30};
  for (int round = 0; round < 5; ++round) {
    int reps = 0;
    const double cpu0 = CpuSeconds();
    ut::Timer timer;
    do {
      fn();
      ++reps;
    } while (timer.Seconds() < 0.2);
    best.seconds = std::min(best.seconds, timer.Seconds() / reps);
    best.cpu_seconds = std::min(best.cpu_seconds, (CpuSeconds() - cpu0) / reps);
  }
  return best;
}

std::string Fmt(const char* format, double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
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
  // OpenBLAS (Debian's pthreads build) starts its worker threads when it is
  // loaded, and they spin on sched_yield for a while before going to sleep;
  // that CPU time would be charged to the first case (it was 15-20% of it).
  // ops/gemm.h runs OpenBLAS single-threaded, so they are never woken again.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::vector<Case> cases = {{64, 128, 64}, {16, 512, 64}, {4, 4096, 256}};
  // Per process, so that two benches at once cannot read or delete each other's input.
  const std::string path = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                           "/sdtw_bench_pairs." + std::to_string(getpid()) + ".f32";

  std::printf("soft-DTW forward + backward, gamma = 1, %d thread(s). op: cost matrices -> values "
              "and E; whole: + squared-Euclidean cost GEMM and the gradients to both "
              "sequences. Mc/s = million cells per second; per core = tslearn CPU s / ours.\n",
              threads);
  std::printf("%5s %5s %4s | %-33s | %-51s | %-17s | %s\n", "", "", "", "op (ops/sdtw.h)",
              "whole (ops/gak.h)", "its GEMMs alone", "");
  std::printf("%5s %5s %4s | %8s %8s %6s %8s | %8s %8s %8s %6s %6s %8s | %8s %8s | %s\n",
              "pairs", "n=m", "d", "ours s", "ts s", "Mc/s", "per core", "ours s", "ts s",
              "ts wall", "Mc/s", "ratio", "per core", "ours s", "bound", "values agree");
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
    const double cells = static_cast<double>(c.pairs) * c.n * c.n;
    auto check = [](const absl::Status& s) {
      if (!s.ok()) {
        std::fprintf(stderr, "sdtw_bench: %s\n", s.ToString().c_str());
        std::exit(1);
      }
    };

    // Whole: sequences -> values and row gradients.
    const ut::cpu::Sequences seqs{rows.data(), c.d, count, lengths.data(), nullptr};
    const ut::cpu::SequencePairs pairs{c.pairs, u.data(), v.data()};
    ut::cpu::SequenceSdtwOptions opt;
    opt.distance = ut::cpu::SliceDistance::kSqEuclid;
    opt.gamma = 1.0;
    opt.num_threads = threads;
    std::vector<double> values(c.pairs), dvalues(c.pairs, 1.0);
    std::vector<float> drows(rows.size(), 0.0f);
    const Timing whole = TimeIt([&] {
      check(ut::cpu::soft_dtw_sequences_backward(values.data(), drows.data(), dvalues.data(),
                                                 seqs, pairs, opt));
    });
    double value_sum = 0;
    for (double x : values) value_sum += x;

    // Op: the same pairs' cost matrices (computed once, outside the timing) -> values, E.
    const int64_t per_pair = int64_t{c.n} * c.n;
    std::vector<float> costs(static_cast<size_t>(c.pairs) * per_pair), E(costs.size());
    std::vector<int> n_of(c.pairs, c.n);
    std::vector<int64_t> offsets(c.pairs + 1);
    for (int b = 0; b <= c.pairs; ++b) offsets[b] = b * per_pair;
    for (int b = 0; b < c.pairs; ++b) {
      const float* x = rows.data() + static_cast<size_t>(2 * b) * c.n * c.d;
      ut::cpu::sqeuclid_distance_forward(costs.data() + offsets[b], x, x + int64_t{c.n} * c.d,
                                         c.n, c.n, c.d);
    }
    const ut::cpu::SdtwBatch batch{c.pairs, n_of.data(), n_of.data(), offsets.data()};
    ut::cpu::SdtwOptions sopt;
    sopt.gamma = 1.0;
    sopt.num_threads = threads;
    std::vector<double> op_values(c.pairs);
    const Timing op = TimeIt([&] {
      check(ut::cpu::soft_dtw_forward_backward(op_values.data(), E.data(), costs.data(), nullptr,
                                               batch, sopt));
    });
    double op_sum = 0;
    for (double x : op_values) op_sum += x;

    // The GEMMs of the whole op alone (cost matrices; E*Y and E^T*X with the
    // op's E): what the whole op costs even with a free soft-DTW, so that
    // tslearn's time over it bounds the whole op's ratio.
    std::vector<float> dpair(static_cast<size_t>(threads) * 2 * c.n * c.d);
    const Timing gemms = TimeIt([&] {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int b = 0; b < c.pairs; ++b) {
        const float* x = rows.data() + static_cast<size_t>(2 * b) * c.n * c.d;
        const float* y = x + int64_t{c.n} * c.d;
        float* dx = dpair.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * c.n * c.d;
        float* cost = costs.data() + offsets[b];  // rewritten with the same values
        ut::cpu::sqeuclid_distance_forward(cost, x, y, c.n, c.n, c.d);
        ut::cpu::sqeuclid_distance_backward(dx, dx + int64_t{c.n} * c.d, E.data() + offsets[b], x,
                                            y, c.n, c.n, c.d);
      }
    });

    Reference ref;
    if (use_tslearn) {
      std::ofstream out(path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(rows.data()), rows.size() * sizeof(float));
      out.close();
      // tslearn: the best of 5 runs over all pairs (1 at 4096: 15 s a run).
      ref = RunTslearn(python, script, path, c, threads, c.n >= 4096 ? 1 : 5);
      std::remove(path.c_str());
    }
    std::string ts_op = "n/a", op_core = "n/a", ts_whole = "n/a", ts_wall = "n/a", ratio = "n/a",
                whole_core = "n/a", bound = "n/a", agree = "n/a";
    if (ref.ok) {
      ts_op = Fmt("%.4f", ref.dp_cpu);
      op_core = Fmt("%.1fx", ref.dp_cpu / op.cpu_seconds);
      ts_whole = Fmt("%.4f", ref.cpu_seconds);
      ts_wall = Fmt("%.4f", ref.seconds);
      ratio = Fmt("%.1fx", ref.seconds / whole.seconds);
      whole_core = Fmt("%.1fx", ref.cpu_seconds / whole.cpu_seconds);
      bound = Fmt("%.1fx", ref.cpu_seconds / gemms.cpu_seconds);
      const double rel = std::fabs(value_sum - ref.value_sum) / std::fabs(ref.value_sum);
      const double rel_op = std::fabs(op_sum - ref.value_sum) / std::fabs(ref.value_sum);
      agree = Fmt("%.1e", std::max(rel, rel_op));
      agree = (std::max(rel, rel_op) < 1e-4 ? "yes (rel " : "NO (rel ") + agree + ")";
    }
    std::printf(
        "%5d %5d %4d | %8.4f %8s %6.0f %8s | %8.4f %8s %8s %6.0f %6s %8s | %8.4f %8s | %s\n",
        c.pairs, c.n, c.d, op.cpu_seconds, ts_op.c_str(), cells / op.seconds / 1e6,
        op_core.c_str(), whole.cpu_seconds, ts_whole.c_str(), ts_wall.c_str(),
        cells / whole.seconds / 1e6, ratio.c_str(), whole_core.c_str(), gemms.cpu_seconds,
        bound.c_str(), agree.c_str());
    std::fflush(stdout);
  }
  return 0;
}
