#!/usr/bin/env bash
# Runs a DP test binary on N MPI ranks (oversubscribed on small machines).
# Usage: dp_test.sh N BINARY [gtest flags]
set -euo pipefail
source "$(dirname "$0")/../comm/mpi_test_env.sh"
np="$1"
shift
mpirun -np "$np" "$@"
