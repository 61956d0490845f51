#include "core/base/logging.h"

namespace ut {
namespace {
int g_rank = 0;
}

void InitLogging(const char* argv0, int rank) {
  g_rank = rank;
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = 0;
  static bool initialised = false;
  if (!initialised) {
    google::InitGoogleLogging(argv0);
    initialised = true;
  }
}

int LogRank() { return g_rank; }

}  // namespace ut
