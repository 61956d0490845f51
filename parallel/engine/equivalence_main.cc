// Equivalence check of the distributed step (issue #4 item 7), run under
// mpirun by equivalence_test.sh: 3 optimizer steps of the tiny config with both
// losses on, on a TP x PP x DP layout, against the single-process step of the
// same global batch, computed on rank 0 beside it:
//
//   reference: dp = tp = pp = 1, grad_accum = A * DP, ld_round = DP
//              (MICRO_BATCH pools = the DP ranks' m-th micro-batches)
//
// Per step it compares L_g, L_d, the grad norm and every parameter gradient
// (gathered to whole tensors, ||dist - ref|| / ||ref|| per tensor), and after
// the AdamW update every parameter. With ZeRO-1 the gradient buffer outside a
// rank's slice is not defined after the reduce-scatter, so only losses, norm
// and parameters are compared (ZeRO-1 == single process implies == plain DP).
//
//   mpirun -np 4 equivalence_main --config configs/tiny.textproto --tp 2 --pp 2
//          [--dp 1] [--vs 1] [--zero1] [--pool micro|global] [--accum 4]
// Exit 0 when every comparison is within --tol (default 1e-5); rank 0 prints
// one table.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/train/adamw.h"
#include "core/train/lr_schedule.h"
#include "core/train/trainer.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "launch/flags.h"
#include "ops/optim.h"
#include "parallel/comm/mpi_communicator.h"
#include "parallel/engine/dist_context.h"
#include "parallel/engine/dist_trainer.h"
#include "parallel/engine/gather.h"
#include "parallel/engine/rank_model.h"

