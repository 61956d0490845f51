// Status helpers. Anything a user can cause (config, data, files, ranks) returns
// absl::Status / absl::StatusOr; CHECK is for programmer errors only.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define UT_CONCAT_INNER(a, b) a##b
#define UT_CONCAT(a, b) UT_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                       \
  do {                                              \
    ::absl::Status _ut_status = (expr);             \
    if (!_ut_status.ok()) return _ut_status;        \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); unwraps a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(UT_CONCAT(_ut_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

namespace ut {

// Exit code for errors the user caused (bad config, data, checkpoint): 2.
inline constexpr int kUserErrorExitCode = 2;

}  // namespace ut
