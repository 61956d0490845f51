// Command-line splitting shared by the launchers (the only code that reads
// flags; DESIGN.md section 3). Each binary decides what its flags mean; this
// only turns argv into (name, value) pairs, in command-line order.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "core/base/status.h"

namespace ut::launch {

struct ParsedFlag {
  std::string arg;    // as typed, for error messages
  std::string name;   // without the leading "--" ("help" for -h)
  std::string value;  // empty for switches
};

// `switches` take no value (--resume); `valued` take `--name value` or
// `--name=value` (non-empty); `--path.to.field=value` is a config override
// (name contains a dot). Anything else is an error naming the argument.
absl::StatusOr<std::vector<ParsedFlag>> ParseArgs(int argc, char** argv,
                                                  const std::set<std::string>& switches,
                                                  const std::set<std::string>& valued);

// Under `bazel run`, changes into $BUILD_WORKSPACE_DIRECTORY so relative paths
// (configs/, runs/) mean the repository; elsewhere does nothing.
absl::Status EnterWorkspace();

// "flag '<arg>': <what> (run with --help for the list of flags)".
absl::Status BadFlag(const std::string& arg, const std::string& what);

// The value of a numeric flag, or BadFlag naming it: an integer >= min ("needs
// a positive integer" for min 1, ...), or a finite number (> 0 if positive).
absl::Status IntFlag(const ParsedFlag& flag, int min, int* out);
absl::Status DoubleFlag(const ParsedFlag& flag, bool positive, double* out);

}  // namespace ut::launch
