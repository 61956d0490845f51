// MPI backend of Communicator (CPU buffers). Blocking calls are issued as
// non-blocking MPI operations and polled against the deadline, so a dead or
// stuck peer turns into a clear message instead of a silent hang.
#pragma once

#include <memory>
#include <string>

#include "parallel/comm/communicator.h"

namespace ut::comm {

// Owns MPI_Init/MPI_Finalize for the process. Create once in main().
class MpiRuntime {
 public:
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> Init(int* argc, char*** argv);
  ~MpiRuntime();
  // The world communicator (all ranks).
  std::unique_ptr<Communicator> World(const CommOptions& options = {});

 private:
  MpiRuntime() = default;
};

}  // namespace ut::comm
