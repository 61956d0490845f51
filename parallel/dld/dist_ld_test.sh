#!/usr/bin/env bash
# Runs the distributed L_d test on $1 MPI ranks (oversubscribed on small machines).
set -euo pipefail
source "$(dirname "$0")/../comm/mpi_test_env.sh"
np="$1"
shift
mpirun -np "$np" "$@"
