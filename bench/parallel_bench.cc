// The distributed training step of the tiny MLLM on one TP x PP x DP layout
// (issue #4 item 10), run under mpirun by bench/parallel_bench.sh, which runs
// every layout and prints the combined tables. Per layout it measures:
//
//   step time   median over --steps steps (after --warmup) of the slowest
//               rank's DistTrainer::Step, each step started after a world
//               barrier; tokens/s = non-pad tokens of the global batch / it;
//   bubble      GroupBubbleFraction of the step's pipeline run (the stages
//               start together after the barrier; loading the micro-batches
//               comes first in Step and is the same work on every stage),
//               the closed form (p-1)/(v*m+p-1), that closed form on the
//               busiest stage with the others idle for the rest ("+imbalance":
//               1 - (1 - closed) * mean(busy) / max(busy), busy = a stage's
//               time inside Forward/Backward), and the simulator
//               (SimulateSchedule) fed this run's mean forward and backward
//               time per chunk (uniform op times: it gives the closed form);
//   bytes       payload bytes per step that a rank hands to each group
//               (CommStats: a collective counts its send buffer, p2p counts
//               sends, not receives), mean over the world's ranks; 0 for a
//               group of one rank (its calls move nothing);
//   load        the machine's 1-minute load average at the end;
//   overlap     the DP GradReducer of rank 0 in the last step: buckets
//               started by the backward (before Finish), of those the ones
//               already complete when Finish began, all buckets, and the wait
//               in Finish (none of it with ZeRO-1, which reduce-scatters after
//               the backward).
//
// The global batch is fixed: --global micro-batches of --mb samples, so each
// DP rank runs A = global / dp micro-batches (the pipeline's M = A).
//
//   mpirun -np T*P*D parallel_bench --config configs/tiny.textproto
//       --data_dir DIR [--tp T] [--pp P] [--dp D] [--vs V] [--zero1]
//       [--global 8] [--mb 2] [--seq 160] [--alpha 0.1] [--layers L]
//       [--steps 5] [--warmup 1] [--label NAME]
//
// Rank 0 prints one line "ROW key=value ..." (parsed by the script).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/base/timer.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "launch/flags.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/engine/dist_context.h"
#include "parallel/engine/dist_trainer.h"
#include "parallel/engine/rank_model.h"
#include "parallel/pipeline/executor.h"
#include "parallel/pipeline/schedule.h"

