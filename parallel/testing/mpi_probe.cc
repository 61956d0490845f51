// mpi_probe: a small MPI program for testing launchers (launch/slurm/*) and
// failure handling. Every rank runs a loop of "steps"; one step is
//
//   AllReduce(sum) over the world  ->  pause --step_ms  ->  AllGather  ->
//   AllReduce in its TP, DP and PP groups  ->  Barrier
//
// and every result is checked against a closed form of (rank, step), so a
// wrong answer is a failure, not just a hang. The groups follow the engine's
// rank order (DESIGN.md section 4): rank = tp + dp*TP + pp*TP*DP.
//
// Flags (all --name=value):
//   --parallel.tp/dp/pp=N  the grid, named as unified_train names it; dp 0 or
//                     absent: world / (tp*pp). launch/slurm/ut_launch.sh
//                     passes these, so this binary and unified_train are
//                     launched the same way.
//   --steps=N --step_ms=M  loop length and the pause inside each step.
//   --expect_world=N  fail unless the world has N ranks.
//   --timeout_s=T     the Communicator deadline per collective; on expiry the
//                     job is aborted (MPI_Abort) with a message naming the
//                     rank, group and operation.
// For failure tests:
//   --status_dir=DIR  each rank writes DIR/rank<R>.pid and DIR/rank<R>.status
//                     ("running" -> "ok" | "error: ..." | "signal N"), so a
//                     test can kill a rank by pid and see how each one ended.
//   --die_rank=R --die_step=S  rank R sends itself SIGKILL in the middle of
//                     step S (after the first collective).
//   --marker=STR      ignored; put a unique string on the command line so a
//                     test can find leftover processes with `pgrep -f STR`.
//
// Output: one line per rank at start ("mpi_probe: rank R/N host H ...") and
// at the end ("mpi_probe: rank R done ..."); rank 0 prints progress and the
// final "mpi_probe: OK ..." line. Exit 0 only if every check passed.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/base/logging.h"
#include "core/base/status.h"
#include "core/base/timer.h"
#include "parallel/comm/mpi_communicator.h"

namespace ut {
namespace {

struct ProbeFlags {
  int steps = 20;
  int step_ms = 10;
  double timeout_s = 30;
  int tp = 1, dp = 0, pp = 1;  // dp 0: world / (tp * pp)
  int expect_world = 0;         // 0: any
  int die_rank = -1, die_step = -1;
  std::string status_dir;
  std::string marker;
};

absl::StatusOr<ProbeFlags> ParseProbeFlags(int argc, char** argv) {
  ProbeFlags f;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("mpi_probe: argument '", arg, "' is not of the form --name=value"));
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    bool ok = true;
    if (name == "steps") ok = absl::SimpleAtoi(value, &f.steps);
    else if (name == "step_ms") ok = absl::SimpleAtoi(value, &f.step_ms);
    else if (name == "timeout_s") ok = absl::SimpleAtod(value, &f.timeout_s);
    else if (name == "parallel.tp") ok = absl::SimpleAtoi(value, &f.tp);
    else if (name == "parallel.dp") ok = absl::SimpleAtoi(value, &f.dp);
    else if (name == "parallel.pp") ok = absl::SimpleAtoi(value, &f.pp);
    else if (name == "expect_world") ok = absl::SimpleAtoi(value, &f.expect_world);
    else if (name == "die_rank") ok = absl::SimpleAtoi(value, &f.die_rank);
    else if (name == "die_step") ok = absl::SimpleAtoi(value, &f.die_step);
    else if (name == "status_dir") f.status_dir = value;
    else if (name == "marker") f.marker = value;
    else {
      return absl::InvalidArgumentError(absl::StrCat(
          "mpi_probe: unknown flag --", name,
          "; known: steps step_ms timeout_s parallel.tp parallel.dp parallel.pp expect_world "
          "die_rank die_step status_dir marker"));
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("mpi_probe: --", name, "=", value, " is not a number"));
    }
  }
  if (f.tp < 1 || f.pp < 1 || f.dp < 0) {
    return absl::InvalidArgumentError("mpi_probe: --parallel.tp/pp must be >= 1, --parallel.dp >= 0");
  }
  return f;
}

