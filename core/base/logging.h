// Logging is glog. InitLogging sets stderr output (glog's --logtostderr flag is
// not accepted on our command line, so it is set here) and a rank prefix.
#pragma once

#include <string>

#include "glog/logging.h"

namespace ut {

// Call once from main(). `rank` is prefixed to every error line of this process.
void InitLogging(const char* argv0, int rank = 0);

// The process's rank as given to InitLogging (0 for single-process runs).
int LogRank();

}  // namespace ut
