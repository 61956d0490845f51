// Generates the synthetic scene data set (data/synthetic.h).
//   gen_synthetic --out=runs/data/synthetic_tiny [--size=32] [--train=4000]
//                 [--val=200] [--test=200] [--seed=7] [--vocab=512] [--text_first=0.5]
//                 [--text_first_prompt=1]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/base/logging.h"
#include "core/base/status.h"
#include "data/synthetic.h"

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: gen_synthetic --out=DIR [--size=32] [--train=4000] [--val=200] "
               "[--test=200] [--seed=7] [--vocab=512] [--text_first=0.5]\n"
               "       [--text_first_prompt=1]\n"
               "  --text_first: share of train caption samples written [caption, image]\n"
               "  --text_first_prompt: 1 = such a caption is context only (no L_g target)\n");
}

bool ParseInt(const std::string& text, long long min, long long* out) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < min) return false;
  *out = v;
  return true;
}

// A share in [0, 1].
bool ParseShare(const std::string& text, double* out) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= 0.0 && v <= 1.0)) return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  ut::InitLogging(argv[0]);
  ut::data::SyntheticOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    }
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "gen_synthetic: expected --name=value, got \"%s\"\n", arg.c_str());
      Usage();
      return ut::kUserErrorExitCode;
    }
    const std::string name = arg.substr(2, eq - 2), value = arg.substr(eq + 1);
    long long v = 0;
    bool ok = true;
    if (name == "out") {
      options.out_dir = value;
    } else if (name == "size") {
      ok = ParseInt(value, 8, &v) && (options.image_size = static_cast<int>(v), true);
    } else if (name == "train") {
      ok = ParseInt(value, 1, &v) && (options.num_train = static_cast<int>(v), true);
    } else if (name == "val") {
      ok = ParseInt(value, 0, &v) && (options.num_val = static_cast<int>(v), true);
    } else if (name == "test") {
      ok = ParseInt(value, 0, &v) && (options.num_test = static_cast<int>(v), true);
    } else if (name == "seed") {
      ok = ParseInt(value, 0, &v) && (options.seed = static_cast<uint64_t>(v), true);
    } else if (name == "vocab") {
      ok = ParseInt(value, 16, &v) && (options.vocab_size = static_cast<int>(v), true);
    } else if (name == "text_first") {
      ok = ParseShare(value, &options.text_first_captions);
    } else if (name == "text_first_prompt") {
      ok = value == "0" || value == "1";
      options.text_first_prompt = value == "1";
    } else {
      std::fprintf(stderr, "gen_synthetic: unknown flag --%s\n", name.c_str());
      Usage();
      return ut::kUserErrorExitCode;
    }
    if (!ok) {
      std::fprintf(stderr, "gen_synthetic: bad value \"%s\" for --%s\n", value.c_str(),
                   name.c_str());
      Usage();
      return ut::kUserErrorExitCode;
    }
  }
  if (options.out_dir.empty()) {
    std::fprintf(stderr, "gen_synthetic: --out is required\n");
    Usage();
    return ut::kUserErrorExitCode;
  }
  const absl::Status status = ut::data::GenerateSynthetic(options);
  if (!status.ok()) {
    LOG(ERROR) << status;
    return ut::kUserErrorExitCode;
  }
  return 0;
}