// Status file of this rank; written with plain syscalls so the signal handler can use it.
char g_status_path[4096] = "";

void WriteStatus(const char* text) {
  if (g_status_path[0] == '\0') return;
  int fd = open(g_status_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  ssize_t unused = write(fd, text, strlen(text));
  (void)unused;
  close(fd);
}

// SIGTERM/SIGINT (mpirun or srun ending the job): record it, then exit non-zero.
void OnSignal(int sig) {
  WriteStatus(sig == SIGTERM ? "signal 15 (SIGTERM)\n" : "signal 2 (SIGINT)\n");
  _exit(128 + sig);
}

absl::Status Check(bool ok, int rank, int step, const std::string& what) {
  if (ok) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("rank ", rank, " step ", step, ": wrong ", what));
}

// One step; see the file comment. tp/dp/pp are this rank's group communicators.
absl::Status Step(comm::Communicator& world, comm::Communicator& tp, comm::Communicator& dp,
                  comm::Communicator& pp, const ProbeFlags& f, int step) {
  const int r = world.rank(), n = world.size();
  // World all-reduce: sum over q of (q + step) = n(n-1)/2 + n*step.
  std::vector<int64_t> x(16, r + step);
  RETURN_IF_ERROR(world.AllReduce(std::span<int64_t>(x), comm::ReduceOp::kSum));
  for (int64_t v : x) RETURN_IF_ERROR(Check(v == n * (n - 1) / 2 + int64_t{n} * step, r, step, "world all-reduce"));

  if (r == f.die_rank && step == f.die_step) {
    fprintf(stderr, "mpi_probe: rank %d killing itself (SIGKILL) in step %d as asked\n", r, step);
    fflush(stderr);
    raise(SIGKILL);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(f.step_ms));

  // All-gather: block q holds q*1000 + step.
  std::vector<int32_t> mine = {r * 1000 + step}, all(n);
  RETURN_IF_ERROR(world.AllGather(std::span<const int32_t>(mine), std::span<int32_t>(all)));
  for (int q = 0; q < n; ++q) RETURN_IF_ERROR(Check(all[q] == q * 1000 + step, r, step, "all-gather"));

  // Group all-reduces: the sum of the members' world ranks, from the rank formula.
  const int TP = f.tp, DP = n / (f.tp * f.pp), PP = f.pp;
  const int t = r % TP, d = (r / TP) % DP, p = r / (TP * DP);
  int64_t tp_sum = 0, dp_sum = 0, pp_sum = 0;
  for (int i = 0; i < TP; ++i) tp_sum += i + d * TP + p * TP * DP;
  for (int i = 0; i < DP; ++i) dp_sum += t + i * TP + p * TP * DP;
  for (int i = 0; i < PP; ++i) pp_sum += t + d * TP + i * TP * DP;
  std::vector<int64_t> g = {r};
  RETURN_IF_ERROR(tp.AllReduce(std::span<int64_t>(g), comm::ReduceOp::kSum));
  RETURN_IF_ERROR(Check(g[0] == tp_sum, r, step, "TP-group all-reduce"));
  g = {r};
  RETURN_IF_ERROR(dp.AllReduce(std::span<int64_t>(g), comm::ReduceOp::kSum));
  RETURN_IF_ERROR(Check(g[0] == dp_sum, r, step, "DP-group all-reduce"));
  g = {r};
  RETURN_IF_ERROR(pp.AllReduce(std::span<int64_t>(g), comm::ReduceOp::kSum));
  RETURN_IF_ERROR(Check(g[0] == pp_sum, r, step, "PP-group all-reduce"));
  return world.Barrier();
}