namespace ut::parallel {
namespace {

namespace fs = std::filesystem;

struct Args {
  std::string config;
  std::string data_dir;
  int tp = 1, pp = 1, dp = 1, vs = 1, accum = 4, steps = 3;
  bool zero1 = false;
  std::string pool = "micro";
  double tol = 1e-5;
};

Args ParseArgs(int argc, char** argv) {
  auto flags = launch::ParseArgs(argc, argv, {"zero1"},
                                 {"config", "data_dir", "tp", "pp", "dp", "vs", "accum", "steps",
                                  "pool", "tol"});
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
    else if (f.name == "tp") a.tp = num();
    else if (f.name == "pp") a.pp = num();
    else if (f.name == "dp") a.dp = num();
    else if (f.name == "vs") a.vs = num();
    else if (f.name == "accum") a.accum = num();
    else if (f.name == "steps") a.steps = num();
    else if (f.name == "zero1") a.zero1 = true;
    else if (f.name == "pool") a.pool = f.value;
    else if (f.name == "tol") a.tol = real();
    else LOG(FATAL) << "unknown flag " << f.arg;
  }
  CHECK(!a.config.empty()) << "--config is required";
  return a;
}

data::LoaderOptions LoaderFor(const Config& c, int dp_rank, int dp_size) {
  data::LoaderOptions o = data::LoaderOptionsFromConfig(c, "train", dp_rank, dp_size);
  o.prefetch = 1;
  return o;
}

// |a - b| / |b| (NaN stays NaN and fails every "<= tol").
double RelErr(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

// The comparison metric, per tensor t of the reference gradient g:
//
//   err_t = ||dist_t - ref_t|| / max(||ref_t||, ||g|| / sqrt(#tensors))
//
// i.e. relative to the tensor, but never to less than the norm of an average
// tensor. In f32 every gradient element carries rounding error relative to
// the terms summed into it, not to the result: a tensor whose gradient
// cancels (the attention key biases, whose exact gradient is 0 since a
// constant added to all of a query's scores leaves its softmax unchanged; the
// retrieval projector's last bias under the L2 normalisation) has no relative
// precision, whichever side sums first. Both runs are equally right there.
std::pair<double, std::string> Compare(const std::map<std::string, FullTensor>& got,
                                       const MLLM& ref, const float* ref_buf, double floor) {
  double worst = 0;
  std::string name = "-";
  CHECK_EQ(got.size(), ref.params().size()) << "gathered tensors != reference tensors";
  for (const ParamInfo& p : ref.params()) {
    auto it = got.find(p.name);
    CHECK(it != got.end()) << p.name << " was not gathered";
    double num = 0, den = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      const double a = it->second.data[i], b = ref_buf[p.offset + i];
      if (!std::isfinite(a)) return {INFINITY, p.name};
      num += (a - b) * (a - b);
      den += b * b;
    }
    const double e = std::sqrt(num) / std::max(std::sqrt(den), floor);
    if (!(e <= worst)) {
      worst = e;
      name = p.name;
    }
  }
  return {worst, name};
}

// ||buf|| / sqrt(#tensors): the norm of an average tensor.
double AverageTensorNorm(MLLM& m, const float* buf) {
  double s = 0;
  for (int64_t i = 0; i < m.num_params(); ++i) s += static_cast<double>(buf[i]) * buf[i];
  return std::sqrt(s / m.params().size());
}

// Parameters after the update: AdamW divides each element's step by
// sqrt(v) ~ |g|, so an element whose gradient is near zero turns a rounding-
// level gradient difference into an O(lr) parameter difference. This check is
// there to catch optimizer bugs (a wrong slice, m/v or decay moves a tensor by
// ~lr/|p| ~ 1e-1), so it uses 1e-4; gradients and losses use --tol (1e-5).
constexpr double kParamTol = 1e-4;

int Main(int argc, char** argv) {
  auto runtime = comm::MpiRuntime::Init(&argc, &argv);
  CHECK(runtime.ok()) << runtime.status();
  comm::CommOptions copts;
  copts.timeout_s = 240;
  std::unique_ptr<comm::Communicator> world = (*runtime)->World(copts);
  const Args args = ParseArgs(argc, argv);
  const int rank = world->rank();

  absl::StatusOr<Config> loaded = LoadConfigFile(args.config);
  CHECK(loaded.ok()) << loaded.status();
  Config config = *loaded;
  const std::string data_dir =
      !args.data_dir.empty() ? args.data_dir
                             : absl::StrCat(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR")
                                                                       : "/tmp",
                                            "/equivalence_data");
  for (const std::string& o : std::vector<std::string>{
           "data.data_dir=" + data_dir, "data.micro_batch_size=2", "data.seq_len=160",
           "train.grad_accum=" + std::to_string(args.accum),
           "train.steps=" + std::to_string(args.steps), "optim.warmup_steps=1",
           "objective.alpha=0.1", "objective.cuts_per_sample=2",
           std::string("objective.pool=") + (args.pool == "global" ? "GLOBAL_BATCH" : "MICRO_BATCH"),
           "parallel.tp=" + std::to_string(args.tp), "parallel.pp=" + std::to_string(args.pp),
           "parallel.dp=" + std::to_string(args.dp),
           "parallel.virtual_stages=" + std::to_string(args.vs),
           std::string("parallel.zero1=") + (args.zero1 ? "true" : "false"),
           "parallel.bucket_mb=0.25"}) {
    absl::Status s = ApplyOverride(&config, o);
    CHECK(s.ok()) << s;
  }

  // Data: rank 0 generates a small synthetic set once; the others wait.
  if (rank == 0 && !fs::exists(data_dir + "/train.jsonl")) {
    data::SyntheticOptions so;
    so.out_dir = data_dir;
    so.image_size = config.model().vision().image_size();
    so.num_train = 96;
    so.num_val = 4;
    so.num_test = 4;
    so.vocab_size = 128;
    absl::Status s = data::GenerateSynthetic(so);
    CHECK(s.ok()) << s;
  }
  CHECK(world->Barrier().ok());
  auto tokenizer = data::Tokenizer::Load(data_dir + "/tokenizer.model");
  CHECK(tokenizer.ok()) << tokenizer.status();
  CHECK(ApplyOverride(&config, "model.llm.vocab_size=" +
                                   std::to_string((*tokenizer)->vocab_size()))
            .ok());

  // The distributed side.
  auto job = MakeRankJob(config, world.get(), tokenizer->get());
  CHECK(job.ok()) << job.status();
  DistContext& c = *job->ctx;
  std::unique_ptr<MLLM>& model = job->model;
  DistTrainer* trainer = job->trainer.get();

  // The single-process reference (rank 0 only).
  Config ref_config = config;
  const int A = args.accum, DP = args.dp, AD = A * DP;
  CHECK(ApplyOverride(&ref_config, "train.grad_accum=" + std::to_string(AD)).ok());
  std::unique_ptr<MLLM> ref;
  std::unique_ptr<data::Loader> ref_loader;
  std::unique_ptr<train::AdamW> ref_adamw;
  int group = 1;
  {  // every rank: the whole-model layout, to re-sync parameters each step
    auto r = MLLM::Create(ref_config.model());
    CHECK(r.ok()) << r.status();
    ref = std::move(*r);
    ref->InitParams(config.train().seed());
  }
  if (rank == 0) {
    auto l = data::Loader::Create(LoaderFor(ref_config, 0, 1), tokenizer->get());
    CHECK(l.ok()) << l.status();
    ref_loader = std::move(*l);
    ref_adamw = std::make_unique<train::AdamW>(ref->params(), ref->num_params(),
                                               ref_config.optim());
    auto g = train::LdPoolSize(ref_config.objective(), AD, DP);
    CHECK(g.ok()) << g.status();
    group = *g;
    std::printf("layout tp=%d pp=%d dp=%d virtual_stages=%d zero1=%d pool=%s; A=%d per DP rank, "
                "global batch %d micro-batches x %d\n",
                args.tp, args.pp, args.dp, args.vs, args.zero1, args.pool.c_str(), A, AD,
                config.data().micro_batch_size());
    std::printf("%-5s %-12s %-12s %-9s %-9s %-9s %-9s %-40s %-9s\n", "step", "L_g dist",
                "L_g ref", "L_g err", "L_d err", "norm err", "grad err", "worst grad tensor",
                "param err");
  }

  bool ok = true;
  for (int step = 1; step <= args.steps; ++step) {
    DistStepResult res;
    absl::Status s = trainer->Step(&res);
    CHECK(s.ok()) << "rank " << rank << ": " << s;
    const bool contribute = c.coord.dp == 0;
    std::map<std::string, FullTensor> grads, params;
    if (!args.zero1) {
      auto g = GatherFull(world.get(), model->params(), model->grad_data(), contribute);
      CHECK(g.ok()) << g.status();
      grads = std::move(*g);
    }
    auto p = GatherFull(world.get(), model->params(), model->param_data(), contribute);
    CHECK(p.ok()) << p.status();
    params = std::move(*p);
    if (rank == 0) {

      // Reference step, as core/train/trainer.cc's TrainStep.
      ref->ZeroGrad();
      auto sums = train::AccumulateStep(
          ref.get(), [&]() { return ref_loader->Next(); }, AD, group, ref_config.objective(),
          ref_config.train().seed(), step);
      CHECK(sums.ok()) << sums.status();
      const double lg = sums->loss_g / AD;
      const double ld = sums->pools > 0 ? sums->loss_d / sums->pools : 0.0;
      const double norm = train::GlobalNorm(ref->grad_data(), ref->num_params());
      double grad_err = 0;
      std::string worst = "(not compared: ZeRO-1)";
      if (!args.zero1) {
        std::tie(grad_err, worst) =
            Compare(grads, *ref, ref->grad_data(), AverageTensorNorm(*ref, ref->grad_data()));
      }
      const float scale = cpu::clip_scale(norm, ref_config.optim().grad_clip());
      const float lr = train::LearningRate(step, ref_config.train().steps(), ref_config.optim());
      ref_adamw->Step(ref->param_data(), ref->grad_data(), lr, scale);
      const auto [param_err, param_worst] =
          Compare(params, *ref, ref->param_data(), AverageTensorNorm(*ref, ref->param_data()));
      const double lg_err = RelErr(res.metrics.loss_g, lg);
      const double ld_err = RelErr(res.metrics.loss_d, ld);
      const double norm_err = RelErr(res.metrics.grad_norm, norm);
      std::printf("%-5d %-12.8f %-12.8f %-9.2e %-9.2e %-9.2e %-9.2e %-40s %-9.2e %s\n", step,
                  res.metrics.loss_g, lg, lg_err, ld_err, norm_err, grad_err, worst.c_str(),
                  param_err, param_worst.c_str());
      for (double e : {lg_err, ld_err, norm_err, grad_err}) ok = ok && e <= args.tol;
      ok = ok && param_err <= kParamTol;
      if (ld <= 0) {
        std::printf("L_d is %g: the test needs both losses on\n", ld);
        ok = false;
      }
    }
    // Every step starts from the same parameters, the reference's: AdamW's
    // first steps turn rounding-level gradient differences at elements with
    // |g| near eps into visible parameter differences, which would then grow
    // step by step. Re-syncing compares each step's gradients from one point;
    // the optimizer state (m, v, step) still carries on separately on each side.
    CHECK(world->Broadcast(std::span<float>(ref->param_data(), ref->num_params()), 0).ok());
    std::map<std::string, FullTensor> full;
    for (const ParamInfo& q : ref->params()) {
      full[q.name] = {q.shape, std::vector<float>(ref->param_data() + q.offset,
                                                  ref->param_data() + q.offset + q.numel)};
    }
    CHECK(SliceFromFull(full, model->params(), model->param_data()).ok());
  }
  int32_t verdict = ok ? 0 : 1;
  CHECK(world->Broadcast(std::span<int32_t>(&verdict, 1), 0).ok());
  if (rank == 0) std::printf("%s (tolerance %.0e relative)\n", verdict ? "FAIL" : "PASS", args.tol);
  return verdict;
}

}  // namespace
}  // namespace ut::parallel

int main(int argc, char** argv) { return ut::parallel::Main(argc, argv); }
