// main() for the DP tests run under mpirun (dp_test.sh): MPI + gtest, with a
// 60 s deadline on every collective. Rank 0 prints the gtest report; every
// rank prints its own failures, prefixed with its rank; the exit code is the
// worst over all ranks.
#pragma once

#include "parallel/comm/communicator.h"

namespace ut::dp::testing {

comm::Communicator& World();

}  // namespace ut::dp::testing