namespace ut::parallel {
namespace {

namespace fs = std::filesystem;

struct Args {
  std::string config, data_dir, label = "-";
  int tp = 1, pp = 1, dp = 1, vs = 1, global = 8, mb = 2, seq = 160, layers = 0;
  int steps = 5, warmup = 1;
  bool zero1 = false;
  double alpha = 0.1;
};

Args ParseArgs(int argc, char** argv) {
  auto flags = launch::ParseArgs(argc, argv, {"zero1"},
                                 {"config", "data_dir", "label", "tp", "pp", "dp", "vs", "global",
                                  "mb", "seq", "layers", "steps", "warmup", "alpha"});
  CHECK(flags.ok()) << flags.status();
  Args a;
  for (const launch::ParsedFlag& f : *flags) {
    auto num = [&f] {
      int v = 0;
      const absl::Status s = launch::IntFlag(f, std::numeric_limits<int>::min(), &v);
      CHECK(s.ok()) << s;
      return v;
    };
    auto real = [&f] {
      double v = 0;
      const absl::Status s = launch::DoubleFlag(f, /*positive=*/false, &v);
      CHECK(s.ok()) << s;
      return v;
    };
    if (f.name == "config") a.config = f.value;
    else if (f.name == "data_dir") a.data_dir = f.value;
    else if (f.name == "label") a.label = f.value;
    else if (f.name == "tp") a.tp = num();
    else if (f.name == "pp") a.pp = num();
    else if (f.name == "dp") a.dp = num();
    else if (f.name == "vs") a.vs = num();
    else if (f.name == "global") a.global = num();
    else if (f.name == "mb") a.mb = num();
    else if (f.name == "seq") a.seq = num();
    else if (f.name == "layers") a.layers = num();
    else if (f.name == "steps") a.steps = num();
    else if (f.name == "warmup") a.warmup = num();
    else if (f.name == "zero1") a.zero1 = true;
    else if (f.name == "alpha") a.alpha = real();
    else LOG(FATAL) << "unknown flag " << f.arg << " (see the comment at the top of parallel_bench.cc)";
  }
  CHECK(!a.config.empty()) << "--config is required";
  CHECK(!a.data_dir.empty()) << "--data_dir is required";
  CHECK_GE(a.steps, 1);
  CHECK_EQ(a.global % a.dp, 0) << "--global (" << a.global << ") must be a multiple of --dp";
  return a;
}

double Median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// The machine's 1-minute load average (other jobs on a shared machine show up
// here); -1 if unknown.
double LoadAverage() {
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  return load;
}

// Synthetic data, made once by rank 0 (the script shares it between layouts).
void EnsureData(const Args& a, const Config& config, comm::Communicator* world) {
  if (world->rank() == 0 && !fs::exists(a.data_dir + "/train.jsonl")) {
    data::SyntheticOptions so;
    so.out_dir = a.data_dir;
    so.image_size = config.model().vision().image_size();
    so.num_train = 128;
    so.num_val = 4;
    so.num_test = 4;
    so.vocab_size = 128;
    absl::Status s = data::GenerateSynthetic(so);
    CHECK(s.ok()) << s;
  }
  CHECK(world->Barrier().ok());
}

int Main(int argc, char** argv) {
  auto runtime = comm::MpiRuntime::Init(&argc, &argv);
  CHECK(runtime.ok()) << runtime.status();
  comm::CommOptions copts;
  copts.timeout_s = 300;
  std::unique_ptr<comm::Communicator> world = (*runtime)->World(copts);
  const Args args = ParseArgs(argc, argv);
  const int rank = world->rank(), W = world->size();
  CHECK_EQ(W, args.tp * args.pp * args.dp)
      << "mpirun -np must be tp*pp*dp = " << args.tp * args.pp * args.dp;
  const int A = args.global / args.dp;

  absl::StatusOr<Config> loaded = LoadConfigFile(args.config);
  CHECK(loaded.ok()) << loaded.status();
  Config config = *loaded;
  std::vector<std::string> overrides = {
      "data.data_dir=" + args.data_dir, "data.micro_batch_size=" + std::to_string(args.mb),
      "data.seq_len=" + std::to_string(args.seq), "train.grad_accum=" + std::to_string(A),
      "train.steps=1000", "optim.warmup_steps=1",
      "objective.alpha=" + std::to_string(args.alpha), "objective.cuts_per_sample=2",
      "objective.pool=MICRO_BATCH", "parallel.tp=" + std::to_string(args.tp),
      "parallel.pp=" + std::to_string(args.pp), "parallel.dp=" + std::to_string(args.dp),
      "parallel.virtual_stages=" + std::to_string(args.vs),
      std::string("parallel.zero1=") + (args.zero1 ? "true" : "false"),
      "parallel.bucket_mb=0.25"};
  if (args.layers > 0) overrides.push_back("model.llm.layers=" + std::to_string(args.layers));
  for (const std::string& o : overrides) {
    absl::Status s = ApplyOverride(&config, o);
    CHECK(s.ok()) << s;
  }
  EnsureData(args, config, world.get());
  auto tokenizer = data::Tokenizer::Load(args.data_dir + "/tokenizer.model");
  CHECK(tokenizer.ok()) << tokenizer.status();
  CHECK(ApplyOverride(&config, "model.llm.vocab_size=" +
                                   std::to_string((*tokenizer)->vocab_size()))
            .ok());

  auto job = MakeRankJob(config, world.get(), tokenizer->get());
  CHECK(job.ok()) << job.status();
  DistContext& c = *job->ctx;
  DistTrainer* trainer = job->trainer.get();

  // The groups whose bytes are reported, in the table's order.
  std::vector<comm::Communicator*> groups = {c.tp.get(), c.dp.get(), c.pp.get(), c.dp_tp.get(),
                                             world.get()};
  std::vector<double> step_s, bubble, busy_ratio, bytes(groups.size(), 0.0);
  double tokens = 0, loss = 0, fwd_sum = 0, bwd_sum = 0, fwd_n = 0, bwd_n = 0;
  dp::ReducerStepStats red;
  for (int step = 0; step < args.warmup + args.steps; ++step) {
    CHECK(world->Barrier().ok());
    for (comm::Communicator* g : groups) g->ResetStats();
    DistStepResult res;
    Timer timer;
    absl::Status s = trainer->Step(&res);
    const double seconds = timer.Seconds();
    CHECK(s.ok()) << "rank " << rank << ": " << s;
    // Snapshot before any of our own collectives adds to the counters.
    std::vector<double> stats;  // [groups] bytes, then fwd/bwd time sums and counts
    for (comm::Communicator* g : groups) stats.push_back(static_cast<double>(g->stats().bytes));
    const pipeline::PipeRunResult& run = trainer->last_run();
    double f = 0, b = 0, fn = 0, bn = 0;
    for (const pipeline::OpTiming& t : run.timeline) {
      const bool fwd = t.op.kind == pipeline::PipeOp::kForward;
      (fwd ? f : b) += t.end_s - t.start_s;
      (fwd ? fn : bn) += 1;
    }
    stats.insert(stats.end(), {f, b, fn, bn, run.busy_s});
    double busy_max = run.busy_s;
    auto group_bubble = pipeline::GroupBubbleFraction(run, *c.pp);
    CHECK(group_bubble.ok()) << group_bubble.status();
    double slowest = seconds;
    CHECK(world->AllReduce(std::span<double>(&slowest, 1), comm::ReduceOp::kMax).ok());
    CHECK(world->AllReduce(std::span<double>(&busy_max, 1), comm::ReduceOp::kMax).ok());
    CHECK(world->AllReduce(std::span<double>(stats), comm::ReduceOp::kSum).ok());
    if (step < args.warmup) continue;
    step_s.push_back(slowest);
    bubble.push_back(*group_bubble);
    for (size_t g = 0; g < groups.size(); ++g) {
      if (groups[g]->size() > 1) bytes[g] += stats[g] / W / args.steps;
    }
    busy_ratio.push_back(busy_max > 0 ? stats[groups.size() + 4] / W / busy_max : 1.0);
    fwd_sum += stats[groups.size()];
    bwd_sum += stats[groups.size() + 1];
    fwd_n += stats[groups.size() + 2];
    bwd_n += stats[groups.size() + 3];
    tokens = static_cast<double>(res.tokens);
    loss = res.metrics.loss;
    red = trainer->reducer().last_step();
  }

  if (rank == 0) {
    const double t = Median(step_s);
    const double f = fwd_n > 0 ? fwd_sum / fwd_n : 0, b = bwd_n > 0 ? bwd_sum / bwd_n : 0;
    double sim = 0, closed = 0;
    if (args.pp > 1) {
      closed = pipeline::BubbleClosedForm(args.pp, A, args.vs);
      auto r = pipeline::SimulateSchedule(args.pp, A, args.vs, f, b);
      CHECK(r.ok()) << r.status();
      sim = r->bubble_fraction;
    }
    const char* threads = std::getenv("OMP_NUM_THREADS");
    std::printf(
        "ROW label=%s tp=%d pp=%d dp=%d vs=%d zero1=%d ranks=%d layers=%d M=%d mb=%d seq=%d "
        "alpha=%g threads=%s cores=%u step_s=%.4f min_s=%.4f max_s=%.4f tokens=%.0f "
        "tok_s=%.1f loss=%.4f bubble=%.4f closed=%.4f imbal=%.4f sim=%.4f fwd_ms=%.2f bwd_ms=%.2f "
        "kib_tp=%.2f kib_dp=%.2f kib_pp=%.2f kib_dptp=%.2f kib_world=%.2f buckets=%d "
        "started=%d done=%d finish_ms=%.2f load=%.2f\n",
        args.label.c_str(), args.tp, args.pp, args.dp, args.vs, args.zero1 ? 1 : 0, W,
        config.model().llm().layers(), A, args.mb, args.seq, args.alpha,
        threads ? threads : "unset", std::thread::hardware_concurrency(), t,
        *std::min_element(step_s.begin(), step_s.end()),
        *std::max_element(step_s.begin(), step_s.end()), tokens, tokens / t, loss,
        Median(bubble), closed, 1.0 - (1.0 - closed) * Median(busy_ratio), sim,
        1e3 * f, 1e3 * b, bytes[0] / 1024, bytes[1] / 1024, bytes[2] / 1024, bytes[3] / 1024,
        bytes[4] / 1024, args.zero1 ? -1 : red.buckets, args.zero1 ? -1 : red.started_before_finish,
        args.zero1 ? -1 : red.done_before_finish, 1e3 * red.finish_wait_s, LoadAverage());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace ut::parallel

int main(int argc, char** argv) { return ut::parallel::Main(argc, argv); }
