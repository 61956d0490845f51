// One full training step (forward, backward, AdamW with clipping) of the tiny
// and small MLLMs, single process, against the same step in PyTorch (float32,
// same thread count) run beside it, plus the machine's single-GEMM peak.
//
//   bazel run //bench:train_step_bench -- [--threads=N] [--iters=K] [--no_torch]
//       [--repeats=R] [--case=tiny|small] [--phases]
//
// --repeats=R alternates ours and PyTorch R times per model and reports the
// median step of each (steadier on a shared, loaded machine); --case runs one
// model; --phases adds a forward / backward / optimizer breakdown of our step.
//
// Prints one table. FLOPs are counted analytically (matmul FLOPs only:
// 2 per multiply-add, backward = 2x forward, causal attention counts the
// lower triangle) and divided by the measured step time.
#include <omp.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "core/base/logging.h"
#include "core/base/rng.h"
#include "core/base/timer.h"
#include "core/model/mllm.h"
#include "core/train/adamw.h"
#include "ops/gemm.h"

namespace ut {
namespace {

struct Case {
  const char* name;
  const char* config;
  int batch, seq, images_per_row;
};

// Same rows as bench/torch_train_step.py: random tokens, images at 1 and
// 1 + (NP + 16), full-length rows, targets = next token except before/inside images.
data::Batch MakeBatch(const unified_train::ModelConfig& mc, const Case& c) {
  const int S = mc.vision().image_size();
  const int NP = (S / mc.vision().patch_size()) * (S / mc.vision().patch_size());
  const int V = mc.llm().vocab_size();
  Rng rng(1);
  data::Batch b;
  b.B = c.batch;
  b.T = c.seq;
  b.tokens.resize(b.B * b.T);
  b.targets.resize(b.B * b.T);
  b.lens.assign(b.B, b.T);
  for (auto& t : b.tokens) t = 5 + static_cast<int>(rng.Below(V - 5));
  for (int r = 0; r < b.B; ++r) {
    for (int t = 0; t < b.T; ++t) b.targets[r * b.T + t] = t + 1 < b.T ? b.tokens[r * b.T + t + 1] : -1;
    for (int i = 0; i < c.images_per_row; ++i) {
      const int s = 1 + i * (NP + 16);
      for (int t = s; t < s + NP; ++t) b.tokens[r * b.T + t] = 4;
      for (int t = s - 1; t < s + NP - 1; ++t) b.targets[r * b.T + t] = -1;
      b.image_row.push_back(r);
      b.image_start.push_back(s);
    }
  }
  b.num_images = static_cast<int>(b.image_row.size());
  b.image_size = S;
  b.images.resize(static_cast<size_t>(b.num_images) * 3 * S * S);
  for (auto& x : b.images) x = static_cast<float>(rng.Uniform());
  return b;
}

// Matmul FLOPs of one training step (forward x 3).
double StepFlops(const unified_train::ModelConfig& mc, const Case& c) {
  const auto& v = mc.vision();
  const auto& l = mc.llm();
  const double NP = (v.image_size() / v.patch_size()) * (v.image_size() / v.patch_size());
  const double NI = c.batch * c.images_per_row, Nv = NI * NP;
  const double Wv = v.width(), Fv = v.mlp(), C = l.width(), F = l.ffn(), V = l.vocab_size();
  const double hd = C / l.heads(), kv = l.kv_heads() * hd;
  const double N = static_cast<double>(c.batch) * c.seq, T = c.seq;
  double macs = Nv * 3 * v.patch_size() * v.patch_size() * Wv;
  macs += v.layers() * (Nv * (4 * Wv * Wv + 2 * Wv * Fv) + 2 * NI * NP * NP * Wv);
  macs += Nv * (Wv * C + C * C);
  macs += l.layers() * (N * (2 * C * C + 2 * C * kv + 3 * C * F) +
                        2.0 * c.batch * l.heads() * hd * T * (T + 1) / 2);
  macs += N * C * V;
  return 3 * 2 * macs;
}

double PeakGemmGflops() {
  const int n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  cpu::gemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    Timer t;
    cpu::gemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::max(best, 2.0 * n * n * n / t.Seconds() / 1e9);
  }
  return best;
}

// Runs the PyTorch step; returns tokens/s or -1.
double TorchTokensPerSecond(const Case& c, int threads, int iters, std::string* version) {
  std::string cmd = "python3 bench/torch_train_step.py --config " + std::string(c.config) +
                    " --batch " + std::to_string(c.batch) + " --seq " + std::to_string(c.seq) +
                    " --images " + std::to_string(c.images_per_row) + " --threads " +
                    std::to_string(threads) + " --iters " + std::to_string(iters) + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char line[512] = {0};
  std::string out;
  while (fgets(line, sizeof(line), p)) out += line;
  if (pclose(p) != 0) return -1;
  const size_t k = out.find("\"tokens_per_s\": ");
  const size_t tv = out.find("\"torch\": \"");
  if (k == std::string::npos) return -1;
  if (tv != std::string::npos) *version = out.substr(tv + 10, out.find('"', tv + 10) - tv - 10);
  return std::atof(out.c_str() + k + 16);
}

// CPU seconds used by the whole process so far (all threads).
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double Median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int Main(int argc, char** argv) {
  int threads = 2, iters = 5, repeats = 1;
  bool torch = true, phases = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--threads=", 10)) threads = std::atoi(argv[i] + 10);
    else if (!std::strncmp(argv[i], "--iters=", 8)) iters = std::atoi(argv[i] + 8);
    else if (!std::strncmp(argv[i], "--repeats=", 10)) repeats = std::atoi(argv[i] + 10);
    else if (!std::strncmp(argv[i], "--case=", 7)) only = argv[i] + 7;
    else if (!std::strcmp(argv[i], "--no_torch")) torch = false;
    else if (!std::strcmp(argv[i], "--phases")) phases = true;
    else {
      std::fprintf(stderr, "usage: train_step_bench [--threads=N] [--iters=K] [--no_torch] "
                   "[--repeats=R] [--case=tiny|small] [--phases]\n");
      return 2;
    }
  }
  repeats = std::max(1, repeats);
  if (const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY")) {
    if (chdir(ws) != 0) return 2;
  }
  omp_set_num_threads(threads);
  const double peak = PeakGemmGflops();
  const Case cases[] = {{"tiny", "configs/tiny.textproto", 8, 256, 2},
                        {"small", "configs/small.textproto", 8, 512, 2}};
  std::printf("train_step_bench: %d threads, %d timed steps after 2 warm-up, %d repeat(s) "
              "(median); peak single GEMM (1024^3 sgemm) %.1f GFLOP/s\n\n", threads, iters,
              repeats, peak);
  std::printf("| model | batch | ours step (s) | ours tok/s | GFLOP/s | %% of GEMM peak | "
              "PyTorch tok/s | ratio (ours/PyTorch) |\n|---|---|---|---|---|---|---|---|\n");
  std::string version = "n/a";
  std::string breakdown;
  for (const Case& c : cases) {
    if (!only.empty() && only != c.name) continue;
    auto config = LoadConfigFile(c.config);
    if (!config.ok()) {
      std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
      return 2;
    }
    auto model = MLLM::Create(config->model());
    if (!model.ok()) return 2;
    MLLM& m = **model;
    m.InitParams(42);
    train::AdamW opt(m.params(), m.num_params(), config->optim());
    data::Batch batch = MakeBatch(config->model(), c);
    double t_fwd = 0, t_bwd = 0, t_opt = 0;
    auto step = [&] {
      Timer t;
      m.ZeroGrad();
      m.Forward(batch);
      t_fwd += t.Seconds();
      t.Reset();
      m.Backward(1.0f);
      t_bwd += t.Seconds();
      t.Reset();
      const float scale = train::GlobalNorm(m.grad_data(), m.num_params()) > 1.0 ? 0.5f : 1.0f;
      opt.Step(m.param_data(), m.grad_data(), 1e-4f, scale);
      t_opt += t.Seconds();
    };
    for (int i = 0; i < 2; ++i) step();
    t_fwd = t_bwd = t_opt = 0;
    std::vector<double> ours, theirs;
    double cpu = 0;
    for (int rep = 0; rep < repeats; ++rep) {
      Timer t;
      const double cpu0 = ProcessCpuSeconds();
      for (int i = 0; i < iters; ++i) step();
      ours.push_back(t.Seconds() / iters);
      cpu += ProcessCpuSeconds() - cpu0;
      const double ref = torch ? TorchTokensPerSecond(c, threads, iters, &version) : -1;
      if (ref > 0) theirs.push_back(ref);
    }
    const double dt = Median(ours);
    const double tps = c.batch * c.seq / dt;
    const double gflops = StepFlops(config->model(), c) / dt / 1e9;
    const double ref = theirs.empty() ? -1 : Median(theirs);
    if (phases) {
      const double n = static_cast<double>(iters) * repeats;
      char line[256];
      const double best = *std::min_element(ours.begin(), ours.end());
      const double best_ref = theirs.empty() ? -1 : *std::max_element(theirs.begin(), theirs.end());
      char best_ratio[32] = "n/a";
      if (best_ref > 0) {
        std::snprintf(best_ratio, sizeof(best_ratio), "%.2fx", c.batch * c.seq / best / best_ref);
      }
      std::snprintf(line, sizeof(line), "| %s | %.4f | %.4f | %.4f | %.4f | %.4f | %s |\n",
                    c.name, t_fwd / n, t_bwd / n, t_opt / n, best, cpu / n, best_ratio);
      breakdown += line;
    }
    char ratio[32] = "n/a", reftxt[32] = "n/a";
    if (ref > 0) {
      std::snprintf(ratio, sizeof(ratio), "%.2fx", tps / ref);
      std::snprintf(reftxt, sizeof(reftxt), "%.0f", ref);
    }
    std::printf("| %s | %dx%d, %d img/row | %.3f | %.0f | %.1f | %.0f%% | %s | %s |\n", c.name,
                c.batch, c.seq, c.images_per_row, dt, tps, gflops, 100 * gflops / peak, reftxt,
                ratio);
    std::fflush(stdout);
  }
  if (phases) {
    std::printf("\nPer phase, mean over timed steps (s); fastest repeat; process CPU time per "
                "step (all threads, spinning included); fastest ours / fastest PyTorch repeat "
                "(the least disturbed pair on a loaded machine):\n| model | forward (incl. LM "
                "head + loss) | backward | clip norm + AdamW | min step | CPU s/step | best "
                "ratio |\n|---|---|---|---|---|---|---|\n%s",
                breakdown.c_str());
  }
  std::printf("\nPyTorch %s, float32, torch.set_num_threads(%d), same model "
              "(tests/golden/make_golden.py forward) and step.\n", version.c_str(), threads);
  return 0;
}

}  // namespace
}  // namespace ut

int main(int argc, char** argv) {
  ut::InitLogging(argv[0]);
  return ut::Main(argc, argv);
}