absl::Status Run(comm::MpiRuntime& runtime, const ProbeFlags& f) {
  comm::CommOptions options;
  options.timeout_s = f.timeout_s;
  options.abort_on_timeout = true;
  auto world = runtime.World(options);
  const int r = world->rank(), n = world->size();
  InitLogging("mpi_probe", r);

  if (!f.status_dir.empty()) {
    snprintf(g_status_path, sizeof(g_status_path), "%s/rank%d.status", f.status_dir.c_str(), r);
    WriteStatus("running\n");
    const std::string pid_path = absl::StrCat(f.status_dir, "/rank", r, ".pid");
    FILE* pid_file = fopen(pid_path.c_str(), "w");
    if (pid_file == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", r, ": cannot write ", pid_path,
                                                     "; does --status_dir exist?"));
    }
    fprintf(pid_file, "%d\n", getpid());
    fclose(pid_file);
  }
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);

  if (f.expect_world > 0 && n != f.expect_world) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", r, ": world has ", n, " ranks, expected ", f.expect_world,
        " (--expect_world); check -n / --ntasks / -np of the launcher"));
  }
  if (n % (f.tp * f.pp) != 0 || (f.dp > 0 && f.tp * f.dp * f.pp != n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", r, ": world size ", n, " does not match --parallel.tp=", f.tp, " --parallel.dp=",
        f.dp, " --parallel.pp=", f.pp, "; launch tp*dp*pp ranks"));
  }
  const int TP = f.tp, DP = n / (f.tp * f.pp);
  const int t = r % TP, d = (r / TP) % DP, p = r / (TP * DP);
  char host[256] = "?";
  gethostname(host, sizeof(host));
  const char* slurm_rank = getenv("SLURM_PROCID");
  const char* local_rank = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (local_rank == nullptr) local_rank = getenv("SLURM_LOCALID");
  printf("mpi_probe: rank %d/%d host %s local_rank %s slurm_procid %s pid %d tp %d dp %d pp %d\n",
         r, n, host, local_rank ? local_rank : "-", slurm_rank ? slurm_rank : "-", getpid(), t, d, p);
  fflush(stdout);

  // Groups as in ProcessGrid: same (pp, dp) -> TP group, same (pp, tp) -> DP, same (dp, tp) -> PP.
  ASSIGN_OR_RETURN(auto tp, world->Split(d + p * DP, t, absl::StrCat("tp[pp=", p, ",dp=", d, "]")));
  ASSIGN_OR_RETURN(auto dp, world->Split(t + p * TP, d, absl::StrCat("dp[pp=", p, ",tp=", t, "]")));
  ASSIGN_OR_RETURN(auto pp, world->Split(t + d * TP, p, absl::StrCat("pp[dp=", d, ",tp=", t, "]")));

  Timer timer;
  for (int step = 0; step < f.steps; ++step) {
    RETURN_IF_ERROR(Step(*world, *tp, *dp, *pp, f, step));
    if (r == 0) {
      printf("mpi_probe: step %d ok\n", step);
      fflush(stdout);
    }
  }
  const double seconds = timer.Seconds();
  printf("mpi_probe: rank %d done (%d steps)\n", r, f.steps);
  if (r == 0) {
    printf("mpi_probe: OK world=%d tp=%d dp=%d pp=%d steps=%d in %.2f s\n", n, TP, DP, f.pp,
           f.steps, seconds);
  }
  fflush(stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace ut

int main(int argc, char** argv) {
  auto flags = ut::ParseProbeFlags(argc, argv);
  if (!flags.ok()) {
    fprintf(stderr, "%s\n", std::string(flags.status().message()).c_str());
    return 2;
  }
  auto runtime = ut::comm::MpiRuntime::Init(&argc, &argv);
  if (!runtime.ok()) {
    fprintf(stderr, "mpi_probe: %s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  absl::Status status = ut::Run(**runtime, *flags);
  if (!status.ok()) {
    fprintf(stderr, "mpi_probe: FAILED: %s\n", std::string(status.message()).c_str());
    ut::WriteStatus(absl::StrCat("error: ", status.message(), "\n").c_str());
    fflush(stderr);
    // A failed rank cannot finalize with peers that are still in collectives.
    _exit(1);
  }
  ut::WriteStatus("ok\n");
  return 0;
}
