#include "launch/flags.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/numbers.h"

namespace ut::launch {

absl::Status EnterWorkspace() {
  const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (ws == nullptr || *ws == 0 || chdir(ws) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("cannot chdir to the workspace ", ws));
}

absl::Status BadFlag(const std::string& arg, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("flag '", arg, "': ", what, " (run with --help for the list of flags)"));
}

absl::Status IntFlag(const ParsedFlag& flag, int min, int* out) {
  if (absl::SimpleAtoi(flag.value, out) && *out >= min) return absl::OkStatus();
  if (min == 1) return BadFlag(flag.arg, "needs a positive integer");
  if (min == 0) return BadFlag(flag.arg, "needs a non-negative integer");
  if (min == std::numeric_limits<int>::min()) return BadFlag(flag.arg, "needs an integer");
  return BadFlag(flag.arg, absl::StrCat("needs an integer >= ", min));
}

absl::Status DoubleFlag(const ParsedFlag& flag, bool positive, double* out) {
  if (absl::SimpleAtod(flag.value, out) && std::isfinite(*out) && (!positive || *out > 0)) {
    return absl::OkStatus();
  }
  return BadFlag(flag.arg, positive ? "needs a finite number > 0" : "needs a finite number");
}

absl::StatusOr<std::vector<ParsedFlag>> ParseArgs(int argc, char** argv,
                                                  const std::set<std::string>& switches,
                                                  const std::set<std::string>& valued) {
  std::vector<ParsedFlag> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h") {
      flags.push_back({arg, "help", ""});
      continue;
    }
    if (arg.rfind("--", 0) != 0) return BadFlag(arg, "unexpected argument; flags start with --");
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (switches.count(name)) {
      if (has_value) return BadFlag(arg, "takes no value");
    } else if (valued.count(name)) {
      if (!has_value) {
        if (i + 1 >= argc) return BadFlag(arg, "needs a value");
        value = argv[++i];
      }
      if (value.empty()) return BadFlag(arg, "needs a non-empty value");
    } else if (name.find('.') != std::string::npos) {
      if (!has_value) return BadFlag(arg, "config overrides are written --path.to.field=value");
    } else {
      return BadFlag(arg, "unknown flag");
    }
    flags.push_back({arg, name, value});
  }
  return flags;
}

}  // namespace ut::launch
