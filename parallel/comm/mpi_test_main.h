// main() for the gtest binaries run under mpirun (comm, dp, dld, pipeline,
// TP model tests): MPI + gtest + logging with the rank, a 60 s deadline on
// every collective of World(). Rank 0 prints the gtest report; every other
// rank prints only its own failures, prefixed with its rank; the exit code is
// the worst over all ranks. Link //parallel/comm:mpi_test_main, not gtest_main.
#pragma once

#include "parallel/comm/communicator.h"
#include "parallel/comm/mpi_communicator.h"

namespace ut::comm::testing {

// The world (all ranks), 60 s deadline.
Communicator& World();
// For tests that need a world with other options (e.g. a short deadline).
MpiRuntime& Runtime();

}  // namespace ut::comm::testing
